"""The daemon's claim path on anvil: a posted task is claimed exactly once — also across a
restart, a crash between intent and send, and a crash after the send — and refused with a
reason when the spec is unusable or of a kind not served, or when the task names an arbiter
the miner does not trust (or a review window too short to answer a result it was left out
of)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from miner.daemon.daemon import DaemonDeps, MinerDaemon
from miner.daemon.metrics import MinerMetrics
from miner.daemon.settings import MinerSettings, load_miner_settings
from miner.daemon.specs import fetch_spec
from miner.daemon.store import StateStore, TaskPhase, TaskRecord, TxStatus
from node.chain.market import TaskMarket
from node.chain.models import TaskParams
from node.devnet import Devnet, DevnetConfig
from node.documents.spec import Constraint, DatasetRef, SearchSpaceSpec, TaskSpec
from tests.daemon_support import phase, until

pytestmark = [pytest.mark.anvil, pytest.mark.timeout(120), pytest.mark.usefixtures("watchdog"),
              pytest.mark.asyncio(loop_scope="module")]
ROOT = Path(__file__).resolve().parents[3]
CLIENT, MINER, ARBITER = 0, 1, 9


@dataclass
class Chain:
    devnet: Devnet
    client: TaskMarket
    miner: TaskMarket
    folder: Path

    async def post(self, spec: TaskSpec | None = None, *, raw: bytes | None = None,
                   **params: Any) -> tuple[int, int]:
        """Post a task with ``spec`` served from a file; returns (task id, its block)."""
        spec = spec or tiny_spec()
        body = raw if raw is not None else spec.canonical()
        path = self.folder / f"spec-{os.urandom(4).hex()}.json"
        path.write_bytes(body)
        fields: dict[str, Any] = {
            "reward_wei": 10**17, "bond_wei": 10**15, "slots": 1, "claim_window_s": 600,
            "work_window_s": 7200, "review_window_s": 600, "arbitration_window_s": 600,
            "arbiter": self.devnet.accounts[ARBITER].address, "spec_hash": spec.spec_hash(),
            "validation_hash": "0x" + "77" * 32,
        }
        fields.update(params)
        posted = await self.client.post_task(TaskParams(**fields), path.as_uri())
        return posted.task_id, posted.receipt.block_number


def tiny_spec(kind: str = "classification") -> TaskSpec:
    return TaskSpec(
        kind=kind, dataset=DatasetRef(name="digits" if kind == "classification"
                                      else "procedural-stereo"),
        search_space=SearchSpaceSpec(resolutions=(32,)), constraint=Constraint(max_flops=10**7),
        objective="max_accuracy" if kind == "classification" else "min_epe",
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chain(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Chain]:
    config = DevnetConfig(anvil_path=ROOT / "node_modules" / ".bin" / "anvil")
    if not config.anvil_path.exists():
        pytest.skip("anvil not installed (npm ci)")
    devnet = await Devnet.start(config)
    try:
        market = devnet.deployment.task_market
        client = await TaskMarket.create(devnet.rpc, market, await devnet.sender(CLIENT))
        miner = await TaskMarket.create(devnet.rpc, market, await devnet.sender(MINER))
        await miner.register("http://127.0.0.1:1")
        yield Chain(devnet, client, miner, tmp_path_factory.mktemp("specs"))
    finally:
        await devnet.stop()


@dataclass
class Running:
    daemon: MinerDaemon
    store: StateStore
    formed: list[TaskRecord]


def settings_for(data_dir: Path, devnet: Devnet, policy: dict[str, Any] | None = None,
                 **overrides: Any) -> MinerSettings:
    """Fast polls, trusting the tasks' arbiter (plus ``policy``)."""
    trusted = {"arbiters": [devnet.accounts[ARBITER].address], **(policy or {})}
    return load_miner_settings(data_dir=str(data_dir), indexer={"poll_interval_s": 0.05},
                               policy=trusted, **overrides)


