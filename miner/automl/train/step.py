"""One optimizer step of supernet training: K sub-networks, in-place distillation, one update.

The step accumulates (sums, as once-for-all does: each sub-network gets the full learning
rate, not 1/K of it) the gradients of every sampled sub-network,
calls the gradient hook once — the place where a distributed run averages gradients across
replicas — and only then applies one optimizer step. The loss and the metric come from the
run's :class:`~miner.automl.train.task.TaskHead` (classification or stereo). Nothing here
touches files or RNGs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from miner.automl.space import Arch
from miner.automl.supernet import OFASupernet
from miner.automl.train.task import (
    ClassificationTask,
    TaskHead,
    batch_metric,
    distill_loss,
    fit_input,
)

__all__ = ["GradientHook", "LossConfig", "StepOutcome", "distill_loss", "no_gradient_exchange",
           "train_step"]


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


#: The classification loss settings (label smoothing, distillation weight, temperature):
#: the classification task head itself, under the name older callers use.
LossConfig = ClassificationTask


@dataclass(frozen=True)
class StepOutcome:
    """Per sub-network loss and batch metric, in the order of ``archs``.

    ``accuracies`` holds the task's metric (top-1 accuracy for classification, EPE for
    stereo); the name stays for the callers that read it.
    """

    archs: tuple[Arch, ...]
    losses: tuple[float, ...]
    accuracies: tuple[float, ...]


def train_step(
    net: OFASupernet,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    archs: Sequence[Arch],
    task: TaskHead,
    teacher_arch: Arch | None,
    hook: GradientHook = no_gradient_exchange,
    progress: float = 0.0,
) -> StepOutcome:
    """Train ``archs`` on the batch ``x`` [B, C, H, W], targets ``y`` and apply one update.

    Teacher: if ``teacher_arch`` is ``archs[0]`` (sandwich rule) its detached output teaches
    the others; if it is another arch, one extra no-grad forward computes it; if ``None``, or
    the distillation weight is 0, there is no distillation. Either way once per step.
    ``progress`` in [0, 1] feeds the task's loss schedule (stereo's per-scale weights).
    """
    optimizer.zero_grad(set_to_none=True)
    teacher: torch.Tensor | None = None
    distill = task.distill_weight > 0 and teacher_arch is not None
    if teacher_arch is not None and distill and teacher_arch != archs[0]:
        with torch.no_grad():
            net.set_active(teacher_arch)
            teacher = task.teacher_signal(net(fit_input(net, x, teacher_arch)), y)
    losses, metrics = [], []
    for i, arch in enumerate(archs):
        net.set_active(arch)
        out = net(fit_input(net, x, arch))
        loss = task.loss(out, y, teacher, progress)
        if teacher is None and distill and i == 0:
            teacher = task.teacher_signal(out, y)
        loss.backward()
        losses.append(float(loss.detach()))
        metrics.append(batch_metric(task, out, y))
    params = [(n, p) for n, p in net.named_parameters()]
    hook(params, archs)
    optimizer.step()
    return StepOutcome(tuple(archs), tuple(losses), tuple(metrics))
