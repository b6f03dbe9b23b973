"""Evaluate a delivered network on the client's own held-out data (needs torch, lazily).

The network must come as a torch-only program, ``model.pt2`` (``torch.export``), pinned by
``program_sha256`` inside the hashed ``arch.json``; loading it needs no miner code.

Classification data is an ``.npz`` with ``x`` and ``y`` (the packed format of ``manta data
pack``), preprocessed like the miner's loader: uint8 as 0..255 and floats as 0..1, scaled
to [-1, 1], a grayscale channel repeated to the network's input channels, and a bilinear
resize to the architecture's resolution. The measure is top-1 accuracy.

Stereo data is an ``.npz`` with ``left`` and ``right`` ([N, 3, H, W], the same scaling)
and ``disparity`` ([N, H, W], pixels of the left image; 0, negative or non-finite means
unknown). Pairs of another size are resized to the network's input and the prediction is
resized back, its disparities scaled by the width ratio. The measure is the end-point
error (mean absolute disparity error over the known pixels), in pixels.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from client.errors import VerifyError

BATCH = 256
STEREO_BATCH = 32


def require_torch() -> None:
    if importlib.util.find_spec("torch") is None:
        raise VerifyError(reason="evaluating on --data needs torch, which is not installed "
                          "(pip install 'manta[miner]'); the hash checks need no torch")


def _read_npz(path: Path, keys: tuple[str, ...]) -> list[Any]:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            return [archive[key] for key in keys]
    except (OSError, ValueError, KeyError) as exc:
        raise VerifyError(reason=f"cannot read {path} as an .npz with "
                                 f"{', '.join(keys)}: {exc}") from exc


def _unit_images(x: Any) -> Any:
    """uint8 (or values above 1) as 0..255, floats as 0..1 → float32 tensor in [-1, 1]."""
    import numpy as np
    import torch

    scale = 255.0 if x.dtype == np.uint8 or float(np.max(x)) > 1.0 else 1.0
    return (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) / scale).mul(2.0).sub(1.0)


def _run(module: Any, batch: Any, program: Path) -> Any:
    """The delivered program on one batch; any failure is the delivery's (a program that
    does not take the input its own arch.json describes)."""
    try:
        return module(batch)
    except Exception as exc:
        raise VerifyError(reason=f"{program.name} failed on your data: "
                                 f"{type(exc).__name__}: {exc}") from exc


def _load_program(program: Path) -> Any:
    import torch

    try:
        return torch.export.load(str(program)).module()
    except Exception as exc:  # any failure to deserialize is the delivery's fault
        raise VerifyError(reason=f"cannot load {program.name}: {exc}") from exc


def _load_data(path: Path, resolution: int | None, in_channels: int | None) -> Any:
    import numpy as np
    import torch
    import torch.nn.functional as F

    x, y = _read_npz(path, ("x", "y"))
    if len(x) == 0 or len(x) != len(y):
        raise VerifyError(reason=f"{path}: x and y must hold the same number (> 0) of samples, "
                                 f"got {len(x)} and {len(y)}")
    images = _unit_images(x)
    if images.ndim == 3:
        images = images[:, None]
    if in_channels and images.shape[1] == 1 and in_channels > 1:
        images = images.repeat(1, in_channels, 1, 1)
    if resolution and tuple(images.shape[-2:]) != (resolution, resolution):
        images = F.interpolate(images, size=(resolution, resolution), mode="bilinear",
                               align_corners=False)
    return images, torch.from_numpy(np.asarray(y).astype(np.int64))


def accuracy_on(program: Path, data: Path, resolution: int | None,
                in_channels: int | None) -> float:
    """Top-1 accuracy of the exported program on ``data`` (CPU, batches of 256)."""
    require_torch()
    import torch

    images, labels = _load_data(data, resolution, in_channels)
    module = _load_program(program)
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), BATCH):
            logits = _run(module, images[start:start + BATCH], program)
            correct += int((logits.argmax(dim=1) == labels[start:start + BATCH]).sum())
    return correct / max(len(labels), 1)


def epe_on(program: Path, data: Path, input_shape: tuple[int, int, int]) -> float:
    """End-point error (px) of the exported stereo program on ``data`` (CPU, batches of 32).

    ``input_shape`` is the program's ``(2 * C, h, w)`` from ``arch.json``; the program's
    last output is the full-resolution disparity ``[B, 1, h, w]``.
    """
    require_torch()
    import numpy as np
    import torch
    import torch.nn.functional as F

    left, right, disparity = _read_npz(data, ("left", "right", "disparity"))
    if left.ndim != 4 or len(left) == 0 or left.shape != right.shape or disparity.shape != (
            left.shape[0], *left.shape[2:]):
        raise VerifyError(reason=f"{data}: left and right must be [N, C, H, W] and disparity "
                                 f"[N, H, W] with N > 0, got {left.shape}, {right.shape}, "
                                 f"{disparity.shape}")
    channels, h, w = input_shape
    if 2 * left.shape[1] != channels:
        raise VerifyError(reason=f"{data}: the network takes {channels // 2}-channel views, "
                                 f"the pairs have {left.shape[1]}")
    # one scale for both views: an image pair is 0..255 or 0..1 as a whole
    pairs = _unit_images(np.concatenate([left, right], 1))
    truth = torch.from_numpy(np.ascontiguousarray(disparity, dtype=np.float32))
    height, width = truth.shape[-2:]
    module = _load_program(program)
    total, known = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(pairs), STEREO_BATCH):
            batch = pairs[start:start + STEREO_BATCH]
            if (height, width) != (h, w):
                batch = F.interpolate(batch, size=(h, w), mode="bilinear", align_corners=False)
            outputs = _run(module, batch, program)
            pred = outputs[-1] if isinstance(outputs, tuple | list) else None
            if pred is None or tuple(pred.shape) != (len(batch), 1, h, w):
                got = [tuple(o.shape) for o in outputs] if isinstance(outputs, tuple | list) \
                    else type(outputs).__name__
                raise VerifyError(reason=f"{program.name} should end with a [B, 1, {h}, {w}] "
                                         f"disparity map, gave {got}")
            if (height, width) != (h, w):
                pred = F.interpolate(pred, size=(height, width), mode="bilinear",
                                     align_corners=False) * (width / w)
            target = truth[start:start + STEREO_BATCH]
            mask = torch.isfinite(target) & (target > 0)
            total += float((pred[:, 0] - target).abs()[mask].sum())
            known += int(mask.sum())
    if known == 0:
        raise VerifyError(reason=f"{data}: no pixel has a known disparity")
    return total / known
