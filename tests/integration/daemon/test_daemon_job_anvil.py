"""Real training behind the daemon on anvil: a posted task goes OPEN → SETTLED with the
training subprocess, the authenticated gradient exchange between two members, the leader's
search and export, the members' signatures, and the client's accept, which pays each member
its share and bond (checked in the wallets, to the wei)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import torch
from eth_account.signers.local import LocalAccount

from miner.automl.checkpoint import CheckpointStore, load_checkpoint
from miner.automl.runs import read_run_config
from miner.daemon.daemon import run_until_stopped
from miner.daemon.job import JobSupervisor
from miner.daemon.result import equal_shares
from miner.daemon.runtime import MinerServices, open_miner
from miner.daemon.settings import MinerSettings, load_miner_settings
from miner.daemon.store import TaskPhase, TxStatus
from node.chain.market import TaskMarket
from node.chain.models import TaskParams, TaskState
from node.devnet import Devnet
from node.documents.manifest import ResultManifest
from node.documents.spec import (
    Constraint,
    DatasetRef,
    PhaseBudget,
    SearchSpaceSpec,
    TaskSpec,
    TrainingBudget,
)
from node.ports import free_port
from tests.daemon_support import phase, until
from tests.integration.daemon.support import ARBITER, Wallets, trusted_policy

pytestmark = [pytest.mark.anvil, pytest.mark.timeout(150), pytest.mark.usefixtures("watchdog"),
              pytest.mark.asyncio(loop_scope="module")]
ROOT = Path(__file__).resolve().parents[3]
REWARD, BOND = 10**17 + 1, 10**15
MAX_FLOPS = 5_000_000


def tiny_spec(seed: int = 0) -> TaskSpec:
    """A few steps of the tiny supernet on synthetic data (two phases, ~14 steps)."""
    return TaskSpec(
        kind="classification", dataset=DatasetRef(name="synthetic"), seed=seed,
        search_space=SearchSpaceSpec(kernel_sizes=(3, 5), expand_ratios=(3.0, 4.0),
                                     depths=(1, 2), resolutions=(20, 24, 28)),
        training=TrainingBudget(batch_size=64, phases=(
            PhaseBudget(name="full", epochs=1, lr=0.05),
            PhaseBudget(name="kernel", epochs=1, lr=0.02, subnets_per_step=2))),
        constraint=Constraint(max_flops=MAX_FLOPS))


def miner_settings(tmp_path: Path, name: str, deployment: Path, devnet: Devnet
                   ) -> MinerSettings:
    return load_miner_settings(
        data_dir=str(tmp_path / name), chain={"deployment_file": str(deployment)},
        http={"port": free_port()}, indexer={"poll_interval_s": 0.05},
        tx={"poll_interval_s": 0.05}, capacity={"max_concurrent_tasks": 4},
        policy=trusted_policy(devnet))


async def post(devnet: Devnet, client: TaskMarket, folder: Path, spec: TaskSpec,
               slots: int) -> int:
    (folder / "spec.json").write_bytes(spec.canonical())
    posted = await client.post_task(TaskParams(
        reward_wei=REWARD, bond_wei=BOND, slots=slots, claim_window_s=600,
        work_window_s=7200, review_window_s=600, arbitration_window_s=60,
        arbiter=devnet.accounts[ARBITER].address, spec_hash=spec.spec_hash(),
        validation_hash="0x" + "46" * 32), (folder / "spec.json").as_uri())
    return posted.task_id


class Miner:
    """One daemon with a job supervisor, run in this event loop."""

    def __init__(self, services: MinerServices, supervisor: JobSupervisor) -> None:
        self.services = services
        self.supervisor = supervisor


async def start_miner(stack: AsyncExitStack, settings: MinerSettings, account: LocalAccount,
                      stop: asyncio.Event) -> Miner:
    supervisor = JobSupervisor(settings.paths(), account)
    services = await stack.enter_async_context(open_miner(
        settings, account, supervisor.on_group_formed, routes=supervisor.routes()))
    stack.push_async_callback(supervisor.close)
    await supervisor.resume(services)
    loop = asyncio.create_task(run_until_stopped(services.daemon, stop, 0.2))

    async def stop_loop() -> None:
        stop.set()
        await loop

    stack.push_async_callback(stop_loop)
    return Miner(services, supervisor)


def trained_parameters(job_dir: Path) -> dict[str, torch.Tensor]:
    """The learnable weights of a job's newest checkpoint (BN statistics are per shard)."""
    run = job_dir / "run"
    config = read_run_config(run / "train_config.json")
    latest = CheckpointStore(run / "checkpoints").latest()
    assert latest is not None
    model = load_checkpoint(latest, config.config_hash())["model"]
    return {k: v for k, v in model.items() if "running_" not in k and "num_batches" not in k}


