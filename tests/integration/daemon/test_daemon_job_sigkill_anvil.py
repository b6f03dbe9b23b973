"""One ``manta-miner run`` process (real training subprocess) takes a task to SETTLED on
anvil, though it is killed with SIGKILL mid-training: the restarted daemon restarts the
runner, which resumes from its last checkpoint; one claim, one submission, paid once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from miner.daemon.result import equal_shares
from miner.distributed.launch import free_port
from node.chain.market import TaskMarket
from node.chain.models import TaskParams, TaskState
from node.devnet import Devnet, DevnetConfig
from node.documents.spec import (
    Constraint,
    DatasetRef,
    PhaseBudget,
    SearchSpaceSpec,
    TaskSpec,
    TrainingBudget,
)
from node.identity.keystore import KdfParams, import_key

pytestmark = [pytest.mark.anvil, pytest.mark.timeout(150), pytest.mark.usefixtures("watchdog"),
              pytest.mark.asyncio(loop_scope="module")]
ROOT = Path(__file__).resolve().parents[3]
PASSWORD = "job-chaos"
MINER = 3
RUN = "from miner.daemon.cli import app; app()"
REWARD, BOND = 10**17, 10**15


def spawn(folder: Path, config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "JOB_PASSWORD": PASSWORD}
    log = (folder / "daemon.log").open("ab")
    return subprocess.Popen([sys.executable, "-c", RUN, "--config", str(config), "run"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def query(db: Path, sql: str) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return list(conn.execute(sql))
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def progress_steps(task_dir: Path) -> list[int]:
    path = task_dir / "progress.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [x["step"] for x in lines if "total_steps" in x]


async def wait(what, process: subprocess.Popen[bytes], folder: Path,  # type: ignore[no-untyped-def]
               timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not what():
        log = (folder / "daemon.log").read_text(errors="replace")[-3000:]
        assert process.poll() is None, log
        assert loop.time() < deadline, log
        await asyncio.sleep(0.1)


async def test_sigkill_mid_training_still_settles_once(tmp_path: Path) -> None:
    config = DevnetConfig(anvil_path=ROOT / "node_modules" / ".bin" / "anvil")
    if not config.anvil_path.exists():
        pytest.skip("anvil not installed (npm ci)")
    devnet = await Devnet.start(config)
    process: subprocess.Popen[bytes] | None = None
    try:
        devnet.deployment.save(tmp_path / "deployment.json")
        import_key(tmp_path / "keys", SecretStr(devnet.accounts[MINER].key.hex()),
                   SecretStr(PASSWORD), "job", kdf=KdfParams.insecure_fast())
        toml = tmp_path / "miner.toml"
        toml.write_text(
            f'data_dir = "{tmp_path / "data"}"\nlog_level = "INFO"\n'
            f'[chain]\ndeployment_file = "{tmp_path / "deployment.json"}"\n'
            f'[identity]\nkeystore_dir = "{tmp_path / "keys"}"\nkeystore = "job"\n'
            'password_env = "JOB_PASSWORD"\n'
            f'[http]\nport = {free_port()}\n[indexer]\npoll_interval_s = 0.1\n'
            '[tx]\npoll_interval_s = 0.1\n')
        client = await TaskMarket.create(devnet.rpc, devnet.deployment.task_market,
                                         await devnet.sender(0))
        spec = TaskSpec(
            kind="classification", dataset=DatasetRef(name="synthetic"), seed=3,
            search_space=SearchSpaceSpec(kernel_sizes=(3, 5), expand_ratios=(3.0, 4.0),
                                         depths=(1, 2), resolutions=(20, 24, 28)),
            training=TrainingBudget(batch_size=32, phases=(
                PhaseBudget(name="full", epochs=1, lr=0.05),
                PhaseBudget(name="kernel", epochs=1, lr=0.02, subnets_per_step=2))),
            constraint=Constraint(max_flops=5_000_000))
        (tmp_path / "spec.json").write_bytes(spec.canonical())
        db = tmp_path / "data" / "state.sqlite"
        process = spawn(tmp_path, toml)
        posted = await client.post_task(TaskParams(
            reward_wei=REWARD, bond_wei=BOND, slots=1, claim_window_s=600, work_window_s=7200,
            review_window_s=600, arbitration_window_s=60,
            arbiter=devnet.accounts[9].address, spec_hash=spec.spec_hash(),
            validation_hash="0x" + "47" * 32), (tmp_path / "spec.json").as_uri())
        task_id = posted.task_id
        task_dir = tmp_path / "data" / "tasks" / str(task_id)
        checkpoints = task_dir / "run" / "checkpoints"

        def mid_training() -> bool:
            steps = progress_steps(task_dir)
            return bool(steps) and steps[-1] >= 7 and any(checkpoints.glob("*"))

        await wait(mid_training, process, tmp_path, 90)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        killed_at = progress_steps(task_dir)[-1]
        process = spawn(tmp_path, toml)

        def submitted() -> bool:
            return query(db, f"SELECT phase FROM tasks WHERE task_id = {task_id}") \
                in ([("submitted",)], [("settled",)], [("withdrawn",)])

        await wait(submitted, process, tmp_path, 100)
        await client.accept(task_id)

        def withdrawn() -> bool:
            return query(db, f"SELECT phase FROM tasks WHERE task_id = {task_id}") \
                == [("withdrawn",)]

        await wait(withdrawn, process, tmp_path, 30)
        steps = progress_steps(task_dir)
        total = steps[-1]
        # the second runner went on from a checkpoint: it did not start again at step 1
        restart = next(i for i in range(1, len(steps)) if steps[i] <= steps[i - 1])
        assert 1 < steps[restart] <= killed_at + 1 < total
        assert steps.count(1) == 1
        txs = query(db, f"SELECT purpose, status FROM txs WHERE task_id = {task_id} "
                        "ORDER BY tx_id")
        assert txs.count(("claim", "mined")) == 1
        assert [t for t in txs if t[0] == "claim"] == [("claim", "mined")]
        assert [t for t in txs if t[0] == "submit"] == [("submit", "mined")]
        assert await client.state_of(task_id) is TaskState.SETTLED
        address = devnet.accounts[MINER].address
        withdrawn_events = await client.get_withdrawn(account=address)
        assert [w.amount_wei for w in withdrawn_events] == [equal_shares(REWARD, 1)[0] + BOND]
        claimed = await client.get_task_claimed(task_id=task_id)
        assert len(claimed) == 1
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        await devnet.stop()
