"""Shared parts of the end-to-end tests of the failure paths: a devnet with keystores, real
``manta-miner run`` daemons and the ``manta`` CLI (both started by :mod:`node.demo.processes`,
the code the demo runs), and what the tests read back: a daemon's phase from its SQLite
store, its log, and the exact wei an account paid for gas."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.chain.market import TaskMarket
from node.demo.processes import ClientCli, MinerProcess, start_miner, tail
from node.devnet import Devnet, DevnetConfig, terminate_group
from node.documents.spec import (
    Constraint,
    DatasetRef,
    DistributedSpec,
    PhaseBudget,
    SearchSpaceSpec,
    TaskSpec,
    TrainingBudget,
)

ROOT = Path(__file__).resolve().parents[2]
CLIENT, MINERS, ARBITER = 1, (2, 3), 4
POLL_S = 0.2


def needs_tools() -> None:
    """Skip unless anvil (npm ci) and the console scripts (pip install -e .) are there."""
    if not (ROOT / "node_modules" / ".bin" / "anvil").exists():
        pytest.skip("anvil not installed (npm ci)")
    if not (Path(sys.executable).parent / "manta-miner").exists():
        pytest.skip("console scripts not installed (pip install -e .)")


def tiny_spec(dataset: DatasetRef | None = None, full_epochs: int = 1) -> TaskSpec:
    """A classification task that trains and searches in seconds on one CPU thread."""
    return TaskSpec(
        kind="classification", dataset=dataset or DatasetRef(name="synthetic"), seed=5,
        search_space=SearchSpaceSpec(kernel_sizes=(3, 5), expand_ratios=(3.0, 4.0),
                                     depths=(1, 2), resolutions=(20, 24, 28)),
        training=TrainingBudget(batch_size=64, phases=(
            PhaseBudget(name="full", epochs=full_epochs, lr=0.05),
            PhaseBudget(name="kernel", epochs=1, lr=0.02, subnets_per_step=2))),
        distributed=DistributedSpec(subnets_per_step=2),
        constraint=Constraint(max_flops=4_000_000))


@dataclass
class Market:
    """A devnet, its market (read-only), the client's CLI and the daemons started so far."""

    devnet: Devnet
    folder: Path
    market: TaskMarket
    client: ClientCli
    start_block: int
    miners: list[MinerProcess]

    def address(self, index: int) -> str:
        return self.devnet.accounts[index].address

    async def start_miners(self, indices: Sequence[int] = MINERS,
                           policy: Mapping[str, object] | None = None,
                           env: Mapping[str, str] | None = None) -> list[MinerProcess]:
        """``manta-miner run`` for each devnet account (trusting the devnet's arbiter, with
        more ``policy`` settings and ``env``); returns once all are registered."""
        started = [start_miner(self.folder / f"miner{i}", self.devnet, i, policy=policy, env=env)
                   for i in indices]
        self.miners.extend(started)

        async def registered() -> bool:
            urls = [await self.market.endpoint_of(m.address) for m in started]
            return urls == [m.url for m in started]

        await self.until(registered, 120, "miner registrations")
        return started

    async def until(self, what: Callable[[], Awaitable[bool] | bool], timeout_s: float,
                    label: str, alive: Sequence[MinerProcess] | None = None) -> None:
        """Poll ``what`` until true; fail at once (with its log) if a daemon in ``alive``
        (default: every one started) exits."""
        deadline = time.monotonic() + timeout_s
        watched = self.miners if alive is None else alive
        while True:
            outcome = what()
            if await outcome if isinstance(outcome, Awaitable) else outcome:
                return
            for miner in watched:
                assert miner.process.poll() is None, (
                    f"daemon {miner.address} exited with {miner.process.returncode} while "
                    f"waiting for {label}: {tail(miner.log, 3000)}")
            assert time.monotonic() < deadline, (
                f"no {label} within {timeout_s} s; logs: "
                + " | ".join(tail(m.log, 1500) for m in watched))
            await asyncio.sleep(POLL_S)

    async def warp(self, seconds: int) -> None:
        """Move chain time forward and mine a block."""
        await self.devnet.rpc.request("evm_increaseTime", [seconds])
        await self.devnet.rpc.request("evm_mine", [])

    async def balance(self, index: int) -> int:
        return await self.devnet.rpc.get_balance(self.address(index))

    async def gas_paid_wei(self, index: int) -> int:
        """Wei account ``index`` paid for gas in every transaction since the market opened."""
        return await gas_paid_wei(self.devnet, self.address(index), self.start_block)


