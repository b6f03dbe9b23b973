"""How a round cuts the flat buffer, and how a peer puts the results back together (pure).

Peer ``i`` of ``n`` owns shard ``i`` (a contiguous ``1/n`` of the buffer); each shard is cut
into pieces of at most ``piece_elems`` elements, the unit that travels and is reduced, so
that the reduction of one piece overlaps the transfer of the next (pipelining) and no
message is larger than a piece. Pieces are numbered globally, shard-major.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from miner.distributed.compression import Codec
from miner.distributed.frames import Frame, shard_bounds
from miner.distributed.reports import RoundReport


@dataclass(frozen=True)
class Piece:
    """Elements ``[lo, hi)`` of the buffer, reduced by peer ``owner``; ``pid`` is global."""

    pid: int
    owner: int
    lo: int
    hi: int

    @property
    def size(self) -> int:
        return self.hi - self.lo


def plan_pieces(size: int, n_peers: int, piece_elems: int) -> list[Piece]:
    """Every piece of a round, shard-major (the same on every peer)."""
    pieces: list[Piece] = []
    for owner, (lo, hi) in enumerate(shard_bounds(size, n_peers)):
        n = max(1, -(-(hi - lo) // max(1, piece_elems)))
        for a, b in shard_bounds(hi - lo, n):
            pieces.append(Piece(len(pieces), owner, lo + a, lo + b))
    return pieces


@dataclass(frozen=True)
class Assembled:
    """``mean [N]``, ``counts [N]`` (read-only, maybe a broadcast view), and the report."""

    mean: np.ndarray
    counts: np.ndarray
    report: RoundReport


def assemble(
    pieces: Sequence[Piece],
    frames: Mapping[int, Frame | None],
    peers: tuple[str, ...],
    masks: Mapping[str, np.ndarray] | None,
    codec: Codec,
    out: np.ndarray | None,
) -> Assembled:
    """The round's result from the result frames by piece id (``None``/absent: missing).

    A missing piece gets mean 0 and count 0 (no update); its owner counts as dropped.
    ``round_id``, ``duration_s`` and ``bytes_sent`` of the report are left for the caller.
    """
    size = pieces[-1].hi if pieces else 0
    mean = np.empty(size, np.float32) if out is None else out
    counts = np.zeros(size, np.int32) if masks is not None else None
    per_piece: list[int] = []
    used = np.ones(len(peers), bool)
    rejected = np.zeros(len(peers), bool)
    missing: set[int] = set()
    for piece in pieces:
        lo, hi = piece.lo, piece.hi
        frame = frames.get(piece.pid)
        if frame is None:
            missing.add(piece.owner)
            used[piece.owner] = False
            mean[lo:hi] = 0.0
            per_piece.append(0)
            continue
        mean[lo:hi] = codec.decode(frame.payload, piece.size)
        took = np.asarray(frame.contributors, bool)
        used &= took
        rejected |= np.asarray(frame.rejected, bool)
        per_piece.append(int(took.sum()))
        if counts is not None and masks is not None:
            for i in np.flatnonzero(took):
                counts[lo:hi] += masks[peers[i]][lo:hi]
            mean[lo:hi][counts[lo:hi] == 0] = 0.0
    if counts is None:
        counts = _dense_counts(pieces, per_piece, size)
    report = RoundReport(
        round_id=-1,
        peers=peers,
        contributed=tuple(p for i, p in enumerate(peers) if used[i]),
        dropped=tuple(p for i, p in enumerate(peers) if not used[i] and not rejected[i]),
        rejected=tuple(p for i, p in enumerate(peers) if rejected[i]),
        missing_shards=tuple(sorted(missing)),
        duration_s=0.0,
        bytes_sent=0,
    )
    return Assembled(mean, counts, report)


def _dense_counts(pieces: Sequence[Piece], per_piece: list[int], size: int) -> np.ndarray:
    """Counts when everyone used everything: constant per piece, a free view if uniform."""
    if len(set(per_piece)) <= 1:
        return np.broadcast_to(np.int32(per_piece[0] if per_piece else 0), (size,))
    counts = np.empty(size, np.int32)
    for piece, c in zip(pieces, per_piece, strict=True):
        counts[piece.lo : piece.hi] = c
    return counts
