"""Chaos: ``manta-miner run`` (real process, real training subprocess) is SIGKILLed at every
crash point of :mod:`miner.daemon.crashpoints` and, for the three transactions that can sit
in a mempool, while its transaction waits there; after the last restart every task ends
SETTLED and WITHDRAWN with exactly one claim and one submission, and the money adds up.

TaskMarket v2 pushes the payouts inside ``accept``/``finalize``: a daemon sends a
``withdraw`` only for a credit that a failed push left behind (``PaymentDeferred``). So the
scenarios that crash around the withdrawal (``withdraw.*``, ``mempool:withdraw``) make the
push fail: the miner's address carries code (``anvil_setCode``) that refuses a payment sent
with less than 32768 gas, like a contract wallet whose receive needs more than the 30000 the
contract forwards with a push. The accept then credits the reward and the bond, and the
daemon must withdraw them exactly once (``withdraw`` forwards all its gas). The scenario
whose client stays silent gets its payout pushed inside the miner's own ``finalize`` and
sends no withdraw.

A *scenario* is one task's life with several kills in order: each run of the daemon is
armed with the next step's crash point (``MANTA_CRASH_AT``) and must die by SIGKILL there;
a ``mempool:<purpose>`` step stops the chain's automine before the run, so that the
transaction stays pending, kills the daemon once it is, and mines it only after the next
run has logged that it waits for it. One training per scenario keeps the module short;
every crash point appears in a scenario (checked below). After each kill the
state is checked to be the one the point names (intent open, receipt not recorded, …), so
a kill that landed elsewhere fails the test.

The client is the market facade: it accepts (even while the daemon is down), or stays
silent so that the miner finalizes after the review window. Killed mid-training, the daemon
leaves its training subprocess behind: that orphan must end by itself (its stdin closed),
and the runner of the restarted daemon resumes from the last checkpoint (one restart in the
step sequence, not from step 1).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio

from miner.daemon.crashpoints import POINTS
from node.chain.market import TaskMarket
from node.chain.models import ZERO_ADDRESS, PaymentDeferred, TaskParams, TaskState
from node.devnet import Devnet
from node.documents.spec import (
    Constraint,
    DatasetRef,
    PhaseBudget,
    SearchSpaceSpec,
    TaskSpec,
    TrainingBudget,
)
from tests.integration.daemon.support import ARBITER

pytestmark = [pytest.mark.anvil, pytest.mark.timeout(300), pytest.mark.usefixtures("watchdog")]
MINER = 6
REWARD, BOND = 10**17, 10**15
REVIEW_S = 600
# a wallet that needs more gas than a push forwards: GAS PUSH2 0x8000 GT PUSH1 9 JUMPI STOP
# JUMPDEST PUSH1 0 PUSH1 0 REVERT (reverts when called with less than 32768 gas)
GREEDY_WALLET = "0x5a61800011600957005b60006000fd"
RUN_TIMEOUT_S = 90.0
# points hit many times: crash on the n-th hit (a step after the first checkpoint; the
# third measured sub-network of the search)
AFTER = {"runner.training": "6", "runner.searching": "3"}


@dataclass(frozen=True)
class Scenario:
    steps: tuple[str, ...]  # crash points, or "mempool:<purpose>"
    client_accepts: bool = True  # False: silent, the miner finalizes after the review window
    # the accept's push to the miner fails (its wallet refuses payments meanwhile): the pay
    # is credited, and the daemon withdraws it (the only way to a withdraw in v2)
    payment_deferred: bool = False


SCENARIOS = {
    "claim-and-intents": Scenario((
        "claim.before_send", "claim.before_record", "group.formed", "result.before_sign",
        "submit.before_send", "submit.before_record", "withdraw.before_send",
        "mempool:withdraw"), payment_deferred=True),
    "mempool-and-subprocess": Scenario((
        "mempool:claim", "job.spawned", "runner.training", "result.signed", "mempool:submit",
        "withdraw.before_record"), payment_deferred=True),
    "search-and-finalize": Scenario((
        "runner.searching", "result.submitted", "finalize.before_send",
        "finalize.before_record"), client_accepts=False),
}


def spec(seed: int) -> TaskSpec:
    """The tiniest job: 7 steps of one phase, then the leader's search and export."""
    return TaskSpec(
        kind="classification", dataset=DatasetRef(name="synthetic"), seed=seed,
        search_space=SearchSpaceSpec(kernel_sizes=(3, 5), expand_ratios=(3.0, 4.0),
                                     depths=(1, 2), resolutions=(20, 24)),
        training=TrainingBudget(batch_size=64, phases=(
            PhaseBudget(name="full", epochs=1, lr=0.05),)),
        constraint=Constraint(max_flops=5_000_000))


