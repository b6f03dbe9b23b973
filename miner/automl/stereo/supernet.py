"""The once-for-all DispNetC-style stereo supernet, its config and its cost layout.

Six searchable stages of the shared elastic MBConv blocks (elastic kernel, expand ratio
and depth, exactly as in the classification supernet): stages 1-3 run on both views with
shared weights, stages 4-6 on the correlation volume (see
:mod:`miner.automl.stereo.static_net` for the whole layout). ``Arch.resolution`` is the
image height; the width is ``aspect * height``.

:class:`OFADispNetC` subclasses :class:`~miner.automl.supernet.OFASupernet` to reuse its
block-slot machinery unchanged (``set_active``, ``parameters_used``, ``parameter_masks``,
``reorder_channels``); it replaces what is classification-specific: the layers around the
blocks, ``forward``, ``spec``, ``extract`` and ``bn_modules``. :class:`StereoLayout` tells
the shared cost models of :mod:`miner.automl.efficiency` the sizes of its slots and the
cost of its fixed layers (stem on both views, correlation, decoder). Its variants are
registered in :mod:`miner.automl.registry` beside the classification ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, model_validator
from torch import nn

from miner.automl.blocks import ElasticBlockConfig, ElasticMBConv
from miner.automl.efficiency import ConfigLayout, block_flops
from miner.automl.space import Arch, SearchSpace
from miner.automl.static import ConvBN
from miner.automl.stereo.static_net import (
    N_ENCODER,
    N_STAGES,
    HeadSpec,
    StereoHead,
    StereoNetSpec,
    StereoStaticNet,
    stereo_forward,
)
from miner.automl.supernet import OFASupernet, stage_slot_configs


class StereoConfig(BaseModel):
    """Everything that fixes a stereo supernet's shape. Per-stage tuples have 6 entries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    space: SearchSpace = SearchSpace(kernel_sizes=(3, 5, 7), expand_ratios=(3.0, 4.0, 6.0),
                                     depths=(1, 2, 3), resolutions=(256,), n_stages=N_STAGES)
    in_channels: int = 3
    aspect: int = 2
    stem_width: int = 32
    stem_act: str = "relu"
    stage_widths: tuple[int, ...] = (48, 64, 96, 128, 192, 256)
    stage_strides: tuple[int, ...] = (2, 2, 1, 2, 2, 2)
    stage_se: tuple[bool, ...] = (False,) * N_STAGES
    stage_acts: tuple[str, ...] = ("relu",) * N_STAGES
    max_displacement: int = 40
    redirect_width: int = 32
    decoder_widths: tuple[int, ...] = (192, 128, 96, 64, 32, 16)
    decoder_act: str = "relu"
    channel_divisor: int = 8

    @model_validator(mode="after")
    def _per_stage(self) -> StereoConfig:
        if self.space.n_stages != N_STAGES:
            raise ValueError(f"a stereo space has {N_STAGES} stages, got {self.space.n_stages}")
        for name in ("stage_widths", "stage_strides", "stage_se", "stage_acts",
                     "decoder_widths"):
            if len(getattr(self, name)) != N_STAGES:
                raise ValueError(f"{name} needs {N_STAGES} entries (one per stage)")
        if any(s not in (1, 2) for s in self.stage_strides):
            raise ValueError(f"stage strides must be 1 or 2, got {self.stage_strides}")
        return self

    def head_spec(self) -> HeadSpec:
        return HeadSpec(self.stem_width, self.stage_widths, self.stage_strides,
                        self.max_displacement, self.redirect_width, self.decoder_widths,
                        self.decoder_act)

    def image_size(self, resolution: int) -> tuple[int, int]:
        """(H, W) of the input for ``Arch.resolution``."""
        return resolution, resolution * self.aspect

    @property
    def max_disparity(self) -> float:
        """The largest disparity the correlation can see, in input pixels."""
        stride = 1
        for s in self.stage_strides[:N_ENCODER]:
            stride *= s
        return float(self.max_displacement * stride)

    def slot_configs(self) -> list[ElasticBlockConfig]:
        """One elastic block config per slot, stage-major (``space.n_slots`` of them); the
        first decoder stage takes the fused correlation and left features."""
        fused = self.head_spec().fused_channels
        inputs = [self.stem_width if stage == 0 else
                  fused if stage == N_ENCODER else self.stage_widths[stage - 1]
                  for stage in range(N_STAGES)]
        return stage_slot_configs(self, inputs)

    def cost_layout(self) -> StereoLayout:
        return StereoLayout(self)

    def build(self) -> OFADispNetC:
        """The supernet module this config describes."""
        return OFADispNetC(self)


