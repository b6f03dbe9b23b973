"""Plug a :class:`GradientAverager` into ``miner.automl.train`` (its ``GradientHook``).

The trainer calls ``hook(named_params, archs)`` once per step after accumulating the K
sub-networks' gradients and then steps its optimizer itself. :class:`TrainerHook` numbers
the steps (the all-reduce round ids: every replica must agree, so a resumed run passes its
``start_step``), averages in place, and, once :meth:`TrainerHook.attach` has hooked the
optimizer, keeps that optimizer's step off the elements nobody trained
(:func:`miner.distributed.optim_guard.keep_unused`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from miner.automl.space import Arch
from miner.distributed.averager import GradientAverager
from miner.distributed.optim_guard import keep_unused


class TrainerHook:
    """``GradientHook`` of ``miner.automl.train`` backed by a :class:`GradientAverager`."""

    def __init__(self, averager: GradientAverager, start_step: int = 0) -> None:
        self.averager = averager
        self.next_step = start_step
        self._params: list[nn.Parameter] = []
        self._guard: ExitStack | None = None

    def __call__(self, params: Sequence[tuple[str, nn.Parameter]], archs: Sequence[Arch]) -> None:
        self._params = [p for _, p in params]
        self.averager(self.next_step, self._params, archs)
        self.next_step += 1

    def attach(self, optimizer: torch.optim.Optimizer) -> list[RemovableHandle]:
        """Guard every later ``optimizer.step()`` (call once per optimizer the trainer makes)."""
        return [
            optimizer.register_step_pre_hook(self._before_step),
            optimizer.register_step_post_hook(self._after_step),
        ]

    def _before_step(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        last = self.averager.last
        if last is None or not self._params:
            return
        self._guard = ExitStack()
        self._guard.enter_context(keep_unused(optimizer, self._params, last.updated))

    def _after_step(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        if self._guard is not None:
            guard, self._guard = self._guard, None
            guard.close()
