"""The training loop: progressive shrinking over a step plan, with exact resume.

:class:`Trainer` owns the supernet's optimizer, the data position, a private torch RNG
state (dropout draws from it; the process-wide RNG is left as it was) and the step counters.
Everything that decides the next step is in :meth:`Trainer.state_payload`, so training ``N``
steps straight and training ``k`` steps, crashing, loading and training ``N - k`` more give
the same weights.

The loss and the metric come from the run's task head (:func:`~miner.automl.train.task.make_task`,
chosen by the supernet's task kind), so the same loop trains classification and stereo nets.

Phase boundaries: a fresh optimizer per phase (SGD or AdamW, cosine lr from the phase's ``lr``), and
``reorder_channels()`` at the start of every width phase — done when the phase's first step
runs, so a checkpoint taken at a boundary holds the weights from before the reorder and a
resumed run reorders exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from miner.automl.checkpoint import CheckpointStore
from miner.automl.config import TrainConfig
from miner.automl.data import BatchIterator, DataPosition, ImageDataset
from miner.automl.errors import CheckpointError
from miner.automl.space import Arch
from miner.automl.supernet import OFASupernet
from miner.automl.train.phases import PhasePlan, PlannedPhase, make_plan, step_archs
from miner.automl.train.step import GradientHook, no_gradient_exchange, train_step
from miner.automl.train.task import TaskHead, make_task

logger = logging.getLogger(__name__)

PAYLOAD_FORMAT = 1


@dataclass(frozen=True)
class StepReport:
    """What the progress callback receives after every step."""

    phase: str
    phase_index: int
    n_phases: int
    epoch: int
    global_step: int
    total_steps: int
    step_in_phase: int
    phase_steps: int
    lr: float
    archs: tuple[Arch, ...]
    losses: tuple[float, ...]
    accuracies: tuple[float, ...]  # the task's batch metric, named by ``metric``
    samples_per_s: float
    metric: str = "accuracy"


ProgressFn = Callable[[StepReport], None]


def build_supernet(config: TrainConfig) -> OFASupernet:
    """The run's supernet, initialised from ``config.seed`` without touching the global RNG."""
    from miner.automl.registry import create_supernet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return create_supernet(config.supernet, **config.overrides)


