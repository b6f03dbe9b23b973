"""Shared by the daemon's anvil tests: a watchdog (if a test is still running after
``WATCHDOG_S``, print the stack of every asyncio task of its loop; pytest-timeout only
shows threads, and a stuck coroutine sits on an idle loop), and :class:`MinerProcess`,
``manta-miner run`` as a real process for the SIGKILL and chaos tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytest_asyncio
from pydantic import SecretStr

from node.chain.market import TaskMarket
from node.chain.models import Deployment
from node.chain.rpc import RpcPool
from node.devnet import Devnet
from node.identity.keystore import KdfParams, import_key
from node.ports import free_port
from tests.integration.daemon.support import ARBITER

WATCHDOG_S = 60.0


async def _dump_after(delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    current = asyncio.current_task()
    print(f"\n+++ watchdog: test still running after {delay_s} s; asyncio tasks:",
          file=sys.stderr)
    for task in asyncio.all_tasks():
        if task is not current:
            task.print_stack(file=sys.stderr)


@pytest_asyncio.fixture(loop_scope="module")
async def watchdog() -> AsyncIterator[None]:
    task = asyncio.create_task(_dump_after(WATCHDOG_S))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# ---- ``manta-miner run`` as a real process (the SIGKILL and chaos tests) ------------------

RUN = "from miner.daemon.cli import app; app()"
ROOT = Path(__file__).resolve().parents[3]
PASSWORD_ENV = "MINER_TEST_PASSWORD"


@dataclass(frozen=True)
class MinerProcess:
    """One miner's config, data folder and log, to run ``manta-miner run`` as a process,
    kill it, start it again and read its state file (read-only) in between.

    Test modules here cannot import this file; they get the class from the
    ``miner_process`` fixture and build one with :meth:`create`.
    """

    folder: Path
    config: Path
    password: str

    @classmethod
    def create(cls, folder: Path, deployment: Deployment, key: bytes, port: int,
               toml_extra: str = "", arbiters: Sequence[str] = ()) -> MinerProcess:
        """Write the keystore and ``miner.toml`` under ``folder`` (INFO log, fast polls,
        ``arbiters`` trusted)."""
        folder.mkdir(parents=True, exist_ok=True)
        deployment.save(folder / "deployment.json")
        password = "test-" + key[:4].hex()
        import_key(folder / "keys", SecretStr(key.hex()), SecretStr(password), "miner",
                   kdf=KdfParams.insecure_fast())
        config = folder / "miner.toml"
        trusted = ", ".join(f'"{a}"' for a in arbiters)
        config.write_text(
            f'data_dir = "{folder / "data"}"\nlog_level = "INFO"\n'
            f'[chain]\ndeployment_file = "{folder / "deployment.json"}"\n'
            f'[identity]\nkeystore_dir = "{folder / "keys"}"\nkeystore = "miner"\n'
            f'password_env = "{PASSWORD_ENV}"\n'
            f'[http]\nport = {port}\n[indexer]\npoll_interval_s = 0.1\n'
            f'[tx]\npoll_interval_s = 0.1\n'
            f'[policy]\narbiters = [{trusted}]\n{toml_extra}')
        return cls(folder, config, password)

    @classmethod
    async def registered(cls, folder: Path, devnet: Devnet, index: int, max_tasks: int
                         ) -> tuple[MinerProcess, TaskMarket, TaskMarket]:
        """A daemon for devnet account ``index`` (not started, trusting the arbiter
        :data:`ARBITER`) whose endpoint is already registered, as ``run`` would; with the
        client's (account 0) and its own market."""
        port = free_port()
        proc = cls.create(folder, devnet.deployment, bytes(devnet.accounts[index].key), port,
                          f"[capacity]\nmax_concurrent_tasks = {max_tasks}\n",
                          arbiters=[devnet.accounts[ARBITER].address])
        market = devnet.deployment.task_market
        client = await TaskMarket.create(devnet.rpc, market, await devnet.sender(0))
        miner = await TaskMarket.create(devnet.rpc, market, await devnet.sender(index))
        await miner.register(f"http://127.0.0.1:{port}")
        return proc, client, miner

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def log_file(self) -> Path:
        return self.folder / "daemon.log"

    def task_dir(self, task_id: int) -> Path:
        return self.data_dir / "tasks" / str(task_id)

    def spawn(self, **env: str) -> subprocess.Popen[bytes]:
        """Start ``manta-miner run`` (stdout and stderr appended to :attr:`log_file`)."""
        full = {**os.environ, PASSWORD_ENV: self.password, "MANTA_TORCH_THREADS": "1", **env}
        with self.log_file.open("ab") as log:
            return subprocess.Popen([sys.executable, "-c", RUN, "--config", str(self.config),
                                     "run"], cwd=ROOT, env=full, stdout=log,
                                    stderr=subprocess.STDOUT)

    def log(self, last_chars: int = 3000) -> str:
        if not self.log_file.exists():
            return ""
        return self.log_file.read_text(errors="replace")[-last_chars:]

    def query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Rows from the daemon's state file; [] while it does not exist yet."""
        path = self.data_dir / "state.sqlite"
        if not path.exists():
            return []
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return list(db.execute(sql, args))
        except sqlite3.OperationalError:  # schema not created yet
            return []
        finally:
            db.close()

    def phase(self, task_id: int) -> str | None:
        rows = self.query("SELECT phase FROM tasks WHERE task_id = ?", (task_id,))
        return str(rows[0][0]) if rows else None

    def txs(self, task_id: int) -> list[tuple[str, str]]:
        """(purpose, status) of every transaction record of ``task_id``, oldest first."""
        rows = self.query("SELECT purpose, status FROM txs WHERE task_id = ? ORDER BY tx_id",
                          (task_id,))
        return [(str(p), str(s)) for p, s in rows]

    async def wait(self, what: Callable[[], bool], process: subprocess.Popen[bytes] | None,
                   timeout_s: float, label: str = "condition") -> None:
        """Poll ``what`` until true; fails (with the log's tail) on timeout or when
        ``process`` exits first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not what():
            if process is not None and process.poll() is not None:
                raise AssertionError(f"daemon exited rc={process.returncode} before {label}\n"
                                     + self.log())
            if loop.time() > deadline:
                raise AssertionError(f"{label} not reached in {timeout_s} s\n" + self.log())
            await asyncio.sleep(0.05)

    async def wait_exit(self, process: subprocess.Popen[bytes], timeout_s: float,
                        label: str = "exit") -> int:
        """The exit status of ``process`` (negative: killed by that signal)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while process.poll() is None:
            if loop.time() > deadline:
                kill(process)
                raise AssertionError(f"daemon still running after {timeout_s} s ({label})\n"
                                     + self.log())
            await asyncio.sleep(0.05)
        return process.returncode


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL and reap (no-op when it already exited)."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(10)


def stop(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """SIGTERM (a clean shutdown) and the exit status; SIGKILL when it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            kill(process)
    return process.returncode


async def own_tx_pending(rpc: RpcPool, address: str) -> bool:
    """The account has a transaction in the mempool (sent, not mined)."""
    return await rpc.get_nonce(address, "pending") > await rpc.get_nonce(address, "latest")


@pytest.fixture(scope="session")
def miner_process() -> type[MinerProcess]:
    """The :class:`MinerProcess` class (test modules cannot import conftest)."""
    return MinerProcess


@pytest.fixture(scope="session")
def processes() -> SimpleNamespace:
    """Helpers on ``manta-miner run`` processes: ``kill``, ``stop``, ``own_tx_pending``."""
    return SimpleNamespace(kill=kill, stop=stop, own_tx_pending=own_tx_pending)
