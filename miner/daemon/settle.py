"""From a trained group to money in the wallet: publish, sign, submit, finalize, withdraw.

:class:`ResultFlow` runs inside the daemon's periodic poll (under its lock), one step per
task per poll, each step idempotent:

- **leader** — :meth:`ResultFlow.publish` (called by the training side once the artifacts
  are stored): check the manifest against the chain, store it, sign it; phase ``signing``.
  Then each poll collects the members' signatures from their ``/tasks/{id}/signature``
  (each checked by recovering its signer) and submits (intent record ``submit``) once every
  member signed, or once a strict majority signed and the others had ``quorum_wait_s`` (or
  the work window is in its last tenth): one member that never signs cannot hold the group
  hostage. Past the deadline it refuses to send a transaction that must revert, and says so.
- **member** — while its task trains, poll the leader's ``/tasks/{id}/manifest``; when it
  appears, check it (task, spec hash, group and order, its own share under the contract's
  split rule), download the weights and architecture artifacts (hash-checked, so this member
  serves them too), sign; phase ``signing``. ``ResultSubmitted`` then moves it to
  ``submitted``. A result that went on chain without this member's signature is answered
  before the settle deadline: ``endorse`` when this member signed the same root (share and
  bond), else ``check_in`` (bond only), so a majority that leaves it out gains nothing.
- **every member of a running group** — in the last :data:`CHECK_IN_SHARE` of the work
  window, with no result submitted yet: check in on chain (intent ``check_in``), committing to
  evidence of its work (its newest checkpoint's hash), so that if the task expires this
  member's bond comes back to it; the contract pushes it inside ``expire`` (intent
  ``reclaim`` withdraws it only if that transfer failed and left a credit).
- **everyone** — ``submitted`` past the review deadline with a silent client (or, once
  disputed, past the arbitration deadline with a silent arbiter): finalize
  (intent ``finalize``; a revert because someone else did it first costs nothing). The
  contract pushes the payouts inside the settling transaction; after ``TaskSettled`` a
  credit left by a failed transfer is withdrawn (intent ``withdraw``); phase ``withdrawn``.

Intent records of ``submit``/``finalize``/``withdraw``/``check_in``/``endorse``/``reclaim``
left open by a crash are reconciled by :meth:`ResultFlow.recover` (the chain says whether the effect
happened).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from eth_utils.crypto import keccak

from miner.daemon.artifacts import ArtifactStore
from miner.daemon.crashpoints import crash_point
from miner.daemon.errors import DaemonError
from miner.daemon.peers import PeerClient, PeerError
from miner.daemon.result import ResultSigner, check_manifest, check_signature
from miner.daemon.store import (
    Resolution,
    StateStore,
    TaskPhase,
    TaskRecord,
    TxRecord,
    TxStatus,
    reconcile,
)
from node.chain.errors import ChainError, ContractRevert
from node.chain.market import TaskMarket
from node.chain.models import TaskState, TaskView, TxReceipt, quorum
from node.documents.manifest import ResultManifest

logger = logging.getLogger(__name__)

T = TypeVar("T")
SendOnce = Callable[[str, int, Callable[[], Awaitable[TxReceipt]]], Awaitable[TxReceipt | None]]
TRAINING_PHASES = (TaskPhase.FORMED, TaskPhase.TRAINING, TaskPhase.SEARCHING)
#: Phases in which a member still owes a result and checks in near the work deadline
#: (not ``submitting``: a leader sending the result has nothing to check in for).
UNSUBMITTED_PHASES = (*TRAINING_PHASES, TaskPhase.SIGNING)
#: The tail of the work window (a fraction of it) in which a member checks in.
CHECK_IN_SHARE = 0.1
STEP_PHASES = (*TRAINING_PHASES, TaskPhase.SIGNING, TaskPhase.SUBMITTING, TaskPhase.SUBMITTED,
               TaskPhase.SETTLED)


class ResultRefused(DaemonError):  # noqa: N818 (a refusal, not a failure of ours)
    """A manifest this miner will not publish or sign."""

    template = "task {task_id}: result refused: {reason}"


@dataclass(frozen=True)
class ResultDeps:
    """What the flow needs besides the daemon's market and store."""

    artifacts: ArtifactStore
    peers: PeerClient
    sign: ResultSigner
    endpoint: str  # this miner's public URL (the result URI points at its manifest)
    # How long the leader waits for every signature once a strict majority signed, before it
    # submits with the majority alone (the others get no share).
    quorum_wait_s: float = 120.0