@dataclass
class Chaos:
    devnet: Devnet
    client: TaskMarket
    miner: Any  # MinerProcess (conftest)
    procs: SimpleNamespace
    address: str

    async def rpc(self, method: str, *params: Any) -> Any:
        return await self.devnet.rpc.request(method, params)

    async def post(self, seed: int) -> int:
        task_spec = spec(seed)
        path = self.miner.folder / f"spec-{seed}.json"
        path.write_bytes(task_spec.canonical())
        posted = await self.client.post_task(TaskParams(
            reward_wei=REWARD, bond_wei=BOND, slots=1, claim_window_s=600, work_window_s=7200,
            review_window_s=REVIEW_S, arbitration_window_s=60,
            arbiter=self.devnet.accounts[ARBITER].address, spec_hash=task_spec.spec_hash(),
            validation_hash="0x" + "c4" * 32), path.as_uri())
        return posted.task_id

    async def gas_spent_wei(self, first_block: int, last_block: int) -> tuple[int, int]:
        """(transactions, wei of gas) the miner paid in blocks ``first..last``."""
        count, wei = 0, 0
        for number in range(first_block, last_block + 1):
            block = await self.rpc("eth_getBlockByNumber", hex(number), True)
            for tx in block["transactions"]:
                if tx["from"].lower() == self.address.lower():
                    receipt = await self.rpc("eth_getTransactionReceipt", tx["hash"])
                    count += 1
                    wei += int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)
        return count, wei


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chaos(devnet: Devnet, miner_process: Any, processes: SimpleNamespace,
                tmp_path_factory: pytest.TempPathFactory) -> Chaos:
    miner, client, _ = await miner_process.registered(
        tmp_path_factory.mktemp("chaos"), devnet, MINER, max_tasks=8)
    return Chaos(devnet, client, miner, processes, devnet.accounts[MINER].address)


def progress(chaos: Chaos, task_id: int) -> list[dict[str, Any]]:
    path = chaos.miner.task_dir(task_id) / "progress.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def searched(lines: list[dict[str, Any]]) -> bool:
    return any("subnets_measured" in x for x in lines)


async def landed_at(chaos: Chaos, point: str, task_id: int) -> bool:
    """Whether the state after a kill is the one ``point`` names (see ``POINTS``)."""
    miner, market = chaos.miner, chaos.client
    purpose, _, moment = point.partition(".")
    if moment in ("before_send", "before_record"):
        open_intent = (purpose, "intent") in miner.txs(task_id)
        if purpose == "claim":
            on_chain = chaos.address in await market.members_of(task_id)
        elif purpose == "withdraw":
            on_chain = await market.credit_of(chaos.address, ZERO_ADDRESS) == 0
        else:
            state = await market.state_of(task_id)
            on_chain = state is (TaskState.SUBMITTED if purpose == "submit" else TaskState.SETTLED)
        return open_intent and on_chain == (moment == "before_record")
    lines = progress(chaos, task_id)
    checks: dict[str, Callable[[], bool]] = {
        "group.formed": lambda: miner.phase(task_id) == "formed"
        and not (miner.task_dir(task_id) / "job.json").exists(),
        "job.spawned": lambda: (miner.task_dir(task_id) / "job.json").exists(),
        "runner.training": lambda: bool(lines)
        and (miner.task_dir(task_id) / "run" / "checkpoints").exists()
        and not (miner.task_dir(task_id) / "export").exists(),
        "runner.searching": lambda: searched(lines)
        and not (miner.task_dir(task_id) / "export").exists(),
        "result.before_sign": lambda: miner.phase(task_id) == "formed"
        and (miner.task_dir(task_id) / "result.json").exists(),
        "result.signed": lambda: miner.phase(task_id) == "signing"
        and not any(p == "submit" for p, _ in miner.txs(task_id)),
        "result.submitted": lambda: miner.phase(task_id) == "submitted",
    }
    return checks[point]()


