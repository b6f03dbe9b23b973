"""The training hook: average a step's gradients inside the rig and across miners.

The trainer calls a :class:`GradientAverager` once per step, after accumulating the
gradients of its K sub-networks and before ``optimizer.step()``, with the parameters and the
architectures it trained, then steps the optimizer through :meth:`GradientAverager.step` so
that elements nobody trained stay put (:mod:`miner.distributed.optim_guard`).

- ``data_parallel`` (scheme 1): every process trained the same archs, so only their used
  elements are packed (:class:`FlatLayout`), averaged inside the rig, and the rig leader runs
  ONE all-reduce per step with the other miners on that flat buffer.
- ``per_node`` (scheme 2): each miner trained its own archs (``peer_archs(step)`` says whose
  were whose, from the shared seed). The rig mean is staged in host memory; the leader packs
  the union of every live miner's used elements, runs the masked all-reduce with each
  miner's mask, writes the result into the gradients and broadcasts them inside the rig.

``used_masks(archs)`` gives one bool mask per parameter (``None`` where an arch uses all of
it); the supernet's ``parameters_used`` provides it, a dense model passes ``None``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch

from miner.automl.space import Arch
from miner.distributed.errors import LayoutError
from miner.distributed.exchange import RoundResult
from miner.distributed.layout import FlatLayout, union_masks
from miner.distributed.optim_guard import keep_unused
from miner.distributed.reports import RoundReport
from miner.distributed.rig import RigGroup

log = logging.getLogger(__name__)

Scheme = Literal["data_parallel", "per_node"]
UsedMasksFn = Callable[[Sequence[Arch]], Sequence[torch.Tensor | None]]


class MaskedModel(Protocol):
    """What :func:`supernet_masks` needs: ``OFASupernet`` provides it."""

    def named_parameters(self) -> Iterator[tuple[str, torch.nn.Parameter]]: ...

    def parameter_masks(self, arch: Arch) -> dict[str, torch.Tensor]: ...


def supernet_masks(model: MaskedModel) -> UsedMasksFn:
    """``used_masks`` for a supernet, in ``model.parameters()`` order, union over archs."""
    names = [name for name, _ in model.named_parameters()]

    @functools.lru_cache(maxsize=4)  # the sandwich rule trains the same max/min arch each step
    def of_arch(arch: Arch) -> list[torch.Tensor]:
        masks = model.parameter_masks(arch)
        return [masks[name] for name in names]

    def used(archs: Sequence[Arch]) -> list[torch.Tensor | None]:
        return list(union_masks([of_arch(a) for a in archs]))

    return used


class CrossMiner(Protocol):
    """The synchronous between-miner all-reduce the rig leader calls (see ``bridge``)."""

    @property
    def me(self) -> str: ...

    @property
    def peers(self) -> tuple[str, ...]: ...

    def allreduce(
        self, round_id: int, values: np.ndarray, masks: Mapping[str, np.ndarray] | None = None
    ) -> RoundResult: ...


@dataclass(frozen=True)
class StepOutcome:
    """Per-parameter bool masks of the elements that got an update, and the round's report."""

    updated: list[torch.Tensor]
    report: RoundReport | None


