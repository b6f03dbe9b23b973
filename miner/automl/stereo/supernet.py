"""The once-for-all DispNetC-style stereo supernet and its registered variants.

Six searchable stages of the shared elastic MBConv blocks (elastic kernel, expand ratio
and depth, exactly as in the classification supernet): stages 1-3 run on both views with
shared weights, stages 4-6 on the correlation volume (see
:mod:`miner.automl.stereo.static_net` for the whole layout). ``Arch.resolution`` is the
image height; the width is ``aspect * height``.

:class:`OFADispNetC` subclasses :class:`~miner.automl.supernet.OFASupernet` to reuse its
block-slot machinery unchanged (``set_active``, ``parameters_used``, ``parameter_masks``,
``reorder_channels``); it replaces what is classification-specific: the layers around the
blocks, ``forward``, ``spec``, ``extract`` and ``bn_modules``.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from torch import nn

from miner.automl.blocks import ElasticBlockConfig, ElasticMBConv
from miner.automl.errors import AutoMLError, UnknownSupernetError
from miner.automl.registry import SupernetRegistry
from miner.automl.space import Arch, SearchSpace
from miner.automl.static import ConvBN
from miner.automl.stereo.static_net import (
    N_STAGES,
    HeadSpec,
    StereoHead,
    StereoNetSpec,
    StereoStaticNet,
    stereo_forward,
)
from miner.automl.supernet import OFASupernet


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

    def slot_configs(self) -> list[ElasticBlockConfig]:
        """One elastic block config per slot, stage-major (``space.n_slots`` of them)."""
        s = self.space
        fused = self.head_spec().fused_channels
        configs = []
        for stage in range(N_STAGES):
            prev = (self.stem_width if stage == 0 else
                    fused if stage == 3 else self.stage_widths[stage - 1])
            for i in range(s.max_depth):
                configs.append(ElasticBlockConfig(
                    in_channels=prev if i == 0 else self.stage_widths[stage],
                    out_channels=self.stage_widths[stage],
                    stride=self.stage_strides[stage] if i == 0 else 1,
                    kernel_sizes=s.kernel_sizes,
                    expand_ratios=s.expand_ratios,
                    se=self.stage_se[stage],
                    act=self.stage_acts[stage],
                    divisor=self.channel_divisor,
                ))
        return configs


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


class OFADispNetC(OFASupernet):
    """The weight-sharing stereo supernet.

    ``forward``: [B, 2C, H, W] (left and right stacked on channels) -> 7 disparity maps in
    full-resolution pixels, coarsest first.
    """

    def __init__(self, config: StereoConfig) -> None:
        nn.Module.__init__(self)
        self.config = config  # type: ignore[assignment]
        self.space = config.space
        self.stem = ConvBN(config.in_channels, config.stem_width, 3, act=config.stem_act)
        self.first = None
        self.blocks = nn.ModuleList(ElasticMBConv(c) for c in config.slot_configs())
        self.head = StereoHead(config.head_spec())  # type: ignore[assignment]
        self._arch = self.space.max_arch()
        self._active_blocks = list(self.blocks)  # type: ignore[arg-type]

    @property
    def stereo_config(self) -> StereoConfig:
        """``config``, typed as what it is here."""
        assert isinstance(self.config, StereoConfig)
        return self.config

    def _stage_fns(self) -> list[nn.Sequential]:
        arch = self._arch
        return [nn.Sequential(*(self.blocks[s] for s in stage))
                for stage in self.space.active(arch)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        return stereo_forward(self.stem, self._stage_fns(), self.head, x)  # type: ignore[arg-type]

    def spec(self, arch: Arch | None = None) -> StereoNetSpec:  # type: ignore[override]
        return stereo_net_spec(self.config, self._arch if arch is None else arch)  # type: ignore[arg-type]

    @torch.no_grad()
    def extract(self, arch: Arch | None = None) -> StereoStaticNet:  # type: ignore[override]
        """A static network with copies of ``arch``'s weights; the active arch is kept."""
        previous = self._arch
        if arch is not None:
            self.set_active(arch)
        try:
            net = StereoStaticNet(self.spec())
            for dst_stage, src_stage in zip(net.stages, self._stage_fns(), strict=True):
                for dst, src in zip(dst_stage, src_stage, strict=True):
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


# --- registry -----------------------------------------------------------------------------


class StereoRegistry(SupernetRegistry):
    """The supernet registry, building :class:`StereoConfig` / :class:`OFADispNetC`."""

    def config(self, name: str, **overrides: Any) -> StereoConfig:  # type: ignore[override]
        if name not in self._factories:
            raise UnknownSupernetError(name, self.names())
        base = self._factories[name]()
        try:
            return StereoConfig(**{**dict(base), **overrides})
        except ValidationError as exc:
            raise AutoMLError(f"bad overrides for supernet {name!r}: {exc}") from exc

    def create(self, name: str, **overrides: Any) -> OFADispNetC:
        return OFADispNetC(self.config(name, **overrides))


def stereo_registry() -> StereoRegistry:
    """A registry holding the built-in stereo variants (a fresh one per call)."""
    registry = StereoRegistry()
    registry.register("ofa_dispnetc")(ofa_dispnetc)  # type: ignore[arg-type]
    registry.register("ofa_dispnetc_tiny")(ofa_dispnetc_tiny)  # type: ignore[arg-type]
    return registry


def create_stereo_supernet(name: str, **overrides: Any) -> OFADispNetC:
    """Build the registered stereo supernet ``name``; ``overrides`` replace config fields."""
    return stereo_registry().create(name, **overrides)


def stereo_config(name: str, **overrides: Any) -> StereoConfig:
    return stereo_registry().config(name, **overrides)


def ofa_dispnetc() -> StereoConfig:
    """Full size: kernel 3/5/7, expand 3/4/6, depth 1/2/3, 256x512, correlation at 1/4 over
    40 displacements (160 px), as DispNetC."""
    return StereoConfig()


def ofa_dispnetc_tiny() -> StereoConfig:
    """CPU size: 64x128 pairs, correlation at 1/4 over 8 displacements (32 px), narrow;
    the largest net is ~112 MMACs per pair, the smallest ~56."""
    return StereoConfig(
        space=SearchSpace(kernel_sizes=(3, 5), expand_ratios=(2.0, 3.0, 4.0), depths=(1, 2),
                          resolutions=(64,), n_stages=N_STAGES),
        stem_width=8, stage_widths=(16, 24, 32, 40, 48, 64), stage_strides=(2, 2, 1, 2, 2, 1),
        max_displacement=8, redirect_width=16, decoder_widths=(48, 32, 24, 16, 12, 8),
    )
