"""Robust aggregation of peers' gradient contributions (pure numpy).

A reducer receives one contribution per peer for its shard and must not let one peer steer
the average. In order:

1. **Non-finite rejection**: a contribution with a NaN or an infinity on an element it
   claims to use is dropped whole and reported.
2. **Bound** (every mode but ``"none"``, from two contributions up): each contribution is
   scaled down to at most ``bound_factor`` times the *lower median* of the contributions'
   sizes (RMS over the elements each used, i.e. the L2 norm over sqrt(n) when everyone used
   everything). With two contributions the lower median is the smaller one, so a part can
   never pull harder than ``bound_factor`` times the reducer's own (at two peers a 1e30
   part moves the mean by at most ``(1 + bound_factor) / 2`` honest sizes, not 5e29); from
   three on it is an honest size whenever honest parts are the majority. ``bound_factor``
   (default 4) is loose enough that honest parts, whose sizes differ by less than that, are
   averaged exactly.
3. **Clipping**: ``"median"`` (default) scales each contribution down to the median size
   (from three contributions up), which bounds a scaled-up gradient's pull to that of an
   honest one; ``"centered"`` is centered clipping (Karimireddy et al., 2021): starting from
   the coordinate-wise median, it averages the differences to the centre clipped to the
   median distance, which also resists sign-flipped or otherwise redirected gradients;
   ``"none"`` is the plain masked mean (exact, for trusted groups and equivalence checks).
4. **Masked mean** over the survivors (the rule of :mod:`miner.distributed.averaging`).

Clipping runs per shard, the unit a reducer sees: each peer's influence on every shard is
bounded, so it is bounded on the whole buffer too.

The result is a deterministic function of the rows in the order given (row-wise float
additions, float64 sums of squares in fixed blocks, no BLAS): two reducers given the same
parts produce the same bits, which is what lets a verifier check a reducer
(:mod:`miner.distributed.audit`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

ClipMode = Literal["none", "median", "centered"]


@dataclass(frozen=True)
class RobustConfig:
    """How a reducer combines contributions; ``iterations`` only for ``"centered"``;
    ``bound_factor`` is step 2's factor over the lower-median size."""

    clip: ClipMode = "median"
    iterations: int = 3
    bound_factor: float = 4.0


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

    The dense case without median or centered clipping (two peers, or large shards in a
    trusted group) sums in float32 into ``out`` (``[size]``, reused by the caller) without
    stacking the rows.
    """
    m = len(rows)
    finite = [i for i in range(m) if _finite(rows[i], None if masks is None else masks[i])]
    rejected = [i for i in range(m) if i not in set(finite)]
    if not finite:
        return Aggregate(np.zeros(size, np.float32), [], rejected)
    active = len(finite) if masks is None else int(masks[finite].any(axis=1).sum())
    clipping = config.clip != "none" and active > 2
    if masks is None and not clipping:
        scales = _dense_bound(rows, finite, config)
        return Aggregate(_dense_mean(rows, finite, scales, size, out), finite, rejected)
    x = np.stack([rows[i] for i in finite]).astype(np.float32, copy=False)
    mk = np.ones(x.shape, bool) if masks is None else masks[finite]
    x = np.where(mk, x, np.float32(0.0))  # a peer's values outside its mask never count
    if config.clip != "none":
        rms = _rms(x, mk)
        scale = _scale_to(rms, config.bound_factor * _lower_median(rms, mk))
        if config.clip == "median" and clipping:
            scale = np.minimum(scale, _scale_to(rms, _median(rms, mk)))
        x = x * scale[:, None]
    if config.clip == "centered" and clipping:
        return Aggregate(_centered_clip(x, mk, config.iterations), finite, rejected)
    counts = mk.sum(axis=0)
    total = x.sum(axis=0, dtype=np.float32)
    mean = np.divide(total, counts, out=np.zeros(size, np.float32), where=counts > 0)
    return Aggregate(mean.astype(np.float32, copy=False), finite, rejected)


def _dense_bound(
    rows: Sequence[np.ndarray], finite: list[int], config: RobustConfig
) -> np.ndarray | None:
    """Step 2's ``[len(finite)]`` factors for dense rows (``None``: all 1, or ``"none"``)."""
    if config.clip == "none" or len(finite) < 2:
        return None
    rms = np.array([_dense_rms(rows[i]) for i in finite])
    everyone = np.ones((len(finite), 1), bool)
    scale = _scale_to(rms, config.bound_factor * _lower_median(rms, everyone))
    return None if bool((scale == 1.0).all()) else scale


