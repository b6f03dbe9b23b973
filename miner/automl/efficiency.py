"""Cost models of sub-networks: FLOPs, parameters and measured latency.

FLOPs here are multiply-accumulates of the convolution and linear layers (the convention
of the MobileNet and OFA papers); BatchNorm, activations, pooling, the SE product and bias
additions are not counted. Parameters are those of the extracted static network.

Every cost is additive over block slots (:class:`AdditiveCost`): a slot's input and output
widths and its input size are fixed by the config and the resolution, so only its own
kernel and expand ratio change its cost. The tables let the search score a population with
a few array lookups; :func:`count_flops` walks the network independently and
:func:`trace_flops` counts from forward hooks, which the tests use to check each other.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from miner.automl.space import AdditiveCost, Arch
from miner.automl.static import BlockSpec, ConvBN, MBConv, NetSpec, StaticNet, build_static
from miner.automl.supernet import SupernetConfig, net_spec

logger = logging.getLogger(__name__)


def _down(size: int, stride: int) -> int:
    """Output size of a conv with padding ``k // 2`` (odd k): ``ceil(size / stride)``."""
    return (size - 1) // stride + 1


def block_flops(spec: BlockSpec, size: int) -> int:
    """MACs of one block on a ``size x size`` input."""
    out = _down(size, spec.stride)
    mid = spec.mid_channels
    macs = spec.in_channels * mid * size * size if spec.expand_conv else 0
    macs += mid * spec.kernel * spec.kernel * out * out
    macs += 2 * mid * spec.se_channels
    return macs + mid * spec.out_channels * out * out


def block_params(spec: BlockSpec) -> int:
    mid = spec.mid_channels
    n = (spec.in_channels * mid + 2 * mid) if spec.expand_conv else 0
    n += mid * spec.kernel * spec.kernel + 2 * mid
    if spec.se_channels:
        n += 2 * mid * spec.se_channels + mid + spec.se_channels
    return n + mid * spec.out_channels + 2 * spec.out_channels


def _stem_flops(spec: NetSpec, resolution: int) -> tuple[int, int]:
    size = _down(resolution, spec.stem_stride)
    return spec.in_channels * spec.stem_width * 9 * size * size, size


def _head_flops(spec: NetSpec, last_width: int, size: int) -> int:
    width = spec.feature_width or spec.head_width
    macs = last_width * spec.head_width * size * size
    macs += spec.head_width * spec.feature_width
    return macs + width * spec.num_classes


def _head_params(spec: NetSpec, last_width: int) -> int:
    width = spec.feature_width or spec.head_width
    n = spec.in_channels * spec.stem_width * 9 + 2 * spec.stem_width
    n += last_width * spec.head_width + 2 * spec.head_width + spec.head_width * spec.feature_width
    return n + width * spec.num_classes + spec.num_classes


def spec_flops(spec: NetSpec, resolution: int) -> int:
    """MACs of a static network at ``resolution``, walking its layers in order."""
    macs, size = _stem_flops(spec, resolution)
    for block in spec.blocks:
        macs += block_flops(block, size)
        size = _down(size, block.stride)
    last = spec.blocks[-1].out_channels if spec.blocks else spec.stem_width
    return macs + _head_flops(spec, last, size)


def count_flops(config: SupernetConfig, arch: Arch) -> int:
    """MACs of ``arch`` (analytic; no module is built)."""
    return spec_flops(net_spec(config, arch), arch.resolution)


def count_params(config: SupernetConfig, arch: Arch) -> int:
    """Parameters of ``arch``'s static network (analytic)."""
    spec = net_spec(config, arch)
    return _head_params(spec, config.stage_widths[-1]) + sum(block_params(b) for b in spec.blocks)


