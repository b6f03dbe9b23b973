"""Cost models of sub-networks: FLOPs, parameters and measured latency, for every layout.

FLOPs here are multiply-accumulates of the convolution, transposed convolution, linear and
correlation layers (the convention of the MobileNet and OFA papers); BatchNorm,
activations, pooling, interpolation, the SE product and bias additions are not counted.
Parameters are those of the extracted static network.

Every cost is additive over block slots (:class:`AdditiveCost`): a slot's input and output
widths and its input size are fixed by the config and the resolution, so only its own
kernel and expand ratio change its cost. What differs between supernet layouts (the
classification net, the stereo net) is said by a :class:`CostLayout`: the input size of
each slot, how many views run through it, and the cost of the fixed layers around the
blocks. The table builder, the traced count, the latency tables and the latency report are
written once, here, for every layout. :func:`count_flops` walks the network independently
of the tables and :func:`trace_flops` counts from forward hooks; the tests check the three
against each other.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import torch
from torch import nn

from miner.automl.blocks import ElasticBlockConfig
from miner.automl.errors import AutoMLError
from miner.automl.space import AdditiveCost, Arch, SearchSpace
from miner.automl.static import BlockSpec, ConvBN, MBConv, NetSpec, StaticNet, build_static
from miner.automl.supernet import SupernetConfig, net_spec

logger = logging.getLogger(__name__)

Size = tuple[int, int]


def _down(size: int, stride: int) -> int:
    """Output size of a conv with padding ``k // 2`` (odd k): ``ceil(size / stride)``."""
    return (size - 1) // stride + 1


def block_flops(spec: BlockSpec, size: int | Size) -> int:
    """MACs of one block on a ``size x size`` (or ``(h, w)``) input."""
    h, w = (size, size) if isinstance(size, int) else size
    oh, ow = _down(h, spec.stride), _down(w, spec.stride)
    mid = spec.mid_channels
    macs = spec.in_channels * mid * h * w if spec.expand_conv else 0
    macs += mid * spec.kernel * spec.kernel * oh * ow
    macs += 2 * mid * spec.se_channels
    return macs + mid * spec.out_channels * oh * ow


def block_params(spec: BlockSpec) -> int:
    mid = spec.mid_channels
    n = (spec.in_channels * mid + 2 * mid) if spec.expand_conv else 0
    n += mid * spec.kernel * spec.kernel + 2 * mid
    if spec.se_channels:
        n += 2 * mid * spec.se_channels + mid + spec.se_channels
    return n + mid * spec.out_channels + 2 * spec.out_channels


class CostLayout(Protocol):
    """What the shared cost machinery needs to know about one supernet layout."""

    @property
    def space(self) -> SearchSpace: ...

    def slot_configs(self) -> list[ElasticBlockConfig]: ...

    def input_shape(self, resolution: int) -> tuple[int, int, int]:
        """``(C, H, W)`` of one network input at ``resolution``."""
        ...

    def slot_inputs(self, resolution: int) -> list[tuple[int, int, int]]:
        """``(h, w, views)`` per block slot: its input size and how many images run through
        it per network input (2 for a stereo encoder, which sees both views)."""
        ...

    def fixed_flops(self, resolution: int) -> int:
        """MACs of everything outside the elastic block slots."""
        ...

    def fixed_params(self) -> int: ...

    def fixed_timer(self, resolution: int, batch_size: int,
                    device: torch.device) -> Callable[[], object]:
        """A call that runs the fixed layers once (for the latency table's base)."""
        ...

    def walk_flops(self, arch: Arch) -> int:
        """MACs of ``arch`` counted by walking its static description (not the tables)."""
        ...

    def build_static(self, arch: Arch) -> nn.Module:
        """A freshly initialised static network for ``arch``."""
        ...


def layout_of(config: Any) -> CostLayout:
    """The cost layout of a supernet config: every config brings its own
    (``cost_layout()``)."""
    make = getattr(config, "cost_layout", None)
    if make is None:
        raise AutoMLError(f"no cost layout for a {type(config).__name__}")
    layout: CostLayout = make()
    return layout


# --- the classification layout ---------------------------------------------------------


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
    """MACs of a static classification network at ``resolution``, walking its layers."""
    macs, size = _stem_flops(spec, resolution)
    for block in spec.blocks:
        macs += block_flops(block, size)
        size = _down(size, block.stride)
    last = spec.blocks[-1].out_channels if spec.blocks else spec.stem_width
    return macs + _head_flops(spec, last, size)


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


