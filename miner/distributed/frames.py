"""Gradient frames: the bytes one peer sends another during an all-reduce round.

Every frame starts with a fixed little-endian header::

    magic "MGX1" | version u8 | kind u8 | codec u8 | reserved u8 | round u64 | piece u32 |
    n_elements u32 | n_peers u16 | n_group u16

then, by ``kind``:

- ``PART`` (0): the codec's payload, a peer's contribution to one piece;
- ``RESULT`` (1): a :class:`Declaration`, then the codec's payload: the piece's owner's
  aggregate, sent to every peer that does not reduce the piece itself;
- ``DECLARE`` (2): a :class:`Declaration` alone, sent by the owner to the piece's verifier;
- ``VERDICT`` (3): a :class:`Verdict`, sent by the verifier to every other peer.

A declaration is ``n_peers`` 16-byte part digests (all zero: no part from that peer),
a rejected bitmap (``n_peers`` bits), an admitted bitmap over the whole sorted group
(``n_group`` bits; only the round's coordinator sets any) and the 16-byte digest of the
encoded result. A verdict is ``status u8 | suspect u16 | declaration digest 16 | result
digest 16 | held bitmap (n_peers bits)``. ``piece`` is the global piece number
(:mod:`miner.distributed.pieces`). A frame that does not parse is refused with
:class:`FrameError`; what the fields mean is checked in :mod:`miner.distributed.audit`.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from miner.distributed.compression import Encoded
from miner.distributed.errors import FrameError

MAGIC = b"MGX1"
VERSION = 3
PART, RESULT, DECLARE, VERDICT = 0, 1, 2, 3
DIGEST_BYTES = 16
NO_DIGEST = bytes(DIGEST_BYTES)
NO_SUSPECT = 0xFFFF
_HEADER = struct.Struct("<4sBBBBQIIHH")
_VERDICT = struct.Struct("<BH16s16s")


def digest(data: Encoded) -> bytes:
    """The 16-byte BLAKE2b digest that names a part or a result in declarations."""
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()


class Status(IntEnum):
    """A verifier's finding on one piece (:mod:`miner.distributed.audit`)."""

    OK = 0
    WRONG_RESULT = 1  # same parts, another result
    BAD_PART = 2  # a declared part is not the one its sender sent me (someone lies)
    UNVERIFIABLE = 3  # a declared part never reached me
    OMITTED = 4  # my own part is missing from the declaration
    NO_DECLARATION = 5  # the owner's declaration never reached me
    WRONG_FLAG = 6  # a declared part is the one I hold, but its rejected flag is false


@dataclass(frozen=True)
class Declaration:
    """What a piece's owner says it aggregated: per round peer the digest of the part it
    used (``NO_DIGEST``: none), which parts it rejected as non-finite, which group members
    the coordinator admits from the next round, and the digest of its encoded result."""

    parts: tuple[bytes, ...]
    rejected: tuple[bool, ...]
    admitted: tuple[bool, ...]
    result: bytes

    @property
    def delivered(self) -> frozenset[int]:
        """Round indices whose part the owner received."""
        return frozenset(i for i, d in enumerate(self.parts) if d != NO_DIGEST)

    @property
    def averaged(self) -> frozenset[int]:
        """Round indices whose part is in the result (received and finite)."""
        return frozenset(i for i in self.delivered if not self.rejected[i])

    def encode(self) -> bytes:
        return b"".join(
            (*self.parts, _pack_bits(self.rejected), _pack_bits(self.admitted), self.result)
        )

    def digest(self, round_id: int, piece: int) -> bytes:
        """Names this declaration for this piece of this round (verdicts quote it)."""
        return digest(struct.pack("<QI", round_id, piece) + self.encode())


@dataclass(frozen=True)
class Verdict:
    """A verifier's finding, the declaration and result digests it refers to (those the
    owner sent it, and the one it computed), whose parts it held, and whom ``status`` names
    (``suspect``, a round index, for ``BAD_PART`` and ``UNVERIFIABLE``)."""

    status: Status
    declaration: bytes
    result: bytes
    held: tuple[bool, ...]
    suspect: int = NO_SUSPECT

    def encode(self) -> bytes:
        head = _VERDICT.pack(self.status, self.suspect, self.declaration, self.result)
        return head + _pack_bits(self.held)


@dataclass(frozen=True)
class Frame:
    kind: int
    codec_id: int
    round_id: int
    piece: int
    n_elements: int
    n_peers: int
    payload: memoryview
    declaration: Declaration | None = None
    verdict: Verdict | None = None
    n_group: int = 0