def orphan_pids(chaos: Chaos, task_id: int) -> list[int]:
    """Pids of the training subprocesses the daemon logged for ``task_id``."""
    marker = f"training started task={task_id} "
    return [int(line.rsplit("pid=", 1)[1]) for line in chaos.miner.log(10**7).splitlines()
            if marker in line]


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


async def gone_at(pids: list[int], timeout_s: float = 30.0) -> float:
    """The wall time (s) at which none of ``pids`` runs any more; fails after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while any(alive(p) for p in pids):
        assert loop.time() < deadline, f"orphaned runners {pids} still alive"
        await asyncio.sleep(0.02)
    return time.time()


class Driver:
    """Runs one scenario's daemon processes and plays the client."""

    def __init__(self, chaos: Chaos, task_id: int, scenario: Scenario) -> None:
        self.chaos = chaos
        self.task_id = task_id
        self.scenario = scenario
        self.client_done = False
        self.mine_after_restart: str | None = None  # the purpose whose tx waits in the mempool

    async def client_turn(self) -> None:
        """Once the result is submitted: accept it, or let the review window pass."""
        if self.client_done or self.chaos.miner.phase(self.task_id) != "submitted" \
                or await self.chaos.client.state_of(self.task_id) is not TaskState.SUBMITTED:
            return
        if self.scenario.client_accepts:
            await self.chaos.client.accept(self.task_id)
        else:
            await self.chaos.rpc("evm_increaseTime", REVIEW_S + 1)
            await self.chaos.rpc("evm_mine")
        self.client_done = True

    async def spawn(self, **env: str) -> subprocess.Popen[bytes]:
        log_size = len(self.chaos.miner.log(10**7))
        process = self.chaos.miner.spawn(**env)
        if self.mine_after_restart is not None:
            wanted = (f"own transaction pending; waiting for it "
                      f"purpose={self.mine_after_restart} task={self.task_id}")
            await self.chaos.miner.wait(lambda: wanted in self.chaos.miner.log(10**7)[log_size:],
                                        process, RUN_TIMEOUT_S, wanted)
            await self.chaos.rpc("evm_setAutomine", True)
            await self.chaos.rpc("evm_mine")
            self.mine_after_restart = None
        return process

    async def until(self, process: subprocess.Popen[bytes], done: Callable[[], Awaitable[bool]],
                    label: str) -> None:
        """Play the client while waiting for ``done`` (or for the process to exit)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RUN_TIMEOUT_S
        while process.poll() is None and not await done():
            if self.chaos.miner.phase(self.task_id) == "submitted" and self.mine_after_restart \
                    is None:
                await self.client_turn()
            assert loop.time() < deadline, f"{label}: timed out\n{self.chaos.miner.log()}"
            await asyncio.sleep(0.05)

    async def crash_at(self, point: str) -> None:
        env = {"MANTA_CRASH_AT": point}
        if point in AFTER:
            env["MANTA_CRASH_AFTER"] = AFTER[point]
        process = await self.spawn(**env)

        async def never() -> bool:
            return False

        await self.until(process, never, point)
        assert process.returncode == -9, f"{point}: rc={process.returncode}\n" \
                                         f"{self.chaos.miner.log()}"
        marker = self.chaos.miner.data_dir / f"crash-{point}.fired"
        assert marker.read_text().startswith(point)
        assert await landed_at(self.chaos, point, self.task_id), \
            f"{point}: killed elsewhere\n{self.chaos.miner.txs(self.task_id)}"

    async def kill_in_mempool(self, purpose: str) -> None:
        chaos = self.chaos
        await chaos.rpc("evm_setAutomine", False)
        process = await self.spawn()

        async def pending() -> bool:
            return await chaos.procs.own_tx_pending(chaos.devnet.rpc, chaos.address)

        await self.until(process, pending, f"mempool:{purpose}")
        chaos.procs.kill(process)
        assert process.returncode == -9
        statuses = [s for p, s in chaos.miner.txs(self.task_id) if p == purpose]
        assert statuses and statuses[-1] in ("intent", "sent"), statuses
        self.mine_after_restart = purpose

    async def finish(self) -> None:
        process = await self.spawn()

        async def withdrawn() -> bool:
            return self.chaos.miner.phase(self.task_id) == "withdrawn"

        try:
            await self.until(process, withdrawn, "withdrawn")
        finally:
            rc = self.chaos.procs.stop(process)
        assert rc == 0, self.chaos.miner.log()


def test_every_crash_point_is_in_a_scenario() -> None:
    points = [s for sc in SCENARIOS.values() for s in sc.steps if not s.startswith("mempool:")]
    assert set(points) == set(POINTS)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_chaos_scenario_settles_once(chaos: Chaos, name: str) -> None:
    scenario = SCENARIOS[name]
    rpc, market = chaos.devnet.rpc, chaos.client
    wallet_before = await rpc.get_balance(chaos.address)
    escrow_before = await rpc.get_balance(market.address)
    task_id = await chaos.post(seed=list(SCENARIOS).index(name) + 11)
    first_block = await rpc.block_number()
    driver = Driver(chaos, task_id, scenario)
    orphans: asyncio.Task[float] | None = None
    if scenario.payment_deferred:
        await chaos.rpc("anvil_setCode", chaos.address, GREEDY_WALLET)
    try:
        for step in scenario.steps:
            if step.startswith("mempool:"):
                await driver.kill_in_mempool(step.removeprefix("mempool:"))
            else:
                await driver.crash_at(step)
            if step == "runner.training":  # the daemon is restarted at once: a race
                orphans = asyncio.create_task(gone_at(orphan_pids(chaos, task_id)))
        await driver.finish()
    finally:
        await chaos.rpc("evm_setAutomine", True)
        await chaos.rpc("anvil_setCode", chaos.address, "0x")
        if orphans is not None and not orphans.done():
            orphans.cancel()

    # on chain: settled once, one claim, one result, the miner paid once: pushed inside the
    # settling transaction, or credited (a refused push) and withdrawn once
    view = await market.get_task(task_id)
    assert view.state is TaskState.SETTLED and view.miners_paid and view.signed_slots == 1
    assert len(await market.get_task_claimed(task_id=task_id)) == 1
    assert len(await market.get_result_submitted(task_id=task_id)) == 1
    settled = await market.get_task_settled(task_id=task_id)
    assert [s.miners_paid for s in settled] == [True]
    last_block = await rpc.block_number()
    deferred = await market.get_events(PaymentDeferred, first_block, last_block,
                                       chaos.address)  # (account, token) indexed
    assert [d.amount_wei for d in deferred] == ([REWARD + BOND] if scenario.payment_deferred
                                                else [])
    withdrawn = await market.get_withdrawn(first_block, last_block, account=chaos.address)
    assert [w.amount_wei for w in withdrawn] == [d.amount_wei for d in deferred]
    # the wallet: reward in, bond out and back, gas for exactly the transactions expected:
    # claim, submit, and finalize (a silent client) or withdraw (a deferred payment)
    sent, gas_wei = await chaos.gas_spent_wei(first_block, last_block)
    assert sent == 2 + (not scenario.client_accepts) + scenario.payment_deferred
    assert await rpc.get_balance(chaos.address) - wallet_before == REWARD - gas_wei
    assert await market.credit_of(chaos.address, ZERO_ADDRESS) == 0
    assert await rpc.get_balance(market.address) == escrow_before  # nothing left in escrow
    # in the store: one mined record per purpose; every other attempt abandoned, not sent
    txs = chaos.miner.txs(task_id)
    mined = sorted(p for p, s in txs if s == "mined")
    expected = (["claim", "submit"] + ([] if scenario.client_accepts else ["finalize"])
                + (["withdraw"] if scenario.payment_deferred else []))
    assert mined == sorted(expected), txs
    assert all(s in ("mined", "abandoned") for _, s in txs), txs
    assert chaos.miner.phase(task_id) == "withdrawn"
    lines = progress(chaos, task_id)
    if orphans is not None:
        trained = [x for x in lines if "total_steps" in x]
        steps = [x["step"] for x in trained]
        drops = [i for i in range(1, len(steps)) if steps[i] <= steps[i - 1]]
        assert len(drops) == 1 and steps[drops[0]] > 1, steps  # resumed from a checkpoint
        # the orphan (its stdin closed with its daemon) was gone before the new runner
        # trained its first step: never two trainers on one job folder
        assert await orphans < trained[drops[0]]["time_s"]
    if "runner.searching" in scenario.steps:
        assert [x.get("subnets_measured") for x in lines].count(1) == 2  # searched again
