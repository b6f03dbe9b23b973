"""The 1-D correlation layer of DispNetC: matching cost of left features against right
features shifted horizontally by every displacement ``0..max_displacement``.

For rectified pairs a left pixel ``x`` matches a right pixel ``x - d``, so
``out[b, d, y, x] = mean_c left[b, c, y, x] * right[b, c, y, x - d]`` (zero where
``x - d < 0``). :func:`correlation` computes all displacements at once with one batched
matrix product per image row and a strided view of its band (no loop over displacements);
:func:`correlation_reference` is the plain loop kept as the specification the tests
compare against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def correlation(left: torch.Tensor, right: torch.Tensor, max_displacement: int) -> torch.Tensor:
    """[B, C, H, W] x [B, C, H, W] -> cost volume [B, max_displacement + 1, H, W].

    One batched matrix product per image row gives every (left x, right x') product,
    ``[B*H, W, W]``; the band ``x' = x - d`` for ``d = 0..D`` is then read out as a
    strided view of the left-padded matrix (no loop, no copy). GEMM does ``W / (D + 1)``
    times the strictly needed multiplies but runs far faster than a gathered
    multiply-sum; for the sizes a stereo network uses (W of a few hundred) it wins.
    """
    b, c, h, w = left.shape
    d = max_displacement
    rows_l = left.permute(0, 2, 3, 1).reshape(b * h, w, c)
    rows_r = right.permute(0, 2, 1, 3).reshape(b * h, c, w)
    products = torch.bmm(rows_l, rows_r) / c  # [B*H, W (left x), W (right x')]
    padded = F.pad(products, (d, 0)).contiguous()  # column x' + D holds right x'
    n, wp = padded.shape[0], w + d
    # band[n, x, j] = padded[n, x, x + j] = products[n, x, x - (D - j)]
    band = padded.as_strided((n, w, d + 1), (w * wp, wp + 1, 1))
    cost = band.flip(2).reshape(b, h, w, d + 1)
    return cost.permute(0, 3, 1, 2).contiguous()


def correlation_reference(left: torch.Tensor, right: torch.Tensor,
                          max_displacement: int) -> torch.Tensor:
    """The same cost volume, one displacement at a time (the specification)."""
    b, _, h, w = left.shape
    out = left.new_zeros(b, max_displacement + 1, h, w)
    for d in range(max_displacement + 1):
        if d >= w:
            break
        out[:, d, :, d:] = (left[..., d:] * right[..., : w - d]).mean(1)
    return out


class Correlation(nn.Module):
    """Module form of :func:`correlation`; ``max_displacement`` in feature pixels."""

    def __init__(self, max_displacement: int) -> None:
        super().__init__()
        self.max_displacement = max_displacement

    @property
    def out_channels(self) -> int:
        return self.max_displacement + 1

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        return correlation(left, right, self.max_displacement)

    def macs(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
        """Multiply-accumulates of one call, ``C * (D + 1)`` per feature pixel (the count
        :func:`miner.automl.efficiency.trace_flops` reads)."""
        return inputs[0].numel() * self.out_channels

    def extra_repr(self) -> str:
        return f"max_displacement={self.max_displacement}"
