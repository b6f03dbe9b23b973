"""Chaos on the claim path: ``manta-miner run`` as a real process (1-second blocks), killed
with SIGKILL (1) right after it wrote its claim intent, (2) while its claim sits in the
mempool (sent, not mined) and (3) right after the claim was mined and recorded. Every
restart ends with exactly one claim per task, on chain and in the store."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from pydantic import SecretStr

from miner.distributed.launch import free_port
from node.chain.market import TaskMarket
from node.chain.models import TaskParams
from node.devnet import Devnet, DevnetConfig
from node.documents.spec import Constraint, DatasetRef, SearchSpaceSpec, TaskSpec
from node.identity.keystore import KdfParams, import_key

pytestmark = [pytest.mark.anvil, pytest.mark.timeout(120), pytest.mark.usefixtures("watchdog"),
              pytest.mark.asyncio(loop_scope="module")]
ROOT = Path(__file__).resolve().parents[3]
PASSWORD = "chaos"
MINER = 4
RUN = "from miner.daemon.cli import app; app()"


@dataclass
class Rig:
    devnet: Devnet
    client: TaskMarket
    miner: TaskMarket
    folder: Path
    config: Path

    def spawn(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "RIG_PASSWORD": PASSWORD}
        log = (self.folder / "daemon.log").open("ab")
        return subprocess.Popen([sys.executable, "-c", RUN, "--config", str(self.config), "run"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def claims(self) -> list[tuple[int, str]]:
        path = self.folder / "data" / "state.sqlite"
        if not path.exists():
            return []
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return list(db.execute("SELECT task_id, status FROM txs WHERE purpose = 'claim' "
                                   "ORDER BY tx_id"))
        except sqlite3.OperationalError:  # schema not created yet
            return []
        finally:
            db.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    config = DevnetConfig(anvil_path=ROOT / "node_modules" / ".bin" / "anvil", block_time_s=1)
    if not config.anvil_path.exists():
        pytest.skip("anvil not installed (npm ci)")
    folder = tmp_path_factory.mktemp("chaos")
    devnet = await Devnet.start(config)
    try:
        devnet.deployment.save(folder / "deployment.json")
        import_key(folder / "keys", SecretStr(devnet.accounts[MINER].key.hex()),
                   SecretStr(PASSWORD), "rig", kdf=KdfParams.insecure_fast())
        port = free_port()
        toml = folder / "miner.toml"
        toml.write_text(
            f'data_dir = "{folder / "data"}"\nlog_level = "INFO"\n'
            '[capacity]\nmax_concurrent_tasks = 4\n'
            f'[chain]\ndeployment_file = "{folder / "deployment.json"}"\n'
            f'[identity]\nkeystore_dir = "{folder / "keys"}"\nkeystore = "rig"\n'
            'password_env = "RIG_PASSWORD"\n'
            f'[http]\nport = {port}\n[indexer]\npoll_interval_s = 0.1\n'
            '[tx]\npoll_interval_s = 0.1\n')
        market = devnet.deployment.task_market
        client = await TaskMarket.create(devnet.rpc, market, await devnet.sender(0))
        miner = await TaskMarket.create(devnet.rpc, market, await devnet.sender(MINER))
        await miner.register(f"http://127.0.0.1:{port}")  # what `run` would register
        yield Rig(devnet, client, miner, folder, toml)
    finally:
        await devnet.stop()


async def post(rig: Rig) -> int:
    spec = TaskSpec(kind="classification", dataset=DatasetRef(name="digits"),
                    search_space=SearchSpaceSpec(resolutions=(32,)),
                    constraint=Constraint(max_flops=10**6), seed=int.from_bytes(os.urandom(3)))
    path = rig.folder / f"spec-{spec.seed}.json"
    path.write_bytes(spec.canonical())
    posted = await rig.client.post_task(TaskParams(
        reward_wei=10**17, bond_wei=10**15, slots=1, claim_window_s=600, work_window_s=7200,
        review_window_s=600, arbitration_window_s=600,
        arbiter=rig.devnet.accounts[9].address, spec_hash=spec.spec_hash(),
        validation_hash="0x" + "66" * 32), path.as_uri())
    return posted.task_id


async def wait_for(rig: Rig, process: subprocess.Popen[bytes], task_id: int,
                   statuses: set[str], timeout_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not any(t == task_id and s in statuses for t, s in rig.claims()):
        log = (rig.folder / "daemon.log").read_text(errors="replace")[-2000:]
        assert process.poll() is None, log
        assert loop.time() < deadline, log
        await asyncio.sleep(0.02)


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)


async def in_mempool(rig: Rig, timeout_s: float = 10.0) -> bool:
    """Wait until the miner has a transaction pending (sent, not mined); False if none came."""
    rpc, address = rig.devnet.rpc, rig.miner.sender.address
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if await rpc.get_nonce(address, "pending") > await rpc.get_nonce(address, "latest"):
            return True
        await asyncio.sleep(0.01)
    return False


async def test_sigkill_around_the_claim(rig: Rig) -> None:
    address = rig.miner.sender.address
    nonce_before = await rig.devnet.rpc.get_nonce(address, "latest")
    first = await post(rig)
    process = rig.spawn()
    try:
        await wait_for(rig, process, first, {"intent"})  # (1) intent written, claim not mined
        kill(process)
        second = await post(rig)
        process = rig.spawn()
        await wait_for(rig, process, first, {"mined"})
        await wait_for(rig, process, second, {"intent", "sent"})
        pending = await in_mempool(rig)  # (2) the claim is in the mempool
        kill(process)
        third = await post(rig)
        process = rig.spawn()
        await wait_for(rig, process, second, {"mined"})
        await wait_for(rig, process, third, {"mined"})
        kill(process)  # (3) right after the third claim was recorded
        process = rig.spawn()
        await asyncio.sleep(3.0)  # the restarted daemon reads the posts again
        assert process.poll() is None
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(20)
    tasks = [first, second, third]
    for task_id in tasks:
        assert await rig.client.members_of(task_id) == [address]
    assert await rig.devnet.rpc.get_nonce(address, "latest") == nonce_before + 3  # 3 claims
    assert sorted(t for t, s in rig.claims() if s == "mined") == tasks
    assert process.returncode == 0
    log = (rig.folder / "daemon.log").read_text()
    # (1) killed before or just after the send: re-sent, or found done; never twice
    assert re.search(r"purpose=claim task=1 resolution=(retry|done)", log)
    assert "purpose=claim task=2 resolution=done" in log or not pending
