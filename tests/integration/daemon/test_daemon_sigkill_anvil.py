"""Chaos on the claim path with real block times: ``manta-miner run`` as a real process
(1-second blocks), killed with SIGKILL (1) right after it wrote its claim intent, (2) while
its claim sits in the mempool (sent, not mined) and (3) right after the claim was mined and
recorded. Every restart ends with exactly one claim per task, on chain and in the store.
(The deterministic, crash-point driven version of every lifecycle point is
``test_daemon_chaos_anvil.py``; this one keeps interval mining and several tasks at once.)"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio

from node.chain.market import TaskMarket
from node.chain.models import TaskParams
from node.devnet import Devnet, DevnetConfig
from node.documents.spec import Constraint, DatasetRef, SearchSpaceSpec, TaskSpec
from tests.integration.daemon.support import ARBITER

pytestmark = [pytest.mark.anvil, pytest.mark.timeout(120), pytest.mark.usefixtures("watchdog"),
              pytest.mark.asyncio(loop_scope="module")]
ROOT = Path(__file__).resolve().parents[3]
MINER = 4


@dataclass
class Rig:
    devnet: Devnet
    client: TaskMarket
    miner: TaskMarket
    proc: Any  # MinerProcess (conftest)
    procs: SimpleNamespace

    def claims(self) -> list[tuple[object, ...]]:
        return self.proc.query("SELECT task_id, status FROM txs WHERE purpose = 'claim' "
                               "ORDER BY tx_id")

    async def wait_for(self, process: subprocess.Popen[bytes], task_id: int,
                       statuses: set[str]) -> None:
        await self.proc.wait(lambda: any(t == task_id and s in statuses
                                         for t, s in self.claims()),
                             process, 30.0, f"claim of task {task_id} in {statuses}")

    async def in_mempool(self, timeout_s: float = 10.0) -> bool:
        """Wait until the miner has a transaction pending (sent, not mined); False if none."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if await self.procs.own_tx_pending(self.devnet.rpc, self.miner.sender.address):
                return True
            await asyncio.sleep(0.01)
        return False


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(tmp_path_factory: pytest.TempPathFactory, miner_process: Any,
              processes: SimpleNamespace) -> AsyncIterator[Rig]:
    config = DevnetConfig(anvil_path=ROOT / "node_modules" / ".bin" / "anvil", block_time_s=1)
    if not config.anvil_path.exists():
        pytest.skip("anvil not installed (npm ci)")
    devnet = await Devnet.start(config)
    try:
        proc, client, miner = await miner_process.registered(
            tmp_path_factory.mktemp("chaos"), devnet, MINER, max_tasks=4)
        yield Rig(devnet, client, miner, proc, processes)
    finally:
        await devnet.stop()


async def post(rig: Rig) -> int:
    spec = TaskSpec(kind="classification", dataset=DatasetRef(name="digits"),
                    search_space=SearchSpaceSpec(resolutions=(32,)),
                    constraint=Constraint(max_flops=10**7), seed=int.from_bytes(os.urandom(3)))
    path = rig.proc.folder / f"spec-{spec.seed}.json"
    path.write_bytes(spec.canonical())
    posted = await rig.client.post_task(TaskParams(
        reward_wei=10**17, bond_wei=10**15, slots=1, claim_window_s=600, work_window_s=7200,
        review_window_s=600, arbitration_window_s=600,
        arbiter=rig.devnet.accounts[ARBITER].address, spec_hash=spec.spec_hash(),
        validation_hash="0x" + "66" * 32), path.as_uri())
    return posted.task_id


async def test_sigkill_around_the_claim(rig: Rig) -> None:
    address = rig.miner.sender.address
    nonce_before = await rig.devnet.rpc.get_nonce(address, "latest")
    first = await post(rig)
    process = rig.proc.spawn()
    try:
        await rig.wait_for(process, first, {"intent"})  # (1) intent written, claim not mined
        rig.procs.kill(process)
        second = await post(rig)
        process = rig.proc.spawn()
        await rig.wait_for(process, first, {"mined"})
        await rig.wait_for(process, second, {"intent", "sent"})
        pending = await rig.in_mempool()  # (2) the claim is in the mempool
        rig.procs.kill(process)
        third = await post(rig)
        process = rig.proc.spawn()
        await rig.wait_for(process, second, {"mined"})
        await rig.wait_for(process, third, {"mined"})
        rig.procs.kill(process)  # (3) right after the third claim was recorded
        process = rig.proc.spawn()
        await asyncio.sleep(3.0)  # the restarted daemon reads the posts again
        assert process.poll() is None
    finally:
        rc = rig.procs.stop(process, 20)
    tasks = [first, second, third]
    for task_id in tasks:
        assert await rig.client.members_of(task_id) == [address]
    assert await rig.devnet.rpc.get_nonce(address, "latest") == nonce_before + 3  # 3 claims
    assert sorted(t for t, s in rig.claims() if s == "mined") == tasks
    assert rc == 0
    log = rig.proc.log_file.read_text()
    # (1) killed before or just after the send: re-sent, or found done; never twice
    assert re.search(rf"purpose=claim task={first} resolution=(retry|done)", log)
    assert f"purpose=claim task={second} resolution=done" in log or not pending