def check_manifest(miner: MinerServices, task_id: int, spec: TaskSpec) -> ResultManifest:
    raw = miner.store.manifest(task_id)
    assert raw is not None
    manifest = ResultManifest.model_validate_json(raw)
    assert manifest.spec_hash == spec.spec_hash()
    assert 0 < manifest.metrics.flops <= MAX_FLOPS
    assert manifest.metrics.params > 0
    assert manifest.metrics.accuracy is not None
    assert manifest.pareto_front
    weights = miner.artifacts.path_of(manifest.weights_sha256)
    assert weights is not None
    assert "0x" + hashlib.sha256(weights.read_bytes()).hexdigest() == manifest.weights_sha256
    arch_json = miner.artifacts.path_of(manifest.arch_json_sha256)
    assert arch_json is not None and "program_sha256" in json.loads(arch_json.read_text())
    return manifest


async def test_two_daemons_train_together_to_settled(devnet: Devnet, tmp_path: Path) -> None:
    deployment = tmp_path / "deployment.json"
    devnet.deployment.save(deployment)
    client = await TaskMarket.create(devnet.rpc, devnet.deployment.task_market,
                                     await devnet.sender(0))
    spec = tiny_spec()
    stop = asyncio.Event()
    wallets = await Wallets.snapshot(devnet.rpc, client.sender.address, client.address,
                                     *(devnet.accounts[i].address for i in (1, 2)))
    async with AsyncExitStack() as stack:
        miners = [await start_miner(stack, miner_settings(tmp_path, f"m{i}", deployment, devnet),
                                    devnet.accounts[i], stop) for i in (1, 2)]
        task_id = await post(devnet, client, tmp_path, spec, slots=2)
        await until(lambda: all(phase(m.services.store, task_id) is TaskPhase.SUBMITTED
                                for m in miners), 110)
        roles = {m.services.store.task(task_id).role: m for m in miners}  # type: ignore[union-attr]
        leader, member = roles["leader"], roles["member"]
        manifest = check_manifest(leader.services, task_id, spec)
        assert manifest.group == tuple(await client.members_of(task_id))
        # the member trained too, exchanging gradients through the leader's exchange
        member_dir = member.services.settings.paths().task_dir(task_id)
        lines = [json.loads(x) for x in (member_dir / "progress.jsonl").read_text().splitlines()]
        steps = [x["step"] for x in lines if x.get("phase") == "training" and "total_steps" in x]
        assert steps and steps[-1] == lines[0]["total_steps"] > 1
        trained = [x for x in lines if "total_steps" in x]
        assert [x["exchange_rounds"] for x in trained] == steps  # one all-reduce per step
        assert trained[-1]["grad_bytes_sent"] > 0
        assert sorted(trained[-1]["peers"]) == sorted(manifest.group)  # nobody dropped
        assert not (member_dir / "export").exists()  # only the leader searches
        # different data shards, averaged gradients: the same weights on both members
        leader_dir = leader.services.settings.paths().task_dir(task_id)
        ours, theirs = trained_parameters(leader_dir), trained_parameters(member_dir)
        assert ours.keys() == theirs.keys() and ours
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
        assert member.services.artifacts.path_of(manifest.weights_sha256) is not None
        view = await client.get_task(task_id)
        assert "0x" + view.result_root.hex() == manifest.result_root()
        await client.accept(task_id)
        await until(lambda: all(phase(m.services.store, task_id) is TaskPhase.WITHDRAWN
                                for m in miners), 30)
        for miner in miners:
            # one claim mined each (the one that lost the race for the group, if they
            # claimed in the same instant, claimed again)
            claims = [t.status for t in miner.services.store.txs(task_id, "claim")]
            assert claims[-1] is TxStatus.MINED and set(claims[:-1]) <= {TxStatus.FAILED}
            assert "withdraw" not in [t.purpose for t in miner.services.store.txs(task_id)]
        submits = [t.status for t in leader.services.store.txs(task_id, "submit")]
        assert submits == [TxStatus.MINED]
        assert member.services.store.txs(task_id, "submit") == []
        addresses = [m.services.conn.address for m in (leader, member)]
    view = await client.get_task(task_id)
    assert view.state is TaskState.SETTLED and view.miners_paid and view.closed
    assert view.signed_slots == 0b11
    for address, share in zip(addresses, equal_shares(REWARD, 2), strict=True):
        assert (await wallets.change(address))[0] == share  # paid inside accept, bond back
        assert await client.credit_of(address) == 0
    assert (await wallets.change(client.sender.address))[0] == -REWARD
    assert (await wallets.change(client.address))[0] == 0  # nothing left in escrow
