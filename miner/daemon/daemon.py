"""The event-driven loop of the miner: indexer events → claim policy → claim → group formed.

:class:`MinerDaemon` is driven by the chain layer's indexer (confirmed events, each once,
reorg removals). Per event:

- ``TaskPosted``: record the task (``seen``); a task already decided is skipped, so a
  re-delivered event changes nothing. Cheap refusals first (:func:`policy.precheck`), then
  the spec is fetched and hash-checked, then :func:`policy.decide`. A claim goes through
  :meth:`MinerDaemon.send_once` (intent record → send → outcome).
- ``TaskClaimed`` of this miner: the claim is mined (reconciles a record left open).
- ``TaskStarted`` (all slots filled) of a claimed task: the group is read from chain
  (``membersOf``), recorded with this miner's role, the task becomes ``formed`` and the
  ``on_group_formed`` hook runs (training is wired there by the lead). A task whose claim
  window ended with free slots starts without an event; :meth:`poll` finds those.
- ``ResultSubmitted`` / ``TaskSettled`` / ``TaskExpired`` / ``TaskCancelled``: phases.
- ``TaskDisputed`` of our result: logged; the task stays ``submitted`` (artifacts served)
  until the arbiter rules (``TaskSettled``) or stays silent (finalize, :mod:`settle`).

**Restart after ``kill -9``.** :meth:`MinerDaemon.start` first reconciles every open intent
with the chain (:func:`store.reconcile`): effect visible → mined; own transaction still in
the mempool → wait for it; neither → abandoned, and a claim is retried only if the task is
still OPEN with time left. Only then does the indexer resume from its cursor. So no
transaction is sent twice for the same (purpose, task). A send whose outcome is unknown
(receipt timeout, RPC down) leaves its record open; the periodic :meth:`poll` reconciles
it the same way; a transaction still pending after the wait keeps its record open (a second
one would queue behind it and revert). Handlers and the poll hold one lock, so they never
interleave. A published result or a settlement wakes the poll at once (``wake``), so the
submit and the withdrawal do not wait for the next period.

Handlers run inline on the indexer's task (a claim waits for its receipt before the next
event is read): simple and ordered; the claim latency is one block plus the spec fetch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from miner.daemon import policy
from miner.daemon.crashpoints import crash_point
from miner.daemon.errors import DaemonError
from miner.daemon.metrics import MinerMetrics
from miner.daemon.settings import MinerSettings
from miner.daemon.settle import STEP_PHASES, ResultDeps, ResultFlow
from miner.daemon.store import (
    Resolution,
    StateStore,
    TaskPhase,
    TaskRecord,
    TxRecord,
    reconcile,
)
from node.chain.errors import ChainError, RpcError, TxReverted, TxTimeout
from node.chain.indexer import Indexer, IndexerConfig, RpcBlockSource, decoding
from node.chain.market import TaskMarket
from node.chain.models import (
    ChainEvent,
    ResultSubmitted,
    TaskCancelled,
    TaskClaimed,
    TaskDisputed,
    TaskExpired,
    TaskPosted,
    TaskSettled,
    TaskStarted,
    TaskState,
    TxReceipt,
)
from node.chain.rpc import RpcPool
from node.documents.manifest import ResultManifest
from node.documents.spec import TaskSpec
from node.errors import MantaError

logger = logging.getLogger(__name__)

T = TypeVar("T")
SpecFetcher = Callable[[TaskPosted], Awaitable[TaskSpec]]
GroupHook = Callable[[TaskRecord], Awaitable[None]]
Check = Callable[[], Awaitable[bool]]
Send = Callable[[], Awaitable[TxReceipt]]
#: Claims of one task sent in all while each one reverts because another got in first.
CLAIM_RACE_ATTEMPTS = 5


@dataclass(frozen=True)
class DaemonDeps:
    """What the loop uses; made at the entry point (``manta-miner run``) or by a test.

    ``on_group_formed`` runs on the event path under the daemon's lock: it must start the
    training (a subprocess, owned by a supervisor) and return, not train.
    """

    rpc: RpcPool
    market: TaskMarket  # with this miner's sender
    store: StateStore
    settings: MinerSettings
    fetch_spec: SpecFetcher
    metrics: MinerMetrics
    start_block: int = 0
    on_group_formed: GroupHook | None = None
    result: ResultDeps | None = None  # None: the daemon stops at "formed" (claim path only)
    pending_wait_s: float = 60.0


class MinerDaemon:
    """One miner's loop (see the module docstring); ``await start()`` / ``await shutdown()``."""

    def __init__(self, deps: DaemonDeps) -> None:
        self._d = deps
        self.address = deps.market.sender.address
        self._indexer: Indexer | None = None
        # Handlers (indexer task) and the periodic poll (run_until_stopped) change state one
        # at a time, so a group is never formed twice and recovery never races a live send.
        self._lock = asyncio.Lock()
        self.flow = (ResultFlow(deps.result, deps.market, deps.store, self.send_once)
                     if deps.result is not None else None)
        # Set when a result step can run now (a result was published, a task settled), so the
        # run loop polls at once instead of at its next period.
        self.wake = asyncio.Event()

    # ---- plumbing ------------------------------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.to_thread(fn, *args)

    async def chain_now(self) -> int:
        """The latest block's timestamp: deadlines are chain time, not wall time."""
        return int((await self._d.rpc.get_block("latest"))["timestamp"])

    async def _own_tx_pending(self) -> bool:
        rpc = self._d.rpc
        pending = await rpc.get_nonce(self.address, "pending")
        return pending > await rpc.get_nonce(self.address, "latest")

    # ---- sending exactly once --------------------------------------------------------------

    async def send_once(self, purpose: str, task_id: int, send: Send) -> TxReceipt | None:
        """Send ``purpose`` for ``task_id`` unless a live record exists (then None).

        A revert in the pre-flight marks the record failed (nothing was spent) and re-raises;
        a timeout leaves it open for :meth:`recover` (it may still be mined).
        """
        record, fresh = await self._db(self._d.store.begin_tx, purpose, task_id)
        if not fresh:
            logger.info("not resending purpose=%s task=%d status=%s", purpose, task_id,
                        record.status.value)
            return None
        crash_point(f"{purpose}.before_send")
        try:
            receipt = await send()
        except (TxTimeout, RpcError):
            self._d.metrics.txs.inc(purpose=purpose, outcome="unknown")
            raise  # it may have been sent: the record stays open for recover()
        except MantaError as exc:
            await self._db(self._d.store.mark_failed, record.tx_id, str(exc)[:500])
            self._d.metrics.txs.inc(purpose=purpose, outcome="failed")
            raise
        crash_point(f"{purpose}.before_record")
        tx_hash = "0x" + receipt.tx_hash.hex()
        await self._db(self._d.store.mark_mined, record.tx_id, tx_hash, receipt.block_number)
        self._d.metrics.txs.inc(purpose=purpose, outcome="mined")
        logger.info("tx mined purpose=%s task=%d hash=%s block=%d", purpose, task_id, tx_hash,
                    receipt.block_number)
        return receipt

    async def _claim_done(self, task_id: int) -> bool:
        members = await self._d.market.members_of(task_id)
        return self.address.lower() in (m.lower() for m in members)

    async def claim(self, task_id: int) -> None:
        """Claim with an intent record; the phase follows the outcome.

        A claim names the group it joins, so of the claims of one task mined in one block
        (miners answering the same ``TaskPosted``) only the first gets in: the others passed
        the pre-flight on the block before and revert. A claim that reverted while the task
        is still open to this miner (its record failed: nothing of it is on chain) is sent
        again with the group read anew, up to :data:`CLAIM_RACE_ATTEMPTS` claims in all."""
        store = self._d.store
        await self._db(store.set_phase, task_id, TaskPhase.CLAIMING, "")
        gas_cap = self._d.settings.tx.gas_cap
        for attempt in range(1, CLAIM_RACE_ATTEMPTS + 1):
            try:
                receipt = await self.send_once(
                    "claim", task_id, lambda: self._d.market.claim(task_id, gas_cap))
            except (TxTimeout, RpcError) as exc:
                logger.warning("claim outcome unknown, will reconcile task=%d error=%s",
                               task_id, exc)
                return
            except TxReverted as exc:  # mined and reverted: its gas is spent
                if attempt < CLAIM_RACE_ATTEMPTS and await self._still_claimable(task_id):
                    logger.info("claim reverted (another claim got in first); claiming again "
                                "task=%d attempt=%d", task_id, attempt)
                    continue
                logger.warning("claim reverted task=%d error=%s", task_id, exc)
                await self._db(store.set_phase, task_id, TaskPhase.FAILED, f"claim failed: {exc}")
                return
            except ChainError as exc:  # a pre-flight revert, too little money, gas cap: not sent
                logger.warning("claim not sent task=%d error=%s", task_id, exc)
                await self._db(store.set_phase, task_id, TaskPhase.FAILED, f"claim failed: {exc}")
                return
            if receipt is not None:
                await self._db(store.set_phase, task_id, TaskPhase.CLAIMED, "")
            break
        await self._update_active()

    async def _still_claimable(self, task_id: int) -> bool:
        """OPEN, inside its claim window, and this miner not in its group."""
        try:
            view = await self._d.market.get_task(task_id)
            if view.state is not TaskState.OPEN or view.claim_deadline < await self.chain_now():
                return False
            return not await self._claim_done(task_id)
        except ChainError:
            return False

    # ---- recovery ---------------------------------------------------------------------------

    async def recover(self, wait_s: float | None = None) -> None:
        """Reconcile every open intent with the chain (run before the indexer resumes).

        An own transaction still in the mempool is waited for up to ``wait_s`` (default
        ``pending_wait_s``); if it is still there, the intent stays open for the next call:
        a second transaction behind it would only be mined after it, and revert.
        """
        wait_s = self._d.pending_wait_s if wait_s is None else wait_s
        for record in await self._db(self._d.store.open_txs):
            if record.purpose == "claim":
                await self._recover_claim(record, wait_s)
            elif self.flow is not None:
                resolution = await self.flow.recover(record, await self._own_tx_pending())
                if resolution is Resolution.WAIT:
                    pending = await self._wait_mempool(record, wait_s)
                    resolution = await self.flow.recover(record, pending)
                logger.info("reconciled intent purpose=%s task=%d resolution=%s",
                            record.purpose, record.task_id, resolution.value)

    async def _recover_claim(self, record: TxRecord, wait_s: float) -> None:
        store, task_id = self._d.store, record.task_id
        resolution = reconcile(record, await self._claim_done(task_id),
                               await self._own_tx_pending())
        if resolution is Resolution.WAIT:
            pending = await self._wait_mempool(record, wait_s)
            resolution = reconcile(record, await self._claim_done(task_id), pending)
        logger.info("reconciled intent purpose=claim task=%d resolution=%s", task_id,
                    resolution.value)
        if resolution is Resolution.WAIT:
            return  # still in the mempool: the next poll looks again
        if resolution is Resolution.DONE:
            await self._db(store.mark_mined, record.tx_id, None, None)
            await self._db(store.set_phase, task_id, TaskPhase.CLAIMED, "recovered")
            return
        await self._db(store.mark_abandoned, record.tx_id)
        view = await self._d.market.get_task(task_id)
        if view.state is TaskState.OPEN and view.claim_deadline > await self.chain_now():
            await self.claim(task_id)
        else:
            await self._db(store.set_phase, task_id, TaskPhase.FAILED,
                           f"claim not mined; task is {view.state.name}")

    async def _wait_mempool(self, record: TxRecord, wait_s: float) -> bool:
        """Wait up to ``wait_s`` for this account's pending transactions; True if some are
        still pending."""
        if wait_s > 0:
            logger.info("own transaction pending; waiting for it purpose=%s task=%d",
                        record.purpose, record.task_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while await self._own_tx_pending():
            if loop.time() >= deadline:
                logger.warning("own transaction still pending; intent left open purpose=%s "
                               "task=%d waited_s=%.0f", record.purpose, record.task_id, wait_s)
                return True
            await asyncio.sleep(self._d.settings.indexer.poll_interval_s)
        return False

    # ---- events -----------------------------------------------------------------------------

    async def on_event(self, event: ChainEvent, removed: bool) -> None:
        """The indexer's handler: one confirmed event (or the removal of one).

        RPC failures propagate (the indexer retries the same log later); any other error of
        ours is this task's problem only: logged, and the daemon goes on.
        """
        async with self._lock:
            try:
                await self._dispatch(event, removed)
            except RpcError:
                raise
            except MantaError as exc:
                logger.error("event handling failed event=%s task=%s error=%s",
                             type(event).__name__, getattr(event, "task_id", None), exc)

    async def _dispatch(self, event: ChainEvent, removed: bool) -> None:
        if removed:
            logger.warning("event removed by a reorg event=%s task=%s", type(event).__name__,
                           getattr(event, "task_id", None))
            return
        if isinstance(event, TaskPosted):
            await self.on_posted(event)
        elif isinstance(event, TaskClaimed):
            await self._on_claimed(event)
        elif isinstance(event, TaskStarted):
            await self.form_group(event.task_id)
        elif isinstance(event, ResultSubmitted):
            await self._advance(event.task_id, TaskPhase.SUBMITTED)
        elif isinstance(event, TaskSettled):
            phase = TaskPhase.SETTLED if event.miners_paid else TaskPhase.FAILED
            await self._advance(event.task_id, phase, "" if event.miners_paid else "lost")
            if not event.miners_paid and self.flow is not None:
                await self.flow.answer_lost_dispute(event.task_id)
        elif isinstance(event, TaskExpired | TaskCancelled):
            await self._advance(event.task_id, TaskPhase.FAILED, type(event).__name__)
            if isinstance(event, TaskExpired) and self.flow is not None:
                await self.flow.reclaim_bond(event.task_id)
        elif isinstance(event, TaskDisputed):
            await self._on_disputed(event)

    async def _on_disputed(self, event: TaskDisputed) -> None:
        """Log a dispute of our result; the artifacts stay served (the arbiter may fetch
        them), and TaskSettled or a finalize after a silent arbiter ends the task."""
        record = await self._db(self._d.store.task, event.task_id)
        if record is not None and record.phase is TaskPhase.SUBMITTED:
            logger.warning("result disputed task=%d arbitration_deadline=%d artifacts=served",
                           event.task_id, event.arbitration_deadline)

    async def on_posted(self, event: TaskPosted) -> None:
        store, d = self._d.store, self._d
        spec_hash = "0x" + event.spec_hash.hex()
        record = await self._db(store.record_task, event.task_id, spec_hash, TaskPhase.SEEN, "")
        if record.phase is not TaskPhase.SEEN:
            return  # decided before (a re-delivered event after a restart)
        now = await self.chain_now()
        active = await self._db(store.active_count)
        verdict = policy.precheck(event, d.settings.policy, d.settings.capacity, active, now)
        if verdict is None:
            spec, error, floors = None, None, None
            try:
                spec = await d.fetch_spec(event)
                if spec.kind in d.settings.policy.kinds:
                    # the engine's exact cost model (imports torch once): off the loop
                    floors = await asyncio.to_thread(policy.cost_floors, spec)
            except MantaError as exc:
                spec, error = None, str(exc)
            verdict = policy.decide(event, spec, error, d.settings.policy, d.settings.capacity,
                                    active, await self.chain_now(), floors)
        d.metrics.decisions.inc(verdict="claim" if verdict.claim else "refuse")
        logger.info("claim decision task=%d claim=%s reason=%s", event.task_id, verdict.claim,
                    verdict.reason)
        if not verdict.claim:
            await self._db(store.set_phase, event.task_id, TaskPhase.REFUSED, verdict.reason)
            return
        await self.claim(event.task_id)

    async def _on_claimed(self, event: TaskClaimed) -> None:
        if event.miner.lower() != self.address.lower():
            return
        record = await self._db(self._d.store.task, event.task_id)
        if record is not None and record.phase is TaskPhase.CLAIMING:
            await self._db(self._d.store.set_phase, event.task_id, TaskPhase.CLAIMED, "")

    async def form_group(self, task_id: int) -> None:
        """Record the group of a claimed task and hand it to the ``on_group_formed`` hook."""
        store = self._d.store
        record = await self._db(store.task, task_id)
        if record is None or record.phase not in (TaskPhase.CLAIMING, TaskPhase.CLAIMED):
            return
        members = await self._d.market.members_of(task_id)
        if self.address.lower() not in (m.lower() for m in members):
            return
        await self._db(store.set_group, task_id, members, self.address)
        formed = await self._db(store.set_phase, task_id, TaskPhase.FORMED, "")
        logger.info("group formed task=%d role=%s members=%d", task_id, formed.role,
                    len(members))
        crash_point("group.formed")
        if self._d.on_group_formed is not None:
            await self._d.on_group_formed(formed)

    async def poll(self) -> None:
        """Periodic work: reconcile intents left open (timeouts), and form the groups of
        claimed tasks that started without an event (claim window over, slots left)."""
        async with self._lock:
            await self.recover(wait_s=0.0)  # a transaction still pending is looked at next time
            for record in await self._db(self._d.store.tasks, [TaskPhase.CLAIMED]):
                if await self._d.market.state_of(record.task_id) is TaskState.RUNNING:
                    await self.form_group(record.task_id)
            if self.flow is None:
                return
            now = await self.chain_now()
            for record in await self._db(self._d.store.tasks, list(STEP_PHASES)):
                try:
                    await self.flow.step(record, now)
                except RpcError:
                    raise
                except ChainError as exc:  # this task's problem; the others go on
                    logger.warning("result step failed task=%d error=%s", record.task_id, exc)
            try:
                await self.flow.retry_reclaims()
            except RpcError:
                raise
            except ChainError as exc:
                logger.warning("bond reclaim failed error=%s", exc)

    async def publish_result(self, task_id: int, manifest: ResultManifest) -> str:
        """Leader: publish, serve and sign the group's manifest (see :mod:`settle`)."""
        if self.flow is None:
            raise DaemonError("the daemon was built without result dependencies")
        async with self._lock:
            root = await self.flow.publish(task_id, manifest)
        self.wake.set()  # collect the signatures and submit now
        return root

    async def _advance(self, task_id: int, phase: TaskPhase, reason: str = "") -> None:
        record = await self._db(self._d.store.task, task_id)
        if record is None or record.phase in (TaskPhase.REFUSED, TaskPhase.SEEN):
            return  # not ours
        if record.phase is phase or record.phase in (TaskPhase.WITHDRAWN, TaskPhase.FAILED):
            return
        await self._db(self._d.store.set_phase, task_id, phase, reason)
        logger.info("task phase task=%d phase=%s reason=%s", task_id, phase.value, reason)
        await self._update_active()
        if phase is TaskPhase.SETTLED:
            self.wake.set()  # withdraw now

    async def _update_active(self) -> None:
        self._d.metrics.tasks_active.set(await self._db(self._d.store.active_count))

    # ---- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Reconcile open intents, then start the indexer from its cursor."""
        async with self._lock:
            await self.recover()
        settings = self._d.settings
        if settings.policy.kinds:
            await asyncio.to_thread(policy.warm_up)  # before the first TaskPosted, not during
        config = IndexerConfig.from_settings(settings.indexer, self._d.start_block)
        source = RpcBlockSource(self._d.rpc, self._d.market.address)
        handler = decoding(self._d.market.decode_logs, self.on_event)
        source_id = f"{self._d.rpc.chain_id}:{self._d.market.address}"
        self._indexer = await Indexer.start(source, settings.paths().cursor_file, handler,
                                            config, source_id)
        logger.info("miner daemon started address=%s market=%s", self.address,
                    self._d.market.address)

    async def wait(self) -> None:
        """Until the indexer stops; raises what stopped it."""
        if self._indexer is not None:
            await self._indexer.wait()

    @property
    def error(self) -> BaseException | None:
        """What stopped the indexer (a handler error, a deep reorg), if anything."""
        return self._indexer.error if self._indexer is not None else None

    async def shutdown(self) -> None:
        """Stop the indexer (it cancels its poller until done) and close its cursor file."""
        indexer, self._indexer = self._indexer, None
        if indexer is not None:
            await indexer.shutdown()


async def run_until_stopped(daemon: MinerDaemon, stop: asyncio.Event,
                            started_poll_s: float = 5.0) -> None:
    """Run ``daemon`` until ``stop`` is set (or its indexer fails), polling implicit starts."""
    await daemon.start()
    try:
        while not stop.is_set():
            if daemon.error is not None:
                raise daemon.error
            try:
                await daemon.poll()
            except ChainError as exc:
                logger.warning("periodic poll failed error=%s", exc)
            await _idle(daemon.wake, stop, started_poll_s)
    finally:
        await daemon.shutdown()


async def _idle(wake: asyncio.Event, stop: asyncio.Event, timeout_s: float) -> None:
    """Until ``wake`` or ``stop`` is set, or ``timeout_s`` passed; clears ``wake``."""
    waiters = {asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())}
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    wake.clear()
