"""Keep the optimizer off the weight elements nobody trained this step.

A zero gradient is not "no update": SGD with momentum keeps moving a weight along its old
velocity, weight decay shrinks it, Adam keeps applying its running moments. An element that
no sub-network of any contributor used carries no evidence this step and must stay exactly
as it was, weight and optimizer state alike.

:func:`keep_unused` snapshots the unused elements of every parameter and of every optimizer
state tensor shaped like it (momentum buffers, Adam moments), lets the step run, then writes
the snapshot back. Scalar state (Adam's step counter) is shared by the whole tensor and is
left as the optimizer sets it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from miner.distributed.errors import LayoutError


@contextmanager
def keep_unused(
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.Tensor],
    used: Sequence[torch.Tensor | None],
) -> Iterator[None]:
    """Run an ``optimizer.step()`` inside; elements where ``used`` is false do not change.

    ``used[i]``: bool mask shaped like ``params[i]``, or ``None`` when all of it was used.
    """
    if len(used) != len(params):
        raise LayoutError(f"{len(used)} masks for {len(params)} parameters")
    saved: list[tuple[torch.Tensor, torch.Tensor, list[tuple[str, torch.Tensor]]]] = []
    for param, mask in zip(params, used, strict=True):
        if mask is None:
            continue
        if mask.shape != param.shape:
            raise LayoutError(f"mask {tuple(mask.shape)} for parameter {tuple(param.shape)}")
        unused = ~mask.to(param.device)
        if not bool(unused.any()):
            continue
        state = [
            (name, value[unused].clone())
            for name, value in optimizer.state.get(param, {}).items()
            if torch.is_tensor(value) and value.shape == param.shape
        ]
        saved.append((param, unused, [("__param__", param.data[unused].clone()), *state]))
    yield
    with torch.no_grad():
        for param, unused, entries in saved:
            state = optimizer.state.get(param, {})
            for name, old in entries:
                if name == "__param__":
                    param.data[unused] = old
                elif name in state:
                    state[name][unused] = old
            # Fresh state created by this very step (e.g. the first momentum buffer) starts
            # at zero on the elements the step did not train.
            known = {name for name, _ in entries}
            for name, value in state.items():
                if name not in known and torch.is_tensor(value) and value.shape == param.shape:
                    value[unused] = 0
