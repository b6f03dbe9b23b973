"""Datasets for supernet training: built-in sets read from installed packages, custom sets
from a path, a seeded synthetic set for tests, deterministic splits and a resumable batch
iterator.

Nothing is downloaded. Every classification loader returns an :class:`ImageDataset` whose
images are ``[N, C, H, W]`` float32 scaled to ``[-1, 1]`` and whose labels are ``[N]`` int64,
checked by :func:`validate_arrays` so that a wrong shape fails here, with a message that
names it, and not deep inside a convolution. The stereo set (:func:`procedural_stereo`) is
an :class:`ImageDataset` too: ``x`` the pairs ``[N, 2C, H, W]`` (left, right on channels),
``y`` the left disparity ``[N, H, W]`` float32 in pixels, ``num_classes`` 0.

Order is a pure function of ``(seed, epoch)``: :class:`BatchIterator` keeps only its
position ``(epoch, index)``, so a checkpoint that stores the position resumes the exact
batch sequence.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import logging
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from miner.automl.errors import DatasetError
from node.documents.spec import STEREO_DATASETS as STEREO_DATASETS  # rendered, not stored

logger = logging.getLogger(__name__)

BUILTIN_DATASETS = ("synthetic", "digits", "animal-mnist")  # image sets, stored or generated
_ANIMAL_FILES = ("animal_data_version_3.gz", "animal_label_version_3.gz")
_PICKLE_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)


@dataclass(frozen=True)
class ImageDataset:
    """Inputs ``x`` [N, C, H, W] float32 in [-1, 1] and targets ``y``: labels [N] int64, or
    for stereo the disparity [N, H, W] float32 (``num_classes`` 0)."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: torch.Tensor, name: str | None = None) -> ImageDataset:
        return ImageDataset(name or self.name, self.x[index], self.y[index], self.num_classes)


# --- validation and conversion ---------------------------------------------------------------


def validate_arrays(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int | None = None,
    in_channels: int | None = None,
) -> int:
    """Check images and labels; return the number of classes.

    ``x`` may be ``[N, H, W]`` (grayscale) or ``[N, C, H, W]``; ``y`` must be ``[N]``
    integers in ``[0, num_classes)``.
    """
    if x.ndim not in (3, 4):
        raise DatasetError(
            name=name, detail=f"images must be [N, H, W] or [N, C, H, W], got shape {x.shape}"
        )
    if y.ndim != 1:
        raise DatasetError(name=name, detail=f"labels must be [N], got shape {y.shape}")
    if x.shape[0] == 0:
        raise DatasetError(name=name, detail="no images")
    if x.shape[0] != y.shape[0]:
        raise DatasetError(name=name, detail=f"{x.shape[0]} images but {y.shape[0]} labels")
    if not (np.issubdtype(y.dtype, np.integer) or np.all(np.mod(y, 1) == 0)):
        raise DatasetError(name=name, detail=f"labels must be integers, got dtype {y.dtype}")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise DatasetError(name=name, detail="images must be finite numbers")
    channels = 1 if x.ndim == 3 else x.shape[1]
    if in_channels is not None and channels not in (1, in_channels):
        raise DatasetError(
            name=name, detail=f"images have {channels} channels, the network takes {in_channels}"
        )
    low, high = int(y.min()), int(y.max())
    classes = num_classes if num_classes is not None else high + 1
    if low < 0 or high >= classes:
        raise DatasetError(
            name=name, detail=f"labels must lie in [0, {classes}), found [{low}, {high}]"
        )
    return classes


