"""Accuracy predictor: vectorised encoding, Kendall tau, learning, determinism, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from miner.automl.errors import AutoMLError, CheckpointError
from miner.automl.predictor import (
    AccuracyPredictor,
    PredictorConfig,
    encode_batch,
    kendall_tau,
)
from miner.automl.space import SearchSpace, from_batch, to_batch
from miner.automl.toy_problem import ToyAccuracy

SPACE = SearchSpace(resolutions=(160, 192, 224))
SMALL = PredictorConfig(hidden=(64, 64), epochs=60)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def toy_data() -> tuple[list, np.ndarray]:
    rng = np.random.default_rng(11)
    archs = [SPACE.sample(rng) for _ in range(600)]
    accuracy = ToyAccuracy.create(SPACE, np.random.default_rng(1))
    return archs, accuracy.of_batch(to_batch(SPACE, archs))


@pytest.fixture(scope="module")
def trained(toy_data: tuple[list, np.ndarray]) -> tuple[AccuracyPredictor, object]:
    archs, y = toy_data
    predictor = AccuracyPredictor(SPACE, SMALL)
    report = predictor.fit(archs, y, np.random.default_rng(5))
    return predictor, report


@pytest.mark.parametrize(
    "space",
    [
        SPACE,
        SearchSpace(),
        SearchSpace(
            kernel_sizes=(3, 5), expand_ratios=(2.0, 4.0, 6.0, 8.0), depths=(1, 2, 3, 4), n_stages=3
        ),
        SPACE.restrict(kernel_sizes=(7,), depths=(4,)),
    ],
)
def test_vectorised_encoding_equals_space_encode(space: SearchSpace) -> None:
    rng = np.random.default_rng(3)
    archs = [space.sample(rng) for _ in range(64)] + [space.min_arch(), space.max_arch()]
    batch = to_batch(space, archs)
    got = encode_batch(space, batch)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, space.encode(archs))


def test_encoding_ignores_garbage_in_inactive_slots() -> None:
    batch = to_batch(SPACE, [SPACE.min_arch()])  # depth 2 everywhere: half the slots idle
    noisy = type(batch)(
        kernel=np.full_like(batch.kernel, 2),
        expand=np.full_like(batch.expand, 1),
        depth=batch.depth,
        resolution=batch.resolution,
    )
    got = encode_batch(SPACE, noisy)
    np.testing.assert_array_equal(got, SPACE.encode(from_batch(SPACE, noisy)))
    n_active = 2 * SPACE.n_stages
    assert got.sum() == 2 * n_active + 1


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=2, max_size=40))
def test_kendall_tau_matches_scipy_with_ties(pairs: list[tuple[int, int]]) -> None:
    stats = pytest.importorskip("scipy.stats")
    x, y = np.array(pairs, dtype=float).T
    expected = stats.kendalltau(x, y).statistic
    got = kendall_tau(x, y)
    assert kendall_tau(x, y, chunk_rows=3) == pytest.approx(got, abs=1e-12, nan_ok=True)
    if np.isnan(expected):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(expected, abs=1e-12)


def test_kendall_tau_extremes() -> None:
    x = np.arange(10.0)
    assert kendall_tau(x, x * 3 + 1) == pytest.approx(1.0)
    assert kendall_tau(x, -x) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        kendall_tau(x, x[:5])


def test_predictor_learns_a_synthetic_accuracy(
    trained: tuple[AccuracyPredictor, object], toy_data
) -> None:
    _, report = trained
    _, y = toy_data
    # observed tau 0.81-0.85 over seeds with this size; an untrained net ranks at ~0
    assert report.kendall_tau > 0.7
    assert report.rmse < 0.5 * float(np.std(y))
    assert report.n_val == 120 and report.n_train == 480


def test_predict_paths_agree(trained: tuple[AccuracyPredictor, object]) -> None:
    predictor, _ = trained
    archs = [SPACE.sample(np.random.default_rng(i)) for i in range(20)]
    from_archs = predictor.predict(archs)
    from_matrix = predictor.predict(SPACE.encode(archs))
    from_index = predictor.predict_batch(to_batch(SPACE, archs))
    assert from_archs.shape == (20,)
    np.testing.assert_array_equal(from_archs, from_matrix)
    np.testing.assert_array_equal(from_archs, from_index)
    with pytest.raises(AutoMLError):
        predictor.predict(np.zeros((3, 5), dtype=np.float32))


def test_fit_is_deterministic_for_a_seed(toy_data) -> None:
    archs, y = toy_data[0][:200], toy_data[1][:200]
    config = PredictorConfig(hidden=(32,), epochs=5)
    probe = archs[:30]
    a = AccuracyPredictor(SPACE, config)
    b = AccuracyPredictor(SPACE, config)
    c = AccuracyPredictor(SPACE, config)
    a.fit(archs, y, np.random.default_rng(9))
    b.fit(archs, y, np.random.default_rng(9))
    c.fit(archs, y, np.random.default_rng(10))
    np.testing.assert_array_equal(a.predict(probe), b.predict(probe))
    assert not np.array_equal(a.predict(probe), c.predict(probe))


def test_untrained_predictor_refuses_to_predict() -> None:
    with pytest.raises(AutoMLError, match="neither trained nor loaded"):
        AccuracyPredictor(SPACE).predict([SPACE.min_arch()])


def test_fit_refuses_mismatched_data() -> None:
    archs = [SPACE.sample(np.random.default_rng(i)) for i in range(20)]
    with pytest.raises(AutoMLError, match="one accuracy each"):
        AccuracyPredictor(SPACE).fit(archs, np.zeros(19), np.random.default_rng(0))


def test_save_and_load_round_trip(trained, tmp_path: Path) -> None:
    predictor, _ = trained
    path = tmp_path / "predictor.safetensors"
    predictor.save(path)
    loaded = AccuracyPredictor.load(path, SPACE)
    assert loaded.space == SPACE
    assert loaded.config.hidden == predictor.config.hidden
    archs = [SPACE.sample(np.random.default_rng(i)) for i in range(10)]
    np.testing.assert_array_equal(loaded.predict(archs), predictor.predict(archs))
    with pytest.raises(CheckpointError, match="trained for"):
        AccuracyPredictor.load(path, SearchSpace(resolutions=(224,)))


def test_load_refuses_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError):
        AccuracyPredictor.load(path)
    with pytest.raises(CheckpointError):
        AccuracyPredictor.load(tmp_path / "missing.safetensors")
