"""The once-for-all classification supernet (MobileNetV3 space).

Layout: a stem (3x3 conv), an optional fixed depthwise-separable first block, ``n_stages``
searchable stages of elastic MBConv blocks (the first block of each stage carries the
stage's stride), then a final 1x1 expand, global pooling, a feature-mix 1x1 and the
classifier. ``forward`` returns logits; apply softmax at inference.

The module is built once at its largest size. :meth:`OFASupernet.set_active` selects a
sub-network (kernel and expand ratio per block slot, depth per stage) by setting a few ints;
nothing is rebuilt and no weight is copied. Resolution is elastic per batch: the data side
resizes inputs to ``arch.resolution``; the network accepts any size.

:func:`net_spec` maps (config, arch) to the layer-level :class:`~miner.automl.static.NetSpec`
without building anything, which the cost models in ``efficiency`` use.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol

import torch
from pydantic import BaseModel, ConfigDict, model_validator
from torch import nn

from miner.automl.blocks import ElasticBlockConfig, ElasticMBConv, Region
from miner.automl.space import Arch, SearchSpace
from miner.automl.static import ConvBN, NetSpec, StaticNet, make_activation

if TYPE_CHECKING:
    from miner.automl.efficiency import ClassificationLayout

logger = logging.getLogger(__name__)


class SupernetConfig(BaseModel):
    """Everything that fixes a supernet's shape. Per-stage tuples have ``n_stages`` entries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    space: SearchSpace = SearchSpace()
    in_channels: int = 3
    num_classes: int = 1000
    stem_width: int = 16
    stem_stride: int = 2
    stem_act: str = "hswish"
    first_block: bool = True
    stage_widths: tuple[int, ...] = (24, 40, 80, 112, 160)
    stage_strides: tuple[int, ...] = (2, 2, 2, 1, 2)
    stage_se: tuple[bool, ...] = (False, True, False, True, True)
    stage_acts: tuple[str, ...] = ("relu", "relu", "hswish", "hswish", "hswish")
    head_width: int = 960
    feature_width: int = 1280
    head_act: str = "hswish"
    dropout: float = 0.1
    channel_divisor: int = 8

    @model_validator(mode="after")
    def _per_stage(self) -> SupernetConfig:
        n = self.space.n_stages
        for name in ("stage_widths", "stage_strides", "stage_se", "stage_acts"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} needs {n} entries (one per stage)")
        return self

    def first_block_config(self) -> ElasticBlockConfig:
        return ElasticBlockConfig(self.stem_width, self.stem_width, 1, (3,), (1.0,), False,
                                  self.stage_acts[0], self.channel_divisor)

    def slot_configs(self) -> list[ElasticBlockConfig]:
        """One elastic block config per slot, stage-major (``space.n_slots`` of them)."""
        return stage_slot_configs(self, [self.stem_width, *self.stage_widths[:-1]])

    def build(self) -> OFASupernet:
        """The supernet module this config describes."""
        return OFASupernet(self)

    def cost_layout(self) -> ClassificationLayout:
        """The analytic cost model of this supernet (:mod:`miner.automl.efficiency`)."""
        from miner.automl.efficiency import ClassificationLayout

        return ClassificationLayout(self)


def net_spec(config: SupernetConfig, arch: Arch) -> NetSpec:
    """The static network ``arch`` selects from a supernet with ``config`` (pure)."""
    space = config.space
    space.validate(arch)
    slots = config.slot_configs()
    blocks = [config.first_block_config().spec(3, 1.0)] if config.first_block else []
    for stage in space.active(arch):
        blocks += [slots[s].spec(arch.kernel[s], float(arch.expand[s])) for s in stage]
    return NetSpec(
        in_channels=config.in_channels, num_classes=config.num_classes,
        stem_width=config.stem_width, stem_stride=config.stem_stride, stem_act=config.stem_act,
        blocks=tuple(blocks), head_width=config.head_width,
        feature_width=config.feature_width, head_act=config.head_act, dropout=config.dropout,
    )


class StagedConfig(Protocol):
    """What :func:`stage_slot_configs` reads of a supernet config (both task kinds have it)."""

    @property
    def space(self) -> SearchSpace: ...
    @property
    def stage_widths(self) -> tuple[int, ...]: ...
    @property
    def stage_strides(self) -> tuple[int, ...]: ...
    @property
    def stage_se(self) -> tuple[bool, ...]: ...
    @property
    def stage_acts(self) -> tuple[str, ...]: ...
    @property
    def channel_divisor(self) -> int: ...


def stage_slot_configs(config: StagedConfig, stage_inputs: Sequence[int]
                       ) -> list[ElasticBlockConfig]:
    """One elastic block config per slot, stage-major: ``space.max_depth`` slots per stage,
    the first taking ``stage_inputs[stage]`` channels at the stage's stride, the rest the
    stage's width at stride 1."""
    s = config.space
    configs = []
    for stage in range(s.n_stages):
        width = config.stage_widths[stage]
        for i in range(s.max_depth):
            configs.append(ElasticBlockConfig(
                in_channels=stage_inputs[stage] if i == 0 else width,
                out_channels=width,
                stride=config.stage_strides[stage] if i == 0 else 1,
                kernel_sizes=s.kernel_sizes,
                expand_ratios=s.expand_ratios,
                se=config.stage_se[stage],
                act=config.stage_acts[stage],
                divisor=config.channel_divisor,
            ))
    return configs


