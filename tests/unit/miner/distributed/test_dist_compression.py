"""Wire codecs and error feedback."""

from __future__ import annotations

import numpy as np
import pytest

from miner.distributed.compression import (
    BF16Codec,
    ErrorFeedback,
    Float32Codec,
    Int8BlockCodec,
    codec_by_id,
    codec_by_name,
)
from miner.distributed.errors import FrameError


def test_float32_is_exact_and_sizes_are_right() -> None:
    x = np.random.default_rng(0).normal(size=1001).astype(np.float32)
    for codec, size in ((Float32Codec(), 4004), (BF16Codec(), 2002), (Int8BlockCodec(), 1001 + 16)):
        data = codec.encode(x)
        assert len(data) == size == codec.encoded_size(1001)
    assert np.array_equal(Float32Codec().decode(Float32Codec().encode(x), 1001), x)


def test_lossy_codecs_error_bounds() -> None:
    x = np.random.default_rng(1).normal(size=4096).astype(np.float32) * 1e-3
    bf = BF16Codec().decode(BF16Codec().encode(x), x.size)
    assert np.max(np.abs(bf - x) / np.abs(x)) <= 2**-8
    i8 = Int8BlockCodec(block=256)
    q = i8.decode(i8.encode(x), x.size)
    absmax = np.abs(x.reshape(-1, 256)).max(axis=1).repeat(256)
    assert np.all(np.abs(q - x) <= absmax / 127 / 2 + 1e-12)


def test_bf16_keeps_specials_and_range() -> None:
    x = np.array([np.nan, np.inf, -np.inf, 3e38, -0.0, 1e-30], np.float32)
    y = BF16Codec().decode(BF16Codec().encode(x), x.size)
    assert np.isnan(y[0]) and y[1] == np.inf and y[2] == -np.inf
    assert y[5] == pytest.approx(1e-30, rel=1e-2)


def test_error_feedback_keeps_the_running_sum_exact() -> None:
    rng = np.random.default_rng(2)
    codec, fb = Int8BlockCodec(block=64), ErrorFeedback()
    true_sum, sent_sum, plain_sum = np.zeros(640), np.zeros(640), np.zeros(640)
    for _ in range(50):
        x = (rng.normal(size=640) * np.linspace(1e-3, 1, 640)).astype(np.float32)
        _, sent = fb.encode(codec, ("part", 0, 640), x)
        true_sum += x
        sent_sum += sent
        plain_sum += codec.decode(codec.encode(x), 640)
    assert np.abs(sent_sum - true_sum).max() < np.abs(plain_sum - true_sum).max() / 3


def test_lookup_and_bad_payload() -> None:
    assert codec_by_name("bf16").codec_id == 1 and codec_by_id(2).lossy
    with pytest.raises(FrameError):
        codec_by_name("fp8")
    with pytest.raises(FrameError):
        Float32Codec().decode(b"\x00" * 7, 2)
