"""The multi-scale disparity loss, its weight schedule, and the stereo metrics.

The network predicts disparity at 7 scales (in full-resolution pixels). Each prediction
is upsampled bilinearly to the ground truth's size and compared with it (L1 over valid
pixels); per-scale weights follow a schedule that starts on the coarse scales and moves
to the fine ones, as DispNet's training does. The metrics are end-point error (EPE, mean
absolute disparity error) and D1 (fraction with error > 3 px and > 5% of the truth), both
over valid pixels ``0 < d < max_disparity``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ScaleSchedule:
    """Per-scale loss weights (coarsest first) that change with training progress.

    ``points``: (progress in [0, 1], weights) sorted by progress; weights are interpolated
    linearly between points and held constant outside them.
    """

    points: tuple[tuple[float, tuple[float, ...]], ...]

    def __post_init__(self) -> None:
        progress = [p for p, _ in self.points]
        if not self.points or progress != sorted(progress):
            raise ValueError("schedule points must be non-empty and sorted by progress")
        if len({len(w) for _, w in self.points}) != 1:
            raise ValueError("every schedule point needs the same number of weights")

    def weights(self, progress: float) -> tuple[float, ...]:
        points = self.points
        if progress <= points[0][0]:
            return points[0][1]
        for (p0, w0), (p1, w1) in itertools.pairwise(points):
            if progress <= p1:
                t = (progress - p0) / (p1 - p0) if p1 > p0 else 1.0
                return tuple(a + t * (b - a) for a, b in zip(w0, w1, strict=True))
        return points[-1][1]


def default_schedule(n_scales: int = 7) -> ScaleSchedule:
    """Coarse-heavy at the start, all weight on the finer scales by the end."""
    start = tuple(1.0 - 0.75 * i / (n_scales - 1) for i in range(n_scales))
    middle = tuple(0.25 if i < n_scales - 3 else 1.0 for i in range(n_scales))
    end = tuple(0.0 if i < n_scales - 2 else (0.25 if i == n_scales - 2 else 1.0)
                for i in range(n_scales))
    return ScaleSchedule(((0.0, start), (0.4, middle), (0.8, end)))


def valid_mask(disparity: torch.Tensor, max_disparity: float) -> torch.Tensor:
    """``0 < d < max_disparity`` (ground truth 0 or inf means unknown)."""
    return (disparity > 0) & (disparity < max_disparity)


def multiscale_loss(preds: Sequence[torch.Tensor], disparity: torch.Tensor,
                    weights: Sequence[float], max_disparity: float) -> torch.Tensor:
    """Weighted sum over scales of the mean L1 error on valid pixels.

    ``preds``: [B, 1, h_i, w_i] each, coarsest first; ``disparity``: [B, H, W].
    """
    if len(preds) != len(weights):
        raise ValueError(f"{len(preds)} predictions but {len(weights)} weights")
    mask = valid_mask(disparity, max_disparity)
    n = mask.sum().clamp(min=1)
    target = torch.where(mask, disparity, torch.zeros_like(disparity))
    total = disparity.new_zeros(())
    for pred, w in zip(preds, weights, strict=True):
        if w == 0:
            continue
        up = pred if pred.shape[-2:] == disparity.shape[-2:] else F.interpolate(
            pred, size=disparity.shape[-2:], mode="bilinear", align_corners=False)
        err = (up[:, 0] - target).abs() * mask
        total = total + w * err.sum() / n
    return total


@torch.no_grad()
def stereo_errors(pred: torch.Tensor, disparity: torch.Tensor,
                  max_disparity: float) -> tuple[float, float, int]:
    """(sum of absolute errors, number of D1 outliers, number of valid pixels).

    Sums, so that a whole split's EPE and D1 are exact whatever the batching.
    ``pred`` and ``disparity``: [B, H, W].
    """
    mask = valid_mask(disparity, max_disparity)
    err = (pred - disparity).abs()[mask]
    outliers = (err > 3.0) & (err > 0.05 * disparity[mask])
    return float(err.sum()), int(outliers.sum()), int(mask.sum())


def epe(pred: torch.Tensor, disparity: torch.Tensor, max_disparity: float) -> float:
    """Mean absolute disparity error over valid pixels."""
    total, _, n = stereo_errors(pred, disparity, max_disparity)
    return total / max(n, 1)


def d1(pred: torch.Tensor, disparity: torch.Tensor, max_disparity: float) -> float:
    """Fraction of valid pixels off by more than 3 px and more than 5% of the truth."""
    _, bad, n = stereo_errors(pred, disparity, max_disparity)
    return bad / max(n, 1)