@asynccontextmanager
async def open_market(folder: Path) -> AsyncIterator[Market]:
    """A fresh devnet (keystores, deployment file) in ``folder``; every daemon started
    through the :class:`Market` is stopped on the way out."""
    needs_tools()
    config = DevnetConfig(anvil_path=ROOT / "node_modules" / ".bin" / "anvil",
                          folder=folder / "net", deployment_file=folder / "deployment.json",
                          write_keystores=True)
    async with await Devnet.start(config) as devnet:
        market = await TaskMarket.create(devnet.rpc, devnet.deployment.task_market)
        head = int(await devnet.rpc.request("eth_blockNumber"), 16)
        env = Market(devnet, folder, market, ClientCli(devnet, CLIENT, folder / "specs"),
                     head + 1, [])
        try:
            yield env
        finally:
            for miner in env.miners:
                await asyncio.to_thread(terminate_group, miner.process, 20.0)


async def gas_paid_wei(devnet: Devnet, address: str, from_block: int) -> int:
    """Σ gasUsed × effectiveGasPrice over the transactions ``address`` sent since
    ``from_block``: with the contract's transfers, accounts for its balance to the wei."""
    head = int(await devnet.rpc.request("eth_blockNumber"), 16)
    paid = 0
    for number in range(from_block, head + 1):
        block = await devnet.rpc.request("eth_getBlockByNumber", [hex(number), True])
        for tx in block["transactions"]:
            if tx["from"].lower() == address.lower():
                receipt = await devnet.rpc.request("eth_getTransactionReceipt", [tx["hash"]])
                paid += int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)
    return paid


def kill_for_good(miner: MinerProcess) -> None:
    """SIGKILL the daemon and its training runner (its whole process group): a rig gone."""
    os.killpg(miner.process.pid, signal.SIGKILL)
    miner.process.wait(10)


def _query(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return list(conn.execute(sql, args))
    except sqlite3.OperationalError:  # the daemon has not created its tables yet
        return []
    finally:
        conn.close()


def phase_of(miner: MinerProcess, task_id: int) -> tuple[str, str] | None:
    """(phase, reason) of ``task_id`` in the daemon's store, or None before it saw the task."""
    rows = _query(miner.data_dir / "state.sqlite",
                  "SELECT phase, reason FROM tasks WHERE task_id = ?", task_id)
    return (str(rows[0][0]), str(rows[0][1])) if rows else None


def phase_name(miner: MinerProcess, task_id: int) -> str | None:
    found = phase_of(miner, task_id)
    return found[0] if found is not None else None


def txs_of(miner: MinerProcess, task_id: int) -> list[tuple[str, str]]:
    """(purpose, status) of every transaction the daemon recorded for ``task_id``."""
    return [(str(p), str(s)) for p, s in _query(
        miner.data_dir / "state.sqlite",
        "SELECT purpose, status FROM txs WHERE task_id = ? ORDER BY tx_id", task_id)]


def _progress(miner: MinerProcess, task_id: int) -> list[dict[str, object]]:
    path = miner.data_dir / "tasks" / str(task_id) / "progress.jsonl"
    if not path.exists():
        return []
    complete = path.read_text(errors="replace").split("\n")[:-1]  # the runner may be writing
    return [json.loads(x) for x in complete if x.strip()]


def progress_steps(miner: MinerProcess, task_id: int) -> list[int]:
    """The step of every training-progress line the daemon's runner wrote."""
    return [int(str(x["step"])) for x in _progress(miner, task_id) if "total_steps" in x]


def total_steps(miner: MinerProcess, task_id: int) -> int | None:
    found = [int(str(x["total_steps"])) for x in _progress(miner, task_id)
             if "total_steps" in x]
    return found[-1] if found else None


def log_of(miner: MinerProcess) -> str:
    return miner.log.read_text(errors="replace")


def live_runners(miner: MinerProcess) -> list[int]:
    """Pids of live training runners of this daemon: those named in its job folders'
    ``runner.pid`` (a runner handed its job on standby has no job folder in its command line)."""
    found = []
    for pid_file in (miner.data_dir / "tasks").glob("*/runner.pid"):
        try:
            pid = int(pid_file.read_text().strip())
            proc = Path("/proc") / str(pid)
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if state not in {"Z", "X"} and "miner.daemon.jobrunner" in cmdline:
            found.append(pid)
    return found
