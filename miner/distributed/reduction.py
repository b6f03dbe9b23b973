"""What a round computes alike on every peer, and what a reducer computes from parts.

:class:`RoundPlan` is one round's plan (who is in it, the pieces, each shard's verifier:
:func:`~miner.distributed.audit.verifier_of`), the same on every peer; :class:`MyPart` is a
peer's encoded part of one piece; :class:`Reducer` turns a piece's rows into its result
and the encoded bytes that travel, deterministically (the verifier must reproduce them bit
for bit: no error feedback on verified results). Torch-free and I/O-free.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from miner.distributed.audit import verifier_of
from miner.distributed.compression import Codec, Encoded, ErrorFeedback
from miner.distributed.frames import DECLARE, PART, RESULT, FrameHead, digest
from miner.distributed.pieces import Piece, plan_pieces
from miner.distributed.robust import RobustConfig, aggregate

log = logging.getLogger(__name__)
SELF_DIGEST = b"\xff" * 16
"""An unverified owner's own part in its declaration: present, not hashed (nobody checks)."""
PRESENT = b"\x01" * 16
"""A part or result in a two-peer round: present, not hashed (see :meth:`RoundPlan.digest`)."""


@dataclass(frozen=True)
class RoundPlan:
    """What every peer of the round computes alike: who is in it, the pieces, the verifier of
    each shard (``None``: unverified), and which members the coordinator admits."""

    round_id: int
    peers: tuple[str, ...]
    me: int
    pieces: list[Piece]
    verifiers: tuple[int | None, ...]  # by owner index
    group_size: int

    @classmethod
    def make(
        cls,
        round_id: int,
        peers: tuple[str, ...],
        me: str,
        size: int,
        piece_elems: int,
        verify: bool,
        group_size: int,
    ) -> RoundPlan:
        n = len(peers)
        verifiers = tuple(verifier_of(o, round_id, n) if verify else None for o in range(n))
        pieces = plan_pieces(size, n, piece_elems)
        return cls(round_id, peers, peers.index(me), pieces, verifiers, group_size)

    def verifier(self, piece: Piece) -> int | None:
        return self.verifiers[piece.owner]

    def digest(self, data: Encoded) -> bytes:
        """A part's or a result's digest in this round's declarations.

        At two peers both reducers hold both parts straight from their authors and apply
        what they computed themselves (no result travels), so nothing needs a content
        digest: :data:`PRESENT` marks a part or result as there, and the bytes are never
        hashed. From three peers on, a third party's part must be the same at both reducers
        and a receiver's result the one the verifier checked: BLAKE2b."""
        return PRESENT if len(self.peers) <= 2 else digest(data)

    def head(self, piece: Piece, codec_id: int, kind: int) -> FrameHead:
        """The header fields of a ``kind`` frame of ``piece``: parts carry no peer counts,
        verdicts the round's, results and declarations also the group's."""
        n = 0 if kind == PART else len(self.peers)
        g = self.group_size if kind in (RESULT, DECLARE) else 0
        return FrameHead(codec_id, self.round_id, piece.pid, piece.size, n, g)


@dataclass
class Held:
    """A part as a reducer holds it: the digest that names it in declarations, the row it
    aggregates (what every receiver decodes from the bytes), and whether it is finite
    (computed when a verifier first asks)."""

    digest: bytes
    row: np.ndarray

    @functools.cached_property
    def finite(self) -> bool:
        return bool(np.isfinite(self.row).all())


@dataclass(frozen=True)
class MyPart:
    """My part of one piece: the bytes I send (the same to owner and verifier), and how I
    hold it as a reducer."""

    encoded: Encoded
    held: Held

    @property
    def digest(self) -> bytes:
        return self.held.digest

    @property
    def row(self) -> np.ndarray:
        return self.held.row


@dataclass
class Reducer:
    """How rows become a piece's result: robust aggregation, then the wire encoding (no
    error feedback when verified: the verifier must reproduce the bytes)."""

    robust: RobustConfig
    codec: Codec
    feedback: ErrorFeedback | None
    scratch: dict[tuple[str, int, int], np.ndarray] = field(default_factory=dict)

    def reduce(
        self,
        role: str,
        piece: Piece,
        rows: Mapping[int, np.ndarray],
        plan: RoundPlan,
        masks: Mapping[str, np.ndarray] | None,
    ) -> Reduced:
        """The reduction of ``rows`` (round index -> ``[size]``) for ``piece`` (a thread)."""
        order = sorted(rows)
        mk = None
        if masks is not None:
            mk = np.stack([masks[plan.peers[i]][piece.lo : piece.hi] for i in order])
        key = (role, piece.pid, piece.size)
        if key not in self.scratch:
            self.scratch[key] = np.empty(piece.size, np.float32)
        agg = aggregate([rows[i] for i in order], mk, self.robust, piece.size, self.scratch[key])
        if self.feedback is None:
            encoded: Encoded = self.codec.encode(agg.mean)
        else:
            encoded, _ = self.feedback.encode(
                self.codec, ("result", piece.pid, piece.size), agg.mean
            )
        applied = self.codec.decode(encoded, piece.size) if self.codec.lossy else agg.mean
        rejected = frozenset(order[j] for j in agg.rejected)
        return Reduced(applied, encoded, rejected, plan.digest(encoded))


@dataclass(frozen=True)
class Reduced:
    """A piece's result as every receiver decodes it, the bytes that travel, the round
    indices whose parts were rejected as non-finite, and the result's digest."""

    values: np.ndarray
    encoded: Encoded
    rejected: frozenset[int]
    digest: bytes
