"""The all-reduce between miners over the in-memory channel: math, faults, poison, bytes."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import numpy as np
import pytest

from miner.distributed.audit import verifier_of
from miner.distributed.channel import InMemoryHub
from miner.distributed.compression import BF16Codec, Int8BlockCodec
from miner.distributed.exchange import ExchangeConfig, GradientExchange, RoundResult
from miner.distributed.reduction import RoundPlan
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


def _part_sends(peer: int, round_id: int, size: int, piece_elems: int, verify: bool) -> int:
    """How many part frames peer ``peer`` sends in a round of the four (to owners and
    verifiers)."""
    plan = RoundPlan.make(round_id, tuple(PEERS), PEERS[peer], size, piece_elems, verify, 4)
    return sum(len({p.owner, plan.verifier(p)} - {peer, None}) for p in plan.pieces)


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("piece_elems", [1 << 22, 300])
async def test_dead_peer_is_dropped_within_timeout_and_next_round_works(
    piece_elems: int, verify: bool
) -> None:
    config = ExchangeConfig(
        round_timeout_s=1.0,
        robust=RobustConfig(clip="none"),
        piece_elems=piece_elems,
        verify=verify,
    )
    hub, group = _group(config)
    rng = np.random.default_rng(2)
    values = [rng.normal(size=4000).astype(np.float32) for _ in PEERS]
    # 0xd delivers all its parts, then crashes before sending its shard's result
    hub.die_after["0xd"] = _part_sends(3, 1, 4000, piece_elems, verify)
    start = time.monotonic()
    tasks = [asyncio.create_task(ex.allreduce(1, v)) for ex, v in zip(group, values, strict=True)]
    survivors = await asyncio.gather(*tasks[:3])
    assert time.monotonic() - start <= config.round_timeout_s + 1.0
    tasks[3].cancel()
    # nobody has 0xd's shard; verified, nobody has the shard it verifies confirmed either
    lost = {3} | ({o for o in range(4) if verifier_of(o, 1, 4) == 3} if verify else set())
    for r in survivors:
        assert r.report.dropped == ("0xd",) and r.report.contributed == ("0xa", "0xb", "0xc")
        assert r.report.missing_shards == tuple(sorted(lost))
        for shard in range(4):
            lo, hi = 1000 * shard, 1000 * (shard + 1)
            if shard in lost:
                assert (r.counts[lo:hi] == 0).all() and not r.mean[lo:hi].any()
            else:  # its parts arrived before it died, so these still average all four
                want = np.mean(values, axis=0)[lo:hi]
                np.testing.assert_allclose(r.mean[lo:hi], want, rtol=1e-5, atol=1e-6)
        assert r.report.duration_s <= config.round_timeout_s + 1.0
    assert all(ex.alive == ("0xa", "0xb", "0xc") for ex in group[:3])
    nxt = await _round(group[:3], 2, values[:3])
    for r in nxt:
        np.testing.assert_allclose(r.mean, np.mean(values[:3], axis=0), rtol=1e-5, atol=1e-6)
        assert not r.report.dropped and r.report.duration_s < config.round_timeout_s
    tally = participation(group[0].reports)
    assert tally["0xd"] == Participation(rounds=1, contributed=0, dropped=1, rejected=0)
    assert tally["0xa"].rounds == 2 and tally["0xa"].share == 1.0
    assert not any(ex.caught for ex in group[:3])  # a crash is not a lie


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


@pytest.mark.parametrize("verify", [False, True])
@pytest.mark.parametrize("peers", [PEERS, PEERS[:2]])
async def test_bytes_sent_are_bandwidth_optimal(peers: list[str], verify: bool) -> None:
    hub, group = _group(replace(EXACT, verify=verify), peers)
    n, k = 40000, len(peers)
    await _round(group, 1, [np.ones(n, np.float32)] * k)
    # unverified: 2 (k-1)/k of the buffer; verified: parts to two reducers and one result to
    # the k-2 others, (3k-4)/k: the same at two peers, 4/3 of it at four
    share = (3 * k - 4) / k if verify else 2 * (k - 1) / k
    for peer in peers:
        assert share * 4 * n <= hub.bytes_sent[peer] <= share * 4 * n * 1.01