async def start_daemon(chain: Chain, data_dir: Path, start_block: int,
                       settings: MinerSettings | None = None,
                       pending_wait_s: float = 5.0) -> Running:
    store = StateStore.open(data_dir / "state.sqlite")
    formed: list[TaskRecord] = []

    async def hook(record: TaskRecord) -> None:
        formed.append(record)

    deps = DaemonDeps(rpc=chain.devnet.rpc, market=chain.miner, store=store,
                      settings=settings or settings_for(data_dir, chain.devnet),
                      fetch_spec=fetch_spec, metrics=MinerMetrics(),
                      start_block=start_block, on_group_formed=hook,
                      pending_wait_s=pending_wait_s)
    daemon = MinerDaemon(deps)
    await daemon.start()
    return Running(daemon, store, formed)


async def stop_daemon(running: Running) -> None:
    await running.daemon.shutdown()
    running.store.close()


async def nonce(chain: Chain) -> int:
    return await chain.devnet.rpc.get_nonce(chain.miner.sender.address, "latest")


async def test_claims_once_and_not_again_after_restart(chain: Chain, tmp_path: Path) -> None:
    task_id, block = await chain.post()
    running = await start_daemon(chain, tmp_path, block)
    await until(lambda: phase(running.store, task_id) is TaskPhase.FORMED, store=running.store)
    assert await chain.client.members_of(task_id) == [chain.miner.sender.address]
    (claim,) = running.store.claims()
    assert claim.status is TxStatus.MINED and claim.tx_hash and claim.task_id == task_id
    assert [(r.task_id, r.role, r.slot) for r in running.formed] == [(task_id, "leader", 0)]
    sent = await nonce(chain)
    await stop_daemon(running)

    again = await start_daemon(chain, tmp_path, block)  # same data dir: same cursor and store
    await asyncio.sleep(0.5)  # several indexer polls
    assert await nonce(chain) == sent and len(again.store.claims()) == 1
    assert phase(again.store, task_id) is TaskPhase.FORMED and again.formed == []
    await stop_daemon(again)


async def test_crash_between_intent_and_send(chain: Chain, tmp_path: Path) -> None:
    task_id, block = await chain.post()
    with StateStore.open(tmp_path / "state.sqlite") as store:  # what a killed daemon left
        store.record_task(task_id, "0x", TaskPhase.SEEN)
        store.set_phase(task_id, TaskPhase.CLAIMING)
        store.begin_tx("claim", task_id)
    before = await nonce(chain)
    running = await start_daemon(chain, tmp_path, block)
    await until(lambda: phase(running.store, task_id) is TaskPhase.FORMED, store=running.store)
    statuses = [c.status for c in running.store.claims()]
    assert statuses == [TxStatus.ABANDONED, TxStatus.MINED]
    assert await nonce(chain) == before + 1  # exactly one claim sent
    assert await chain.client.members_of(task_id) == [chain.miner.sender.address]
    await stop_daemon(running)


async def test_crash_after_send_is_not_resent(chain: Chain, tmp_path: Path) -> None:
    task_id, block = await chain.post(slots=2)
    with StateStore.open(tmp_path / "state.sqlite") as store:
        store.record_task(task_id, "0x", TaskPhase.SEEN)
        store.set_phase(task_id, TaskPhase.CLAIMING)
        store.begin_tx("claim", task_id)
    await chain.miner.claim(task_id)  # mined, but the daemon died before recording it
    before = await nonce(chain)
    running = await start_daemon(chain, tmp_path, block)
    await until(lambda: phase(running.store, task_id) is TaskPhase.CLAIMED, store=running.store)
    await asyncio.sleep(0.3)
    assert [c.status for c in running.store.claims()] == [TxStatus.MINED]
    assert await nonce(chain) == before
    await stop_daemon(running)


