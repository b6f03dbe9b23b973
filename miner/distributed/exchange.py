"""The all-reduce between miners: reduce-scatter then all-gather over n peers, verified.

Each round, the live peers (sorted by name, the same everywhere) split the flat buffer into
n shards; peer ``i`` owns shard ``i``, cut into pieces (:mod:`miner.distributed.pieces`).
Every peer sends each owner its part of each piece; the owner aggregates a piece's parts as
soon as they are all in, or at the reduce deadline (robustly,
:mod:`miner.distributed.robust`), and sends the result to everyone while the next piece is
still arriving. A member is authenticated, not trusted: with ``verify`` (the default) every
piece also has a verifier that receives the same parts, checks the owner's declaration and
recomputes its result, and a peer applies a piece only when the verifier confirmed the very
bytes it holds (:mod:`miner.distributed.audit`; :mod:`miner.distributed.round_run` runs
a round). That costs each peer twice the bytes of an unverified round from three peers up,
and nothing at two, where each peer reduces every piece itself.

Failure handling: a part that misses the reduce deadline at both reducers drops its sender;
a reducer whose result, declaration or verdict misses its deadline is dropped by whoever
missed it; a piece without a confirmed result gets no update this round (count 0, which the
optimizer guard turns into "leave these weights alone"), so every survivor applies the same
update. Who contributed, who was rejected and who is dropped is derived by each peer from
what both reducers said (one liar cannot remove anyone), and a member caught lying is
dropped for the task: :attr:`GradientExchange.caught`, with what it did in
:attr:`GradientExchange.evidence`. A peer the others dropped is not told: it finds itself
missing from the next results (its round reports show its own name as dropped).

Rejoining: a dropped member (typically restarted from an older checkpoint) asks every peer
to take it back (:meth:`GradientExchange.request_join`, called when its join message
arrives; :mod:`miner.distributed.rejoin`). Every live peer remembers the request; only the
round's *coordinator*, the first live peer in sorted order, acts on it. At the start of
round ``r`` the coordinator fixes the set of requesters that are not live, and every
declaration it makes in round ``r`` carries that set as a bitmap over the whole group. A
peer applies the admission — those members are live from round ``r + 1`` — exactly when its
round ``r`` report keeps the coordinator and all the coordinator's declarations agree; the
report records it as ``admitted``. A caught member is never admitted. The members then hand
the admitted member the group's state after round ``r`` (checked by it against what the
others hold: :mod:`miner.distributed.rejoin`), and it starts there
(:meth:`GradientExchange.rejoin`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from miner.distributed.audit import DisputeLedger, Evidence, Settlement, settle
from miner.distributed.channel import PeerChannel
from miner.distributed.compression import Codec, ErrorFeedback, Float32Codec
from miner.distributed.errors import ExchangeError, JoinError
from miner.distributed.pieces import assemble
from miner.distributed.reduction import Reducer, RoundPlan
from miner.distributed.reports import RoundReport
from miner.distributed.robust import RobustConfig
from miner.distributed.round_run import RoundRun, finish

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExchangeConfig:
    """Per-round limits, aggregation, verification and wire format.

    Parts are due at ``reduce_share * round_timeout_s``, declarations at the verifier at
    ``verify_share * round_timeout_s``, results and verdicts at ``round_timeout_s``;
    ``piece_elems`` bounds the unit that travels and is reduced (pipelining). ``verify``
    off trusts each owner's word (a trusted group); the local checks stay on: a result is
    refused when not finite or when its RMS exceeds ``result_bound * n`` times this peer's
    own. Disputes count for ``dispute_window_rounds`` rounds; a pair disputing alone is
    caught after ``pair_strikes`` rounds (:class:`~miner.distributed.audit.DisputeLedger`).
    """

    round_timeout_s: float = 30.0
    reduce_share: float = 0.5
    verify_share: float = 0.75
    robust: RobustConfig = field(default_factory=RobustConfig)
    codec: Codec = field(default_factory=Float32Codec)
    error_feedback: bool = True
    exclude_dropped: bool = True
    piece_elems: int = 1 << 22
    verify: bool = True
    result_bound: float = 16.0
    dispute_window_rounds: int = 8
    pair_strikes: int = 3


@dataclass(frozen=True)
class RoundResult:
    """``mean [N]`` float32 and ``counts [N]`` int32 (contributors per element; read-only,
    possibly a broadcast view)."""

    mean: np.ndarray
    counts: np.ndarray
    report: RoundReport


class GradientExchange:
    """One miner's side of the gradient all-reduce with the rest of its group."""

    def __init__(self, channel: PeerChannel, peers: Sequence[str], config: ExchangeConfig) -> None:
        if channel.me not in peers:
            raise ExchangeError(f"{channel.me} is not in the group {sorted(peers)}")
        self.channel = channel
        self.config = config
        self.group: tuple[str, ...] = tuple(sorted(set(peers)))
        self.alive: tuple[str, ...] = self.group
        self.reports: list[RoundReport] = []
        self.evidence: list[Evidence] = []
        self.caught: set[str] = set()
        self.disputes = DisputeLedger(config.dispute_window_rounds, config.pair_strikes)
        self._joins: set[str] = set()  # members that asked to be taken back
        self._first_round = 0  # a rejoined peer starts at the round it was admitted for
        self._feedback = ErrorFeedback()
        self._reducer = Reducer(
            config.robust, config.codec, None if config.verify else self._feedback
        )

    @property
    def me(self) -> str:
        return self.channel.me

    @property
    def coordinator(self) -> str:
        """The live peer that admits rejoining members (the first in sorted order)."""
        return self.alive[0]

    def request_join(self, peer: str) -> None:
        """Remember that ``peer`` asked to be taken back; the coordinator admits it in the
        declarations of the first round it runs without it (see the module docstring)."""
        if peer not in self.group or peer == self.me:
            raise JoinError("not another member of this group", peer=peer)
        if peer in self.caught:
            raise JoinError("caught lying in this task", peer=peer)
        self._joins.add(peer)

    def rejoin(self, round_id: int, alive: Sequence[str]) -> None:
        """Start again as a member admitted from ``round_id`` with the live set ``alive``
        (from the group's state transfer)."""
        live = tuple(sorted(set(alive)))
        if self.me not in live or not set(live) <= set(self.group):
            raise JoinError(f"live set {list(live)} does not fit the group", peer=self.me)
        self.alive, self._first_round = live, round_id
        self._joins.clear()
        log.info("rejoined round=%d alive=%s", round_id, list(live))

    async def allreduce(
        self,
        round_id: int,
        values: np.ndarray,
        masks: Mapping[str, np.ndarray] | None = None,
        out: np.ndarray | None = None,
    ) -> RoundResult:
        """Average ``values [N]`` float32 with the group.

        ``masks`` maps every live peer to the ``[N]`` bool of elements it used (known to all
        from the shared seed); ``None`` means everyone used everything. ``out`` (``[N]``
        float32, not overlapping ``values``, which is sent without copying) receives the
        mean instead of a new array. Returns the same mean and counts on every peer that
        completed the round.
        """
        peers = self.alive
        if round_id < self._first_round:
            raise ExchangeError(f"round {round_id} is before this peer rejoined")
        if masks is not None and not set(peers) <= set(masks):
            raise ExchangeError(f"no mask for peers {sorted(set(peers) - set(masks))}")
        values = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        if out is not None and (out.shape != values.shape or np.shares_memory(out, values)):
            raise ExchangeError("out must be a separate buffer shaped like values")
        started = time.monotonic()
        run = self._run(round_id, peers, values, masks)
        try:
            try:
                feedback = self._feedback if self.config.error_feedback else None
                await asyncio.to_thread(run.encode_parts, feedback)
                run.send_parts()
                await asyncio.gather(run.run_owner(), run.run_verifier(), run.run_receiver())
                bytes_sent = await finish(run.sends, run.deadlines[2])
            except BaseException:
                await finish(run.sends, None)
                raise
            settled = {
                pid: settle(rec, run.plan.me, len(peers)) for pid, rec in run.records().items()
            }
            applied = {
                pid: (run.results[pid], s.averaged) for pid, s in settled.items() if s.applied
            }
            mean, counts = assemble(run.plan.pieces, applied, peers, masks, out)
        finally:
            self.channel.release(round_id)  # received buffers are not used past this point
        report = self._report(run, settled, time.monotonic() - started, bytes_sent)
        self._record(report)
        return RoundResult(mean, counts, report)

    def _run(
        self,
        round_id: int,
        peers: tuple[str, ...],
        values: np.ndarray,
        masks: Mapping[str, np.ndarray] | None,
    ) -> RoundRun:
        config = self.config
        plan = RoundPlan.make(
            round_id,
            peers,
            self.me,
            values.shape[0],
            config.piece_elems,
            config.verify,
            len(self.group),
        )
        now = asyncio.get_running_loop().time()
        deadlines = (
            now + config.round_timeout_s * config.reduce_share,
            now + config.round_timeout_s * config.verify_share,
            now + config.round_timeout_s,
        )
        coordinating = plan.me == 0
        admitting = tuple(
            coordinating and m in self._joins and m not in peers and m not in self.caught
            for m in self.group
        )
        return RoundRun(
            plan,
            self.channel,
            self._reducer,
            values,
            masks,
            deadlines,
            admitting,
            config.result_bound,
        )

    # --- the round's report -----------------------------------------------------------

    def _report(
        self, run: RoundRun, settled: Mapping[int, Settlement], duration_s: float, sent: int
    ) -> RoundReport:
        plan, peers = run.plan, run.plan.peers
        applied = [s for s in settled.values() if s.applied]
        credited = set(range(len(peers)))
        for s in applied:
            credited &= s.credited
        if not applied:
            credited = set()
        dropped: set[int] = set()
        rejected: set[int] = set()
        for s in settled.values():
            dropped |= s.absent | s.silent
            if s.applied:
                rejected |= s.rejected
        caught = self._judge(run, settled)
        self.evidence.extend(run.evidence)
        gone = {peers[i] for i in dropped} | (caught & set(peers))
        report = RoundReport(
            round_id=plan.round_id,
            peers=peers,
            contributed=tuple(p for i, p in enumerate(peers) if i in credited and p not in gone),
            dropped=tuple(p for p in peers if p in gone),
            rejected=tuple(p for i, p in enumerate(peers) if i in rejected),
            missing_shards=tuple(
                sorted({p.owner for p in plan.pieces if not settled[p.pid].applied})
            ),
            duration_s=duration_s,
            bytes_sent=sent,
            caught=tuple(sorted(caught)),
        )
        return RoundReport(**{**report.__dict__, "admitted": self._admitted(run, report)})

    def _judge(self, run: RoundRun, settled: Mapping[int, Settlement]) -> set[str]:
        """File the round's disputes; the peers caught this round (dropped for the task)."""
        peers, round_id = run.plan.peers, run.plan.round_id
        convicted: set[str] = set()
        for s in settled.values():
            if s.dispute is not None:
                self.disputes.add(round_id, (peers[i] for i in s.dispute))
            convicted |= {peers[i] for i in s.convicted}
        caught = (self.disputes.caught(round_id, self.me, self.caught) | convicted) - {self.me}
        caught -= self.caught
        for peer in sorted(caught):
            log.warning("peer caught round=%d peer=%s", round_id, peer)
            run.evidence.append(Evidence(round_id, -1, peer, "caught", self.me))
        self.caught |= caught
        return caught

    def _admitted(self, run: RoundRun, report: RoundReport) -> tuple[str, ...]:
        """The members the round's coordinator (``peers[0]``) admitted, as its declarations
        say; none unless the report keeps the coordinator and they all agree."""
        if not report.peers or report.peers[0] in report.dropped:
            return ()
        flags = {
            d.admitted
            for p in run.plan.pieces
            if p.owner == 0 and (d := run.declarations.get(p.pid)) is not None
        }
        if len(flags) != 1:
            return ()
        (admit,) = flags
        if len(admit) != len(self.group):
            return ()
        return tuple(
            m
            for m, f in zip(self.group, admit, strict=True)
            if f and m not in report.peers and m not in self.caught
        )

    def _record(self, report: RoundReport) -> None:
        self.reports.append(report)
        gone = set(report.dropped)
        if self.caught & set(self.alive):
            self.alive = tuple(p for p in self.alive if p not in self.caught)
        if self.me in gone:
            log.warning("own contribution missing round=%d", report.round_id)
            return
        if self.config.exclude_dropped and gone:
            self.alive = tuple(p for p in self.alive if p not in gone)
            log.warning("peers dropped round=%d dropped=%s", report.round_id, sorted(gone))
        if report.admitted:
            self.alive = tuple(sorted({*self.alive, *report.admitted}))
            self._joins -= set(report.admitted)
            log.info(
                "peers admitted round=%d admitted=%s", report.round_id + 1, list(report.admitted)
            )
