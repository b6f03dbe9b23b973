"""The step plan of progressive shrinking: how many steps each phase takes, which sub-space
it samples, and the learning rate at every step (cosine per phase).

All pure: a plan is a function of the config, the supernet's search space and the number of
batches per epoch, so a resumed run rebuilds exactly the plan it was following.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from miner.automl.config import PhaseConfig, TrainConfig
from miner.automl.space import Arch, SearchSpace, sample_step


@dataclass(frozen=True)
class PlannedPhase:
    """One phase, resolved: its config, sub-space and number of optimizer steps."""

    index: int
    config: PhaseConfig
    space: SearchSpace
    steps: int

    def lr_at(self, step_in_phase: int) -> float:
        """Cosine decay from ``config.lr`` to 0 over the phase."""
        return 0.5 * self.config.lr * (1.0 + math.cos(math.pi * step_in_phase / self.steps))


@dataclass(frozen=True)
class PhasePlan:
    phases: tuple[PlannedPhase, ...]

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)

    def start_of(self, index: int) -> int:
        """Global step at which phase ``index`` begins."""
        return sum(p.steps for p in self.phases[:index])

    def locate(self, global_step: int) -> tuple[int, int]:
        """(phase index, step inside the phase) of ``global_step``; past the end -> (n, 0)."""
        start = 0
        for phase in self.phases:
            if global_step < start + phase.steps:
                return phase.index, global_step - start
            start += phase.steps
        return len(self.phases), 0


def make_plan(config: TrainConfig, space: SearchSpace, batches_per_epoch: int) -> PhasePlan:
    """Resolve every phase of ``config`` against ``space`` (ArchError if a phase leaves it)."""
    return PhasePlan(
        tuple(
            PlannedPhase(
                index=i,
                config=phase,
                space=phase.space(space),
                steps=phase.steps or max(1, math.ceil(phase.epochs * batches_per_epoch)),
            )
            for i, phase in enumerate(config.phases)
        )
    )


def step_archs(phase: PlannedPhase, seed: int, global_step: int, sandwich: bool) -> list[Arch]:
    """The sub-networks trained at ``global_step`` (the first is the largest under sandwich)."""
    return sample_step(phase.space, seed, global_step, phase.config.subnets_per_step, sandwich)
