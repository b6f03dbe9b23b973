"""The procedural stereo generator: seeded, any size, and geometrically exact."""

from __future__ import annotations

import numpy as np
import pytest

from miner.automl.stereo.procedural import SceneConfig, render_batch, render_pair


def warp_right_to_left(right: np.ndarray, disparity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Right image sampled at x - d (linear), and where that lies inside the image."""
    h, w = disparity.shape
    ys, xs = np.mgrid[0:h, 0:w]
    xr = xs - disparity
    inside = xr >= 0
    x0 = np.clip(np.floor(xr), 0, w - 2).astype(int)
    f = np.clip(xr - x0, 0, 1)
    return right[:, ys, x0] * (1 - f) + right[:, ys, x0 + 1] * f, inside


def test_stereo_generator_is_deterministic_by_seed() -> None:
    cfg = SceneConfig(height=24, width=40)
    a, b, c = render_pair(cfg, 7), render_pair(cfg, 7), render_pair(cfg, 8)
    assert np.array_equal(a.left, b.left) and np.array_equal(a.disparity, b.disparity)
    assert not np.array_equal(a.left, c.left)


@pytest.mark.parametrize(("h", "w"), [(16, 16), (33, 70), (64, 128)])
def test_stereo_generator_any_size_and_range(h: int, w: int) -> None:
    cfg = SceneConfig(height=h, width=w, min_disparity=2.0, max_disparity=12.0)
    pair = render_pair(cfg, 1)
    assert pair.left.shape == pair.right.shape == (3, h, w)
    assert pair.disparity.shape == (h, w) and pair.left.dtype == np.float32
    assert pair.disparity.min() >= 2.0 - 1e-4 and pair.disparity.max() <= 12.0 + 1e-4
    assert pair.left.min() >= -1.0 and pair.left.max() <= 1.0
    x, d = render_batch(cfg, [1, 2])
    assert x.shape == (2, 6, h, w) and d.shape == (2, h, w)
    assert np.array_equal(x[0, :3], pair.left)


def test_stereo_ground_truth_explains_the_right_view() -> None:
    cfg = SceneConfig(height=48, width=96, max_disparity=16.0, noise_std=0.0)
    good, wrong, slanted, layered = [], [], 0, 0
    for seed in range(12):
        pair = render_pair(cfg, seed)
        warped, inside = warp_right_to_left(pair.right, pair.disparity)
        good.append(np.median(np.abs(warped - pair.left).mean(0)[inside]))
        warped_bad, inside_bad = warp_right_to_left(pair.right, pair.disparity + 3.0)
        wrong.append(np.median(np.abs(warped_bad - pair.left).mean(0)[inside_bad]))
        rows = np.diff(pair.disparity, axis=1)
        slanted += int(np.any((np.abs(rows) > 1e-4) & (np.abs(rows) < 0.5)))
        layered += int(np.unique(np.round(pair.disparity)).size >= 3)
    assert np.median(good) < 0.03  # the truth explains the right view
    assert np.median(wrong) > 5 * np.median(good)
    assert slanted >= 3 and layered >= 6  # slanted planes and several depths occur


def test_stereo_generator_has_occlusions() -> None:
    """Some left pixels are hidden in the right view: the right pixel they map to shows a
    nearer surface (larger disparity)."""
    cfg = SceneConfig(height=48, width=96, max_disparity=16.0)
    occluded = 0
    for seed in range(6):
        d = render_pair(cfg, seed).disparity
        h, w = d.shape
        for y in range(h):
            xr = np.round(np.arange(w) - d[y]).astype(int)
            ok = xr >= 0
            # the left pixel whose match lands on each right pixel, nearest wins
            best = np.full(w, -np.inf)
            np.maximum.at(best, xr[ok], d[y][ok])
            occluded += int(np.sum(d[y][ok] < best[xr[ok]] - 1.0))
    assert occluded > 0