def to_tensors(
    x: np.ndarray, y: np.ndarray, image_size: int | None = None, in_channels: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images to float32 [N, C, H, W] in [-1, 1] (uint8 as 0..255, floats as 0..1), resized
    to ``image_size`` and with a grayscale channel repeated to ``in_channels``."""
    scale = 255.0 if x.dtype == np.uint8 or float(np.max(x)) > 1.0 else 1.0
    images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) / scale
    if images.ndim == 3:
        images = images[:, None]
    if in_channels is not None and images.shape[1] == 1 and in_channels > 1:
        images = images.repeat(1, in_channels, 1, 1)
    if image_size is not None and tuple(images.shape[-2:]) != (image_size, image_size):
        images = resize_batch(images, image_size)
    labels = torch.from_numpy(np.asarray(y).astype(np.int64))
    return images.mul(2.0).sub(1.0).contiguous(), labels


def resize_batch(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``x`` [B, C, H, W] to ``size`` (``(h, w)``, or one int for a
    square); a no-op when it already has that size."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == hw:
        return x
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=False)


# --- loaders ---------------------------------------------------------------------------------


def load_dataset(
    source: str,
    *,
    image_size: int,
    in_channels: int,
    num_classes: int,
    seed: int = 0,
    synthetic_size: int = 512,
) -> ImageDataset:
    """A built-in dataset by name (:data:`BUILTIN_DATASETS`) or a custom one by path.

    Images are brought to ``image_size`` and ``in_channels``; labels must fit ``num_classes``.
    """
    if source == "synthetic":
        x, y = synthetic_arrays(synthetic_size, num_classes, image_size, in_channels, seed)
    elif source == "digits":
        x, y = digits_arrays()
    elif source == "animal-mnist":
        x, y = animal_mnist_arrays()
    elif "/" in source or "." in source or Path(source).exists():
        x, y = custom_arrays(Path(source))
    else:
        import difflib

        close = difflib.get_close_matches(source, BUILTIN_DATASETS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; built-in: {list(BUILTIN_DATASETS)}"
        raise DatasetError(name=source, detail=f"not a built-in dataset nor a path{hint}")
    validate_arrays(source, x, y, num_classes=num_classes, in_channels=in_channels)
    images, labels = to_tensors(x, y, image_size, in_channels)
    logger.info("dataset loaded name=%s n=%d shape=%s", source, len(labels), tuple(images.shape))
    return ImageDataset(source, images, labels, num_classes)


def procedural_stereo(
    n: int, height: int, width: int, max_disparity: float, seed: int,
    name: str = "procedural-stereo",
) -> ImageDataset:
    """``n`` seeded procedural stereo pairs (:mod:`miner.automl.stereo.procedural`) with
    disparities in ``[1, max_disparity]`` px; pair ``i`` of seed ``s`` is rendered from
    ``s * 1_000_003 + i``, so the same arguments give the same set on every machine."""
    from miner.automl.stereo.procedural import SceneConfig, render_batch

    if n < 2 or height < 8 or width < 8 or not 1.0 < max_disparity < width:
        raise DatasetError(
            name=name, detail=f"cannot render {n} pairs of {height}x{width} with disparities "
            f"up to {max_disparity} px")
    scene = SceneConfig(height=height, width=width, min_disparity=1.0,
                        max_disparity=max_disparity)
    base = (seed * 1_000_003) & 0xFFFFFFFF
    x, d = render_batch(scene, [(base + i) & 0xFFFFFFFF for i in range(n)])
    logger.info("dataset rendered name=%s n=%d shape=%s", name, n, x.shape)
    return ImageDataset(name, torch.from_numpy(x), torch.from_numpy(d), 0)


def synthetic_arrays(
    n: int, num_classes: int, image_size: int, in_channels: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images whose class sets a stripe frequency and orientation, plus seeded noise.

    Learnable in a few steps by a tiny network, so tests can check that training helps.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, 7919]))
    y = np.arange(n) % num_classes
    rng.shuffle(y)
    grid = np.linspace(0.0, 1.0, image_size, dtype=np.float32)
    rows, cols = np.meshgrid(grid, grid, indexing="ij")
    angle = np.pi * (y % 4) / 4.0
    freq = 1.0 + (y // 4)
    phase = np.cos(angle)[:, None, None] * rows + np.sin(angle)[:, None, None] * cols
    pattern = 0.5 + 0.5 * np.sin(2 * np.pi * freq[:, None, None] * phase)
    noisy = pattern + 0.15 * rng.standard_normal(pattern.shape).astype(np.float32)
    x = np.clip(noisy, 0.0, 1.0).astype(np.float32)
    return np.repeat(x[:, None], in_channels, axis=1), y.astype(np.int64)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits (bundled with the package), scaled to 0..1."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Refuses every global but the few numpy needs to rebuild an array."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        if module == "numpy.core.multiarray" and importlib.util.find_spec("numpy._core"):
            module = "numpy._core.multiarray"  # numpy 2 moved it; the old name warns
        return super().find_class(module, name)


def _read_numpy_pickle(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    value = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    if not isinstance(value, np.ndarray):
        raise pickle.UnpicklingError(f"expected an array, got {type(value).__name__}")
    return value


def animal_mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 28x28 animal silhouettes (10 classes) shipped inside ``animal_mnist``.

    Reads the package's two gzip pickles directly (its loader imports tensorflow), with an
    unpickler that admits numpy arrays only.
    """
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            name="animal-mnist",
            detail="package animal_mnist is not installed (pip install --no-deps animal-mnist)",
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "Animal_MNIST"
    try:
        x, y = (_read_numpy_pickle(folder / f) for f in _ANIMAL_FILES)
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DatasetError(name="animal-mnist", detail=f"cannot read {folder}: {exc}") from exc
    return x, y


def custom_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels from an ``.npz`` (arrays ``x`` and ``y``; recognised by content, so a
    content-addressed download named by its hash alone works too), a folder holding
    ``x.npy`` and ``y.npy``, or an image-folder tree ``<class>/<image>.png`` (needs Pillow,
    which is not a dependency: without it, convert such trees to .npz)."""
    if not path.exists():
        raise DatasetError(name=str(path), detail="no such file or folder")
    try:
        if path.is_dir():
            if not (path / "x.npy").exists():
                return image_folder_arrays(path)
            return (
                np.load(path / "x.npy", allow_pickle=False),
                np.load(path / "y.npy", allow_pickle=False),
            )
        if path.suffix == ".npz" or zipfile.is_zipfile(path):
            with np.load(path, allow_pickle=False) as archive:
                missing = {"x", "y"} - set(archive.files)
                if missing:
                    raise DatasetError(
                        name=str(path), detail=f"archive lacks arrays {sorted(missing)}"
                    )
                return archive["x"], archive["y"]
    except (OSError, ValueError) as exc:
        raise DatasetError(name=str(path), detail=f"cannot read: {exc}") from exc
    raise DatasetError(
        name=str(path), detail="expected an existing .npz file or a folder with x.npy/y.npy"
    )


def image_folder_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """PNGs in ``path/<class>/``, classes numbered in sorted name order; all one size."""
    classes = sorted(p for p in path.iterdir() if p.is_dir())
    if not classes:
        raise DatasetError(
            name=str(path), detail="folder holds neither x.npy/y.npy nor class folders"
        )
    if importlib.util.find_spec("PIL") is None:
        raise DatasetError(
            name=str(path), detail="PNG folders need Pillow (not installed); convert to .npz"
        )
    from PIL import Image

    images, labels = [], []
    for label, folder in enumerate(classes):
        for file in sorted(folder.glob("*.png")):
            with Image.open(file) as img:
                gray = img.mode in ("1", "L", "I;16")
                pixels = np.asarray(img.convert("L" if gray else "RGB"), dtype=np.uint8)
            images.append(pixels if gray else pixels.transpose(2, 0, 1))
            labels.append(label)
    if len({im.shape for im in images}) > 1:
        raise DatasetError(name=str(path), detail="images differ in size or channels")
    if not images:
        raise DatasetError(name=str(path), detail="no .png files in the class folders")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


# --- splits and batches ----------------------------------------------------------------------


def split_dataset(
    data: ImageDataset, val_fraction: float, seed: int
) -> tuple[ImageDataset, ImageDataset]:
    """A deterministic (train, val) split: the same seed always gives the same split."""
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(
            name=data.name, detail=f"val_fraction must lie in (0, 1), got {val_fraction}"
        )
    n_val = max(1, round(len(data) * val_fraction))
    if n_val >= len(data):
        raise DatasetError(name=data.name, detail=f"{len(data)} samples are too few to split")
    rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, 104729]))
    order = torch.from_numpy(rng.permutation(len(data)))
    return (
        data.subset(order[n_val:], f"{data.name}:train"),
        data.subset(order[:n_val], f"{data.name}:val"),
    )


@dataclass(frozen=True)
class DataPosition:
    """Where a :class:`BatchIterator` stands: the next batch is ``index`` of ``epoch``."""

    epoch: int = 0
    index: int = 0


class BatchIterator:
    """Endless shuffled mini-batches (last partial batch dropped), resumable from a position.

    The order of epoch ``e`` is a permutation drawn from ``(seed, e)`` alone.
    """

    def __init__(
        self, data: ImageDataset, batch_size: int, seed: int, position: DataPosition | None = None
    ) -> None:
        if batch_size < 1 or batch_size > len(data):
            raise DatasetError(
                name=data.name, detail=f"batch size {batch_size} does not fit {len(data)} samples"
            )
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.position = position or DataPosition()
        self._order: torch.Tensor | None = None
        self._order_epoch = -1

    @property
    def batches_per_epoch(self) -> int:
        return len(self.data) // self.batch_size

    def order(self, epoch: int) -> torch.Tensor:
        if self._order is None or self._order_epoch != epoch:
            rng = np.random.default_rng(
                np.random.SeedSequence([self.seed & 0xFFFFFFFF, 15485863, epoch])
            )
            self._order = torch.from_numpy(rng.permutation(len(self.data)))
            self._order_epoch = epoch
        return self._order

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``(x [B, C, H, W], y [B])``; advances the position."""
        epoch, index = self.position.epoch, self.position.index
        rows = self.order(epoch)[index * self.batch_size : (index + 1) * self.batch_size]
        index += 1
        if index >= self.batches_per_epoch:
            epoch, index = epoch + 1, 0
        self.position = DataPosition(epoch, index)
        return self.data.x[rows], self.data.y[rows]


def iterate_once(data: ImageDataset, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The dataset in order, in batches (the last one may be short): for evaluation."""
    return [
        (data.x[i : i + batch_size], data.y[i : i + batch_size])
        for i in range(0, len(data), batch_size)
    ]