def _param_groups(net: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay = [p for p in net.parameters() if p.ndim > 1]
    rest = [p for p in net.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


class Trainer:
    """Trains ``net`` on ``train`` following ``config``; checkpoints into ``store`` if given."""

    def __init__(
        self,
        config: TrainConfig,
        net: OFASupernet,
        train: ImageDataset,
        *,
        store: CheckpointStore | None = None,
        on_progress: ProgressFn | None = None,
        gradient_hook: GradientHook = no_gradient_exchange,
        device: torch.device | None = None,
    ) -> None:
        self.config = config
        self.config_hash = config.config_hash()
        self.net = net
        self.device = device or torch.device("cpu")
        self.store = store
        self.on_progress = on_progress
        self.gradient_hook = gradient_hook
        self.batches = BatchIterator(train, config.batch_size, config.seed)
        self.plan: PhasePlan = make_plan(config, net.space, self.batches.batches_per_epoch)
        self.global_step = 0
        self.optimizer: torch.optim.Optimizer | None = None
        self._optimizer_phase = -1
        self._rng_state = torch.Generator().manual_seed(config.seed).get_state()
        self._cuda_rng_state: torch.Tensor | None = None  # made on the first CUDA step
        self.task: TaskHead = make_task(net, config)

    @property
    def done(self) -> bool:
        return self.global_step >= self.plan.total_steps

    # --- checkpoint state ---------------------------------------------------------------

    def state_payload(self) -> dict[str, Any]:
        """Everything needed to continue exactly from here."""
        phase_index, step_in_phase = self.plan.locate(self.global_step)
        mid_phase = self.optimizer is not None and self._optimizer_phase == phase_index
        return {
            "format": PAYLOAD_FORMAT,
            "global_step": self.global_step,
            "phase_index": phase_index,
            "step_in_phase": step_in_phase,
            "data_epoch": self.batches.position.epoch,
            "data_index": self.batches.position.index,
            "model": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
            "optimizer": self.optimizer.state_dict() if mid_phase and self.optimizer else {},
            "torch_rng": self._rng_state.clone(),
            "cuda_rng": None if self._cuda_rng_state is None else self._cuda_rng_state.clone(),
            "config_hash": self.config_hash,
        }

    def load_payload(self, payload: dict[str, Any]) -> None:
        """Restore the state saved by :meth:`state_payload` (from a verified checkpoint)."""
        try:
            if payload["format"] != PAYLOAD_FORMAT or payload["config_hash"] != self.config_hash:
                raise CheckpointError(path="<payload>", detail="format or config hash differs")
            self.net.load_state_dict(payload["model"])
            self.global_step = int(payload["global_step"])
            self.batches.position = DataPosition(
                int(payload["data_epoch"]), int(payload["data_index"])
            )
            self._rng_state = payload["torch_rng"].clone()
            cuda_rng = payload.get("cuda_rng")
            self._cuda_rng_state = None if cuda_rng is None else cuda_rng.clone()
            phase_index, step_in_phase = self.plan.locate(self.global_step)
            self.optimizer, self._optimizer_phase = None, -1
            if step_in_phase > 0 and phase_index < len(self.plan.phases):
                self._start_optimizer(self.plan.phases[phase_index])
                assert self.optimizer is not None
                self.optimizer.load_state_dict(payload["optimizer"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(path="<payload>", detail=f"does not fit this run: {exc}") from exc

    def resume(self) -> bool:
        """Load the newest checkpoint of ``store`` if there is one; True if loaded."""
        if self.store is None:
            return False
        payload = self.store.load_latest(self.config_hash)
        if payload is None:
            return False
        self.load_payload(payload)
        logger.info("resumed step=%d", self.global_step)
        return True

    def save(self) -> None:
        if self.store is not None:
            self.store.save(self.global_step, self.state_payload(), self.config_hash)

    # --- training -------------------------------------------------------------------------

    def _start_optimizer(self, phase: PlannedPhase) -> None:
        groups = _param_groups(self.net, self.config.weight_decay)
        if self.config.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(groups, lr=phase.config.lr)
        else:
            self.optimizer = torch.optim.SGD(
                groups,
                lr=phase.config.lr,
                momentum=self.config.momentum,
                nesterov=self.config.nesterov and self.config.momentum > 0,
            )
        self._optimizer_phase = phase.index

    def _begin_phase(self, phase: PlannedPhase) -> None:
        if phase.config.name == "width" and hasattr(self.net, "reorder_channels"):
            self.net.reorder_channels()
        self._start_optimizer(phase)
        logger.info(
            "phase started name=%s index=%d steps=%d", phase.config.name, phase.index, phase.steps
        )

    def run(self, until_step: int | None = None) -> None:
        """Train up to global step ``until_step`` (default: the end of the plan).

        Saves a checkpoint every ``checkpoint_every_steps`` steps, at the end of each phase
        and at the end of training.
        """
        stop = (
            self.plan.total_steps if until_step is None else min(until_step, self.plan.total_steps)
        )
        self.net.train()
        while self.global_step < stop:
            phase_index, step_in_phase = self.plan.locate(self.global_step)
            phase = self.plan.phases[phase_index]
            if self._optimizer_phase != phase_index:
                self._begin_phase(phase)
            self._one_step(phase, step_in_phase)
            self.global_step += 1
            boundary = step_in_phase + 1 == phase.steps
            if boundary or self.global_step % self.config.checkpoint_every_steps == 0:
                self.save()

    def _enter_rng(self, cuda: bool) -> None:
        """Install this run's private RNG states (inside ``fork_rng``, which restores)."""
        torch.set_rng_state(self._rng_state)
        if cuda:
            if self._cuda_rng_state is None:
                torch.cuda.manual_seed(self.config.seed)
            else:
                torch.cuda.set_rng_state(self._cuda_rng_state, self.device)

    def _one_step(self, phase: PlannedPhase, step_in_phase: int) -> None:
        assert self.optimizer is not None
        lr = phase.lr_at(step_in_phase)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        epoch = self.batches.position.epoch
        x, y = next(self.batches)
        x, y = x.to(self.device), y.to(self.device)
        archs = step_archs(phase, self.config.seed, self.global_step, self.config.sandwich)
        teacher = phase.space.max_arch() if self.task.distill_weight > 0 else None
        progress = self.global_step / max(self.plan.total_steps, 1)
        started = time.perf_counter()
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            self._enter_rng(bool(cuda))
            outcome = train_step(self.net, self.optimizer, x, y, archs, self.task, teacher,
                                 self.gradient_hook, progress)
            self._rng_state = torch.get_rng_state()
            if cuda:
                self._cuda_rng_state = torch.cuda.get_rng_state(self.device)
        elapsed = max(time.perf_counter() - started, 1e-9)
        if self.on_progress is not None:
            self.on_progress(
                StepReport(
                    phase=phase.config.name,
                    phase_index=phase.index,
                    n_phases=len(self.plan.phases),
                    epoch=epoch,
                    global_step=self.global_step + 1,
                    total_steps=self.plan.total_steps,
                    step_in_phase=step_in_phase + 1,
                    phase_steps=phase.steps,
                    lr=lr,
                    archs=outcome.archs,
                    losses=outcome.losses,
                    accuracies=outcome.accuracies,
                    samples_per_s=len(y) * len(archs) / elapsed,
                    metric=self.task.metric,
                )
            )