class GradientAverager:
    """Called once per step by the trainer (the gradient-averaging hook)."""

    def __init__(
        self,
        scheme: Scheme,
        used_masks: UsedMasksFn | None = None,
        rig: RigGroup | None = None,
        cross: CrossMiner | None = None,
        peer_archs: Callable[[int], Mapping[str, Sequence[Arch]]] | None = None,
        across_miners: bool | None = None,
    ) -> None:
        """``cross`` is given to the rig leader only; every rank passes ``across_miners=True``
        when the group has other miners (the followers then wait for the leader's broadcast)."""
        if scheme == "per_node" and cross is not None and peer_archs is None:
            raise LayoutError("the per_node scheme needs peer_archs to know every miner's masks")
        self.scheme = scheme
        self.used_masks = used_masks
        self.rig = rig
        self.cross = cross
        self.peer_archs = peer_archs
        self.across_miners = cross is not None if across_miners is None else across_miners
        if self.across_miners and self._leads() and cross is None:
            raise LayoutError("the rig leader needs the cross-miner exchange")
        self.last: StepOutcome | None = None

    def __call__(
        self, step: int, params: Sequence[torch.Tensor], archs: Sequence[Arch]
    ) -> StepOutcome:
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        mine = self._masks(params, archs)
        if self.scheme == "data_parallel":
            outcome = self._data_parallel(step, params, mine)
        else:
            outcome = self._per_node(step, params, mine)
        self.last = outcome
        return outcome

    def step(self, optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> None:
        """``optimizer.step()`` that leaves the elements nobody trained this step alone."""
        if self.last is None:
            optimizer.step()
            return
        with keep_unused(optimizer, params, self.last.updated):
            optimizer.step()

    # --- schemes ----------------------------------------------------------------------

    def _data_parallel(
        self, step: int, params: Sequence[torch.Tensor], mine: list[torch.Tensor]
    ) -> StepOutcome:
        layout = FlatLayout.from_masks(mine)
        flat = layout.pack([p.grad for p in params])
        if self.rig is not None:
            self.rig.mean_(flat)
        ok = torch.ones(layout.size, dtype=torch.uint8, device=flat.device)
        report = None
        if self.across_miners:
            if self.cross is not None:
                result = self.cross.allreduce(step, flat.cpu().numpy())
                flat.copy_(torch.from_numpy(result.mean))
                ok.copy_(torch.from_numpy((result.counts > 0).astype(np.uint8)))
                report = result.report
            self._broadcast(flat, ok)
        layout.unpack(flat, [p.grad for p in params])  # type: ignore[misc]
        return StepOutcome(layout.to_masks(ok.bool()), report)

    def _per_node(
        self, step: int, params: Sequence[torch.Tensor], mine: list[torch.Tensor]
    ) -> StepOutcome:
        own = FlatLayout.from_masks(mine)
        flat = own.pack([p.grad for p in params])
        if self.rig is not None:
            self.rig.mean_(flat)
        if not self.across_miners:
            own.unpack(flat, [p.grad for p in params])  # type: ignore[misc]
            return StepOutcome(mine, None)
        dense = FlatLayout.dense(params)
        grads = torch.zeros(dense.size, dtype=torch.float32, device=flat.device)
        ok = torch.zeros(dense.size, dtype=torch.uint8, device=flat.device)
        report = None
        if self.cross is not None:
            report, updated = self._cross_per_node(step, params, own, flat)
            grads.copy_(dense.pack([p.grad for p in params]))
            ok.copy_(dense.pack([m.float() for m in updated]).to(torch.uint8))
        self._broadcast(grads, ok)
        dense.unpack(grads, [p.grad for p in params])  # type: ignore[misc]
        return StepOutcome(dense.to_masks(ok.bool()), report)

    def _cross_per_node(
        self, step: int, params: Sequence[torch.Tensor], own: FlatLayout, flat: torch.Tensor
    ) -> tuple[RoundReport, list[torch.Tensor]]:
        """The leader's masked all-reduce; writes the mean into ``.grad``."""
        assert self.cross is not None and self.peer_archs is not None
        archs_of = self.peer_archs(step)
        peers = self.cross.peers
        masks_of = {p: self._masks(params, archs_of[p]) for p in peers}
        union = FlatLayout.from_masks(union_masks(list(masks_of.values())))
        for p in params:
            p.grad.zero_()  # type: ignore[union-attr]
        own.unpack(flat, [p.grad for p in params])  # type: ignore[misc]
        values = union.pack([p.grad for p in params]).cpu().numpy()
        flat_masks = {p: union.restrict(m).cpu().numpy() for p, m in masks_of.items()}
        result = self.cross.allreduce(step, values, flat_masks)
        union.unpack(torch.from_numpy(result.mean).to(flat.device), [p.grad for p in params])  # type: ignore[misc]
        updated = union.to_masks(torch.from_numpy(result.counts > 0).to(flat.device))
        return result.report, updated

    # --- helpers ----------------------------------------------------------------------

    def _masks(self, params: Sequence[torch.Tensor], archs: Sequence[Arch]) -> list[torch.Tensor]:
        dense = [torch.ones_like(p, dtype=torch.bool) for p in params]
        if self.used_masks is None or not archs:
            return dense
        per_arch = [
            [
                d if m is None else m.to(d.device)
                for d, m in zip(dense, self.used_masks([a]), strict=True)
            ]
            for a in archs
        ]
        return union_masks(per_arch)

    def _leads(self) -> bool:
        return self.rig is None or self.rig.is_leader

    def _broadcast(self, *tensors: torch.Tensor) -> None:
        if self.rig is not None:
            for t in tensors:
                self.rig.broadcast_(t)
