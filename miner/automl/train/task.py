"""Task heads: the little that makes a training run classification or stereo.

The loop, the step, evaluation, BatchNorm recalibration, export and search are written once;
what differs between task kinds is said here by a :class:`TaskHead`: how a batch is fitted
to a sub-network's input size, the training loss (with in-place distillation from the
largest sub-network), the metric, and whether a larger metric is better. The supernet's
``task_kind`` picks the head (:func:`make_task`).

- :class:`ClassificationTask`: cross-entropy with label smoothing + KL distillation;
  metric top-1 accuracy (higher is better).
- :class:`StereoTask`: the multi-scale disparity loss with per-scale weights that move from
  coarse to fine over training (+ L1 distillation of the finest prediction); metric
  end-point error (lower is better). Predictions are in pixels of the network input and are
  rescaled when the target has another width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from miner.automl.data import resize_batch
from miner.automl.errors import AutoMLError
from miner.automl.space import Arch
from miner.automl.stereo.loss import (
    ScaleSchedule,
    default_schedule,
    multiscale_loss,
    stereo_errors,
)

if TYPE_CHECKING:
    from miner.automl.config import TrainConfig


class TaskHead(Protocol):
    """What the shared training, evaluation and search need to know about a task kind."""

    @property
    def kind(self) -> str: ...

    @property
    def metric(self) -> str:
        """The metric's name: ``accuracy``, ``epe``."""
        ...

    @property
    def higher_is_better(self) -> bool: ...

    @property
    def distill_weight(self) -> float: ...

    def loss(self, out: Any, y: torch.Tensor, teacher: torch.Tensor | None,
             progress: float) -> torch.Tensor:
        """Training loss of one sub-network's output ``out`` on targets ``y``; ``teacher``
        is :meth:`teacher_signal` of the largest sub-network (None: no distillation);
        ``progress`` in [0, 1] is how far training has come."""
        ...

    def teacher_signal(self, out: Any, y: torch.Tensor) -> torch.Tensor: ...

    def metric_sums(self, out: Any, y: torch.Tensor) -> tuple[float, int]:
        """(sum, count) of the metric over a batch, so a split's metric is exact."""
        ...


def score(task: TaskHead, metric: float) -> float:
    """The metric as a score to maximise (the search maximises it)."""
    return metric if task.higher_is_better else -metric


def batch_metric(task: TaskHead, out: Any, y: torch.Tensor) -> float:
    total, count = task.metric_sums(out, y)
    return total / max(count, 1)


def fit_input(net: nn.Module, x: torch.Tensor, arch: Arch) -> torch.Tensor:
    """``x`` [B, C, H, W] resized (bilinear) to the input ``net`` takes for ``arch`` (a
    no-op when it already has that size)."""
    from miner.automl.efficiency import layout_of

    _, h, w = layout_of(net.config).input_shape(arch.resolution)
    return resize_batch(x, (h, w))


@dataclass(frozen=True)
class ClassificationTask:
    label_smoothing: float = 0.1
    distill_weight: float = 1.0
    temperature: float = 1.0
    kind: str = "classification"
    metric: str = "accuracy"
    higher_is_better: bool = True

    def loss(self, out: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor | None,
             progress: float) -> torch.Tensor:
        loss = F.cross_entropy(out, y, label_smoothing=self.label_smoothing)
        if teacher is not None:
            loss = loss + self.distill_weight * distill_loss(out, teacher, self.temperature)
        return loss

    def teacher_signal(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return out.detach()

    def metric_sums(self, out: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        return float((out.detach().argmax(dim=1) == y).sum()), int(y.shape[0])


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on logits softened by ``temperature``, scaled by T^2."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student / t, dim=1), F.softmax(teacher / t, dim=1), reduction="batchmean"
    ) * (t * t)


@dataclass(frozen=True)
class StereoTask:
    """``out``: the network's 7 predictions [B, 1, h_i, w_i] (coarsest first); ``y``:
    disparity [B, H, W], valid where ``0 < d < max_disparity``."""

    max_disparity: float
    schedule: ScaleSchedule = field(default_factory=default_schedule)
    distill_weight: float = 0.0
    kind: str = "stereo"
    metric: str = "epe"
    higher_is_better: bool = False

    @staticmethod
    def _to_target(out: tuple[torch.Tensor, ...], y: torch.Tensor) -> list[torch.Tensor]:
        scale = y.shape[-1] / out[-1].shape[-1]
        return [p * scale for p in out] if scale != 1 else list(out)

    def _finest(self, out: tuple[torch.Tensor, ...], y: torch.Tensor) -> torch.Tensor:
        pred = self._to_target(out[-1:], y)[0]  # only the finest map needs rescaling
        if pred.shape[-2:] != y.shape[-2:]:
            pred = F.interpolate(pred, size=y.shape[-2:], mode="bilinear", align_corners=False)
        return pred[:, 0]

    def loss(self, out: tuple[torch.Tensor, ...], y: torch.Tensor, teacher: torch.Tensor | None,
             progress: float) -> torch.Tensor:
        preds = self._to_target(out, y)
        loss = multiscale_loss(preds, y, self.schedule.weights(progress), self.max_disparity)
        if teacher is not None and self.distill_weight > 0:
            loss = loss + self.distill_weight * (self._finest(out, y) - teacher).abs().mean()
        return loss

    def teacher_signal(self, out: tuple[torch.Tensor, ...], y: torch.Tensor) -> torch.Tensor:
        return self._finest(out, y).detach()

    def metric_sums(self, out: tuple[torch.Tensor, ...], y: torch.Tensor) -> tuple[float, int]:
        with torch.no_grad():
            total, _, count = stereo_errors(self._finest(out, y), y, self.max_disparity)
            return total, count


def make_task(net: nn.Module, config: TrainConfig) -> TaskHead:
    """The head for ``net``'s task kind, with the loss settings of ``config``."""
    kind = getattr(net, "task_kind", "classification")
    if kind == "classification":
        return ClassificationTask(config.label_smoothing, config.distill_weight,
                                  config.distill_temperature)
    if kind == "stereo":
        schedule = (ScaleSchedule(config.scale_schedule) if config.scale_schedule
                    else default_schedule())
        max_disparity: Any = getattr(net, "config").max_disparity  # noqa: B009 (a StereoConfig)
        return StereoTask(float(max_disparity), schedule, config.distill_weight)
    raise AutoMLError(f"no task head for task kind {kind!r}")