class _SlottedConfig(Protocol):
    @property
    def space(self) -> SearchSpace: ...

    def slot_configs(self) -> list[ElasticBlockConfig]: ...


ConfigT = TypeVar("ConfigT", bound=_SlottedConfig)


class ConfigLayout(Generic[ConfigT]):
    """The part of a :class:`CostLayout` that a supernet config answers itself: its search
    space and its elastic block slots. Each layout adds its shapes and fixed costs."""

    def __init__(self, config: ConfigT) -> None:
        self.config = config

    @property
    def space(self) -> SearchSpace:
        return self.config.space

    def slot_configs(self) -> list[ElasticBlockConfig]:
        return self.config.slot_configs()


class ClassificationLayout(ConfigLayout[SupernetConfig]):
    """:class:`CostLayout` of :class:`~miner.automl.supernet.OFASupernet`: square inputs,
    one view; the fixed part is the stem, the optional first block and the head."""

    def input_shape(self, resolution: int) -> tuple[int, int, int]:
        return self.config.in_channels, resolution, resolution

    def _sizes(self, resolution: int) -> tuple[list[int], int]:
        """Input size of every block slot and the size the head sees."""
        config = self.config
        size = _down(resolution, config.stem_stride)
        sizes = []
        for stage in range(config.space.n_stages):
            sizes.append(size)
            size = _down(size, config.stage_strides[stage])
            sizes += [size] * (config.space.max_depth - 1)
        return sizes, size

    def slot_inputs(self, resolution: int) -> list[tuple[int, int, int]]:
        return [(s, s, 1) for s in self._sizes(resolution)[0]]

    def _first(self) -> list[BlockSpec]:
        config = self.config
        return [config.first_block_config().spec(3, 1.0)] if config.first_block else []

    def _dummy(self) -> NetSpec:
        return net_spec(self.config, self.space.min_arch())

    def fixed_flops(self, resolution: int) -> int:
        spec, last = self._dummy(), self.config.stage_widths[-1]
        stem, stem_size = _stem_flops(spec, resolution)
        first = sum(block_flops(b, stem_size) for b in self._first())
        return stem + first + _head_flops(spec, last, self._sizes(resolution)[1])

    def fixed_params(self) -> int:
        spec, last = self._dummy(), self.config.stage_widths[-1]
        return _head_params(spec, last) + sum(block_params(b) for b in self._first())

    def fixed_timer(self, resolution: int, batch_size: int,
                    device: torch.device) -> Callable[[], object]:
        spec, last = self._dummy(), self.config.stage_widths[-1]
        base = _StemAndHead(spec, last).to(device).eval()
        x = torch.randn(batch_size, spec.in_channels, resolution, resolution, device=device)
        head_size = self._sizes(resolution)[1]
        tail = torch.randn(batch_size, last, head_size, head_size, device=device)
        first = [MBConv(b).to(device).eval() for b in self._first()]
        stem_out = torch.randn(batch_size, spec.stem_width, _down(resolution, spec.stem_stride),
                               _down(resolution, spec.stem_stride), device=device)
        return lambda: (base(x, tail), [f(stem_out) for f in first])

    def walk_flops(self, arch: Arch) -> int:
        return spec_flops(net_spec(self.config, arch), arch.resolution)

    def build_static(self, arch: Arch) -> nn.Module:
        return build_static(net_spec(self.config, arch))


# --- the shared cost API ---------------------------------------------------------------


def _active_specs(layout: CostLayout, arch: Arch) -> list[BlockSpec]:
    space, slots = layout.space, layout.slot_configs()
    space.validate(arch)
    return [slots[s].spec(arch.kernel[s], float(arch.expand[s]))
            for stage in space.active(arch) for s in stage]


def count_flops(config: Any, arch: Arch) -> int:
    """MACs of ``arch`` (analytic; no module is built). Per network input (image or pair)."""
    return layout_of(config).walk_flops(arch)


def count_params(config: Any, arch: Arch) -> int:
    """Parameters of ``arch``'s static network (analytic)."""
    layout = layout_of(config)
    return layout.fixed_params() + sum(block_params(b) for b in _active_specs(layout, arch))


