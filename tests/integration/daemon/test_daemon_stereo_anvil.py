"""A stereo task behind the daemon on anvil: one daemon claims a tiny ``ofa_dispnetc_micro``
task on procedural pairs, trains it in the job runner, searches under the FLOPs limit,
publishes a manifest that reports EPE, and the client's accept settles it (the reward and
the bond pushed to the miner's wallet); a stereo task whose FLOPs limit is below the cheapest
sub-network is refused without a claim."""

from __future__ import annotations

import asyncio
import hashlib
import json
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from miner.automl.efficiency import flops_table
from miner.automl.registry import supernet_config
from miner.daemon import jobspec
from miner.daemon.daemon import run_until_stopped
from miner.daemon.job import JobSupervisor
from miner.daemon.runtime import open_miner
from miner.daemon.settings import load_miner_settings
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
REWARD, BOND = 10**17 + 1, 2 * 10**15  # the bond floor of one slot: 10**15 + 1
SUPERNET = "ofa_dispnetc_micro"


def stereo_spec(max_flops: int) -> TaskSpec:
    """One epoch of the full stereo supernet at 32x64 (15 steps of 32 pairs)."""
    return TaskSpec(
        kind="stereo", objective="min_epe", dataset=DatasetRef(name="procedural-stereo"),
        search_space=SearchSpaceSpec(kernel_sizes=(3, 5), expand_ratios=(2.0, 4.0),
                                     depths=(1, 2), resolutions=(32,)),
        training=TrainingBudget(supernet=SUPERNET, batch_size=32, distill_weight=0.0,
                                phases=(PhaseBudget(name="full", epochs=1, lr=0.003),)),
        constraint=Constraint(max_flops=max_flops))


def flops_range(spec: TaskSpec) -> tuple[float, float]:
    """FLOPs of the cheapest and the largest sub-network of the spec's space."""
    config = supernet_config(SUPERNET, **jobspec.supernet_overrides(spec))
    table = flops_table(config)
    return table.of(config.space.min_arch()), table.of(config.space.max_arch())


async def post(devnet: Devnet, client: TaskMarket, path: Path, spec: TaskSpec) -> int:
    path.write_bytes(spec.canonical())
    posted = await client.post_task(TaskParams(
        reward_wei=REWARD, bond_wei=BOND, slots=1, claim_window_s=600, work_window_s=7200,
        review_window_s=600, arbitration_window_s=60, arbiter=devnet.accounts[ARBITER].address,
        spec_hash=spec.spec_hash(), validation_hash="0x" + "46" * 32), path.as_uri())
    return posted.task_id


async def test_a_stereo_task_goes_to_settled_with_an_epe_manifest(devnet: Devnet,
                                                                 tmp_path: Path) -> None:
    deployment = tmp_path / "deployment.json"
    devnet.deployment.save(deployment)
    client = await TaskMarket.create(devnet.rpc, devnet.deployment.task_market,
                                     await devnet.sender(0))
    probe = stereo_spec(1)
    cheapest, largest = flops_range(probe)
    limit = int((cheapest + largest) / 2)
    spec, too_tight = stereo_spec(limit), stereo_spec(int(cheapest) - 1)
    settings = load_miner_settings(
        data_dir=str(tmp_path / "miner"), chain={"deployment_file": str(deployment)},
        http={"port": free_port()}, indexer={"poll_interval_s": 0.05},
        tx={"poll_interval_s": 0.05}, policy=trusted_policy(devnet, kinds=["stereo"]))
    account = devnet.accounts[1]
    wallets = await Wallets.snapshot(devnet.rpc, account.address, client.address)
    stop = asyncio.Event()
    async with AsyncExitStack() as stack:
        supervisor = JobSupervisor(settings.paths(), account, standby=False)
        miner = await stack.enter_async_context(open_miner(
            settings, account, supervisor.on_group_formed, routes=supervisor.routes()))
        stack.push_async_callback(supervisor.close)
        loop = asyncio.create_task(run_until_stopped(miner.daemon, stop, 0.2))

        async def stop_loop() -> None:
            stop.set()
            await loop

        stack.push_async_callback(stop_loop)
        refused_id = await post(devnet, client, tmp_path / "tight.json", too_tight)
        task_id = await post(devnet, client, tmp_path / "spec.json", spec)
        await until(lambda: phase(miner.store, refused_id) is TaskPhase.REFUSED, 30)
        refused = miner.store.task(refused_id)
        assert refused is not None and refused.reason.startswith("constraint_infeasible: max_flops")
        assert miner.store.txs(refused_id, "claim") == []
        await client.cancel(refused_id)  # nobody claims it: its client takes the reward back

        await until(lambda: phase(miner.store, task_id) is TaskPhase.SUBMITTED, 120)
        raw = miner.store.manifest(task_id)
        assert raw is not None
        manifest = ResultManifest.model_validate_json(raw)
        assert manifest.spec_hash == spec.spec_hash()
        assert manifest.metrics.accuracy is None
        assert manifest.metrics.epe is not None and manifest.metrics.epe > 0
        assert cheapest <= manifest.metrics.flops <= limit
        assert manifest.largest is not None and manifest.largest.flops == largest
        assert manifest.pareto_front and all(p.score < 0 for p in manifest.pareto_front)
        # the manifest's EPE is the one the search measured on the exported network
        export = settings.paths().task_dir(task_id) / jobspec.EXPORT_DIR
        summary = json.loads((export / "search.json").read_text())
        assert summary["metric"] == "epe"
        assert manifest.metrics.epe == summary["val_epe"]
        assert manifest.largest.score == -summary["largest"]["val_epe"]
        weights = miner.artifacts.path_of(manifest.weights_sha256)
        assert weights is not None
        digest = "0x" + hashlib.sha256(weights.read_bytes()).hexdigest()
        assert digest == manifest.weights_sha256
        exported = "0x" + hashlib.sha256((export / "model.safetensors").read_bytes()).hexdigest()
        assert exported == manifest.weights_sha256
        # progress names the stereo metric per sub-network
        lines = [json.loads(x) for x in (settings.paths().task_dir(task_id)
                                         / "progress.jsonl").read_text().splitlines()]
        subnets = [s for x in lines for s in x.get("subnets", [])]
        assert subnets and all("epe" in s and "accuracy" not in s for s in subnets)
        view = await client.get_task(task_id)
        assert "0x" + view.result_root.hex() == manifest.result_root()
        await client.accept(task_id)
        await until(lambda: phase(miner.store, task_id) is TaskPhase.WITHDRAWN, 30)
        claims = [t.status for t in miner.store.txs(task_id, "claim")]
        assert claims == [TxStatus.MINED]
        assert "withdraw" not in [t.purpose for t in miner.store.txs(task_id)]
    view = await client.get_task(task_id)
    assert view.state is TaskState.SETTLED and view.miners_paid and view.signed_slots == 1
    assert (await wallets.change(account.address))[0] == REWARD  # bond out and back
    assert await client.credit_of(account.address) == 0
    assert (await wallets.change(client.address))[0] == 0  # nothing left in escrow
