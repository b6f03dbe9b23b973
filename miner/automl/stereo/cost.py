"""Cost models of stereo sub-networks: analytic MACs and parameters, additive tables for
the search, and MACs traced from forward hooks to check them.

Counted as in :mod:`miner.automl.efficiency`: multiply-accumulates of convolutions,
transposed convolutions and the correlation (``C * (D + 1)`` per feature pixel); BatchNorm,
activations, interpolation and additions are not counted. The encoder (stem, stages 1-3)
runs on both views, so it counts twice. Costs are per image pair.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from miner.automl.efficiency import block_params
from miner.automl.space import AdditiveCost, Arch
from miner.automl.static import BlockSpec, ConvBN
from miner.automl.stereo.correlation import Correlation
from miner.automl.stereo.static_net import N_ENCODER, HeadSpec, StereoHead
from miner.automl.stereo.supernet import StereoConfig, stereo_net_spec


def block_macs(spec: BlockSpec, h: int, w: int) -> int:
    """MACs of one block on an ``h x w`` input (stride 1 or 2, even sizes)."""
    oh, ow = h // spec.stride, w // spec.stride
    mid = spec.mid_channels
    macs = spec.in_channels * mid * h * w if spec.expand_conv else 0
    macs += mid * spec.kernel * spec.kernel * oh * ow + 2 * mid * spec.se_channels
    return macs + mid * spec.out_channels * oh * ow


def stage_sizes(head: HeadSpec, h: int, w: int) -> list[tuple[int, int]]:
    """Input size of each stage, then the deepest output size (7 entries)."""
    sizes = [(h, w)]
    for s in head.strides:
        h, w = h // s, w // s
        sizes.append((h, w))
    return sizes


def fixed_macs(head: HeadSpec, in_channels: int, h: int, w: int) -> int:
    """MACs of the stem (both views), correlation, redirect and decoder."""
    sizes = stage_sizes(head, h, w)
    macs = 2 * in_channels * head.stem_width * 9 * h * w
    ch, cw = sizes[N_ENCODER]
    c3 = head.stage_widths[N_ENCODER - 1]
    macs += c3 * (head.max_displacement + 1) * ch * cw + c3 * head.redirect_width * ch * cw
    bh, bw = sizes[-1]
    macs += head.stage_widths[-1] * 9 * bh * bw
    skips = head.skip_channels()[::-1]
    for j, (c_in, c, stride) in enumerate(
        zip(head.decoder_inputs(), head.decoder_widths, head.strides[::-1], strict=True)
    ):
        ih, iw = sizes[-1 - j]
        oh, ow = sizes[-2 - j]
        k = 4 if stride == 2 else 3
        macs += c_in * c * k * k * ih * iw
        macs += (c + skips[j] + 1) * c * 9 * oh * ow + c * 9 * oh * ow
    return macs


def count_flops(config: StereoConfig, arch: Arch) -> int:
    """MACs of ``arch`` per image pair (analytic; no module is built)."""
    spec = stereo_net_spec(config, arch)
    h, w = config.image_size(arch.resolution)
    sizes = stage_sizes(spec.head, h, w)
    macs = fixed_macs(spec.head, config.in_channels, h, w)
    for i, stage in enumerate(spec.stages):
        sh, sw = sizes[i]
        for block in stage:
            macs += (2 if i < N_ENCODER else 1) * block_macs(block, sh, sw)
            sh, sw = sh // block.stride, sw // block.stride
    return macs


def fixed_params(config: StereoConfig) -> int:
    stem = ConvBN(config.in_channels, config.stem_width, 3)
    head = StereoHead(config.head_spec())
    return sum(p.numel() for m in (stem, head) for p in m.parameters())


def count_params(config: StereoConfig, arch: Arch) -> int:
    """Parameters of ``arch``'s static network."""
    spec = stereo_net_spec(config, arch)
    return fixed_params(config) + sum(block_params(b) for st in spec.stages for b in st)


def _slot_sizes(config: StereoConfig, resolution: int) -> list[tuple[int, int]]:
    h, w = config.image_size(resolution)
    sizes = stage_sizes(config.head_spec(), h, w)
    out = []
    for stage in range(config.space.n_stages):
        out.append(sizes[stage])
        out += [sizes[stage + 1]] * (config.space.max_depth - 1)
    return out


def flops_table(config: StereoConfig) -> AdditiveCost:
    """MACs as an :class:`AdditiveCost`; ``of(arch) == count_flops(config, arch)``."""
    space = config.space
    base = np.zeros(len(space.resolutions))
    block = np.zeros((len(space.resolutions), space.n_slots, len(space.kernel_sizes),
                      len(space.expand_ratios)))
    slots = config.slot_configs()
    head = config.head_spec()
    for r, resolution in enumerate(space.resolutions):
        h, w = config.image_size(resolution)
        base[r] = fixed_macs(head, config.in_channels, h, w)
        for s, ((sh, sw), slot) in enumerate(zip(_slot_sizes(config, resolution), slots,
                                                 strict=True)):
            views = 2 if s // space.max_depth < N_ENCODER else 1
            for k, kernel in enumerate(space.kernel_sizes):
                for e, expand in enumerate(space.expand_ratios):
                    block[r, s, k, e] = views * block_macs(slot.spec(kernel, expand), sh, sw)
    return AdditiveCost(space=space, base=base, block=block)


