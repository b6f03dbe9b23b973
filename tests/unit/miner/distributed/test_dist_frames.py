"""Gradient frames: parts, results with declarations, declarations alone, verdicts."""

from __future__ import annotations

import itertools

import pytest

from miner.distributed.errors import FrameError
from miner.distributed.frames import (
    DECLARE,
    NO_DIGEST,
    PART,
    RESULT,
    VERDICT,
    Declaration,
    FrameHead,
    Status,
    Verdict,
    declare_frame,
    decode_frame,
    digest,
    part_frame,
    result_frame,
    shard_bounds,
    verdict_frame,
)

HEAD = FrameHead(1, 2**40, 3, 5, 10, 3)


def _declaration() -> Declaration:
    parts = tuple(digest(bytes([i])) if i % 2 == 0 else NO_DIGEST for i in range(10))
    rejected = tuple(i == 8 for i in range(10))
    return Declaration(parts, rejected, (False, False, True), digest(b"result"))


def test_shard_bounds_cover_everything_once() -> None:
    for size, n in ((10, 3), (3, 4), (0, 2), (100, 1)):
        bounds = shard_bounds(size, n)
        assert len(bounds) == n and bounds[0][0] == 0 and bounds[-1][1] == size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))


def test_result_frame_roundtrip() -> None:
    decl = _declaration()
    frame = decode_frame(b"".join(result_frame(HEAD, decl, b"payload")), "peer")
    assert (frame.kind, frame.codec_id, frame.round_id, frame.piece, frame.n_elements) == (
        RESULT,
        1,
        2**40,
        3,
        5,
    )
    assert frame.declaration == decl and bytes(frame.payload) == b"payload"
    assert decl.delivered == frozenset({0, 2, 4, 6, 8}) and decl.averaged == {0, 2, 4, 6}
    assert decl.digest(2**40, 3) != decl.digest(2**40, 4)  # bound to its piece


def test_declare_and_verdict_frames_roundtrip() -> None:
    decl = _declaration()
    frame = decode_frame(b"".join(declare_frame(HEAD, decl)), "p")
    assert frame.kind == DECLARE and frame.declaration == decl and not len(frame.payload)
    verdict = Verdict(Status.BAD_PART, decl.digest(1, 3), NO_DIGEST, (True,) * 9 + (False,), 4)
    head = FrameHead(1, 2**40, 3, 5, 10, 0)
    frame = decode_frame(b"".join(verdict_frame(head, verdict)), "p")
    assert frame.kind == VERDICT and frame.verdict == verdict


def test_part_frame_and_garbage() -> None:
    frame = decode_frame(b"".join(part_frame(FrameHead(0, 1, 0, 2), b"12345678")), "p")
    assert frame.declaration is None and bytes(frame.payload) == b"12345678"
    assert frame.kind == PART
    with pytest.raises(FrameError):
        decode_frame(b"short", "p")
    with pytest.raises(FrameError):
        decode_frame(b"XXXX" + part_frame(FrameHead(0, 1, 0, 2), b"")[0][4:], "p")
    with pytest.raises(FrameError):  # a declaration cut short
        decode_frame(bytes(result_frame(HEAD, _declaration(), b"")[0])[:60], "p")
    with pytest.raises(FrameError):  # a declaration with a payload stuck on
        decode_frame(b"".join(declare_frame(HEAD, _declaration())) + b"x", "p")
    verdict = Verdict(Status.OK, NO_DIGEST, NO_DIGEST, (True,) * 10)
    raw = bytearray(b"".join(verdict_frame(FrameHead(1, 2, 3, 5, 10, 0), verdict)))
    with pytest.raises(FrameError):  # a verdict of the wrong length
        decode_frame(bytes(raw[:-1]), "p")
    raw[28] = 99  # no such status
    with pytest.raises(FrameError):
        decode_frame(bytes(raw), "p")
