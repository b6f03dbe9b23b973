"""Evaluate a delivered network on the client's own held-out data (needs torch, lazily).

The network must come as a torch-only program, ``model.pt2`` (``torch.export``), pinned by
``program_sha256`` inside the hashed ``arch.json``; loading it needs no miner code.
Data is an ``.npz`` with ``x`` and ``y`` (the packed format of ``manta data pack``),
preprocessed like the miner's loader: uint8 as 0..255 and floats as 0..1, scaled to
[-1, 1], a grayscale channel repeated to the network's input channels, and a bilinear
resize to the architecture's resolution.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from client.errors import VerifyError

BATCH = 256


def require_torch() -> None:
    if importlib.util.find_spec("torch") is None:
        raise VerifyError(reason="evaluating on --data needs torch, which is not installed "
                          "(pip install 'manta[miner]'); the hash checks need no torch")


def _load_data(path: Path, resolution: int | None, in_channels: int | None) -> Any:
    import numpy as np
    import torch
    import torch.nn.functional as F

    try:
        with np.load(path, allow_pickle=False) as archive:
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError, KeyError) as exc:
        raise VerifyError(reason=f"cannot read {path} as an .npz with x and y: {exc}") from exc
    scale = 255.0 if x.dtype == np.uint8 or float(np.max(x)) > 1.0 else 1.0
    images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) / scale
    if images.ndim == 3:
        images = images[:, None]
    if in_channels and images.shape[1] == 1 and in_channels > 1:
        images = images.repeat(1, in_channels, 1, 1)
    if resolution and tuple(images.shape[-2:]) != (resolution, resolution):
        images = F.interpolate(images, size=(resolution, resolution), mode="bilinear",
                               align_corners=False)
    return images.mul(2.0).sub(1.0), torch.from_numpy(np.asarray(y).astype(np.int64))


def accuracy_on(program: Path, data: Path, resolution: int | None,
                in_channels: int | None) -> float:
    """Top-1 accuracy of the exported program on ``data`` (CPU, batches of 256)."""
    require_torch()
    import torch

    images, labels = _load_data(data, resolution, in_channels)
    try:
        module = torch.export.load(str(program)).module()
    except Exception as exc:  # any failure to deserialize is the delivery's fault
        raise VerifyError(reason=f"cannot load {program.name}: {exc}") from exc
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), BATCH):
            logits = module(images[start:start + BATCH])
            correct += int((logits.argmax(dim=1) == labels[start:start + BATCH]).sum())
    return correct / max(len(labels), 1)