class ResultFlow:
    """See the module docstring."""

    def __init__(self, deps: ResultDeps, market: TaskMarket, store: StateStore,
                 send_once: SendOnce) -> None:
        self._d = deps
        self._market = market
        self._store = store
        self._send_once = send_once
        self.address = market.sender.address

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    def _signed_params(self, task_id: int) -> dict[str, Any]:
        return {"chain_id": self._market.sender.rpc.chain_id, "market": self._market.address,
                "task_id": task_id}

    # ---- leader ------------------------------------------------------------------------------

    async def publish(self, task_id: int, manifest: ResultManifest) -> str:
        """Store, serve and sign the leader's manifest; returns its result root."""
        record = await self._db(self._store.task, task_id)
        if record is None or record.role != "leader" or record.phase not in TRAINING_PHASES:
            raise ResultRefused(task_id=task_id, reason="not the leader of a training task")
        view = await self._market.get_task(task_id)
        problems = check_manifest(manifest, task_id=task_id, spec_hash=view.spec_hash,
                                  group=record.group, reward_wei=view.reward_wei)
        for sha in (manifest.weights_sha256, manifest.arch_json_sha256):
            if await self._db(self._d.artifacts.path_of, sha) is None:
                problems.append(f"artifact {sha} is not stored")
        if problems:
            raise ResultRefused(task_id=task_id, reason="; ".join(problems))
        return await self._sign_and_store(record, manifest)

    async def _sign_and_store(self, record: TaskRecord, manifest: ResultManifest,
                              phase: TaskPhase | None = TaskPhase.SIGNING) -> str:
        """Store and sign ``manifest``; move to ``phase`` (None: stay, for a result already on
        chain that this member signs late)."""
        root = manifest.result_root()
        signature = self._d.sign(record.task_id, root)
        await self._db(self._store.set_manifest, record.task_id, manifest.canonical(), root)
        await self._db(self._store.add_signature, record.task_id, root, self.address, signature)
        if phase is not None:
            await self._db(self._store.set_phase, record.task_id, phase, "")
        logger.info("result signed task=%d role=%s root=%s", record.task_id, record.role, root)
        crash_point("result.signed")
        return root

    async def _collect_and_submit(self, record: TaskRecord, view: TaskView, now: int) -> None:
        task_id, root = record.task_id, record.result_root
        if root is None or await self._db(self._store.manifest, task_id) is None:
            return
        signed = {k.lower(): v for k, v in (await self._db(self._store.signatures, task_id,
                                                           root)).items()}
        for member in record.group[1:]:
            if member.lower() in signed:
                continue
            try:
                endpoint = await self._market.endpoint_of(member)
                signature = await self._d.peers.signature(endpoint, task_id, root)
            except PeerError as exc:
                logger.warning("signature not fetched task=%d member=%s error=%s", task_id,
                               member, exc)
                continue
            if signature is not None and check_signature(
                    signature, member, result_root=root, **self._signed_params(task_id)):
                await self._db(self._store.add_signature, task_id, root, member, signature)
                signed[member.lower()] = signature
        if not self._submit_due(record, len(signed), view, now):
            return
        if now > view.work_deadline:
            await self._db(self._store.set_phase, task_id, TaskPhase.FAILED,
                           f"work deadline {view.work_deadline} passed; not submitting")
            return
        by_member = {m: signed[m.lower()] for m in record.group if m.lower() in signed}
        uri = f"{self._d.endpoint}/tasks/{task_id}/manifest"
        await self._db(self._store.set_phase, task_id, TaskPhase.SUBMITTING, "")
        receipt = await self._send_once("submit", task_id, lambda: self._market.submit_result(
            task_id, root, uri, by_member))
        if receipt is not None:
            await self._db(self._store.set_phase, task_id, TaskPhase.SUBMITTED, "")
            crash_point("result.submitted")

    def _submit_due(self, record: TaskRecord, signed: int, view: TaskView, now: int) -> bool:
        """Every member signed; or a strict majority did and the others had
        ``quorum_wait_s`` to sign (or the work window is in its last tenth): one member
        that never signs cannot hold the group hostage, and gets no share."""
        members = len(record.group)
        if signed >= members:
            return True
        if signed < quorum(members):
            return False
        waited = time.time() - record.updated_at >= self._d.quorum_wait_s
        if waited or self._in_last_tenth(view, now):
            logger.warning("submitting with a quorum task=%d signed=%d members=%d",
                           record.task_id, signed, members)
            return True
        return False

    # ---- member ------------------------------------------------------------------------------

    async def _check_and_sign(self, record: TaskRecord, view: TaskView,
                              phase: TaskPhase | None = TaskPhase.SIGNING) -> str | None:
        """Fetch the leader's manifest, check it against the chain, fetch its artifacts (so
        this member serves them too) and sign it; the root, or None when there is nothing
        (yet) this member would sign."""
        task_id = record.task_id
        endpoint = await self._market.endpoint_of(record.group[0])
        fetched = await self._d.peers.manifest(endpoint, task_id)
        if fetched is None:
            return None  # the leader has not published yet
        manifest, _raw = fetched
        problems = check_manifest(manifest, task_id=task_id, spec_hash=view.spec_hash,
                                  group=record.group, reward_wei=view.reward_wei)
        if problems:
            logger.warning("leader's manifest refused task=%d problems=%s", task_id, problems)
            return None
        for sha in (manifest.weights_sha256, manifest.arch_json_sha256):
            if await self._db(self._d.artifacts.path_of, sha) is None:
                tmp = await self._d.peers.download(endpoint, sha, self._d.artifacts.directory)
                try:
                    await self._db(self._d.artifacts.put_file, tmp, sha, task_id)
                finally:
                    tmp.unlink(missing_ok=True)
        return await self._sign_and_store(record, manifest, phase)

    # ---- everyone ------------------------------------------------------------------------------

    async def _finalize(self, record: TaskRecord, view: TaskView, now: int) -> None:
        if view.state is TaskState.SETTLED:
            await self._db(self._store.set_phase, record.task_id, TaskPhase.SETTLED, "")
        elif view.state in (TaskState.SUBMITTED, TaskState.DISPUTED) \
                and now > view.settle_deadline:  # a silent client, or a silent arbiter
            try:
                await self._send_once("finalize", record.task_id,
                                      lambda: self._market.finalize(record.task_id))
            except ContractRevert as exc:
                logger.info("finalize not needed task=%d reason=%s", record.task_id, exc)

    async def _answer_left_out(self, record: TaskRecord, view: TaskView, now: int) -> None:
        """A result went on chain without this member's signature (a quorum submitted without
        waiting for it, or left it out on purpose): until the settle deadline, endorse it when
        this member signed (or now checks and signs) the same root, which earns its share and
        bond; else check in, which keeps its bond. While the result is disputed it only checks
        in: endorsing then would stake its bond on the ruling, and it can still endorse after a
        ruling for the miners."""
        if record.slot is None or view.signed(record.slot) or now > view.settle_deadline:
            return
        root = "0x" + view.result_root.hex()
        open_to_endorse = view.state is TaskState.SUBMITTED or (
            view.state is TaskState.SETTLED and view.miners_paid)
        if open_to_endorse and (record.result_root or "").lower() != root:
            try:  # signed nothing yet (still training when the quorum submitted): look now
                await self._check_and_sign(record, view, phase=None)
            except PeerError as exc:
                logger.warning("leader's manifest not fetched task=%d error=%s", record.task_id,
                               exc)
            record = await self._db(self._store.task, record.task_id) or record
        endorsable = open_to_endorse and (record.result_root or "").lower() == root
        task_id = record.task_id
        try:
            if endorsable:
                await self._send_once("endorse", task_id, lambda: self._market.endorse(task_id))
                logger.warning("result submitted without our signature; endorsed task=%d",
                               task_id)
            elif not view.present(record.slot):
                evidence = await self._evidence(record)
                await self._send_once("check_in", task_id,
                                      lambda: self._market.check_in(task_id, evidence))
                logger.warning("result submitted without our signature; checked in task=%d",
                               task_id)
        except ContractRevert as exc:
            logger.warning("left-out answer refused task=%d reason=%s", task_id, exc)

    async def _withdraw(self, record: TaskRecord, view: TaskView) -> None:
        if await self._market.credit_of(self.address, view.token) > 0:
            await self._send_once("withdraw", record.task_id,
                                  lambda: self._market.withdraw(view.token))
        await self._db(self._store.set_phase, record.task_id, TaskPhase.WITHDRAWN, "")

    @staticmethod
    def _in_last_tenth(view: TaskView, now: int) -> bool:
        """In the last :data:`CHECK_IN_SHARE` of a running task's work window."""
        opens = view.work_deadline - max(1, int(view.work_window_s * CHECK_IN_SHARE))
        return view.state is TaskState.RUNNING and opens <= now <= view.work_deadline

    async def _evidence(self, record: TaskRecord) -> bytes:
        """What a check-in commits to: the newest training checkpoint's sha256 if the job
        wrote one, else the signed result root, else a hash of this member's presence (task,
        address, phase, time of its last change), never zero."""
        checkpoint = await self._db(self._store.latest_checkpoint, record.task_id)
        if checkpoint is not None:
            return bytes.fromhex(checkpoint.sha256.removeprefix("0x"))
        if record.result_root is not None:
            return bytes.fromhex(record.result_root.removeprefix("0x"))
        text = f"{record.task_id}:{self.address}:{record.phase.value}:{record.updated_at}"
        return keccak(text=text)

    async def _check_in(self, task_id: int, view: TaskView) -> None:
        """Check in once (the step's ``view`` says it is due), unless this poll's step moved
        the task on (it signed or submitted) or a check-in is already recorded."""
        record = await self._db(self._store.task, task_id)
        if record is None or record.phase not in UNSUBMITTED_PHASES:
            return
        sent = await self._db(self._store.txs, task_id, "check_in")
        if any(r.status is not TxStatus.ABANDONED for r in sent):
            return  # sent, mined or refused before; an abandoned one (a crash) is re-sent
        if await self._market.is_checked_in(task_id, self.address):
            return
        evidence = await self._evidence(record)
        try:
            receipt = await self._send_once("check_in", task_id,
                                            lambda: self._market.check_in(task_id, evidence))
        except ContractRevert as exc:
            logger.warning("check-in refused task=%d reason=%s", task_id, exc)
            return
        if receipt is not None:
            logger.info("checked in task=%d work_deadline=%d", task_id, view.work_deadline)

    async def answer_lost_dispute(self, task_id: int) -> None:
        """The arbiter ruled for the client: a member left out of that result that has not
        checked in does so now (until the settle deadline), and keeps its bond."""
        record = await self._db(self._store.task, task_id)
        if record is None or record.slot is None:
            return
        view = await self._market.get_task(task_id)
        now = int((await self._market.sender.rpc.get_block("latest"))["timestamp"])
        await self._answer_left_out(record, view, now)

    async def reclaim_bond(self, task_id: int) -> None:
        """After an expiry: withdraw the bond the contract returned because this member
        checked in (intent ``reclaim``, which leaves the task ``failed``)."""
        record = await self._db(self._store.task, task_id)
        if record is None or not record.group:
            return  # not a task of ours
        if not await self._market.is_checked_in(task_id, self.address):
            return
        view = await self._market.get_task(task_id)
        if await self._market.credit_of(self.address, view.token) > 0:
            receipt = await self._send_once("reclaim", task_id,
                                            lambda: self._market.withdraw(view.token))
            if receipt is not None:
                logger.info("bond returned after expiry task=%d", task_id)

    async def step(self, record: TaskRecord, now: int) -> None:
        """One idempotent step of ``record``'s task (see the module docstring)."""
        if record.phase not in STEP_PHASES or not record.group:
            return
        view = await self._market.get_task(record.task_id)
        try:
            if record.phase in TRAINING_PHASES and record.role == "member":
                if now <= view.work_deadline:
                    await self._check_and_sign(record, view)
            elif record.phase in (TaskPhase.SIGNING, TaskPhase.SUBMITTING) \
                    and record.role == "leader":
                await self._collect_and_submit(record, view, now)
            elif record.phase is TaskPhase.SUBMITTED:
                await self._answer_left_out(record, view, now)
                await self._finalize(record, view, now)
            elif record.phase is TaskPhase.SETTLED:
                await self._answer_left_out(record, view, now)
                await self._withdraw(record, view)
        except (PeerError, ResultRefused) as exc:
            logger.warning("result step postponed task=%d error=%s", record.task_id, exc)
        if record.phase in UNSUBMITTED_PHASES and self._in_last_tenth(view, now):
            await self._check_in(record.task_id, view)

    # ---- recovery ----------------------------------------------------------------------------

    async def _done_on_chain(self, record: TxRecord) -> bool:
        view = await self._market.get_task(record.task_id)
        if record.purpose == "submit":
            return view.state in (TaskState.SUBMITTED, TaskState.DISPUTED, TaskState.SETTLED)
        if record.purpose == "finalize":
            return view.state is TaskState.SETTLED
        if record.purpose in ("withdraw", "reclaim"):
            return await self._market.credit_of(self.address, view.token) == 0
        if record.purpose == "check_in":
            return await self._market.is_checked_in(record.task_id, self.address)
        if record.purpose == "endorse":
            slot = await self._market.slot_of(record.task_id, self.address)
            return slot is not None and view.signed(slot)
        raise ChainError(f"no reconciliation for purpose {record.purpose!r}")

    async def recover(self, record: TxRecord, own_tx_pending: bool) -> Resolution:
        """Reconcile an open ``submit``/``finalize``/``withdraw``/``check_in``/``reclaim``
        record with the chain."""
        resolution = reconcile(record, await self._done_on_chain(record), own_tx_pending)
        if resolution is Resolution.DONE:
            await self._db(self._store.mark_mined, record.tx_id, None, None)
            after = {"submit": TaskPhase.SUBMITTED, "withdraw": TaskPhase.WITHDRAWN}
            if record.purpose in after:
                await self._db(self._store.set_phase, record.task_id, after[record.purpose], "")
        elif resolution is Resolution.RETRY:
            await self._db(self._store.mark_abandoned, record.tx_id)  # the next poll re-sends
        return resolution

    async def retry_reclaims(self) -> None:
        """Re-send the bond withdrawals that :meth:`recover` abandoned (a failed task gets no
        :meth:`step`, so the daemon's poll calls this)."""
        records = await self._db(self._store.txs, None, "reclaim")
        done = {r.task_id for r in records if r.status is not TxStatus.ABANDONED}
        for task_id in sorted({r.task_id for r in records} - done):
            await self.reclaim_bond(task_id)
