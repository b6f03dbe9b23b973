"""The masked averaging rule against a loop-by-loop reference."""

from __future__ import annotations

import numpy as np
import pytest

from miner.distributed.averaging import masked_mean, rig_then_miners
from miner.distributed.errors import LayoutError


def _reference(values: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, size = values.shape
    mean, counts = np.zeros(size), np.zeros(size, int)
    for j in range(size):
        used = [values[i, j] for i in range(n) if masks[i, j]]
        counts[j] = len(used)
        mean[j] = sum(used) / len(used) if used else 0.0
    return mean, counts


@pytest.mark.parametrize("seed", range(5))
def test_masked_mean_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(4, 50)).astype(np.float32)
    masks = rng.random((4, 50)) < 0.5
    mean, counts = masked_mean(values, masks)
    want_mean, want_counts = _reference(values, masks)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(counts, want_counts)


def test_element_used_by_one_of_three_is_not_divided_by_three() -> None:
    values = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 0.0], [0.0, 3.0, 0.0]], np.float32)
    masks = np.array([[1, 1, 0], [0, 1, 0], [0, 1, 0]], bool)
    mean, counts = masked_mean(values, masks)
    assert mean.tolist() == [3.0, 2.0, 0.0]  # DDP's sum/3 would give 1.0 for the first
    assert counts.tolist() == [1, 3, 0]


def test_dense_is_plain_mean_and_weights_apply() -> None:
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(masked_mean(values)[0], values.mean(axis=0))
    mean, _ = masked_mean(values, weights=np.array([3.0, 1.0]))
    np.testing.assert_allclose(mean, (3 * values[0] + values[1]) / 4)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(LayoutError):
        masked_mean(np.zeros(3, np.float32))
    with pytest.raises(LayoutError):
        masked_mean(np.zeros((2, 3), np.float32), np.ones((2, 4), bool))


def test_scheme2_rig_then_miners_matches_reference() -> None:
    rng = np.random.default_rng(7)
    rigs = [rng.normal(size=(p, 40)) for p in (2, 3, 1)]
    masks = rng.random((3, 40)) < 0.6
    mean, counts = rig_then_miners(rigs, masks)
    per_miner = np.stack([r.mean(axis=0) for r in rigs])
    want_mean, want_counts = _reference(per_miner, masks)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(counts, want_counts)
