"""The all-reduce between miners: reduce-scatter then all-gather over n peers.

Each round, the live peers (sorted by name, the same everywhere) split the flat buffer into
n shards; peer ``i`` owns shard ``i``, cut into pieces (:mod:`miner.distributed.pieces`).
Every peer sends each owner its part of each piece (reduce-scatter); the owner aggregates a
piece's parts as soon as they are all in, or at the reduce deadline (robustly,
:mod:`miner.distributed.robust`), and sends the result to everyone (all-gather) while the
next piece is still arriving. A peer sends and receives ``2 (n-1)/n`` of the buffer, the
bandwidth optimum, and every transfer is direct, so one slow peer delays no one else's shard.

Failure handling: a part that misses the reduce deadline drops its sender from that piece;
a piece whose result misses the round deadline gets no update this round (count 0, which
the optimizer guard turns into "leave these weights alone"), so every survivor applies the
same update. Result frames name who was averaged and who was rejected, so all survivors
write the same :class:`RoundReport` and drop the same peers from later rounds. A peer the
others dropped is not told: it finds itself missing from the next results (its round
reports show its own name as dropped).

Rejoining: a dropped member (typically restarted from an older checkpoint) asks every peer
to take it back (:meth:`GradientExchange.request_join`, called when its join message
arrives; :mod:`miner.distributed.rejoin`). Every live peer remembers the request; only the
round's *coordinator*, the first live peer in sorted order, acts on it. At the start of
round ``r`` the coordinator fixes the set of requesters that are not live, and every result
frame it sends in round ``r`` carries that set as a bitmap over the whole group. A peer
applies the admission — those members are live from round ``r + 1`` — exactly when its
round ``r`` report keeps the coordinator (all of the coordinator's results arrived and it
was not dropped); the report records it as ``admitted``. Survivors that agree on the report
therefore agree on the next live set; one that missed a coordinator result has dropped the
coordinator and is split from the others whether or not anyone joined. The coordinator
then hands the admitted member the group's state after round ``r`` and the round ``r + 1``
live set, and the member starts there (:meth:`GradientExchange.rejoin`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from miner.distributed.channel import Payload, PeerChannel
from miner.distributed.compression import Codec, Encoded, ErrorFeedback, Float32Codec
from miner.distributed.errors import ExchangeError, FrameError, JoinError
from miner.distributed.frames import PART, RESULT, Frame, decode_frame, encode_frame
from miner.distributed.pieces import Piece, assemble, plan_pieces
from miner.distributed.reports import RoundReport
from miner.distributed.robust import RobustConfig, aggregate
from node.errors import MantaError

log = logging.getLogger(__name__)
_MIN_WAIT_S = 0.01  # even past a deadline, take what has already arrived


@dataclass(frozen=True)
class ExchangeConfig:
    """Per-round limits, aggregation and wire format.

    Parts are due at ``reduce_share * round_timeout_s``, results at ``round_timeout_s``;
    ``piece_elems`` bounds the unit that travels and is reduced (pipelining).
    """

    round_timeout_s: float = 30.0
    reduce_share: float = 0.5
    robust: RobustConfig = field(default_factory=RobustConfig)
    codec: Codec = field(default_factory=Float32Codec)
    error_feedback: bool = True
    exclude_dropped: bool = True
    piece_elems: int = 1 << 22


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
        self._joins: set[str] = set()  # members that asked to be taken back
        self._first_round = 0  # a rejoined peer starts at the round it was admitted for
        self._feedback = ErrorFeedback()
        self._scratch: dict[tuple[int, int], np.ndarray] = {}  # reducer outputs, reused

    @property
    def me(self) -> str:
        return self.channel.me

    @property
    def coordinator(self) -> str:
        """The live peer that admits rejoining members (the first in sorted order)."""
        return self.alive[0]

    def request_join(self, peer: str) -> None:
        """Remember that ``peer`` asked to be taken back; the coordinator admits it in the
        results of the first round it runs without it (see the module docstring)."""
        if peer not in self.group or peer == self.me:
            raise JoinError("not another member of this group", peer=peer)
        self._joins.add(peer)

    def rejoin(self, round_id: int, alive: Sequence[str]) -> None:
        """Start again as a member admitted from ``round_id`` with the live set ``alive``
        (from the coordinator's state transfer)."""
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
        loop = asyncio.get_running_loop()
        reduce_deadline = loop.time() + self.config.round_timeout_s * self.config.reduce_share
        round_deadline = loop.time() + self.config.round_timeout_s
        pieces = plan_pieces(values.shape[0], len(peers), self.config.piece_elems)
        me = peers.index(self.me)
        admitting = [me == 0 and m in self._joins and m not in peers for m in self.group]
        sends: list[asyncio.Task[int]] = []
        try:
            try:
                parts = await asyncio.to_thread(self._encode_parts, round_id, values, pieces, me)
                for owner, frames in parts.items():
                    sends.append(asyncio.create_task(self._send(peers[owner], round_id, frames)))
                own: dict[int, list[Encoded]] = {}
                for piece in (p for p in pieces if p.owner == me):
                    own[piece.pid] = await self._reduce(
                        round_id, peers, values, masks, piece, reduce_deadline, admitting
                    )
                    tagged = [(f"result.{piece.pid}", own[piece.pid])]
                    for i, peer in enumerate(peers):
                        if i != me:
                            sends.append(asyncio.create_task(self._send(peer, round_id, tagged)))
                t_reduced = time.monotonic()
                keys = [(p.owner, f"result.{p.pid}") for p in pieces if p.owner != me]
                raw = await _collect(self.channel, peers, round_id, keys, round_deadline)
                bytes_sent = await _finish(sends, round_deadline)
            except BaseException:
                await _finish(sends, None)
                raise
            frames_by_pid: dict[int, Frame | None] = {
                p.pid: self._parse(raw[(p.owner, f"result.{p.pid}")], peers, round_id, p)
                for p in pieces
                if (p.owner, f"result.{p.pid}") in raw
            }
            for pid, (header, payload) in own.items():
                frame = decode_frame(header, self.me)
                frames_by_pid[pid] = replace(frame, payload=memoryview(payload).cast("B"))
            result = assemble(pieces, frames_by_pid, peers, masks, self.config.codec, out)
        finally:
            self.channel.release(round_id)  # received buffers are not used past this point
        report = replace(
            result.report,
            round_id=round_id,
            duration_s=time.monotonic() - started,
            bytes_sent=bytes_sent,
        )
        report = replace(report, admitted=self._admitted(pieces, frames_by_pid, report))
        log.debug(
            "round=%d pieces=%d reduce_s=%.4f total_s=%.4f",
            round_id,
            len(pieces),
            t_reduced - started,
            report.duration_s,
        )
        self._record(report)
        return RoundResult(result.mean, result.counts, report)

    # --- phases -----------------------------------------------------------------------

    def _encode_parts(
        self, round_id: int, values: np.ndarray, pieces: list[Piece], me: int
    ) -> dict[int, list[tuple[str, list[Encoded]]]]:
        """Per owner (not me): the tagged part frames of its pieces, in piece order."""
        codec_id = self.config.codec.codec_id
        parts: dict[int, list[tuple[str, list[Encoded]]]] = {}
        for p in pieces:
            if p.owner == me:
                continue
            data, _ = self._encode(("part", p.pid, p.size), values[p.lo : p.hi])
            frame = encode_frame(PART, codec_id, round_id, p.pid, p.size, data)
            parts.setdefault(p.owner, []).append((f"part.{p.pid}", frame))
        return parts

    def _encode(self, stream: tuple[str, int, int], x: np.ndarray) -> tuple[Encoded, np.ndarray]:
        if self.config.error_feedback:
            return self._feedback.encode(self.config.codec, stream, x)
        data = self.config.codec.encode(x)
        return data, self.config.codec.decode(data, x.shape[0])

    async def _send(self, peer: str, round_id: int, frames: list[tuple[str, list[Encoded]]]) -> int:
        """Send tagged frames to ``peer`` in order; the bytes that went out."""
        sent = 0
        for tag, frame in frames:
            try:
                await self.channel.send(peer, round_id, tag, frame)
            except (OSError, MantaError) as exc:  # the transport's errors are MantaErrors too
                log.warning(
                    "send failed peer=%s round=%d tag=%s error=%s", peer, round_id, tag, exc
                )
                break
            sent += sum(len(part) for part in frame)
        return sent

    async def _reduce(
        self,
        round_id: int,
        peers: tuple[str, ...],
        values: np.ndarray,
        masks: Mapping[str, np.ndarray] | None,
        piece: Piece,
        deadline: float,
        admitting: list[bool],
    ) -> list[Encoded]:
        """Collect one of my pieces' parts until ``deadline``; return its result frame."""
        me, lo, hi = piece.owner, piece.lo, piece.hi
        keys = [(i, f"part.{piece.pid}") for i in range(len(peers)) if i != me]
        raw = await _collect(self.channel, peers, round_id, keys, deadline)
        rows: dict[int, np.ndarray] = {me: values[lo:hi]}
        for (i, _), data in raw.items():
            try:
                frame = decode_frame(data, peers[i])
                self._check(frame, peers[i], PART, round_id, piece, None)
                rows[i] = self.config.codec.decode(frame.payload, piece.size)
            except FrameError as exc:
                log.warning("part refused round=%d error=%s", round_id, exc)
        order = sorted(rows)
        mk = None if masks is None else np.stack([masks[peers[i]][lo:hi] for i in order])
        key = (piece.pid, piece.size)
        if key not in self._scratch:
            self._scratch[key] = np.empty(piece.size, np.float32)
        agg = await asyncio.to_thread(
            aggregate,
            [rows[i] for i in order],
            mk,
            self.config.robust,
            piece.size,
            self._scratch[key],
        )
        contributors = [False] * len(peers)
        rejected = [False] * len(peers)
        for j in agg.accepted:
            contributors[order[j]] = True
        for j in agg.rejected:
            rejected[order[j]] = True
        encoded, _ = self._encode(("result", piece.pid, piece.size), agg.mean)
        codec_id = self.config.codec.codec_id
        return encode_frame(
            RESULT,
            codec_id,
            round_id,
            piece.pid,
            piece.size,
            encoded,
            contributors,
            rejected,
            admitting,
        )

    def _parse(
        self, data: Payload, peers: tuple[str, ...], round_id: int, piece: Piece
    ) -> Frame | None:
        peer = peers[piece.owner]
        try:
            frame = decode_frame(data, peer)
            self._check(frame, peer, RESULT, round_id, piece, len(peers))
            if len(frame.admitted) != len(self.group):
                raise FrameError(f"{len(frame.admitted)} group flags", peer=peer)
            self.config.codec.decode(frame.payload, piece.size)  # checks the payload size
        except FrameError as exc:
            log.warning("result refused round=%d error=%s", round_id, exc)
            return None
        return frame

    def _check(
        self, f: Frame, peer: str, kind: int, round_id: int, piece: Piece, n_peers: int | None
    ) -> None:
        want = (kind, self.config.codec.codec_id, round_id, piece.pid, piece.size)
        got = (f.kind, f.codec_id, f.round_id, f.piece, f.n_elements)
        if got != want or (n_peers is not None and f.n_peers != n_peers):
            raise FrameError(f"header {got} where {want} was expected", peer=peer)

    def _admitted(
        self, pieces: list[Piece], frames: Mapping[int, Frame | None], report: RoundReport
    ) -> tuple[str, ...]:
        """The members the round's coordinator (``peers[0]``) admitted, as its result frames
        say; none unless the report keeps the coordinator."""
        if not report.peers or report.peers[0] in report.dropped:
            return ()
        flags = {f.admitted for p in pieces if p.owner == 0 and (f := frames.get(p.pid))}
        if len(flags) != 1:
            return ()
        (admit,) = flags
        return tuple(
            m for m, f in zip(self.group, admit, strict=True) if f and m not in report.peers
        )

    def _record(self, report: RoundReport) -> None:
        self.reports.append(report)
        gone = set(report.dropped)
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


async def _collect(
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


async def _finish(sends: list[asyncio.Task[int]], deadline: float | None) -> int:
    """Let sends run until ``deadline`` (``None``: stop now), cancel the rest, count bytes."""
    if sends and deadline is not None:
        timeout = max(0.0, deadline - asyncio.get_running_loop().time())
        await asyncio.wait(sends, timeout=timeout)
    for task in sends:
        task.cancel()
    results = await asyncio.gather(*sends, return_exceptions=True)
    return sum(r for r in results if isinstance(r, int))
