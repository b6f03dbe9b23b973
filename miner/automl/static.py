"""Static networks: one fixed sub-network built from plain torch layers.

A :class:`NetSpec` describes a network layer by layer (stem, MBConv blocks, head) with
concrete channel counts, so it round-trips through JSON and :func:`build_static` rebuilds
the same module anywhere. This module deliberately imports nothing of the supernet: an
exported network loads with torch alone.

The layer order matches the elastic blocks exactly (expand 1x1 -> depthwise -> optional
squeeze-excite -> project 1x1, residual when shapes match), so a static network and the
supernet with the same architecture active compute the same function and cost the same.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FORMAT = "manta-static-v1"


@dataclass(frozen=True)
class BlockSpec:
    """One MBConv block. ``se_channels == 0`` means no squeeze-excite."""

    in_channels: int
    mid_channels: int
    out_channels: int
    kernel: int
    stride: int
    se_channels: int
    act: str
    expand_conv: bool = True

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


@dataclass(frozen=True)
class NetSpec:
    """A whole classification network; ``feature_width == 0`` skips the feature mix layer."""

    in_channels: int
    num_classes: int
    stem_width: int
    stem_stride: int
    stem_act: str
    blocks: tuple[BlockSpec, ...]
    head_width: int
    feature_width: int
    head_act: str
    dropout: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["blocks"] = [asdict(b) for b in self.blocks]
        data["format"] = FORMAT
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetSpec:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} description: format={data.get('format')!r}")
        fields = {k: v for k, v in data.items() if k != "format"}
        fields["blocks"] = tuple(BlockSpec(**b) for b in data["blocks"])
        return cls(**fields)


def make_activation(name: str) -> nn.Module:
    """``relu`` or ``hswish``; the only two the MobileNetV3 space uses."""
    if name == "relu":
        return nn.ReLU()
    if name == "hswish":
        return nn.Hardswish()
    raise ValueError(f"unknown activation {name!r}")


class ConvBN(nn.Sequential):
    """Conv (no bias) + BatchNorm, then an activation unless ``act`` is empty."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: str = "") -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        if act:
            layers.append(make_activation(act))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Channel attention: pool -> 1x1 reduce -> ReLU -> 1x1 expand -> hard sigmoid -> scale."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.reduce(x.mean((2, 3), keepdim=True)))
        return x * F.hardsigmoid(self.expand(s))


class MBConv(nn.Module):
    """Inverted bottleneck block, fixed size. ``x``: [B, in, H, W] -> [B, out, H/s, W/s]."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        self.residual = spec.residual
        mid = spec.mid_channels
        self.expand = (
            ConvBN(spec.in_channels, mid, 1, act=spec.act) if spec.expand_conv else nn.Identity()
        )
        self.dw = ConvBN(mid, mid, spec.kernel, spec.stride, groups=mid, act=spec.act)
        self.se = SqueezeExcite(mid, spec.se_channels) if spec.se_channels else nn.Identity()
        self.project = ConvBN(mid, spec.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


class StaticNet(nn.Module):
    """A fixed MobileNetV3-style classifier. ``forward`` returns logits [B, num_classes]."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.spec = spec
        self.stem = ConvBN(spec.in_channels, spec.stem_width, 3, spec.stem_stride,
                           act=spec.stem_act)
        self.blocks = nn.Sequential(*(MBConv(b) for b in spec.blocks))
        last = spec.blocks[-1].out_channels if spec.blocks else spec.stem_width
        self.head = ConvBN(last, spec.head_width, 1, act=spec.head_act)
        width = spec.feature_width or spec.head_width
        self.feature = (
            nn.Sequential(nn.Conv2d(spec.head_width, width, 1, bias=False),
                          make_activation(spec.head_act))
            if spec.feature_width else nn.Identity()
        )
        self.dropout = nn.Dropout(spec.dropout)
        self.classifier = nn.Linear(width, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        x = self.feature(x.mean((2, 3), keepdim=True)).flatten(1)
        return self.classifier(self.dropout(x))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities [B, num_classes] (softmax of the logits), for inference."""
        return self.forward(x).softmax(dim=1)


def build_static(spec: NetSpec) -> StaticNet:
    """A freshly initialised static network for ``spec``."""
    return StaticNet(spec)