def _dense_mean(
    rows: Sequence[np.ndarray],
    finite: list[int],
    scales: np.ndarray | None,
    size: int,
    out: np.ndarray | None,
) -> np.ndarray:
    """``sum(scale_i * row_i) / len(finite)`` in float32, row by row, into ``out``."""
    total = np.empty(size, np.float32) if out is None else out
    if scales is not None:
        np.multiply(rows[finite[0]], scales[0], out=total)
        for j, i in enumerate(finite[1:], start=1):
            total += rows[i] * scales[j]
    elif len(finite) == 1:
        total[:] = rows[finite[0]]
    else:
        np.add(rows[finite[0]], rows[finite[1]], out=total)
        for i in finite[2:]:
            total += rows[i]
    total *= np.float32(1.0 / len(finite))
    return total


def _finite(row: np.ndarray, mask: np.ndarray | None) -> bool:
    if mask is None and np.isfinite(row.sum(dtype=np.float32)):
        return True  # one pass, no temporary; only a non-finite sum needs the exact check
    return bool(np.isfinite(row if mask is None else row[mask]).all())


_RMS_BLOCK = 1 << 18


def rms(row: np.ndarray) -> float:
    """RMS of a flat array: float64 sums of squares over fixed blocks (deterministic, and no
    float64 copy of the whole array)."""
    return _dense_rms(row)


def _dense_rms(row: np.ndarray) -> float:
    """RMS of a dense row: float64 sums of squares over fixed blocks (deterministic)."""
    total = 0.0
    for start in range(0, row.shape[0], _RMS_BLOCK):
        total += float(np.square(row[start : start + _RMS_BLOCK], dtype=np.float64).sum())
    return float(np.sqrt(total / max(1, row.shape[0])))


def _rms(x: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``[m]`` RMS of each row over the elements it used (0 where it used none).

    RMS rather than norm, so that a peer that used more of the shard (scheme 2) is not
    clipped for that alone; with dense masks the two are the same rule.
    """
    used = masks.sum(axis=1)
    return np.sqrt(np.square(x, dtype=np.float64).sum(axis=1) / np.maximum(used, 1))


def _lower_median(rms: np.ndarray, masks: np.ndarray) -> float:
    """The lower median of the RMS of rows that used anything and are not all zero (the
    smaller of two): an all-zero row carries no size to compare with."""
    live = np.sort(rms[masks.any(axis=1) & (rms > 0)])
    return float(live[(live.shape[0] - 1) // 2]) if live.shape[0] else 0.0


def _median(rms: np.ndarray, masks: np.ndarray) -> float:
    live = rms[masks.any(axis=1)]
    return float(np.median(live)) if live.shape[0] else 0.0


def _scale_to(rms: np.ndarray, tau: float) -> np.ndarray:
    """``[m]`` factors bringing each RMS down to ``tau`` (rows at or under it keep 1)."""
    scale = np.minimum(1.0, tau / np.maximum(rms, 1e-30))
    return np.where(rms > 0, scale, 1.0).astype(np.float32)


def _clip_scale(diff: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``[m]`` factors bringing each row's RMS over the elements it used down to the median
    RMS of the rows that used anything here (rows that used nothing keep factor 1)."""
    rms = _rms(diff, masks)
    return np.where(masks.any(axis=1), _scale_to(rms, _median(rms, masks)), 1.0).astype(np.float32)


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