@dataclass(frozen=True)
class FrameHead:
    """The header fields every frame of one piece of one round shares."""

    codec_id: int
    round_id: int
    piece: int
    n_elements: int
    n_peers: int = 0
    n_group: int = 0

    def pack(self, kind: int) -> bytes:
        return _HEADER.pack(
            MAGIC,
            VERSION,
            kind,
            self.codec_id,
            0,
            self.round_id,
            self.piece,
            self.n_elements,
            self.n_peers,
            self.n_group,
        )


def shard_bounds(size: int, n_shards: int) -> list[tuple[int, int]]:
    """``n_shards`` contiguous near-equal ``[start, stop)`` ranges covering ``size``."""
    edges = [(i * size) // n_shards for i in range(n_shards + 1)]
    return list(itertools.pairwise(edges))


def bitmap_size(n_peers: int) -> int:
    return -(-n_peers // 8)


def part_frame(head: FrameHead, payload: Encoded) -> list[Encoded]:
    """A part as ``[header, payload]`` (sent back to back, never concatenated)."""
    return [head.pack(PART), payload]


def result_frame(head: FrameHead, declaration: Declaration, payload: Encoded) -> list[Encoded]:
    return [head.pack(RESULT) + declaration.encode(), payload]


def declare_frame(head: FrameHead, declaration: Declaration) -> list[Encoded]:
    return [head.pack(DECLARE) + declaration.encode()]


def verdict_frame(head: FrameHead, verdict: Verdict) -> list[Encoded]:
    return [head.pack(VERDICT) + verdict.encode()]


def decode_frame(data: Encoded, peer: str) -> Frame:
    """Parse ``data`` from ``peer``; raises :class:`FrameError` on anything malformed."""
    data = memoryview(data).cast("B") if not isinstance(data, bytes | bytearray) else data
    if len(data) < _HEADER.size:
        raise FrameError(f"{len(data)} bytes is shorter than a header", peer=peer)
    magic, version, kind, codec_id, _, round_id, piece, n, n_peers, n_group = _HEADER.unpack_from(
        data
    )
    if magic != MAGIC or version != VERSION or kind not in (PART, RESULT, DECLARE, VERDICT):
        raise FrameError(f"magic={magic!r} version={version} kind={kind}", peer=peer)
    body = memoryview(data)[_HEADER.size :]
    declaration = verdict = None
    if kind in (RESULT, DECLARE):
        declaration, body = _decode_declaration(body, n_peers, n_group, peer)
        if kind == DECLARE and len(body):
            raise FrameError("a declaration carries no payload", peer=peer)
    elif kind == VERDICT:
        verdict = _decode_verdict(body, n_peers, peer)
        body = body[len(body) :]
    return Frame(kind, codec_id, round_id, piece, n, n_peers, body, declaration, verdict, n_group)


def _decode_declaration(
    body: memoryview, n_peers: int, n_group: int, peer: str
) -> tuple[Declaration, memoryview]:
    width, group_width = bitmap_size(n_peers), bitmap_size(n_group)
    size = n_peers * DIGEST_BYTES + width + group_width + DIGEST_BYTES
    if len(body) < size:
        raise FrameError("truncated declaration", peer=peer)
    raw = bytes(body[:size])
    parts = tuple(raw[i * DIGEST_BYTES : (i + 1) * DIGEST_BYTES] for i in range(n_peers))
    at = n_peers * DIGEST_BYTES
    rejected = _unpack_bits(raw[at : at + width], n_peers)
    admitted = _unpack_bits(raw[at + width : at + width + group_width], n_group)
    declaration = Declaration(parts, rejected, admitted, raw[size - DIGEST_BYTES :])
    return declaration, body[size:]


def _decode_verdict(body: memoryview, n_peers: int, peer: str) -> Verdict:
    if len(body) != _VERDICT.size + bitmap_size(n_peers):
        raise FrameError("a verdict of the wrong length", peer=peer)
    status, suspect, declaration, result = _VERDICT.unpack_from(body)
    try:
        found = Status(status)
    except ValueError:
        raise FrameError(f"unknown verdict status {status}", peer=peer) from None
    held = _unpack_bits(bytes(body[_VERDICT.size :]), n_peers)
    return Verdict(found, declaration, result, held, suspect)


def _pack_bits(flags: tuple[bool, ...] | list[bool]) -> bytes:
    return np.packbits(np.asarray(flags, dtype=bool), bitorder="little").tobytes()


def _unpack_bits(data: bytes, n: int) -> tuple[bool, ...]:
    bits = np.unpackbits(np.frombuffer(data, np.uint8), count=n, bitorder="little")
    return tuple(bool(b) for b in bits)
