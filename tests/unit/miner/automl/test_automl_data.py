"""Datasets: loaders, validation, deterministic splits, the resumable batch iterator."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from miner.automl import data as D
from miner.automl.errors import DatasetError


def _load(source: str, **kw) -> D.ImageDataset:
    args = {"image_size": 28, "in_channels": 1, "num_classes": 10} | kw
    return D.load_dataset(source, **args)


def test_synthetic_is_seeded_shaped_and_scaled() -> None:
    a = _load("synthetic", seed=3, synthetic_size=64)
    b = _load("synthetic", seed=3, synthetic_size=64)
    c = _load("synthetic", seed=4, synthetic_size=64)
    assert a.x.shape == (64, 1, 28, 28) and a.x.dtype == torch.float32
    assert a.y.dtype == torch.int64 and set(a.y.tolist()) == set(range(10))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    assert float(a.x.min()) >= -1.0 and float(a.x.max()) <= 1.0


def test_digits_are_resized_and_channels_repeated() -> None:
    d = _load("digits", image_size=16, in_channels=3)
    assert d.x.shape == (1797, 3, 16, 16)
    assert torch.equal(d.x[:, 0], d.x[:, 2])
    assert int(d.y.max()) == 9


def test_animal_mnist_reads_the_package_pickles() -> None:
    d = _load("animal-mnist")
    assert d.x.shape == (10_000, 1, 28, 28)
    assert torch.bincount(d.y).tolist() == [1000] * 10


def test_numpy_only_unpickler_refuses_other_globals(tmp_path: Path) -> None:
    path = tmp_path / "evil.gz"
    with gzip.open(path, "wb") as fh:
        pickle.dump(Path("x"), fh)
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        D._read_numpy_pickle(path)


def test_custom_npz_and_npy_folder(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    y = np.arange(20) % 10
    np.savez(tmp_path / "set.npz", x=x, y=y)
    d = _load(str(tmp_path / "set.npz"))
    assert d.x.shape == (20, 1, 28, 28) and torch.equal(d.y, torch.from_numpy(y))
    folder = tmp_path / "folder"
    folder.mkdir()
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y)
    assert torch.equal(_load(str(folder)).x, d.x)


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.zeros((4, 28)), np.zeros(4, dtype=int), "must be \\[N, H, W\\]"),
        (np.zeros((4, 3, 28, 28)), np.zeros(4, dtype=int), "3 channels, the network takes 1"),
        (np.zeros((4, 28, 28)), np.array([0, 1, 2, 10]), "labels must lie in \\[0, 10\\)"),
        (np.zeros((4, 28, 28)), np.array([0, -1, 2, 3]), "labels must lie"),
        (np.zeros((0, 28, 28)), np.zeros(0, dtype=int), "no images"),
        (np.zeros((4, 28, 28)), np.zeros(3, dtype=int), "4 images but 3 labels"),
        (np.zeros((4, 28, 28)), np.zeros((4, 1), dtype=int), "labels must be \\[N\\]"),
    ],
)
def test_bad_custom_data_is_refused_with_a_clear_message(tmp_path: Path, x, y, message) -> None:
    np.savez(tmp_path / "bad.npz", x=x, y=y)
    with pytest.raises(DatasetError, match=message):
        _load(str(tmp_path / "bad.npz"))


def test_missing_arrays_and_unknown_names(tmp_path: Path) -> None:
    np.savez(tmp_path / "half.npz", x=np.zeros((2, 28, 28)))
    with pytest.raises(DatasetError, match="lacks arrays \\['y'\\]"):
        _load(str(tmp_path / "half.npz"))
    with pytest.raises(DatasetError, match="did you mean 'digits'"):
        _load("digts")
    with pytest.raises(DatasetError, match="no such file"):
        _load(str(tmp_path / "nothing.npz"))


def test_split_is_deterministic_and_disjoint() -> None:
    d = _load("synthetic", synthetic_size=100)
    train, val = D.split_dataset(d, 0.2, seed=5)
    train2, val2 = D.split_dataset(d, 0.2, seed=5)
    _, val3 = D.split_dataset(d, 0.2, seed=6)
    assert len(train) == 80 and len(val) == 20
    assert torch.equal(val.x, val2.x) and torch.equal(train.y, train2.y)
    assert not torch.equal(val.x, val3.x)
    rows = {tuple(r.flatten()[:50].tolist()) for r in torch.cat([train.x, val.x])}
    assert len(rows) == 100


def test_batch_iterator_covers_epochs_and_resumes_exactly() -> None:
    d = _load("synthetic", synthetic_size=40)
    it = D.BatchIterator(d, batch_size=8, seed=1)
    epoch0 = [next(it) for _ in range(5)]
    assert it.position == D.DataPosition(1, 0)
    assert sorted(torch.cat([y for _, y in epoch0]).tolist()) == sorted(d.y.tolist())
    it.position = D.DataPosition(0, 3)
    resumed = D.BatchIterator(d, batch_size=8, seed=1, position=D.DataPosition(0, 3))
    for _ in range(4):
        (xa, _), (xb, _) = next(it), next(resumed)
        assert torch.equal(xa, xb)
    assert not torch.equal(it.order(0), it.order(1))
    with pytest.raises(DatasetError, match="batch size 41"):
        D.BatchIterator(d, batch_size=41, seed=1)


def test_resize_batch() -> None:
    x = torch.randn(2, 1, 28, 28)
    assert D.resize_batch(x, 28) is x
    assert D.resize_batch(x, 20).shape == (2, 1, 20, 20)
    flat = torch.ones(1, 1, 8, 8)
    assert torch.allclose(D.resize_batch(flat, 28), torch.ones(1, 1, 28, 28))


def test_png_class_folders(tmp_path: Path) -> None:
    import importlib.util

    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
    if importlib.util.find_spec("PIL") is None:
        (tmp_path / "cat" / "a.png").write_bytes(b"\x89PNG")
        with pytest.raises(DatasetError, match="need Pillow"):
            _load(str(tmp_path), num_classes=2)
        return
    from PIL import Image

    for i, label in enumerate(("cat", "dog")):
        Image.fromarray(np.full((28, 28), 100 * i, dtype=np.uint8)).save(tmp_path / label / "a.png")
    d = _load(str(tmp_path), num_classes=2)
    assert d.y.tolist() == [0, 1] and d.x.shape == (2, 1, 28, 28)


def test_npz_is_recognised_without_its_suffix(tmp_path) -> None:
    """A dataset downloaded by hash is stored as ``<sha256 hex>``, with no suffix."""
    import numpy as np

    from miner.automl.data import custom_arrays

    x = np.zeros((4, 1, 8, 8), dtype=np.float32)
    y = np.arange(4) % 2
    np.savez(tmp_path / "data.npz", x=x, y=y)
    stored = tmp_path / ("ab" * 32)
    (tmp_path / "data.npz").rename(stored)
    got_x, got_y = custom_arrays(stored)
    assert got_x.shape == x.shape and list(got_y) == list(y)
