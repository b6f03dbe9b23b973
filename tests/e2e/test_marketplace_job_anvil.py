"""The marketplace end to end on anvil: a client posts a classification task with a FLOPs
limit for two slots; two miner daemons claim it, train the supernet together (data
parallel, authenticated gradient exchange), the leader searches and exports, both sign, the
leader submits; the client fetches the result from the group, verifies every hash and the
claims against the chain with the client library, accepts; both miners withdraw."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from client.api import fetch_result, verify_result
from client.session import ClientConfig
from miner.daemon.daemon import run_until_stopped
from miner.daemon.job import JobSupervisor
from miner.daemon.result import equal_shares
from miner.daemon.runtime import MinerServices, open_miner
from miner.daemon.settings import load_miner_settings
from miner.daemon.store import TaskPhase
from node.chain.market import TaskMarket
from node.chain.models import TaskParams, TaskState
from node.devnet import Devnet
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

pytestmark = [pytest.mark.anvil, pytest.mark.timeout(150),
              pytest.mark.asyncio(loop_scope="module")]
ROOT = Path(__file__).resolve().parents[2]
REWARD, BOND = 3 * 10**17 + 1, 2 * 10**15
MAX_FLOPS = 4_000_000


async def test_post_train_search_verify_accept_withdraw(devnet: Devnet, tmp_path: Path) -> None:
    deployment = tmp_path / "deployment.json"
    devnet.deployment.save(deployment)
    client = await TaskMarket.create(devnet.rpc, devnet.deployment.task_market,
                                     await devnet.sender(0))
    spec = TaskSpec(
        kind="classification", dataset=DatasetRef(name="synthetic"), seed=11,
        search_space=SearchSpaceSpec(kernel_sizes=(3, 5), expand_ratios=(3.0, 4.0),
                                     depths=(1, 2), resolutions=(20, 24, 28)),
        training=TrainingBudget(batch_size=64, phases=(
            PhaseBudget(name="full", epochs=1, lr=0.05),
            PhaseBudget(name="kernel", epochs=1, lr=0.02, subnets_per_step=2))),
        constraint=Constraint(max_flops=MAX_FLOPS))
    before = {a.address: await devnet.rpc.get_balance(a.address) for a in devnet.accounts[4:6]}
    stop = asyncio.Event()
    async with AsyncExitStack() as stack:
        miners: list[MinerServices] = []
        loops = []
        for index in (4, 5):
            settings = load_miner_settings(
                data_dir=str(tmp_path / f"m{index}"), chain={"deployment_file": str(deployment)},
                http={"port": free_port()}, indexer={"poll_interval_s": 0.05},
                tx={"poll_interval_s": 0.05}, policy={"arbiters": [devnet.accounts[9].address]})
            supervisor = JobSupervisor(settings.paths(), devnet.accounts[index])
            services = await stack.enter_async_context(open_miner(
                settings, devnet.accounts[index], supervisor.on_group_formed,
                routes=supervisor.routes()))
            stack.push_async_callback(supervisor.close)
            miners.append(services)
            loops.append(asyncio.create_task(run_until_stopped(services.daemon, stop, 0.2)))
        try:
            (tmp_path / "spec.json").write_bytes(spec.canonical())
            posted = await client.post_task(TaskParams(
                reward_wei=REWARD, bond_wei=BOND, slots=2, claim_window_s=600,
                work_window_s=7200, review_window_s=600, arbitration_window_s=60,
                arbiter=devnet.accounts[9].address, spec_hash=spec.spec_hash(),
                validation_hash="0x" + "49" * 32), (tmp_path / "spec.json").as_uri())
            task_id = posted.task_id
            await until(lambda: all(phase(m.store, task_id) is TaskPhase.SUBMITTED for m in miners),
                        110)
            assert await client.state_of(task_id) is TaskState.SUBMITTED

            config = ClientConfig(deployment_file=deployment)
            fetched = await fetch_result(config, task_id, tmp_path / "result")
            assert {"model.safetensors", "arch.json", "model.pt2"} <= set(fetched.files)
            assert 0 < fetched.metrics["flops"] <= MAX_FLOPS
            report = await verify_result(config, task_id, tmp_path / "result", None)
            assert report.ok, report.checks
            assert any(c.name == "program sha256" for c in report.checks)

            await client.accept(task_id)
            await until(lambda: all(phase(m.store, task_id) is TaskPhase.WITHDRAWN for m in miners),
                        30)
        finally:
            stop.set()
            await asyncio.gather(*loops)
    assert await client.state_of(task_id) is TaskState.SETTLED
    group = await client.members_of(task_id)
    view = await client.get_task(task_id)
    assert view.miners_paid and view.signed_slots == 0b11  # both signed: both paid
    for address, share in zip(group, equal_shares(REWARD, 2), strict=True):
        assert await client.credit_of(address) == 0  # pushed by accept, nothing credited
        # wallet: + share, less gas for register, claim (bond), submit
        assert await devnet.rpc.get_balance(address) > before[address] + share - 10**16
