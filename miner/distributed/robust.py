"""Robust aggregation of peers' gradient contributions (pure numpy).

A reducer receives one contribution per peer for its shard and must not let one peer steer
the average. In order:

1. **Non-finite rejection**: a contribution with a NaN or an infinity on an element it
   claims to use is dropped whole and reported.
2. **Clipping**: ``"median"`` (default) scales each contribution down to the median size of
   the contributions (RMS over the elements each used, i.e. the L2 norm when everyone used
   everything), which bounds a scaled-up gradient's pull to that of an honest one;
   ``"centered"`` is centered clipping (Karimireddy et al., 2021): starting from the
   coordinate-wise median, it averages the differences to the centre clipped to the median
   distance, which also resists sign-flipped or otherwise redirected gradients; ``"none"``
   is the plain masked mean (exact, for trusted groups and equivalence checks).
3. **Masked mean** over the survivors (the rule of :mod:`miner.distributed.averaging`).

Clipping runs per shard, the unit a reducer sees: each peer's influence on every shard is
bounded, so it is bounded on the whole buffer too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

ClipMode = Literal["none", "median", "centered"]


@dataclass(frozen=True)
class RobustConfig:
    """How a reducer combines contributions; ``iterations`` only for ``"centered"``."""

    clip: ClipMode = "median"
    iterations: int = 3


@dataclass(frozen=True)
class Aggregate:
    """A reducer's result for one shard: ``mean [L]``, and who was kept or rejected."""

    mean: np.ndarray
    accepted: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)


def aggregate(
    rows: Sequence[np.ndarray],
    masks: np.ndarray | None,
    config: RobustConfig,
    size: int,
    out: np.ndarray | None = None,
) -> Aggregate:
    """Combine the contributions ``rows`` (``m`` arrays ``[size]``; ``masks [m, size]`` bool
    or ``None``) per ``config``.

    The dense unclipped case (large shards in a trusted group) sums in float32 into ``out``
    (``[size]``, reused by the caller) without stacking the rows.
    """
    m = len(rows)
    finite = [i for i in range(m) if _finite(rows[i], None if masks is None else masks[i])]
    rejected = [i for i in range(m) if i not in set(finite)]
    if not finite:
        return Aggregate(np.zeros(size, np.float32), [], rejected)
    active = len(finite) if masks is None else int(masks[finite].any(axis=1).sum())
    clipping = config.clip != "none" and active > 2
    if masks is None and not clipping:
        total = np.empty(size, np.float32) if out is None else out
        if len(finite) == 1:
            total[:] = rows[finite[0]]
        else:
            np.add(rows[finite[0]], rows[finite[1]], out=total)
        for i in finite[2:]:
            total += rows[i]
        total *= np.float32(1.0 / len(finite))
        return Aggregate(total, finite, rejected)
    x = np.stack([rows[i] for i in finite]).astype(np.float32, copy=False)
    mk = np.ones(x.shape, bool) if masks is None else masks[finite]
    x = np.where(mk, x, np.float32(0.0))  # a peer's values outside its mask never count
    if config.clip == "median" and clipping:
        x = x * _clip_scale(x, mk)[:, None]
    if config.clip == "centered" and clipping:
        return Aggregate(_centered_clip(x, mk, config.iterations), finite, rejected)
    counts = mk.sum(axis=0)
    total = x.sum(axis=0, dtype=np.float32)
    mean = np.divide(total, counts, out=np.zeros(size, np.float32), where=counts > 0)
    return Aggregate(mean.astype(np.float32, copy=False), finite, rejected)


def _finite(row: np.ndarray, mask: np.ndarray | None) -> bool:
    if mask is None and np.isfinite(row.sum(dtype=np.float32)):
        return True  # one pass, no temporary; only a non-finite sum needs the exact check
    return bool(np.isfinite(row if mask is None else row[mask]).all())


def _clip_scale(diff: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``[m]`` factors bringing each row's RMS over the elements it used down to the median
    RMS of the rows that used anything here (rows that used nothing keep factor 1).

    RMS rather than norm, so that a peer that used more of the shard (scheme 2) is not
    clipped for that alone; with dense masks the two are the same rule.
    """
    used = masks.sum(axis=1)
    rms = np.sqrt(np.square(diff, dtype=np.float64).sum(axis=1) / np.maximum(used, 1))
    active = used > 0
    tau = float(np.median(rms[active])) if active.any() else 0.0
    scale = np.minimum(1.0, tau / np.maximum(rms, 1e-30))
    return np.where(active, scale, 1.0).astype(np.float32)


def _centered_clip(x: np.ndarray, masks: np.ndarray, iterations: int) -> np.ndarray:
    """Centered clipping with masks: elements a peer did not use do not pull the centre."""
    counts = masks.sum(axis=0)
    with np.errstate(all="ignore"):
        center = np.nanmedian(np.where(masks, x, np.nan).astype(np.float64), axis=0)
    center = np.nan_to_num(center, nan=0.0)
    for _ in range(max(1, iterations)):
        diff = np.where(masks, x - center, 0.0)
        step = (diff * _clip_scale(diff, masks)[:, None]).sum(axis=0)
        center = center + np.divide(step, counts, out=np.zeros_like(step), where=counts > 0)
    return np.where(counts > 0, center, 0.0).astype(np.float32)
