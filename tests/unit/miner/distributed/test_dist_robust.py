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
