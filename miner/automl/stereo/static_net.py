"""The static DispNetC-style stereo network, and the parts the supernet shares with it.

Layout (``x`` is the pair stacked on channels, ``[B, 2C, H, W]``, left first):

- a stem conv and three searchable stages run on left and right together (one batch of
  ``2B``, so the weights are shared); their left outputs are the encoder's U-link features;
- :class:`~miner.automl.stereo.correlation.Correlation` between the left and right
  features of stage 3, concatenated with a 1x1 "redirect" of the left features;
- three more searchable stages on that volume;
- six transposed convolutions, one per stage from the deepest up, each joined to the
  encoder feature at the input of its stage; a 3x3 conv after each predicts a disparity
  residual on top of the coarser prediction, upsampled.

Every prediction is in full-resolution pixels. :class:`StereoHead` (correlation, redirect,
decoder) and :func:`stereo_forward` are used as they are by the supernet, so the two compute
the same function. Imports only torch, :mod:`miner.automl.static` and the correlation layer,
so an exported network loads without the supernet code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from miner.automl.static import BlockSpec, ConvBN, MBConv, make_activation
from miner.automl.stereo.correlation import Correlation

FORMAT = "manta-stereo-static-v1"
N_ENCODER = 3  # stages before the correlation
N_STAGES = 6


@dataclass(frozen=True)
class HeadSpec:
    """The fixed parts around the searchable stages. Tuples have one entry per stage."""

    stem_width: int
    stage_widths: tuple[int, ...]
    strides: tuple[int, ...]
    max_displacement: int
    redirect_width: int
    decoder_widths: tuple[int, ...]
    act: str

    @property
    def fused_channels(self) -> int:
        """Channels entering stage 4: cost volume plus redirected left features."""
        return self.max_displacement + 1 + self.redirect_width

    def skip_channels(self) -> list[int]:
        """Channels of the U-link feature at the input of each stage (stem, stage 1, ...)."""
        return [self.stem_width, *self.stage_widths[:-1]]

    def decoder_inputs(self) -> list[int]:
        """Input channels of each transposed conv, deepest first."""
        return [self.stage_widths[-1], *self.decoder_widths[:-1]]

    @property
    def total_stride(self) -> int:
        out = 1
        for s in self.strides:
            out *= s
        return out


@dataclass(frozen=True)
class StereoNetSpec:
    """A whole static stereo network; ``stages`` holds the active blocks of each stage."""

    in_channels: int
    stem_act: str
    stages: tuple[tuple[BlockSpec, ...], ...]
    head: HeadSpec

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "in_channels": self.in_channels,
            "stem_act": self.stem_act,
            "stages": [[asdict(b) for b in stage] for stage in self.stages],
            "head": asdict(self.head),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StereoNetSpec:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} description: format={data.get('format')!r}")
        head = dict(data["head"])
        for name in ("stage_widths", "strides", "decoder_widths"):
            head[name] = tuple(head[name])
        return cls(
            in_channels=int(data["in_channels"]),
            stem_act=str(data["stem_act"]),
            stages=tuple(tuple(BlockSpec(**b) for b in stage) for stage in data["stages"]),
            head=HeadSpec(**head),
        )


def _deconv(c_in: int, c_out: int, stride: int) -> nn.ConvTranspose2d:
    """Exactly ``stride`` times larger: kernel 4 pad 1 for stride 2, kernel 3 pad 1 for 1."""
    if stride == 2:
        return nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)
    if stride == 1:
        return nn.ConvTranspose2d(c_in, c_out, 3, 1, 1)
    raise ValueError(f"stage stride must be 1 or 2, got {stride}")


class StereoHead(nn.Module):
    """Correlation + redirect (``fuse``) and the U-Net decoder (``decode``)."""

    def __init__(self, spec: HeadSpec) -> None:
        super().__init__()
        self.spec = spec
        self.correlation = Correlation(spec.max_displacement)
        self.redirect = ConvBN(spec.stage_widths[N_ENCODER - 1], spec.redirect_width, 1,
                               act=spec.act)
        self.act = make_activation(spec.act)
        self.predict_bottom = nn.Conv2d(spec.stage_widths[-1], 1, 3, 1, 1)
        skips = spec.skip_channels()[::-1]
        strides = spec.strides[::-1]
        self.deconvs = nn.ModuleList(
            _deconv(c_in, c_out, s)
            for c_in, c_out, s in zip(spec.decoder_inputs(), spec.decoder_widths, strides,
                                      strict=True)
        )
        self.iconvs = nn.ModuleList(
            ConvBN(c + skip + 1, c, 3, act=spec.act)
            for c, skip in zip(spec.decoder_widths, skips, strict=True)
        )
        self.predicts = nn.ModuleList(nn.Conv2d(c, 1, 3, 1, 1) for c in spec.decoder_widths)

    def fuse(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """[B, C3, h, w] x 2 -> [B, D + 1 + redirect, h, w]."""
        return torch.cat([self.correlation(left, right), self.redirect(left)], 1)

    def decode(self, skips: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """``skips``: stem and the six stage outputs (left only), shallow first.

        Returns 7 disparity maps [B, 1, h_i, w_i], coarsest first, finest (input size) last.
        """
        x = skips[-1]
        pred = self.predict_bottom(x)
        preds = [pred]
        for i, (deconv, iconv, predict) in enumerate(
            zip(self.deconvs, self.iconvs, self.predicts, strict=True)
        ):
            skip = skips[-2 - i]
            up = self.act(deconv(x))
            coarse = F.interpolate(pred, size=skip.shape[-2:], mode="bilinear",
                                   align_corners=False)
            x = iconv(torch.cat([up, skip, coarse], 1))
            pred = coarse + predict(x)
            preds.append(pred)
        return tuple(preds)


StageFn = Callable[[torch.Tensor], torch.Tensor]


def stereo_forward(stem: nn.Module, stages: Sequence[StageFn], head: StereoHead,
                   x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The network's function, shared by the supernet and the static net.

    ``x``: [B, 2C, H, W] (left, right on channels) with H and W multiples of the total
    stride. Returns the 7 predictions of :meth:`StereoHead.decode`.
    """
    total = head.spec.total_stride
    if x.shape[-1] % total or x.shape[-2] % total:
        raise ValueError(f"input {tuple(x.shape[-2:])} is not a multiple of stride {total}")
    b = x.shape[0]
    c = x.shape[1] // 2
    f = stem(torch.cat([x[:, :c], x[:, c:]], 0))
    skips = [f[:b]]
    for stage in stages[:N_ENCODER]:
        f = stage(f)
        skips.append(f[:b])
    f = head.fuse(f[:b], f[b:])
    for stage in stages[N_ENCODER:]:
        f = stage(f)
        skips.append(f)
    return head.decode(skips)


class StereoStaticNet(nn.Module):
    """A fixed stereo network. ``forward``: [B, 2C, H, W] -> 7 disparity maps (finest last)."""

    def __init__(self, spec: StereoNetSpec) -> None:
        super().__init__()
        self.spec = spec
        self.stem = ConvBN(spec.in_channels, spec.head.stem_width, 3, act=spec.stem_act)
        self.stages = nn.ModuleList(
            nn.Sequential(*(MBConv(b) for b in stage)) for stage in spec.stages
        )
        self.head = StereoHead(spec.head)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return stereo_forward(self.stem, list(self.stages), self.head, x)

    @torch.no_grad()
    def predict(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """Full-resolution disparity [B, H, W] for a pair of [B, C, H, W] images."""
        return self.forward(torch.cat([left, right], 1))[-1][:, 0]


def build_stereo_static(spec: StereoNetSpec) -> StereoStaticNet:
    """A freshly initialised static stereo network for ``spec``."""
    return StereoStaticNet(spec)