def trace_flops(module: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs counted from forward hooks on one input of ``input_shape`` (per sample).

    Counts ``Conv2d``, ``ConvTranspose2d`` and ``Linear``, and any module that reports its
    own cost through a ``macs(inputs, output)`` method (the stereo correlation layer).
    """
    total = 0

    def hook(layer: nn.Module, inputs: tuple[torch.Tensor, ...], out: Any) -> None:
        nonlocal total
        if isinstance(layer, nn.ConvTranspose2d):
            kh, kw = layer.kernel_size
            total += inputs[0].numel() * (layer.out_channels // layer.groups) * kh * kw
        elif isinstance(layer, nn.Conv2d):
            kh, kw = layer.kernel_size
            total += out.numel() * (layer.in_channels // layer.groups) * kh * kw
        elif isinstance(layer, nn.Linear):
            total += out.numel() * layer.in_features
        else:
            total += int(layer.macs(inputs, out))  # type: ignore[operator]

    counted = [m for m in module.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) or hasattr(m, "macs")]
    handles = [m.register_forward_hook(hook) for m in counted]
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


def _table(layout: CostLayout, base_of: Callable[[int], float],
           block_of: Callable[[BlockSpec, int, int, int], float]) -> AdditiveCost:
    """``block_of(spec, h, w, views)`` per slot and choice, ``base_of(resolution)``."""
    space = layout.space
    base = np.zeros(len(space.resolutions))
    block = np.zeros((len(space.resolutions), space.n_slots, len(space.kernel_sizes),
                      len(space.expand_ratios)))
    slots = layout.slot_configs()
    for r, resolution in enumerate(space.resolutions):
        base[r] = base_of(resolution)
        for s, (slot, (h, w, views)) in enumerate(
                zip(slots, layout.slot_inputs(resolution), strict=True)):
            for k, kernel in enumerate(space.kernel_sizes):
                for e, expand in enumerate(space.expand_ratios):
                    block[r, s, k, e] = block_of(slot.spec(kernel, expand), h, w, views)
    return AdditiveCost(space=space, base=base, block=block)


def flops_table(config: Any) -> AdditiveCost:
    """MACs as an :class:`AdditiveCost`; ``of(arch) == count_flops(config, arch)``."""
    layout = layout_of(config)
    return _table(layout, lambda r: layout.fixed_flops(r),
                  lambda b, h, w, views: views * block_flops(b, (h, w)))


def params_table(config: Any) -> AdditiveCost:
    """Parameter counts as an :class:`AdditiveCost` (the same at every resolution)."""
    layout = layout_of(config)
    return _table(layout, lambda _r: layout.fixed_params(),
                  lambda b, _h, _w, _views: block_params(b))


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


def latency_table(config: Any, device: torch.device, batch_size: int = 1,
                  repeats: int = 10, warmup: int = 3) -> AdditiveCost:
    """Latency in ms measured per block on ``device``, as an :class:`AdditiveCost`.

    Each distinct (block shape, input size, views) is timed once with random weights in
    eval mode; the base is the layout's fixed layers.
    """
    layout = layout_of(config)
    cache: dict[tuple[BlockSpec, int, int, int], float] = {}

    def block_of(spec: BlockSpec, h: int, w: int, views: int) -> float:
        key = (spec, h, w, views)
        if key not in cache:
            module = MBConv(spec).to(device).eval()
            x = torch.randn(views * batch_size, spec.in_channels, h, w, device=device)
            cache[key] = time_module(module, x, repeats, warmup)
        return cache[key]

    def base_of(resolution: int) -> float:
        run = layout.fixed_timer(resolution, batch_size, device)
        return time_module(lambda _x: run(), torch.zeros((), device=device), repeats, warmup)

    table = _table(layout, base_of, block_of)
    logger.info("latency table built blocks_timed=%d device=%s", len(cache), device)
    return table


def latency_report(config: Any, table: AdditiveCost, archs: Sequence[Arch],
                   device: torch.device, batch_size: int = 1, repeats: int = 10,
                   warmup: int = 3) -> dict[str, float]:
    """Predicted vs measured latency of whole static networks for ``archs``.

    Returns mean and max absolute relative error and the mean predicted / measured ms.
    """
    layout = layout_of(config)
    predicted, measured = [], []
    for arch in archs:
        net = layout.build_static(arch).to(device).eval()
        x = torch.randn(batch_size, *layout.input_shape(arch.resolution), device=device)
        measured.append(time_module(net, x, repeats, warmup))
        predicted.append(table.of(arch))
    p, m = np.asarray(predicted), np.asarray(measured)
    rel = np.abs(p - m) / m
    return {"n": float(len(archs)), "mean_abs_rel_error": float(rel.mean()),
            "max_abs_rel_error": float(rel.max()), "predicted_ms": float(p.mean()),
            "measured_ms": float(m.mean())}
