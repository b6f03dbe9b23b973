"""Gradient frames: the bytes one peer sends another during an all-reduce round.

A frame is a fixed little-endian header, then (result frames only) three peer bitmaps, then
the codec's payload::

    magic "MGX1" | version u8 | kind u8 | codec u8 | reserved u8 | round u64 | piece u32 |
    n_elements u32 | n_peers u16 | n_group u16 |
    [contributors bitmap | rejected bitmap (n_peers bits) | admitted bitmap (n_group bits)] |
    payload

``kind`` 0 is a *part* (a peer's contribution to a piece of the shard a reducer owns), 1 a
*result* (the reducer's aggregate of that piece, with who was averaged and who was
rejected, and — from the round's coordinator only — which members of the whole sorted group
rejoin from the next round); ``piece`` is the global piece number
(:mod:`miner.distributed.pieces`). A frame whose header disagrees with what the receiver
expects is refused with :class:`FrameError`.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass

import numpy as np

from miner.distributed.compression import Encoded
from miner.distributed.errors import FrameError

MAGIC = b"MGX1"
VERSION = 2
PART, RESULT = 0, 1
_HEADER = struct.Struct("<4sBBBBQIIHH")


@dataclass(frozen=True)
class Frame:
    kind: int
    codec_id: int
    round_id: int
    piece: int
    n_elements: int
    n_peers: int
    contributors: tuple[bool, ...]
    rejected: tuple[bool, ...]
    payload: memoryview
    admitted: tuple[bool, ...] = ()


def shard_bounds(size: int, n_shards: int) -> list[tuple[int, int]]:
    """``n_shards`` contiguous near-equal ``[start, stop)`` ranges covering ``size``."""
    edges = [(i * size) // n_shards for i in range(n_shards + 1)]
    return list(itertools.pairwise(edges))


def bitmap_size(n_peers: int) -> int:
    return -(-n_peers // 8)


def encode_frame(
    kind: int,
    codec_id: int,
    round_id: int,
    piece: int,
    n_elements: int,
    payload: Encoded,
    contributors: list[bool] | None = None,
    rejected: list[bool] | None = None,
    admitted: list[bool] | None = None,
) -> list[Encoded]:
    """The frame as ``[header, payload]`` (sent back to back, never concatenated); result
    frames carry the bitmaps (one flag per round peer, and one per group member for
    ``admitted``) in the header part."""
    n_peers = 0 if contributors is None else len(contributors)
    n_group = 0 if contributors is None or admitted is None else len(admitted)
    header = _HEADER.pack(
        MAGIC, VERSION, kind, codec_id, 0, round_id, piece, n_elements, n_peers, n_group
    )
    maps = b""
    if contributors is not None:
        flags = rejected if rejected is not None else [False] * n_peers
        maps = _pack_bits(contributors) + _pack_bits(flags)
        if admitted is not None:
            maps += _pack_bits(admitted)
    return [header + maps, payload]


def decode_frame(data: Encoded, peer: str) -> Frame:
    """Parse ``data`` from ``peer``; raises :class:`FrameError` on anything malformed."""
    data = memoryview(data).cast("B") if not isinstance(data, bytes | bytearray) else data
    if len(data) < _HEADER.size:
        raise FrameError(f"{len(data)} bytes is shorter than a header", peer=peer)
    fields = _HEADER.unpack_from(data)
    magic, version, kind, codec_id, _, round_id, piece, n, n_peers, n_group = fields
    if magic != MAGIC or version != VERSION or kind not in (PART, RESULT):
        raise FrameError(f"magic={magic!r} version={version} kind={kind}", peer=peer)
    offset = _HEADER.size
    contributors: tuple[bool, ...] = ()
    rejected: tuple[bool, ...] = ()
    admitted: tuple[bool, ...] = ()
    if kind == RESULT:
        width, group_width = bitmap_size(n_peers), bitmap_size(n_group)
        if len(data) < offset + 2 * width + group_width:
            raise FrameError("truncated peer bitmaps", peer=peer)
        contributors = _unpack_bits(bytes(data[offset : offset + width]), n_peers)
        rejected = _unpack_bits(bytes(data[offset + width : offset + 2 * width]), n_peers)
        offset += 2 * width
        admitted = _unpack_bits(bytes(data[offset : offset + group_width]), n_group)
        offset += group_width
    return Frame(
        kind,
        codec_id,
        round_id,
        piece,
        n,
        n_peers,
        contributors,
        rejected,
        memoryview(data)[offset:],
        admitted,
    )


def _pack_bits(flags: list[bool]) -> bytes:
    return np.packbits(np.asarray(flags, dtype=bool), bitorder="little").tobytes()


def _unpack_bits(data: bytes, n: int) -> tuple[bool, ...]:
    bits = np.unpackbits(np.frombuffer(data, np.uint8), count=n, bitorder="little")
    return tuple(bool(b) for b in bits)
