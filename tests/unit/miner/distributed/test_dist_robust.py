"""Robust aggregation keeps one bad peer from steering the shard."""

from __future__ import annotations

import numpy as np
import pytest

from miner.distributed.robust import RobustConfig, aggregate


def _honest(rng: np.random.Generator, n: int = 3, size: int = 200) -> np.ndarray:
    base = rng.normal(size=size)
    return (base + 0.1 * rng.normal(size=(n, size))).astype(np.float32)


@pytest.mark.parametrize("clip", ["median", "centered"])
@pytest.mark.parametrize("attack", ["nan", "inf", "scale1000"])
def test_bad_peer_barely_moves_the_mean(clip: str, attack: str) -> None:
    rng = np.random.default_rng(1)
    honest = _honest(rng)
    bad = {"nan": honest[0] * np.nan, "inf": honest[0] + np.inf, "scale1000": honest[0] * 1000}
    values = np.vstack([honest, bad[attack][None, :]])
    agg = aggregate(list(values), None, RobustConfig(clip=clip), values.shape[1])  # type: ignore[arg-type]
    target = honest.mean(axis=0)
    assert np.isfinite(agg.mean).all()
    rel = np.linalg.norm(agg.mean - target) / np.linalg.norm(target)
    assert rel < 0.35
    # the undefended mean is far off (or not even finite)
    plain = aggregate(list(values), None, RobustConfig(clip="none"), values.shape[1]).mean
    if attack == "scale1000":
        assert np.linalg.norm(plain - target) / np.linalg.norm(target) > 100
    else:
        assert agg.rejected == [3] and agg.accepted == [0, 1, 2]


def test_centered_clipping_resists_sign_flip() -> None:
    rng = np.random.default_rng(2)
    honest = _honest(rng)
    values = np.vstack([honest, -honest[0][None, :]])
    target = honest.mean(axis=0)
    centered = aggregate(list(values), None, RobustConfig(clip="centered"), values.shape[1]).mean
    plain = aggregate(list(values), None, RobustConfig(clip="none"), values.shape[1]).mean
    rel = np.linalg.norm(centered - target) / np.linalg.norm(target)
    assert rel < 0.15
    assert np.linalg.norm(plain - target) / np.linalg.norm(target) > 0.4


def test_masks_respected_by_every_mode() -> None:
    values = np.array([[1.0, 5.0], [3.0, 100.0], [2.0, 7.0]], np.float32)
    masks = np.array([[1, 0], [1, 0], [1, 1]], bool)
    for clip in ("none", "centered"):
        mean = aggregate(list(values), masks, RobustConfig(clip=clip), 2).mean  # type: ignore[arg-type]
        assert mean[1] == pytest.approx(7.0, rel=1e-5)  # only the third peer used element 1
    # median clipping scales the third contribution (RMS sqrt(53 / 2)) to the median RMS 3
    mean = aggregate(list(values), masks, RobustConfig(clip="median"), 2).mean
    assert mean[1] == pytest.approx(7.0 * 3 / np.sqrt(53 / 2), rel=1e-5)
    plain = aggregate(list(values), masks, RobustConfig(clip="none"), 2).mean
    assert plain[0] == pytest.approx(2.0)


@pytest.mark.parametrize("clip", ["median", "centered"])
def test_lone_user_of_a_shard_is_not_clipped_away(clip: str) -> None:
    # scheme 2: only the first peer's sub-network used these elements
    values = np.zeros((4, 3), np.float32)
    values[0] = [0.5, -2.0, 1.0]
    masks = np.zeros((4, 3), bool)
    masks[0] = True
    mean = aggregate(list(values), masks, RobustConfig(clip=clip), 3).mean  # type: ignore[arg-type]
    np.testing.assert_allclose(mean, values[0])


def test_all_rejected_gives_zero() -> None:
    agg = aggregate(list(np.full((2, 3), np.nan, np.float32)), None, RobustConfig(), 3)
    assert agg.accepted == [] and agg.rejected == [0, 1]
    assert not agg.mean.any()


@pytest.mark.parametrize("evil", [1e30, -1e30, 1e6])
def test_two_contributions_are_bounded_by_the_smaller(evil: float) -> None:
    """Two peers: clipping to a median cannot help (the median of two is their mean), so
    each part is bounded by ``bound_factor`` times the smaller one."""
    rng = np.random.default_rng(5)
    honest = rng.normal(size=300).astype(np.float32)
    bad = np.full(300, evil, np.float32)
    for clip in ("median", "centered"):
        config = RobustConfig(clip=clip)  # type: ignore[arg-type]
        agg = aggregate([honest, bad], None, config, 300)
        rms = np.sqrt(np.mean(honest.astype(np.float64) ** 2))
        got = np.sqrt(np.mean(agg.mean.astype(np.float64) ** 2))
        assert got <= (1 + config.bound_factor) / 2 * rms * 1.0001
        masks = np.ones((2, 300), bool)
        masked = aggregate([honest, bad], masks, config, 300).mean
        np.testing.assert_allclose(masked, agg.mean, rtol=1e-5, atol=1e-6)


def test_honest_parts_within_the_bound_average_exactly() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(2, 400)).astype(np.float32)
    agg = aggregate([a, 3 * b], None, RobustConfig(), 400)
    np.testing.assert_array_equal(agg.mean, (a + 3 * b) * np.float32(0.5))


def test_aggregation_is_deterministic_in_the_order_given() -> None:
    rng = np.random.default_rng(8)
    rows = list(rng.normal(size=(4, 5000)).astype(np.float32))
    rows[3] = rows[3] * 50
    first = aggregate(rows, None, RobustConfig(), 5000).mean.copy()
    for _ in range(3):
        assert aggregate(rows, None, RobustConfig(), 5000).mean.tobytes() == first.tobytes()
