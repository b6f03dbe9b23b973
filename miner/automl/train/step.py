"""One optimizer step of supernet training: K sub-networks, in-place distillation, one update.

The step accumulates (sums, as once-for-all does: each sub-network gets the full learning
rate, not 1/K of it) the gradients of every sampled sub-network,
calls the gradient hook once — the place where a distributed run averages gradients across
replicas — and only then applies one optimizer step. Nothing here touches files or RNGs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from miner.automl.data import resize_batch
from miner.automl.space import Arch
from miner.automl.supernet import OFASupernet


class GradientHook(Protocol):
    """Called once per step after accumulation, before ``optimizer.step()``.

    ``params`` are the supernet's named parameters (``.grad`` holds this replica's sum over
    the step's sub-networks); ``archs`` are the sub-networks that produced it. A distributed
    run averages the gradients in place here.
    """

    def __call__(
        self, params: Sequence[tuple[str, nn.Parameter]], archs: Sequence[Arch]
    ) -> None: ...


def no_gradient_exchange(params: Sequence[tuple[str, nn.Parameter]], archs: Sequence[Arch]) -> None:
    """The single-process default: gradients stay as they are."""


@dataclass(frozen=True)
class LossConfig:
    label_smoothing: float = 0.1
    distill_weight: float = 1.0
    temperature: float = 1.0


@dataclass(frozen=True)
class StepOutcome:
    """Per sub-network loss and batch accuracy, in the order of ``archs``."""

    archs: tuple[Arch, ...]
    losses: tuple[float, ...]
    accuracies: tuple[float, ...]


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on logits softened by ``temperature``, scaled by T^2."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student / t, dim=1), F.softmax(teacher / t, dim=1), reduction="batchmean"
    ) * (t * t)


def train_step(
    net: OFASupernet,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    archs: Sequence[Arch],
    loss_config: LossConfig,
    teacher_arch: Arch | None,
    hook: GradientHook = no_gradient_exchange,
) -> StepOutcome:
    """Train ``archs`` on the batch ``x`` [B, C, H, W], ``y`` [B] and apply one update.

    Teacher: if ``teacher_arch`` is ``archs[0]`` (sandwich rule) its detached logits teach the
    others; if it is another arch, one extra no-grad forward computes them; if ``None``, or
    the distillation weight is 0, there is no distillation. Either way once per step.
    """
    optimizer.zero_grad(set_to_none=True)
    teacher: torch.Tensor | None = None
    distill = loss_config.distill_weight > 0 and teacher_arch is not None
    if teacher_arch is not None and distill and teacher_arch != archs[0]:
        with torch.no_grad():
            net.set_active(teacher_arch)
            teacher = net(resize_batch(x, teacher_arch.resolution)).detach()
    losses, accuracies = [], []
    for i, arch in enumerate(archs):
        net.set_active(arch)
        logits = net(resize_batch(x, arch.resolution))
        loss = F.cross_entropy(logits, y, label_smoothing=loss_config.label_smoothing)
        if teacher is not None:
            loss = loss + loss_config.distill_weight * distill_loss(
                logits, teacher, loss_config.temperature
            )
        elif distill and i == 0:
            teacher = logits.detach()
        loss.backward()
        losses.append(float(loss.detach()))
        accuracies.append(float((logits.detach().argmax(dim=1) == y).float().mean()))
    params = [(n, p) for n, p in net.named_parameters()]
    hook(params, archs)
    optimizer.step()
    return StepOutcome(tuple(archs), tuple(losses), tuple(accuracies))
