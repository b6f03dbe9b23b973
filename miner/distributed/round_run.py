"""One all-reduce round as a peer runs it: parts out, pieces reduced and verified, results in.

:class:`RoundRun` holds one round's plan (:class:`~miner.distributed.reduction.RoundPlan`),
deadlines and what arrives, and runs the peer's roles concurrently:

- **sender**: its part of every piece goes to the piece's owner and verifier (one encoding,
  the same bytes to both), in piece order, one ordered stream per destination;
- **owner** of its shard's pieces: collects the parts until the reduce deadline (the
  verifier's own part a little longer: it must be declared), aggregates, and sends the
  result with its declaration to every non-reducer, the declaration alone to the verifier;
- **verifier** of another shard's pieces: collects the same parts, waits for the owner's
  declaration until the verify deadline, checks and recomputes it, and sends its verdict to
  everyone else;
- and it collects the results and verdicts it is owed until the round deadline.

What it gathered per piece becomes a :class:`~miner.distributed.audit.PieceRecord`; the
exchange settles them. Torch-free; CPU work (encoding, aggregation) runs in threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from miner.distributed.audit import Evidence, PieceRecord, judge, result_fault
from miner.distributed.channel import Payload, PeerChannel
from miner.distributed.compression import Codec, Encoded, ErrorFeedback
from miner.distributed.errors import FrameError
from miner.distributed.frames import (
    DECLARE,
    NO_DIGEST,
    NO_SUSPECT,
    PART,
    RESULT,
    VERDICT,
    Declaration,
    Frame,
    Status,
    Verdict,
    declare_frame,
    decode_frame,
    part_frame,
    result_frame,
    verdict_frame,
)
from miner.distributed.pieces import Piece, used_elements
from miner.distributed.reduction import SELF_DIGEST, Held, MyPart, Reducer, RoundPlan
from miner.distributed.robust import rms
from node.errors import MantaError

log = logging.getLogger(__name__)
_MIN_WAIT_S = 0.01  # even past a deadline, take what has already arrived


@dataclass
class RoundRun:
    """One peer's side of one round (see the module docstring)."""

    plan: RoundPlan
    channel: PeerChannel
    reducer: Reducer
    values: np.ndarray
    masks: Mapping[str, np.ndarray] | None
    deadlines: tuple[float, float, float]  # reduce, verify, round (loop time)
    admitting: tuple[bool, ...]
    result_bound: float
    _own_rms: float | None = None
    mine: dict[int, MyPart] = field(default_factory=dict)
    declarations: dict[int, Declaration] = field(default_factory=dict)
    result_digests: dict[int, bytes] = field(default_factory=dict)
    verdicts: dict[int, Verdict] = field(default_factory=dict)
    faults: dict[int, str] = field(default_factory=dict)
    results: dict[int, np.ndarray] = field(default_factory=dict)
    evidence: list[Evidence] = field(default_factory=list)
    sends: list[asyncio.Task[int]] = field(default_factory=list)
    delivered_at: dict[tuple[int, int], float] = field(default_factory=dict)

    @property
    def codec(self) -> Codec:
        return self.reducer.codec

    @property
    def own_rms(self) -> float:
        """My own RMS over the elements I used: the yardstick of :func:`result_fault`
        (computed when a result first needs it)."""
        if self._own_rms is None:
            used = None if self.masks is None else self.masks[self.plan.peers[self.plan.me]]
            kept = self.values if used is None else self.values[used]
            self._own_rms = rms(kept) if kept.size else 0.0
        return self._own_rms

    @property
    def verified(self) -> bool:
        return any(v is not None for v in self.plan.verifiers)

    # --- sender -----------------------------------------------------------------------

    def encode_parts(self, feedback: ErrorFeedback | None) -> None:
        """My part of each piece I send anywhere (thread: encoding is CPU work)."""
        me = self.plan.me
        for p in self.plan.pieces:
            x = self.values[p.lo : p.hi]
            if p.owner == me and self.plan.verifier(p) is None:
                self.mine[p.pid] = MyPart(b"", Held(SELF_DIGEST, x))
                continue
            if feedback is None:
                data = self.codec.encode(x)
            else:
                data, _ = feedback.encode(self.codec, ("part", p.pid, p.size), x)
            row = self.codec.decode(data, p.size) if self.verified else x
            self.mine[p.pid] = MyPart(data, Held(self.plan.digest(data), row))

    def send_parts(self) -> None:
        """One ordered stream of part frames per destination (owner and verifier)."""
        me, plan = self.plan.me, self.plan
        streams: dict[int, list[tuple[str, list[Encoded], int]]] = {}
        for p in plan.pieces:
            frame = part_frame(plan.head(p, self.codec.codec_id, PART), self.mine[p.pid].encoded)
            for dest in {p.owner, plan.verifier(p)} - {me, None}:
                assert dest is not None
                streams.setdefault(dest, []).append((f"part.{p.pid}", frame, p.pid))
        for dest, frames in streams.items():
            self.sends.append(asyncio.create_task(self._stream(dest, frames)))

    async def _stream(self, dest: int, frames: list[tuple[str, list[Encoded], int]]) -> int:
        sent, peer = 0, self.plan.peers[dest]
        for tag, frame, pid in frames:
            if not await self._deliver(peer, tag, frame):
                break
            self.delivered_at[(dest, pid)] = asyncio.get_running_loop().time()
            sent += sum(len(part) for part in frame)
        return sent

    async def _deliver(self, peer: str, tag: str, frame: list[Encoded]) -> bool:
        try:
            await self.channel.send(peer, self.plan.round_id, tag, frame)
        except (OSError, MantaError) as exc:  # the transport's errors are MantaErrors too
            log.warning(
                "send failed peer=%s round=%d tag=%s error=%s", peer, self.plan.round_id, tag, exc
            )
            return False
        return True

    def _broadcast(self, dests: set[int], tag: str, frame: list[Encoded]) -> None:
        for dest in sorted(dests - {self.plan.me}):
            peer = self.plan.peers[dest]
            self.sends.append(asyncio.create_task(self._sized(peer, tag, frame)))

    async def _sized(self, peer: str, tag: str, frame: list[Encoded]) -> int:
        return sum(len(p) for p in frame) if await self._deliver(peer, tag, frame) else 0

    # --- owner ------------------------------------------------------------------------

    async def run_owner(self) -> None:
        """Reduce my shard's pieces in order and publish each one's declaration."""
        plan, me = self.plan, self.plan.me
        reduce_at, verify_at, _ = self.deadlines
        for p in (p for p in plan.pieces if p.owner == me):
            v = plan.verifier(p)
            others = [i for i in range(len(plan.peers)) if i != me]
            got = await self._collect([(i, f"part.{p.pid}") for i in others], reduce_at)
            if v is not None and (v, f"part.{p.pid}") not in got:  # the verifier's is required
                late = await self._collect([(v, f"part.{p.pid}")], (reduce_at + verify_at) / 2)
                got.update(late)
            held = await asyncio.to_thread(self._parts, p, got)  # hashing: off the loop
            held[me] = self.mine[p.pid].held
            rows = {i: h.row for i, h in held.items()}
            red = await asyncio.to_thread(self.reducer.reduce, "owner", p, rows, plan, self.masks)
            encoded = red.encoded
            decl = Declaration(
                tuple(held[i].digest if i in held else NO_DIGEST for i in range(len(plan.peers))),
                tuple(i in red.rejected for i in range(len(plan.peers))),
                self.admitting,
                red.digest,
            )
            self._note_nonfinite(p, red.rejected - {me})
            self.declarations[p.pid], self.results[p.pid] = decl, red.values
            self.result_digests[p.pid] = decl.result
            head = plan.head(p, self.codec.codec_id, RESULT)
            receivers = set(range(len(plan.peers))) - {v}
            self._broadcast(receivers, f"result.{p.pid}", result_frame(head, decl, encoded))
            if v is not None:
                head = plan.head(p, self.codec.codec_id, DECLARE)
                self._broadcast({v}, f"declare.{p.pid}", declare_frame(head, decl))

    # --- verifier ---------------------------------------------------------------------

    async def run_verifier(self) -> None:
        """Check and recompute, in order, the pieces of the shard I verify."""
        plan, me = self.plan, self.plan.me
        reduce_at, verify_at, _ = self.deadlines
        for p in (p for p in plan.pieces if plan.verifier(p) == me):
            o, n = p.owner, len(plan.peers)
            others = [i for i in range(n) if i != me]
            got = await self._collect([(i, f"part.{p.pid}") for i in others], reduce_at)
            raw = await self._collect([(o, f"declare.{p.pid}")], verify_at)
            decl = self._declaration(raw.get((o, f"declare.{p.pid}")), p, o, DECLARE)
            if decl is not None:
                missing = [
                    (i, f"part.{p.pid}")
                    for i in decl.delivered - {me}
                    if (i, f"part.{p.pid}") not in got
                ]
                got.update(await self._collect(missing, verify_at))
            held = await asyncio.to_thread(self._parts, p, got)  # hashing: off the loop
            held[me] = self.mine[p.pid].held
            verdict = await self._verdict(p, decl, held)
            self.verdicts[p.pid] = verdict
            head = plan.head(p, self.codec.codec_id, VERDICT)
            self._broadcast(set(range(n)), f"verdict.{p.pid}", verdict_frame(head, verdict))

    async def _verdict(self, p: Piece, decl: Declaration | None, held: dict[int, Held]) -> Verdict:
        n, me, o = len(self.plan.peers), self.plan.me, p.owner
        bitmap = tuple(i in held for i in range(n))
        if decl is None:
            return Verdict(Status.NO_DECLARATION, NO_DIGEST, NO_DIGEST, bitmap)
        self.declarations[p.pid] = decl
        quoted = decl.digest(self.plan.round_id, p.pid)
        digests = [held[i].digest if i in held else None for i in range(n)]
        nonfinite = [i in held and not held[i].finite for i in range(n)]
        status, suspect = judge(decl, digests, nonfinite, me)
        mine = NO_DIGEST
        if status is Status.OK:
            rows = {i: held[i].row for i in decl.delivered}
            red = await asyncio.to_thread(
                self.reducer.reduce, "verifier", p, rows, self.plan, self.masks
            )
            mine = red.digest
            if mine == decl.result:
                self.results[p.pid], self.result_digests[p.pid] = red.values, mine
            else:
                status = Status.WRONG_RESULT
        if status is not Status.OK:
            accused = o if suspect in (NO_SUSPECT, me) else suspect
            self._evidence(p, accused, status.name.lower(), mine.hex(), decl.result.hex())
        self._note_nonfinite(p, {i for i in decl.delivered if nonfinite[i]} - {me})
        return Verdict(status, quoted, mine, bitmap, suspect)

    # --- receiver ---------------------------------------------------------------------

    async def run_receiver(self) -> None:
        """Collect the results and verdicts owed to me until the round deadline."""
        plan, me = self.plan, self.plan.me
        keys: list[tuple[int, str]] = []
        for p in plan.pieces:
            v = plan.verifier(p)
            if me not in (p.owner, v):
                keys.append((p.owner, f"result.{p.pid}"))
            if v is not None and v != me:
                keys.append((v, f"verdict.{p.pid}"))
        raw = await self._collect(keys, self.deadlines[2])
        for p in plan.pieces:
            v = plan.verifier(p)
            if (data := raw.get((p.owner, f"result.{p.pid}"))) is not None:
                await asyncio.to_thread(self._take_result, p, data)  # hashing: off the loop
            if v is not None and (data := raw.get((v, f"verdict.{p.pid}"))) is not None:
                frame = self._frame(data, v, p, VERDICT)
                if frame is not None and frame.verdict is not None:
                    self.verdicts[p.pid] = frame.verdict

    def _take_result(self, p: Piece, data: Payload) -> None:
        frame = self._frame(data, p.owner, p, RESULT)
        decl = None if frame is None else self._declaration_of(frame, p)
        if frame is None or decl is None:
            return
        try:
            values = self.codec.decode(frame.payload, p.size)
        except FrameError as exc:
            self._evidence(p, p.owner, "malformed_result", "", str(exc.detail))
            return
        self.declarations[p.pid], self.results[p.pid] = decl, values
        self.result_digests[p.pid] = got = self.plan.digest(frame.payload)
        if got != decl.result:
            self.faults[p.pid] = "declared_result_mismatch"
        used = used_elements(p, self.plan.peers, decl.averaged, self.masks)
        fault = self.faults.get(p.pid) or result_fault(
            values, used, self.own_rms, len(self.plan.peers), self.result_bound
        )
        if fault is not None:
            self.faults[p.pid] = fault
            self._evidence(
                p, p.owner, fault, f"rms<={self.result_bound}x{self.own_rms:.3g}", _rms_text(values)
            )
        self._check_my_entry(p, decl)

    def _check_my_entry(self, p: Piece, decl: Declaration) -> None:
        """Evidence when the owner misstates my own part (only I can tell)."""
        me, mine = self.plan.me, self.mine[p.pid]
        declared = decl.parts[me]
        if declared != NO_DIGEST and declared != mine.digest:
            self._evidence(p, p.owner, "altered_my_part", mine.digest.hex(), declared.hex())
        elif declared != NO_DIGEST and decl.rejected[me] and np.isfinite(mine.row).all():
            self._evidence(p, p.owner, "rejected_my_finite_part", mine.digest.hex(), declared.hex())
        elif (
            declared == NO_DIGEST
            and self.delivered_at.get((p.owner, p.pid), 1e300) <= (self.deadlines[0])
        ):
            self._evidence(p, p.owner, "omitted_my_part", mine.digest.hex(), NO_DIGEST.hex())

    # --- records ----------------------------------------------------------------------

    def records(self) -> dict[int, PieceRecord]:
        """What I hold of every piece, for :func:`~miner.distributed.audit.settle`."""
        out = {}
        for p in self.plan.pieces:
            decl = self.declarations.get(p.pid)
            out[p.pid] = PieceRecord(
                p.owner,
                self.plan.verifier(p),
                decl,
                None if decl is None else decl.digest(self.plan.round_id, p.pid),
                self.result_digests.get(p.pid),
                self.verdicts.get(p.pid),
                self.faults.get(p.pid),
            )
        return out

    # --- helpers ----------------------------------------------------------------------

    async def _collect(
        self, keys: list[tuple[int, str]], deadline: float
    ) -> dict[tuple[int, str], Payload]:
        return await collect(self.channel, self.plan.peers, self.plan.round_id, keys, deadline)

    def _parts(self, p: Piece, got: Mapping[tuple[int, str], Payload]) -> dict[int, Held]:
        """Round index -> the well-formed parts of piece ``p`` as held (a thread: hashing)."""
        held = {}
        for (i, _), data in got.items():
            frame = self._frame(data, i, p, PART)
            if frame is None:
                continue
            try:
                row = self.codec.decode(frame.payload, p.size)
            except FrameError as exc:
                self._evidence(p, self.plan.peers[i], "malformed_part", "", str(exc.detail))
                continue
            held[i] = Held(self.plan.digest(frame.payload), row)
        return held

    def _frame(self, data: Payload, sender: int, p: Piece, kind: int) -> Frame | None:
        peer = self.plan.peers[sender]
        try:
            frame = decode_frame(data, peer)
            self._check(frame, peer, kind, p)
        except FrameError as exc:
            log.warning("frame refused round=%d error=%s", self.plan.round_id, exc)
            self._evidence(p, sender, "malformed_frame", f"kind={kind}", str(exc.detail))
            return None
        return frame

    def _check(self, f: Frame, peer: str, kind: int, p: Piece) -> None:
        h = self.plan.head(p, self.codec.codec_id, kind)
        want = (kind, h.codec_id, h.round_id, h.piece, h.n_elements, h.n_peers, h.n_group)
        got = (f.kind, f.codec_id, f.round_id, f.piece, f.n_elements, f.n_peers, f.n_group)
        if got != want:
            raise FrameError(f"header {got} where {want} was expected", peer=peer)

    def _declaration(
        self, data: Payload | None, p: Piece, sender: int, kind: int
    ) -> Declaration | None:
        if data is None:
            return None
        frame = self._frame(data, sender, p, kind)
        return None if frame is None else self._declaration_of(frame, p)

    def _declaration_of(self, frame: Frame, p: Piece) -> Declaration | None:
        decl = frame.declaration
        if decl is None or len(decl.parts) != len(self.plan.peers):
            self._evidence(p, p.owner, "malformed_declaration", "", "")
            return None
        return decl

    def _note_nonfinite(self, p: Piece, senders: set[int] | frozenset[int]) -> None:
        for i in sorted(senders):
            self._evidence(p, i, "non_finite_part", "finite", "nan/inf")

    def _evidence(
        self, p: Piece, accused: int | str, kind: str, expected: str, received: str
    ) -> None:
        peer = accused if isinstance(accused, str) else self.plan.peers[accused]
        me = self.plan.peers[self.plan.me]
        self.evidence.append(
            Evidence(self.plan.round_id, p.pid, peer, kind, me, expected, received)
        )