def stereo_net_spec(config: StereoConfig, arch: Arch) -> StereoNetSpec:
    """The static network ``arch`` selects from a stereo supernet with ``config`` (pure)."""
    space = config.space
    space.validate(arch)
    slots = config.slot_configs()
    stages = tuple(
        tuple(slots[s].spec(arch.kernel[s], float(arch.expand[s])) for s in stage)
        for stage in space.active(arch)
    )
    return StereoNetSpec(config.in_channels, config.stem_act, stages, config.head_spec())


# --- costs ------------------------------------------------------------------------------


def _stage_sizes(head: HeadSpec, h: int, w: int) -> list[tuple[int, int]]:
    """Input size of each stage, then the deepest output size (7 entries)."""
    sizes = [(h, w)]
    for s in head.strides:
        h, w = h // s, w // s
        sizes.append((h, w))
    return sizes


class _FixedParts(nn.Module):
    """Stem on both views, correlation + redirect, decoder, on random stand-ins for the
    stage outputs (made once): the base of the latency table."""

    def __init__(self, config: StereoConfig, h: int, w: int, batch_size: int,
                 device: torch.device) -> None:
        super().__init__()
        head = config.head_spec()
        self.stem = ConvBN(config.in_channels, config.stem_width, 3, act=config.stem_act)
        self.head = StereoHead(head)
        widths = [config.stem_width, *config.stage_widths]
        self.feats = [torch.randn(batch_size, c, sh, sw, device=device)
                      for c, (sh, sw) in zip(widths, _stage_sizes(head, h, w), strict=True)]
        self.x = torch.randn(2 * batch_size, config.in_channels, h, w, device=device)

    def forward(self) -> tuple[torch.Tensor, ...]:
        self.stem(self.x)
        f3 = self.feats[N_ENCODER]
        self.head.fuse(f3, f3)
        return self.head.decode(self.feats)


