"""The all-reduce between miners over the in-memory channel: math, faults, poison, bytes."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import numpy as np
import pytest

from miner.distributed.channel import InMemoryHub
from miner.distributed.compression import BF16Codec, Int8BlockCodec
from miner.distributed.exchange import ExchangeConfig, GradientExchange, RoundResult
from miner.distributed.reports import Participation, participation
from miner.distributed.robust import RobustConfig

PEERS = ["0xa", "0xb", "0xc", "0xd"]
EXACT = ExchangeConfig(round_timeout_s=5.0, robust=RobustConfig(clip="none"))


def _group(
    config: ExchangeConfig, peers: list[str] = PEERS
) -> tuple[InMemoryHub, list[GradientExchange]]:
    hub = InMemoryHub()
    return hub, [GradientExchange(ch, peers, config) for ch in hub.channels(peers)]


async def _round(
    exchanges: list[GradientExchange], round_id: int, values: list[np.ndarray], masks=None
) -> list[RoundResult]:
    return list(
        await asyncio.gather(
            *(ex.allreduce(round_id, v, masks) for ex, v in zip(exchanges, values, strict=True))
        )
    )


@pytest.mark.parametrize("piece_elems", [1 << 22, 97])
async def test_dense_allreduce_is_the_mean_everywhere(piece_elems: int) -> None:
    _, group = _group(replace(EXACT, piece_elems=piece_elems))
    rng = np.random.default_rng(0)
    values = [rng.normal(size=1001).astype(np.float32) for _ in PEERS]
    results = await _round(group, 1, values)
    want = np.mean(values, axis=0)
    for r in results:
        np.testing.assert_allclose(r.mean, want, rtol=1e-5, atol=1e-6)
        assert (r.counts == 4).all()
        assert r.report.contributed == tuple(PEERS) and not r.report.dropped
    assert all(np.array_equal(results[0].mean, r.mean) for r in results)


@pytest.mark.parametrize("piece_elems", [1 << 22, 13])
async def test_masked_allreduce_averages_over_users_only(piece_elems: int) -> None:
    _, group = _group(replace(EXACT, piece_elems=piece_elems))
    rng = np.random.default_rng(1)
    masks = {p: rng.random(300) < 0.5 for p in PEERS}
    values = [np.where(masks[p], rng.normal(size=300), 0).astype(np.float32) for p in PEERS]
    results = await _round(group, 1, values, masks)
    m = np.stack([masks[p] for p in PEERS])
    counts = m.sum(axis=0)
    want = np.divide(np.sum(values, axis=0), counts, out=np.zeros(300), where=counts > 0)
    for r in results:
        np.testing.assert_allclose(r.mean, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(r.counts, counts)


@pytest.mark.parametrize("piece_elems", [1 << 22, 300])
async def test_dead_peer_is_dropped_within_timeout_and_next_round_works(piece_elems: int) -> None:
    config = ExchangeConfig(
        round_timeout_s=1.0, robust=RobustConfig(clip="none"), piece_elems=piece_elems
    )
    hub, group = _group(config)
    rng = np.random.default_rng(2)
    values = [rng.normal(size=4000).astype(np.float32) for _ in PEERS]
    # 0xd delivers its parts, then crashes before sending its shard's result
    hub.die_after["0xd"] = 3 * -(-1000 // piece_elems)  # all its parts: 3 shards of 1000
    start = time.monotonic()
    tasks = [asyncio.create_task(ex.allreduce(1, v)) for ex, v in zip(group, values, strict=True)]
    survivors = await asyncio.gather(*tasks[:3])
    assert time.monotonic() - start <= config.round_timeout_s + 1.0
    tasks[3].cancel()
    lo, hi = 3000, 4000  # 0xd's shard: nobody has its result
    for r in survivors:
        assert r.report.dropped == ("0xd",) and r.report.contributed == ("0xa", "0xb", "0xc")
        assert r.report.missing_shards == (3,)
        assert (r.counts[lo:hi] == 0).all() and not r.mean[lo:hi].any()
        # its parts arrived before it died, so the other shards still average all four
        np.testing.assert_allclose(r.mean[:lo], np.mean(values, axis=0)[:lo], rtol=1e-5, atol=1e-6)
        assert r.report.duration_s <= config.round_timeout_s + 1.0
    assert all(ex.alive == ("0xa", "0xb", "0xc") for ex in group[:3])
    nxt = await _round(group[:3], 2, values[:3])
    for r in nxt:
        np.testing.assert_allclose(r.mean, np.mean(values[:3], axis=0), rtol=1e-5, atol=1e-6)
        assert not r.report.dropped and r.report.duration_s < config.round_timeout_s
    tally = participation(group[0].reports)
    assert tally["0xd"] == Participation(rounds=1, contributed=0, dropped=1, rejected=0)
    assert tally["0xa"].rounds == 2 and tally["0xa"].share == 1.0


@pytest.mark.parametrize(
    ("attack", "clip"),
    [
        ("nan", "median"),
        ("scale1000", "median"),
        ("signflip", "centered"),
        ("scale1000", "centered"),
    ],
)
async def test_poisoned_peer_barely_moves_the_aggregate(attack: str, clip: str) -> None:
    _, group = _group(ExchangeConfig(round_timeout_s=5.0, robust=RobustConfig(clip=clip)))  # type: ignore[arg-type]
    rng = np.random.default_rng(3)
    base = rng.normal(size=2000)
    values = [(base + 0.1 * rng.normal(size=2000)).astype(np.float32) for _ in PEERS]
    honest = np.mean(values[:3], axis=0)
    values[3] = {"nan": values[3] * np.nan, "scale1000": values[3] * 1000, "signflip": -values[3]}[
        attack
    ]
    results = await _round(group, 1, values)
    rel = np.linalg.norm(results[0].mean - honest) / np.linalg.norm(honest)
    assert rel < 0.2
    if attack == "nan":
        assert results[0].report.rejected == ("0xd",)
        assert results[0].report.contributed == ("0xa", "0xb", "0xc")
        assert group[0].alive == tuple(PEERS)  # rejected for the round, not expelled


@pytest.mark.parametrize("codec", [BF16Codec(), Int8BlockCodec()])
async def test_compressed_rounds_agree_everywhere(codec) -> None:
    _, group = _group(
        ExchangeConfig(round_timeout_s=5.0, robust=RobustConfig(clip="none"), codec=codec)
    )
    rng = np.random.default_rng(4)
    values = [rng.normal(size=3000).astype(np.float32) for _ in PEERS]
    results = await _round(group, 1, values)
    want = np.mean(values, axis=0)
    assert all(np.array_equal(results[0].mean, r.mean) for r in results)  # replicas stay identical
    assert np.abs(results[0].mean - want).max() < 0.05


async def test_bytes_sent_are_bandwidth_optimal() -> None:
    hub, group = _group(EXACT)
    n = 40000
    await _round(group, 1, [np.ones(n, np.float32)] * 4)
    for peer in PEERS:
        # 2 (n-1)/n of the buffer, plus headers and bitmaps
        assert 2 * 3 / 4 * 4 * n <= hub.bytes_sent[peer] <= 2 * 3 / 4 * 4 * n * 1.01