def _rms_text(values: np.ndarray) -> str:
    with np.errstate(all="ignore"):
        return f"rms={rms(values):.3g}"


async def collect(
    channel: PeerChannel,
    peers: tuple[str, ...],
    round_id: int,
    keys: list[tuple[int, str]],
    deadline: float,
) -> dict[tuple[int, str], Payload]:
    """The frames under ``(peer index, tag)`` ``keys`` that arrive before ``deadline``."""
    tasks = {
        key: asyncio.create_task(channel.recv(peers[key[0]], round_id, key[1])) for key in keys
    }
    if not tasks:
        return {}
    timeout = max(_MIN_WAIT_S, deadline - asyncio.get_running_loop().time())
    try:
        await asyncio.wait(tasks.values(), timeout=timeout)
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    got = {}
    for key, task in tasks.items():
        if task.done() and not task.cancelled() and task.exception() is None:
            got[key] = task.result()
        else:
            log.info("missing %s from peer=%s round=%d", key[1], peers[key[0]], round_id)
    return got


async def finish(sends: list[asyncio.Task[int]], deadline: float | None) -> int:
    """Let sends run until ``deadline`` (``None``: stop now), cancel the rest, count bytes."""
    if sends and deadline is not None:
        timeout = max(0.0, deadline - asyncio.get_running_loop().time())
        await asyncio.wait(sends, timeout=timeout)
    for task in sends:
        task.cancel()
    results = await asyncio.gather(*sends, return_exceptions=True)
    return sum(r for r in results if isinstance(r, int))