def params_table(config: StereoConfig) -> AdditiveCost:
    """Parameter counts as an :class:`AdditiveCost`."""
    space = config.space
    base = np.full(len(space.resolutions), float(fixed_params(config)))
    block = np.zeros((len(space.resolutions), space.n_slots, len(space.kernel_sizes),
                      len(space.expand_ratios)))
    for s, slot in enumerate(config.slot_configs()):
        for k, kernel in enumerate(space.kernel_sizes):
            for e, expand in enumerate(space.expand_ratios):
                block[:, s, k, e] = block_params(slot.spec(kernel, expand))
    return AdditiveCost(space=space, base=base, block=block)


def trace_flops(module: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs per pair counted from forward hooks on one input ``[B, 2C, H, W]``.

    Counts ``Conv2d``, ``ConvTranspose2d`` and :class:`Correlation` (the generic
    :func:`miner.automl.efficiency.trace_flops` counts only ``Conv2d`` and ``Linear``).
    """
    total = 0

    def hook(layer: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.ConvTranspose2d):
            kh, kw = layer.kernel_size
            total += inputs[0].numel() * (layer.out_channels // layer.groups) * kh * kw
        elif isinstance(layer, nn.Conv2d):
            kh, kw = layer.kernel_size
            total += out.numel() * (layer.in_channels // layer.groups) * kh * kw
        elif isinstance(layer, Correlation):
            total += inputs[0].numel() * layer.out_channels

    kinds = (nn.Conv2d, nn.ConvTranspose2d, Correlation)
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, kinds)]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(*input_shape))
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    return total // int(input_shape[0])


# --- measured latency -----------------------------------------------------------------


class _FixedParts(nn.Module):
    """Stem on both views, correlation + redirect, decoder: the base of the latency table.

    ``forward(x)`` runs them on random stand-ins for the stage outputs (made once).
    """

    def __init__(self, config: StereoConfig, h: int, w: int, batch_size: int,
                 device: torch.device) -> None:
        super().__init__()
        head = config.head_spec()
        self.stem = ConvBN(config.in_channels, config.stem_width, 3, act=config.stem_act)
        self.head = StereoHead(head)
        sizes = stage_sizes(head, h, w)
        widths = [config.stem_width, *config.stage_widths]
        self.feats = [torch.randn(batch_size, c, sh, sw, device=device)
                      for c, (sh, sw) in zip(widths, sizes, strict=True)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c = x.shape[1] // 2
        self.stem(torch.cat([x[:, :c], x[:, c:]], 0))
        f3 = self.feats[N_ENCODER]
        self.head.fuse(f3, f3)
        return self.head.decode(self.feats)


def latency_table(config: StereoConfig, device: torch.device, batch_size: int = 1,
                  repeats: int = 10, warmup: int = 3) -> AdditiveCost:
    """Latency in ms per pair batch measured on ``device``, as an :class:`AdditiveCost`.

    Each distinct (block, input size) is timed once in eval mode (encoder blocks on a
    batch of ``2 * batch_size``, both views); the base is :class:`_FixedParts`.
    """
    from miner.automl.efficiency import time_module
    from miner.automl.static import MBConv

    space = config.space
    cache: dict[tuple[BlockSpec, int, int, int], float] = {}
    base = np.zeros(len(space.resolutions))
    block = np.zeros((len(space.resolutions), space.n_slots, len(space.kernel_sizes),
                      len(space.expand_ratios)))
    slots = config.slot_configs()
    for r, resolution in enumerate(space.resolutions):
        h, w = config.image_size(resolution)
        fixed = _FixedParts(config, h, w, batch_size, device).to(device).eval()
        x = torch.randn(batch_size, 2 * config.in_channels, h, w, device=device)
        base[r] = time_module(fixed, x, repeats, warmup)
        for s, ((sh, sw), slot) in enumerate(zip(_slot_sizes(config, resolution), slots,
                                                 strict=True)):
            n = 2 * batch_size if s // space.max_depth < N_ENCODER else batch_size
            for k, kernel in enumerate(space.kernel_sizes):
                for e, expand in enumerate(space.expand_ratios):
                    spec = slot.spec(kernel, expand)
                    key = (spec, n, sh, sw)
                    if key not in cache:
                        module = MBConv(spec).to(device).eval()
                        inp = torch.randn(n, spec.in_channels, sh, sw, device=device)
                        cache[key] = time_module(module, inp, repeats, warmup)
                    block[r, s, k, e] = cache[key]
    return AdditiveCost(space=space, base=base, block=block)