class StereoLayout(ConfigLayout[StereoConfig]):
    """The :class:`~miner.automl.efficiency.CostLayout` of :class:`OFADispNetC`.

    Costs are per image pair; the encoder (stem, stages 1-3) runs on both views, so it
    counts twice.
    """

    def input_shape(self, resolution: int) -> tuple[int, int, int]:
        return (2 * self.config.in_channels, *self.config.image_size(resolution))

    def slot_inputs(self, resolution: int) -> list[tuple[int, int, int]]:
        config = self.config
        sizes = _stage_sizes(config.head_spec(), *config.image_size(resolution))
        out = []
        for stage in range(N_STAGES):
            views = 2 if stage < N_ENCODER else 1
            out.append((*sizes[stage], views))
            out += [(*sizes[stage + 1], views)] * (config.space.max_depth - 1)
        return out

    def fixed_flops(self, resolution: int) -> int:
        config, head = self.config, self.config.head_spec()
        h, w = config.image_size(resolution)
        sizes = _stage_sizes(head, h, w)
        macs = 2 * config.in_channels * head.stem_width * 9 * h * w
        ch, cw = sizes[N_ENCODER]
        c3 = head.stage_widths[N_ENCODER - 1]
        macs += c3 * (head.max_displacement + 1 + head.redirect_width) * ch * cw
        bh, bw = sizes[-1]
        macs += head.stage_widths[-1] * 9 * bh * bw
        skips = head.skip_channels()[::-1]
        for j, (c_in, c, stride) in enumerate(
            zip(head.decoder_inputs(), head.decoder_widths, head.strides[::-1], strict=True)
        ):
            (ih, iw), (oh, ow) = sizes[-1 - j], sizes[-2 - j]
            k = 4 if stride == 2 else 3
            macs += c_in * c * k * k * ih * iw
            macs += (c + skips[j] + 1) * c * 9 * oh * ow + c * 9 * oh * ow
        return macs

    def fixed_params(self) -> int:
        config = self.config
        stem = ConvBN(config.in_channels, config.stem_width, 3)
        head = StereoHead(config.head_spec())
        return sum(p.numel() for m in (stem, head) for p in m.parameters())

    def fixed_timer(self, resolution: int, batch_size: int,
                    device: torch.device) -> Callable[[], object]:
        h, w = self.config.image_size(resolution)
        return _FixedParts(self.config, h, w, batch_size, device).to(device).eval()

    def walk_flops(self, arch: Arch) -> int:
        spec = stereo_net_spec(self.config, arch)
        sizes = _stage_sizes(spec.head, *self.config.image_size(arch.resolution))
        macs = self.fixed_flops(arch.resolution)
        for i, stage in enumerate(spec.stages):
            size = sizes[i]
            for block in stage:
                macs += (2 if i < N_ENCODER else 1) * block_flops(block, size)
                size = (size[0] // block.stride, size[1] // block.stride)
        return macs

    def build_static(self, arch: Arch) -> nn.Module:
        return StereoStaticNet(stereo_net_spec(self.config, arch))


# --- the supernet -----------------------------------------------------------------------


class OFADispNetC(OFASupernet):
    """The weight-sharing stereo supernet.

    ``forward``: [B, 2C, H, W] (left and right stacked on channels) -> 7 disparity maps in
    full-resolution pixels, coarsest first.
    """

    task_kind: ClassVar[str] = "stereo"

    def __init__(self, config: StereoConfig) -> None:
        nn.Module.__init__(self)
        self.config = config  # type: ignore[assignment]
        self.space = config.space
        self.stem = ConvBN(config.in_channels, config.stem_width, 3, act=config.stem_act)
        self.first = None
        self.blocks = nn.ModuleList(ElasticMBConv(c) for c in config.slot_configs())
        head = StereoHead(config.head_spec())
        self.head = head  # type: ignore[assignment]
        self._arch = self.space.max_arch()
        self._active_blocks = list(self.blocks)  # type: ignore[arg-type]
        bias = head.predict_bottom.bias
        assert bias is not None
        with torch.no_grad():  # the coarsest prediction starts mid-range, not at 0 px
            nn.init.constant_(bias, 0.375 * config.max_disparity)

    @property
    def stereo_config(self) -> StereoConfig:
        """``config``, typed as what it is here."""
        assert isinstance(self.config, StereoConfig)
        return self.config

    def _stage_fns(self) -> list[nn.Sequential]:
        return [nn.Sequential(*(self.blocks[s] for s in stage))
                for stage in self.space.active(self._arch)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        return stereo_forward(self.stem, self._stage_fns(), self.head, x)  # type: ignore[arg-type]

    def spec(self, arch: Arch | None = None) -> StereoNetSpec:  # type: ignore[override]
        return stereo_net_spec(self.stereo_config, self._arch if arch is None else arch)

    @torch.no_grad()
    def extract(self, arch: Arch | None = None) -> StereoStaticNet:  # type: ignore[override]
        """A static network with copies of ``arch``'s weights; the active arch is kept."""
        previous = self._arch
        if arch is not None:
            self.set_active(arch)
        try:
            net = StereoStaticNet(self.spec()).to(next(self.parameters()).device)
            for dst_stage, src_stage in zip(net.stages, self._stage_fns(), strict=True):
                for dst, src in zip(dst_stage.children(), src_stage, strict=True):
                    dst.load_state_dict(src.extract().state_dict())
            net.stem.load_state_dict(self.stem.state_dict())
            net.head.load_state_dict(self.head.state_dict())
        finally:
            self.set_active(previous)
        net.train(self.training)
        return net

    def bn_modules(self, arch: Arch) -> list[nn.BatchNorm2d]:
        """The BatchNorm layers ``arch`` runs through (stem, active blocks, head)."""
        bns: list[nn.BatchNorm2d] = [self.stem[1]]  # type: ignore[list-item]
        for _, block, _, _ in self._block_prefixes(arch):
            bns += block.bn_modules()
        return bns + [m for m in self.head.modules() if isinstance(m, nn.BatchNorm2d)]