async def test_claim_still_pending_after_the_wait_is_not_resent(chain: Chain,
                                                                tmp_path: Path) -> None:
    """The claim a killed daemon sent is still in the mempool when the restarted daemon has
    waited for it: the intent stays open (no second claim behind it) until it is mined."""
    task_id, block = await chain.post()
    with StateStore.open(tmp_path / "state.sqlite") as store:
        store.record_task(task_id, "0x", TaskPhase.SEEN)
        store.set_phase(task_id, TaskPhase.CLAIMING)
        store.begin_tx("claim", task_id)
    rpc, address = chain.devnet.rpc, chain.miner.sender.address
    dead = await TaskMarket.create(rpc, chain.miner.address, await chain.devnet.sender(MINER))
    await rpc.request("evm_setAutomine", [False])
    try:
        sent = asyncio.create_task(dead.claim(task_id))  # the killed daemon's claim
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while await rpc.get_nonce(address, "pending") == await nonce(chain):
            assert loop.time() < deadline and not sent.done()
            await asyncio.sleep(0.02)
        running = await start_daemon(chain, tmp_path, block, pending_wait_s=0.3)
        await running.daemon.poll()
        assert [c.status for c in running.store.claims()] == [TxStatus.INTENT]
        assert await rpc.get_nonce(address, "pending") == await nonce(chain) + 1  # one claim
        assert phase(running.store, task_id) is TaskPhase.CLAIMING
    finally:
        await rpc.request("evm_setAutomine", [True])
        await rpc.request("evm_mine", [])
    await sent
    await running.daemon.poll()
    await until(lambda: phase(running.store, task_id) is TaskPhase.FORMED, store=running.store)
    assert [c.status for c in running.store.claims()] == [TxStatus.MINED]
    assert len(await chain.client.get_task_claimed(task_id=task_id)) == 1
    await stop_daemon(running)


