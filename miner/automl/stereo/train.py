"""Stereo training pieces on top of the shared engine: one sandwich step with the
multi-scale loss, BatchNorm recalibration for a stereo batch, and EPE/D1 evaluation.

The step mirrors :func:`miner.automl.train.step.train_step` (K sub-networks, gradients
accumulated, one gradient hook call, one update); only the loss differs. The
recalibration follows :func:`miner.automl.calibrate.recalibrate_bn` but feeds pairs at
their own (non-square) size instead of resizing to ``resolution x resolution``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from miner.automl.space import Arch
from miner.automl.stereo.loss import multiscale_loss, stereo_errors
from miner.automl.stereo.supernet import OFADispNetC
from miner.automl.train.step import GradientHook, no_gradient_exchange

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StereoStepOutcome:
    archs: tuple[Arch, ...]
    losses: tuple[float, ...]


def stereo_train_step(
    net: OFADispNetC,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    disparity: torch.Tensor,
    archs: Sequence[Arch],
    weights: Sequence[float],
    max_disparity: float,
    hook: GradientHook = no_gradient_exchange,
) -> StereoStepOutcome:
    """Train ``archs`` on pairs ``x`` [B, 2C, H, W] with truth ``disparity`` [B, H, W]."""
    optimizer.zero_grad(set_to_none=True)
    losses = []
    for arch in archs:
        net.set_active(arch)
        loss = multiscale_loss(net(x), disparity, weights, max_disparity)
        (loss / len(archs)).backward()  # type: ignore[no-untyped-call]
        losses.append(float(loss.detach()))
    hook(list(net.named_parameters()), archs)
    optimizer.step()
    return StereoStepOutcome(tuple(archs), tuple(losses))


@torch.no_grad()
def recalibrate_stereo_bn(net: OFADispNetC, arch: Arch, batches: Iterable[torch.Tensor]) -> int:
    """Fresh BatchNorm statistics for ``arch`` from pair batches [B, 2C, H, W].

    Only the channels ``arch`` uses are re-estimated (cumulative average); the rest keep
    their values. Leaves ``arch`` active and the net in eval mode; returns batches used.
    """
    net.set_active(arch)
    bns = net.bn_modules(arch)
    saved = [(_stat(bn.running_mean).clone(), _stat(bn.running_var).clone(), bn.momentum)
             for bn in bns]
    used: dict[int, int] = {}

    def remember(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        used[id(module)] = max(used.get(id(module), 0), inputs[0].shape[1])

    hooks = [bn.register_forward_pre_hook(remember) for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    net.eval()
    for bn in bns:
        bn.train()
    n = 0
    try:
        for x in batches:
            net(x)
            n += 1
    finally:
        for h in hooks:
            h.remove()
        for bn, (mean, var, momentum) in zip(bns, saved, strict=True):
            c = used.get(id(bn), 0) if n else 0
            _stat(bn.running_mean)[c:] = mean[c:]
            _stat(bn.running_var)[c:] = var[c:]
            bn.momentum = momentum
        net.eval()
    return n


def _stat(t: torch.Tensor | None) -> torch.Tensor:
    if t is None:
        raise ValueError("BatchNorm without running statistics cannot be recalibrated")
    return t


@torch.no_grad()
def evaluate_stereo(net: nn.Module, x: torch.Tensor, disparity: torch.Tensor,
                    max_disparity: float, batch_size: int = 16) -> dict[str, float]:
    """EPE and D1 of ``net``'s finest prediction over a split (exact, any batching)."""
    was = net.training
    net.eval()
    total, bad, count = 0.0, 0, 0
    for i in range(0, x.shape[0], batch_size):
        pred = net(x[i: i + batch_size])[-1][:, 0]
        err_sum, n_bad, n_valid = stereo_errors(pred, disparity[i: i + batch_size],
                                                max_disparity)
        total, bad, count = total + err_sum, bad + n_bad, count + n_valid
    net.train(was)
    return {"epe": total / max(count, 1), "d1": bad / max(count, 1), "pixels": float(count)}
