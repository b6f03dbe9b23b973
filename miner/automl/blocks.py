"""The elastic MBConv block: one block slot of the supernet, every setting of it at once.

A block is built for its largest setting (largest kernel, largest expand ratio) and holds
its active setting as two ints; ``forward`` runs that setting on views of the shared
weights. ``extract`` copies the active setting into a static :class:`~miner.automl.static.MBConv`,
``used`` names the slices of each parameter the setting reads, and ``reorder`` sorts the
middle channels by importance so that narrower settings keep the most useful ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from miner.automl.ops import (
    ElasticBatchNorm2d,
    ElasticDepthwise,
    ElasticPointwise,
    ElasticSqueezeExcite,
    make_divisible,
)
from miner.automl.static import BlockSpec, MBConv, make_activation

Region = tuple[slice, ...]


@dataclass(frozen=True)
class ElasticBlockConfig:
    """What a block slot may become. ``expand_ratios == (1.0,)`` means no expand conv."""

    in_channels: int
    out_channels: int
    stride: int
    kernel_sizes: tuple[int, ...]
    expand_ratios: tuple[float, ...]
    se: bool
    act: str
    divisor: int = 8

    def mid_channels(self, expand: float) -> int:
        if not self.has_expand:
            return self.in_channels
        return make_divisible(round(self.in_channels * expand), self.divisor)

    @property
    def has_expand(self) -> bool:
        return self.expand_ratios != (1.0,)

    def spec(self, kernel: int, expand: float) -> BlockSpec:
        """The static block this slot becomes with ``kernel`` and ``expand``."""
        mid = self.mid_channels(expand)
        se = make_divisible(mid // 4, self.divisor) if self.se else 0
        return BlockSpec(self.in_channels, mid, self.out_channels, kernel, self.stride, se,
                         self.act, self.has_expand)


class ElasticMBConv(nn.Module):
    """expand 1x1 -> elastic depthwise -> [SE] -> project 1x1; residual when shapes match."""

    def __init__(self, cfg: ElasticBlockConfig) -> None:
        super().__init__()
        self.cfg = cfg
        mid_max = cfg.mid_channels(max(cfg.expand_ratios))
        self.residual = cfg.stride == 1 and cfg.in_channels == cfg.out_channels
        self.act = make_activation(cfg.act)
        if cfg.has_expand:
            self.expand_conv = ElasticPointwise(cfg.in_channels, mid_max)
            self.expand_bn = ElasticBatchNorm2d(mid_max)
        self.dw_conv = ElasticDepthwise(mid_max, cfg.kernel_sizes, cfg.stride)
        self.dw_bn = ElasticBatchNorm2d(mid_max)
        self.se = ElasticSqueezeExcite(mid_max, cfg.divisor) if cfg.se else None
        self.project_conv = ElasticPointwise(mid_max, cfg.out_channels)
        self.project_bn = ElasticBatchNorm2d(cfg.out_channels)
        self.active_kernel = max(cfg.kernel_sizes)
        self.active_expand = max(cfg.expand_ratios)
        self.active_mid = mid_max

    def set_active(self, kernel: int, expand: float) -> None:
        self.active_kernel = kernel
        self.active_expand = expand
        self.active_mid = self.cfg.mid_channels(expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.cfg.has_expand:
            y = self.act(self.expand_bn(self.expand_conv(y, self.active_mid)))
        y = self.act(self.dw_bn(self.dw_conv(y, self.active_kernel)))
        if self.se is not None:
            y = self.se(y)
        y = self.project_bn(self.project_conv(y, self.cfg.out_channels))
        return x + y if self.residual else y

    # --- sub-network views ------------------------------------------------------------

    def active_spec(self) -> BlockSpec:
        return self.cfg.spec(self.active_kernel, self.active_expand)

    @torch.no_grad()
    def extract(self) -> MBConv:
        """A static block with copies of the active setting's weights."""
        spec = self.active_spec()
        block = MBConv(spec)
        mid, k = spec.mid_channels, spec.kernel
        if spec.expand_conv:
            block.expand[0].weight.copy_(self.expand_conv.weight[:mid])
            _copy_bn(block.expand[1], self.expand_bn, mid)
        block.dw[0].weight.copy_(self.dw_conv.kernel_weight(mid, k))
        _copy_bn(block.dw[1], self.dw_bn, mid)
        if self.se is not None:
            r = spec.se_channels
            block.se.reduce.weight.copy_(self.se.reduce.weight[:r, :mid])
            block.se.reduce.bias.copy_(self.se.reduce.bias[:r])
            block.se.expand.weight.copy_(self.se.expand.weight[:mid, :r])
            block.se.expand.bias.copy_(self.se.expand.bias[:mid])
        block.project[0].weight.copy_(self.project_conv.weight[:, :mid])
        _copy_bn(block.project[1], self.project_bn, spec.out_channels)
        return block

    def used(self, kernel: int, expand: float) -> list[tuple[str, Region]]:
        """(parameter name, region) for every parameter the setting reads; regions are boxes."""
        spec = self.cfg.spec(kernel, expand)
        mid, out = spec.mid_channels, spec.out_channels
        # a smaller kernel is computed from the centre of the second largest one, all of it
        ks = sorted(self.cfg.kernel_sizes)
        read = ks[-1] if kernel == ks[-1] else ks[-2]
        lo = (ks[-1] - read) // 2
        regions: list[tuple[str, Region]] = []
        if spec.expand_conv:
            regions.append(("expand_conv.weight", (slice(0, mid),)))
            regions += _bn_regions("expand_bn", mid)
        regions.append(("dw_conv.weight", (slice(0, mid), slice(None),
                                           slice(lo, lo + read), slice(lo, lo + read))))
        regions += [(f"dw_conv.transforms.{n}", ()) for n in
                    self.dw_conv.transform_names(kernel)]
        regions += _bn_regions("dw_bn", mid)
        if self.se is not None:
            r = spec.se_channels
            regions += [
                ("se.reduce.weight", (slice(0, r), slice(0, mid))),
                ("se.reduce.bias", (slice(0, r),)),
                ("se.expand.weight", (slice(0, mid), slice(0, r))),
                ("se.expand.bias", (slice(0, mid),)),
            ]
        regions.append(("project_conv.weight", (slice(None), slice(0, mid))))
        regions += _bn_regions("project_bn", out)
        return regions

    @torch.no_grad()
    def reorder(self) -> None:
        """Sort middle channels (and SE reduced channels) by L1 importance, descending.

        Importance of a middle channel is the L1 norm of its projection weights. Every tensor
        indexed by the middle channel is permuted the same way, so the largest setting
        computes exactly the same function afterwards.
        """
        if not self.cfg.has_expand:
            return
        order = self.project_conv.weight.abs().sum(dim=(0, 2, 3)).argsort(descending=True)
        _permute(self.project_conv.weight, order, dim=1)
        _permute(self.expand_conv.weight, order, dim=0)
        _permute(self.dw_conv.weight, order, dim=0)
        for bn in (self.expand_bn, self.dw_bn):
            for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                _permute(t, order, dim=0)
        if self.se is not None:
            _permute(self.se.reduce.weight, order, dim=1)
            _permute(self.se.expand.weight, order, dim=0)
            _permute(self.se.expand.bias, order, dim=0)
            se_order = self.se.expand.weight.abs().sum(dim=(0, 2, 3)).argsort(descending=True)
            _permute(self.se.expand.weight, se_order, dim=1)
            _permute(self.se.reduce.weight, se_order, dim=0)
            _permute(self.se.reduce.bias, se_order, dim=0)

    def bn_modules(self) -> list[nn.BatchNorm2d]:
        bns: list[nn.BatchNorm2d] = [self.dw_bn, self.project_bn]
        return [self.expand_bn, *bns] if self.cfg.has_expand else bns


def _bn_regions(prefix: str, channels: int) -> list[tuple[str, Region]]:
    return [(f"{prefix}.{name}", (slice(0, channels),)) for name in ("weight", "bias")]


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, channels: int) -> None:
    dst.weight.copy_(src.weight[:channels])
    dst.bias.copy_(src.bias[:channels])
    dst.running_mean.copy_(src.running_mean[:channels])
    dst.running_var.copy_(src.running_var[:channels])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)
    dst.eps, dst.momentum = src.eps, src.momentum


def _permute(t: torch.Tensor, order: torch.Tensor, dim: int) -> None:
    t.copy_(t.index_select(dim, order))
