"""Gradient frame headers and shard bounds."""

from __future__ import annotations

import itertools

import pytest

from miner.distributed.errors import FrameError
from miner.distributed.frames import PART, RESULT, decode_frame, encode_frame, shard_bounds


def test_shard_bounds_cover_everything_once() -> None:
    for size, n in ((10, 3), (3, 4), (0, 2), (100, 1)):
        bounds = shard_bounds(size, n)
        assert len(bounds) == n and bounds[0][0] == 0 and bounds[-1][1] == size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))


def test_result_frame_roundtrip() -> None:
    data = encode_frame(RESULT, 1, 2**40, 3, 5, b"payload", [True, False] * 5, [False] * 9 + [True])
    frame = decode_frame(b"".join(data), "peer")
    assert (frame.kind, frame.codec_id, frame.round_id, frame.piece, frame.n_elements) == (
        RESULT,
        1,
        2**40,
        3,
        5,
    )
    assert frame.contributors == (True, False) * 5 and frame.rejected[-1] and not frame.rejected[0]
    assert bytes(frame.payload) == b"payload"


def test_part_frame_and_garbage() -> None:
    frame = decode_frame(b"".join(encode_frame(PART, 0, 1, 0, 2, b"12345678")), "p")
    assert frame.contributors == () and bytes(frame.payload) == b"12345678"
    with pytest.raises(FrameError):
        decode_frame(b"short", "p")
    with pytest.raises(FrameError):
        decode_frame(b"XXXX" + encode_frame(PART, 0, 1, 0, 2, b"")[0][4:], "p")
    with pytest.raises(FrameError):
        decode_frame(encode_frame(RESULT, 0, 1, 0, 2, b"", [True] * 20)[0][:30], "p")
