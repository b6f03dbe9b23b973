"""Supernet training by progressive shrinking.

Modules:
- ``phases``    the step plan: steps per phase, the sub-space each samples, cosine lr
- ``step``      one optimizer step over K sub-networks with in-place distillation and the
                gradient hook a distributed run plugs into
- ``loop``      :class:`Trainer`: phases, checkpoints, exact resume, progress reports
- ``task``      the task heads (classification, stereo): loss, metric, input fitting
- ``evaluate``  the task metric of a sub-network (top-1 accuracy, EPE)
"""

from miner.automl.train.evaluate import evaluate_accuracy, evaluate_metric
from miner.automl.train.loop import StepReport, Trainer, build_supernet
from miner.automl.train.phases import PhasePlan, make_plan
from miner.automl.train.step import GradientHook, LossConfig, distill_loss, train_step
from miner.automl.train.task import (
    ClassificationTask,
    StereoTask,
    TaskHead,
    fit_input,
    make_task,
    score,
)

__all__ = [
    "ClassificationTask",
    "GradientHook",
    "LossConfig",
    "PhasePlan",
    "StepReport",
    "StereoTask",
    "TaskHead",
    "Trainer",
    "build_supernet",
    "distill_loss",
    "evaluate_accuracy",
    "evaluate_metric",
    "fit_input",
    "make_plan",
    "make_task",
    "score",
    "train_step",
]
