"""Supernet training by progressive shrinking.

Modules:
- ``phases``    the step plan: steps per phase, the sub-space each samples, cosine lr
- ``step``      one optimizer step over K sub-networks with in-place distillation and the
                gradient hook a distributed run plugs into
- ``loop``      :class:`Trainer`: phases, checkpoints, exact resume, progress reports
- ``evaluate``  top-1 accuracy of a sub-network
"""

from miner.automl.train.evaluate import evaluate_accuracy
from miner.automl.train.loop import StepReport, Trainer, build_supernet
from miner.automl.train.phases import PhasePlan, make_plan
from miner.automl.train.step import GradientHook, LossConfig, distill_loss, train_step

__all__ = [
    "GradientHook",
    "LossConfig",
    "PhasePlan",
    "StepReport",
    "Trainer",
    "build_supernet",
    "distill_loss",
    "evaluate_accuracy",
    "make_plan",
    "train_step",
]
