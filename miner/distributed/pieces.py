"""How a round cuts the flat buffer, and how a peer puts the results back together (pure).

Peer ``i`` of ``n`` owns shard ``i`` (a contiguous ``1/n`` of the buffer); each shard is cut
into pieces of at most ``piece_elems`` elements, the unit that travels and is reduced, so
that the reduction of one piece overlaps the transfer of the next (pipelining) and no
message is larger than a piece. Pieces are numbered globally, shard-major. Which pieces a
peer applies, and whose parts are in them, is decided in :mod:`miner.distributed.audit`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from miner.distributed.frames import shard_bounds


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


def assemble(
    pieces: Sequence[Piece],
    applied: Mapping[int, tuple[np.ndarray, frozenset[int]]],
    peers: tuple[str, ...],
    masks: Mapping[str, np.ndarray] | None,
    out: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The round's ``(mean [N], counts [N])`` from the applied pieces.

    ``applied`` maps a piece id to its result ``[size]`` and the round indices averaged
    into it; a piece not in it gets mean 0 and count 0 (no update). ``counts`` is how many
    of the averaged peers used each element (read-only, maybe a broadcast view).
    """
    size = pieces[-1].hi if pieces else 0
    mean = np.empty(size, np.float32) if out is None else out
    counts = np.zeros(size, np.int32) if masks is not None else None
    per_piece: list[int] = []
    for piece in pieces:
        lo, hi = piece.lo, piece.hi
        got = applied.get(piece.pid)
        if got is None:
            mean[lo:hi] = 0.0
            per_piece.append(0)
            continue
        values, averaged = got
        mean[lo:hi] = values
        per_piece.append(len(averaged))
        if counts is not None and masks is not None:
            for i in sorted(averaged):
                counts[lo:hi] += masks[peers[i]][lo:hi]
            mean[lo:hi][counts[lo:hi] == 0] = 0.0
    if counts is None:
        counts = _dense_counts(pieces, per_piece, size)
    return mean, counts


def used_elements(
    piece: Piece,
    peers: tuple[str, ...],
    averaged: frozenset[int],
    masks: Mapping[str, np.ndarray] | None,
) -> np.ndarray | None:
    """``[size]`` bool: the piece's elements some averaged peer used (``None``: dense)."""
    if masks is None:
        return None
    used = np.zeros(piece.size, bool)
    for i in averaged:
        used |= masks[peers[i]][piece.lo : piece.hi]
    return used


def _dense_counts(pieces: Sequence[Piece], per_piece: list[int], size: int) -> np.ndarray:
    """Counts when everyone used everything: constant per piece, a free view if uniform."""
    if len(set(per_piece)) <= 1:
        return np.broadcast_to(np.int32(per_piece[0] if per_piece else 0), (size,))
    counts = np.empty(size, np.int32)
    for piece, c in zip(pieces, per_piece, strict=True):
        counts[piece.lo : piece.hi] = c
    return counts