async def test_refusals_spend_nothing(chain: Chain, tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    stereo, block = await chain.post(tiny_spec("stereo"))
    tampered, _ = await chain.post(raw=tiny_spec().canonical().replace(b"digits", b"Digits"))
    greedy, _ = await chain.post(reward_wei=1000, bond_wei=10)  # the bond floor: 1% of it
    # a bond worth more than the reward: this miner risks more than it can earn
    hostage, _ = await chain.post(bond_wei=2 * 10**17)
    # the cheapest sub-network of this space needs ~3.5 MMACs: no network can meet 1 MMAC
    impossible, _ = await chain.post(tiny_spec().model_copy(
        update={"constraint": Constraint(max_flops=10**6)}))
    latency, _ = await chain.post(tiny_spec().model_copy(
        update={"constraint": Constraint(max_latency_ms=5.0, device_profile="pixel7")}))
    tasks = (stereo, tampered, greedy, hostage, impossible, latency)
    before = await nonce(chain)
    floor = settings_for(tmp_path, chain.devnet, policy={"min_reward_wei_per_unit": 10**6})
    caplog.set_level("INFO", logger="miner.daemon.daemon")
    running = await start_daemon(chain, tmp_path, block, floor)
    await until(lambda: all(phase(running.store, t) is TaskPhase.REFUSED for t in tasks))
    reasons = {t: running.store.task(t).reason for t in tasks}
    assert reasons[stereo].startswith("kind_not_served")
    assert reasons[tampered].startswith("spec_unusable") and "hash mismatch" in reasons[tampered]
    assert reasons[greedy].startswith("reward_too_low")
    assert reasons[hostage].startswith("bond_out_of_proportion: 1 x 200000000000000000 wei")
    assert reasons[impossible].startswith("constraint_infeasible: max_flops 1000000")
    assert reasons[latency].startswith("constraint_unsupported")
    assert await nonce(chain) == before and running.store.claims() == []
    assert f"task={impossible} claim=False reason=constraint_infeasible" in caplog.text
    await stop_daemon(running)


async def test_group_forms_when_the_claim_window_ends_with_free_slots(chain: Chain,
                                                                     tmp_path: Path) -> None:
    task_id, block = await chain.post(slots=3, claim_window_s=60)
    running = await start_daemon(chain, tmp_path, block)
    await until(lambda: phase(running.store, task_id) is TaskPhase.CLAIMED, store=running.store)
    await running.daemon.poll()
    assert phase(running.store, task_id) is TaskPhase.CLAIMED  # window still open: no group
    await chain.devnet.rpc.request("evm_increaseTime", [61])
    await chain.devnet.rpc.request("evm_mine", [])
    await running.daemon.poll()  # RUNNING without a TaskStarted event
    record = running.store.task(task_id)
    assert record is not None and (record.phase, record.role) == (TaskPhase.FORMED, "leader")
    assert [r.task_id for r in running.formed] == [task_id]
    await running.daemon.poll()
    assert len(running.formed) == 1  # formed once
    await stop_daemon(running)


async def test_untrusted_arbiter_or_short_review_is_not_claimed(
        chain: Chain, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The arbiter could rule every bond of the group away and a review window shorter than
    ``min_review_window_s`` leaves no time to answer a result the miner was left out of:
    such tasks are refused before the spec is even fetched, and nothing is spent."""
    own_arbiter, block = await chain.post(arbiter=chain.devnet.accounts[CLIENT + 2].address)
    short_review, _ = await chain.post(review_window_s=59)
    trusted, _ = await chain.post()
    tasks = (own_arbiter, short_review)
    before = await nonce(chain)
    caplog.set_level("INFO", logger="miner.daemon.daemon")
    nobody = tmp_path / "nobody"
    # no allowlist at all (the default): every arbiter is refused, even the usual one
    untrusting = settings_for(nobody, chain.devnet, policy={"arbiters": []})
    running = await start_daemon(chain, nobody, block, untrusting)
    await until(lambda: all(phase(running.store, t) is TaskPhase.REFUSED
                            for t in (*tasks, trusted)), store=running.store)
    reasons = {t: running.store.task(t).reason for t in (*tasks, trusted)}  # type: ignore[union-attr]
    assert all(r.startswith("arbiter_not_trusted") for r in reasons.values()), reasons
    assert "no arbiter allowlist configured" in reasons[trusted]
    assert await nonce(chain) == before and running.store.claims() == []
    await stop_daemon(running)

    caplog.clear()
    running = await start_daemon(chain, tmp_path / "allowlist", block)
    await until(lambda: all(phase(running.store, t) is TaskPhase.REFUSED for t in tasks),
                store=running.store)
    reason = running.store.task(own_arbiter).reason  # type: ignore[union-attr]
    address = chain.devnet.accounts[CLIENT + 2].address
    assert reason == f"arbiter_not_trusted: {address} (not in policy.arbiters)"
    assert f"task={own_arbiter} claim=False reason=arbiter_not_trusted" in caplog.text
    assert running.store.task(short_review).reason.startswith(  # type: ignore[union-attr]
        "review_window_too_short: 59 s < 60 s")
    assert running.store.txs(own_arbiter) == [] and running.store.txs(short_review) == []
    # the task whose arbiter it trusts is claimed by this one (the other daemon refused it)
    await until(lambda: phase(running.store, trusted) is TaskPhase.FORMED, store=running.store)
    assert await chain.client.members_of(trusted) == [chain.miner.sender.address]
    await stop_daemon(running)


async def test_a_claim_that_loses_the_race_for_the_group_is_sent_again(
        chain: Chain, tmp_path: Path) -> None:
    """A claim names the group it joins: of two claims of one task mined in one block, the
    second reverts (it passed its pre-flight on the block before). The daemon's claim is
    made to lose that race (a rival's claim with a higher tip, same block); the task is
    still open, so the daemon claims again, with the group read anew, and gets slot 1."""
    task_id, block = await chain.post(slots=2)
    rpc, address = chain.devnet.rpc, chain.miner.sender.address
    rival = chain.devnet.accounts[CLIENT + 2].address
    before = await nonce(chain)
    await rpc.request("evm_setAutomine", [False])
    try:
        running = await start_daemon(chain, tmp_path, block)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while await rpc.get_nonce(address, "pending") == before:  # its claim waits to be mined
            assert loop.time() < deadline, running.store.txs()
            await asyncio.sleep(0.02)
        fee = hex(500 * 10**9)
        await rpc.request("eth_sendTransaction", [{  # an unlocked dev account: no pre-flight
            "from": rival, "to": chain.client.address, "value": hex(10**15), "gas": hex(500_000),
            "maxFeePerGas": fee, "maxPriorityFeePerGas": fee,
            "data": "0x" + chain.client.codec.encode_call("claim", task_id, []).hex()}])
        await rpc.request("evm_mine", [])  # the rival's claim first (higher tip), then ours
    finally:
        await rpc.request("evm_setAutomine", [True])
    await rpc.request("evm_mine", [])  # a second claim sent before automine was back on
    await until(lambda: phase(running.store, task_id) is TaskPhase.FORMED, store=running.store)
    assert await chain.client.members_of(task_id) == [rival, address]
    assert [c.status for c in running.store.claims()] == [TxStatus.FAILED, TxStatus.MINED]
    assert await nonce(chain) == before + 2  # the reverted claim and the one that got in
    record = running.store.task(task_id)
    assert record is not None and (record.role, record.slot) == ("member", 1)
    await stop_daemon(running)
