"""``manta data pack``: a custom dataset into the one file format a spec can reference.

The packed format is an uncompressed ``.npz`` with two arrays, ``x`` (images, ``[N, H, W]``
or ``[N, C, H, W]``, uint8 0..255 or float 0..1) and ``y`` (``[N]`` int64 labels), which
the miner's loader reads; the spec pins it by the sha256 of the file. Inputs: an ``.npz``
holding ``x`` and ``y``, a folder with ``x.npy``/``y.npy``, or an image-folder tree
``<class>/<file>`` whose files are ``.npy`` arrays or ``.png`` images (PNG needs Pillow,
which is optional). numpy is imported lazily (the client's base install does not need it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from client.errors import DatasetPackError


class PackedDataset(BaseModel):
    """What ``pack`` wrote: the file, its sha256 (for the spec) and its shape."""

    model_config = ConfigDict(frozen=True)

    path: Path
    sha256: str
    samples: int
    image_shape: tuple[int, ...]
    classes: int
    class_names: tuple[str, ...] = ()


def _read_image(file: Path) -> Any:
    import numpy as np

    if file.suffix == ".npy":
        return np.load(file, allow_pickle=False)
    if importlib.util.find_spec("PIL") is None:
        raise DatasetPackError(path=str(file), reason="PNG files need Pillow (pip install pillow)")
    from PIL import Image

    with Image.open(file) as img:
        gray = img.mode in ("1", "L", "I;16")
        pixels = np.asarray(img.convert("L" if gray else "RGB"), dtype=np.uint8)
    return pixels if gray else pixels.transpose(2, 0, 1)


def _image_folder(path: Path) -> tuple[Any, Any, tuple[str, ...]]:
    import numpy as np

    classes = sorted(p for p in path.iterdir() if p.is_dir())
    if not classes:
        raise DatasetPackError(path=str(path), reason="no class folders and no x.npy/y.npy")
    images, labels = [], []
    for label, folder in enumerate(classes):
        for file in sorted(folder.iterdir()):
            if file.suffix in (".npy", ".png"):
                images.append(_read_image(file))
                labels.append(label)
    if not images:
        raise DatasetPackError(path=str(path), reason="no .npy or .png files in the class folders")
    if len({im.shape for im in images}) > 1:
        raise DatasetPackError(path=str(path), reason="images differ in size or channels")
    return np.stack(images), np.asarray(labels, dtype=np.int64), tuple(c.name for c in classes)


def _read_source(path: Path) -> tuple[Any, Any, tuple[str, ...]]:
    import numpy as np

    if not path.exists():
        raise DatasetPackError(path=str(path), reason="no such file or folder")
    try:
        if path.is_file() and path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                missing = {"x", "y"} - set(archive.files)
                if missing:
                    raise DatasetPackError(path=str(path), reason=f"lacks arrays {sorted(missing)}")
                return archive["x"], archive["y"], ()
        if path.is_dir() and (path / "x.npy").is_file():
            x = np.load(path / "x.npy", allow_pickle=False)
            return x, np.load(path / "y.npy", allow_pickle=False), ()
        if path.is_dir():
            return _image_folder(path)
    except (OSError, ValueError) as exc:
        raise DatasetPackError(path=str(path), reason=str(exc)) from exc
    raise DatasetPackError(path=str(path), reason="expected a .npz file or a folder")


def check_arrays(path: Path, x: Any, y: Any) -> None:
    """Shapes and dtypes the miner's loader accepts, with a message naming what is wrong."""
    import numpy as np

    if x.ndim not in (3, 4):
        reason = f"x must be [N,H,W] or [N,C,H,W], got {x.shape}"
        raise DatasetPackError(path=str(path), reason=reason)
    if y.ndim != 1 or len(y) != len(x):
        raise DatasetPackError(path=str(path), reason=f"y must be [N={len(x)}], got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and int(y.min()) < 0):
        raise DatasetPackError(path=str(path), reason="labels y must be non-negative integers")
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise DatasetPackError(path=str(path), reason=f"x must be uint8 or float, got {x.dtype}")
    if len(x) == 0:
        raise DatasetPackError(path=str(path), reason="no samples")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "0x" + digest.hexdigest()


def pack_dataset(source: Path, out: Path) -> PackedDataset:
    """Pack ``source`` into ``out`` (``.npz``), written atomically; returns its sha256."""
    try:
        import numpy as np
    except ImportError as exc:
        raise DatasetPackError(path=str(source), reason="numpy is not installed") from exc
    x, y, names = _read_source(source)
    check_arrays(source, x, y)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, x=x, y=y.astype(np.int64))
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return PackedDataset(
        path=out, sha256=sha256_file(out), samples=len(y), image_shape=tuple(x.shape[1:]),
        classes=int(y.max()) + 1, class_names=names,
    )