class OFASupernet(nn.Module):
    """The weight-sharing supernet. ``forward``: [B, C, H, W] -> logits [B, num_classes]."""

    task_kind: ClassVar[str] = "classification"  # picks the training task head

    def __init__(self, config: SupernetConfig) -> None:
        super().__init__()
        self.config = config
        self.space: SearchSpace = config.space
        self.stem = ConvBN(config.in_channels, config.stem_width, 3, config.stem_stride,
                           act=config.stem_act)
        self.first = ElasticMBConv(config.first_block_config()) if config.first_block else None
        self.blocks = nn.ModuleList(ElasticMBConv(c) for c in config.slot_configs())
        self.head = ConvBN(config.stage_widths[-1], config.head_width, 1, act=config.head_act)
        width = config.feature_width or config.head_width
        self.feature = (
            nn.Sequential(nn.Conv2d(config.head_width, width, 1, bias=False),
                          make_activation(config.head_act))
            if config.feature_width else nn.Identity()
        )
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(width, config.num_classes)
        self._arch = self.space.max_arch()
        self._active_blocks: list[ElasticMBConv] = list(self.blocks)

    @property
    def active_arch(self) -> Arch:
        return self._arch

    def set_active(self, arch: Arch) -> None:
        """Make ``arch`` the sub-network that ``forward`` runs (a few int assignments)."""
        arch = self.space.canonical(arch)
        active = []
        for stage in self.space.active(arch):
            for slot in stage:
                block = self.blocks[slot]
                block.set_active(arch.kernel[slot], float(arch.expand[slot]))
                active.append(block)
        self._arch = arch
        self._active_blocks = active

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.first is not None:
            x = self.first(x)
        for block in self._active_blocks:
            x = block(x)
        x = self.feature(self.head(x).mean((2, 3), keepdim=True)).flatten(1)
        return self.classifier(self.dropout(x))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities [B, num_classes] of the active sub-network, for inference."""
        return self.forward(x).softmax(dim=1)

    # --- sub-networks ---------------------------------------------------------------------

    def spec(self, arch: Arch | None = None) -> NetSpec:
        return net_spec(self.config, self._arch if arch is None else arch)

    @torch.no_grad()
    def extract(self, arch: Arch | None = None) -> StaticNet:
        """A static network with copies of ``arch``'s weights (default: the active arch).

        The supernet's active arch is left as it was.
        """
        previous = self._arch
        if arch is not None:
            self.set_active(arch)
        try:
            net = StaticNet(self.spec()).to(self.classifier.weight.device)
            blocks = ([self.first] if self.first is not None else []) + self._active_blocks
            for dst, src in zip(net.blocks, blocks, strict=True):
                dst.load_state_dict(src.extract().state_dict())
            for name in ("stem", "head", "feature", "classifier"):
                getattr(net, name).load_state_dict(getattr(self, name).state_dict())
        finally:
            self.set_active(previous)
        net.train(self.training)
        return net

    def _block_prefixes(self, arch: Arch) -> list[tuple[str, ElasticMBConv, int, float]]:
        arch = self.space.canonical(arch)
        out = [("first", self.first, 3, 1.0)] if self.first is not None else []
        for stage in self.space.active(arch):
            out += [(f"blocks.{s}", self.blocks[s], arch.kernel[s], float(arch.expand[s]))
                    for s in stage]
        return out

    def parameters_used(self, arch: Arch) -> list[tuple[str, nn.Parameter, Region]]:
        """(name, parameter, region) for every parameter ``arch`` reads.

        A region is a tuple of slices (``()`` = the whole tensor); ``param[region]`` is
        exactly the part whose gradient an ``arch`` step can make non-zero.
        """
        params = dict(self.named_parameters())
        used = [(n, p, ()) for n, p in params.items()
                if n.split(".")[0] in ("stem", "head", "feature", "classifier")]
        for prefix, block, k, e in self._block_prefixes(arch):
            used += [(f"{prefix}.{n}", params[f"{prefix}.{n}"], r) for n, r in block.used(k, e)]
        return used

    def parameter_masks(self, arch: Arch) -> dict[str, torch.Tensor]:
        """A boolean mask per named parameter (all False where ``arch`` does not read it)."""
        masks = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in self.named_parameters()}
        for name, _, region in self.parameters_used(arch):
            masks[name][region] = True
        return masks

    def bn_modules(self, arch: Arch) -> list[nn.BatchNorm2d]:
        """The BatchNorm layers ``arch`` runs through (for statistics recalibration).

        The elastic ones update only their first ``c`` channels of the running statistics.
        """
        bns: list[nn.BatchNorm2d] = [self.stem[1]]
        for _, block, _, _ in self._block_prefixes(arch):
            bns += block.bn_modules()
        return [*bns, self.head[1]]

    @torch.no_grad()
    def reorder_channels(self) -> None:
        """Sort every block's middle channels by importance (start of each width phase)."""
        for block in self.blocks:
            block.reorder()
        logger.debug("reordered channels blocks=%d", len(self.blocks))