def trace_flops(module: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs of conv and linear layers counted from forward hooks on one input ``[1, C, H, W]``."""
    total = 0

    def hook(layer: nn.Module, _: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            kh, kw = layer.kernel_size
            total += out.numel() * (layer.in_channels // layer.groups) * kh * kw
        elif isinstance(layer, nn.Linear):
            total += out.numel() * layer.in_features

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            was_training = module.training
            module.eval()
            module(torch.zeros(*input_shape))
            module.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return total // int(input_shape[0])


# --- additive tables ------------------------------------------------------------------


def _slot_sizes(config: SupernetConfig, resolution: int) -> tuple[list[int], int]:
    """Input size of every block slot and the size the head sees, at ``resolution``."""
    size = _down(resolution, config.stem_stride)
    sizes = []
    for stage in range(config.space.n_stages):
        sizes.append(size)
        size = _down(size, config.stage_strides[stage])
        sizes += [size] * (config.space.max_depth - 1)
    return sizes, size


def _table(config: SupernetConfig, base_of: Callable[[NetSpec, int, int], float],
           block_of: Callable[[BlockSpec, int], float]) -> AdditiveCost:
    space = config.space
    dummy = net_spec(config, space.min_arch())
    first = [config.first_block_config().spec(3, 1.0)] if config.first_block else []
    base = np.zeros(len(space.resolutions))
    block = np.zeros((len(space.resolutions), space.n_slots, len(space.kernel_sizes),
                      len(space.expand_ratios)))
    slots = config.slot_configs()
    for r, resolution in enumerate(space.resolutions):
        sizes, head_size = _slot_sizes(config, resolution)
        stem_size = _down(resolution, config.stem_stride)
        base[r] = base_of(dummy, resolution, head_size) + sum(block_of(b, stem_size) for b in first)
        for s, slot in enumerate(slots):
            for k, kernel in enumerate(space.kernel_sizes):
                for e, expand in enumerate(space.expand_ratios):
                    block[r, s, k, e] = block_of(slot.spec(kernel, expand), sizes[s])
    return AdditiveCost(space=space, base=base, block=block)


def flops_table(config: SupernetConfig) -> AdditiveCost:
    """MACs as an :class:`AdditiveCost`; ``of(arch) == count_flops(config, arch)``."""
    def base_of(spec: NetSpec, resolution: int, head_size: int) -> float:
        return _stem_flops(spec, resolution)[0] + _head_flops(
            spec, config.stage_widths[-1], head_size)

    return _table(config, base_of, lambda b, size: block_flops(b, size))


def params_table(config: SupernetConfig) -> AdditiveCost:
    """Parameter counts as an :class:`AdditiveCost` (the same at every resolution)."""
    return _table(config, lambda spec, _r, _h: _head_params(spec, config.stage_widths[-1]),
                  lambda b, _size: block_params(b))


# --- measured latency -----------------------------------------------------------------


def time_module(fn: Callable[[torch.Tensor], object], x: torch.Tensor, repeats: int,
                warmup: int) -> float:
    """Median wall time of ``fn(x)`` in milliseconds (no grad, synchronised on CUDA)."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            fn(x)
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


class _StemAndHead(nn.Module):
    """The non-elastic layers of a net (stem, head, feature mix, classifier), timed as the base.

    ``forward(x, tail)``: ``x`` the network input, ``tail`` the last stage's output.
    """

    def __init__(self, spec: NetSpec, last_width: int) -> None:
        super().__init__()
        self.stem = ConvBN(spec.in_channels, spec.stem_width, 3, spec.stem_stride,
                           act=spec.stem_act)
        self.head = ConvBN(last_width, spec.head_width, 1, act=spec.head_act)
        net = StaticNet(spec)  # its feature mix and classifier; the rest is dropped
        self.feature, self.classifier = net.feature, net.classifier

    def forward(self, x: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
        y = self.feature(self.head(tail).mean((2, 3), keepdim=True)).flatten(1)
        return self.stem(x).sum() + self.classifier(y)


def latency_table(config: SupernetConfig, device: torch.device, batch_size: int = 1,
                  repeats: int = 10, warmup: int = 3) -> AdditiveCost:
    """Latency in ms measured per block on ``device``, as an :class:`AdditiveCost`.

    Each distinct (block shape, input size) is timed once with random weights in eval
    mode; the base is the stem, the fixed first block and the head.
    """
    cache: dict[tuple[BlockSpec, int], float] = {}
    last = config.stage_widths[-1]

    def block_of(spec: BlockSpec, size: int) -> float:
        if (spec, size) not in cache:
            module = MBConv(spec).to(device).eval()
            x = torch.randn(batch_size, spec.in_channels, size, size, device=device)
            cache[(spec, size)] = time_module(module, x, repeats, warmup)
        return cache[(spec, size)]

    def base_of(spec: NetSpec, resolution: int, head_size: int) -> float:
        base = _StemAndHead(spec, last).to(device).eval()
        x = torch.randn(batch_size, spec.in_channels, resolution, resolution, device=device)
        tail = torch.randn(batch_size, last, head_size, head_size, device=device)
        return time_module(lambda inp: base(inp, tail), x, repeats, warmup)

    table = _table(config, base_of, block_of)
    logger.info("latency table built blocks_timed=%d device=%s", len(cache), device)
    return table


def latency_report(config: SupernetConfig, table: AdditiveCost, archs: Sequence[Arch],
                   device: torch.device, batch_size: int = 1, repeats: int = 10,
                   warmup: int = 3) -> dict[str, float]:
    """Predicted vs measured latency of whole static networks for ``archs``.

    Returns mean and max absolute relative error and the mean predicted / measured ms.
    """
    predicted, measured = [], []
    for arch in archs:
        net = build_static(net_spec(config, arch)).to(device).eval()
        x = torch.randn(batch_size, config.in_channels, arch.resolution, arch.resolution,
                        device=device)
        measured.append(time_module(net, x, repeats, warmup))
        predicted.append(table.of(arch))
    p, m = np.asarray(predicted), np.asarray(measured)
    rel = np.abs(p - m) / m
    return {"n": float(len(archs)), "mean_abs_rel_error": float(rel.mean()),
            "max_abs_rel_error": float(rel.max()), "predicted_ms": float(p.mean()),
            "measured_ms": float(m.mean())}
