"""The averaging rule shared by both training schemes, as pure array math.

Scheme 1, data parallel: every process of every miner trains the same K sub-networks at a
step (sampled from the shared seed), accumulates their gradients, and the group runs ONE
all-reduce per step over a flat buffer of the used gradient elements. All contributors
touched the same elements, so the masked mean below is the plain mean.

Scheme 2, per-node sub-networks: the processes of one miner share a sub-network and miners
sample different ones. Gradients are first averaged inside the rig (all processes used the
same elements, so dividing by the rig's size is right), staged in host memory, then averaged
across miners with masks, then broadcast back inside the rig.

Why DDP's divide-by-world-size is wrong for scheme 2: DDP sums gradients and divides by the
number of replicas, which assumes every replica produced a gradient for every element. When
miner A's sub-network uses a weight and miner B's does not, B contributes an exact zero
that is no evidence about that weight, so the sum divided by 2 halves A's step for it, and a
weight used by 1 of n miners moves n times too little. Worse, a weight nobody used gets a
zero gradient and still moves under momentum or weight decay. The right rule: an element
used by m of n contributors is averaged over those m; an element used by nobody gets no
update at all (count 0; :mod:`miner.distributed.optim_guard` keeps the optimizer off it).
"""

from __future__ import annotations

import numpy as np

from miner.distributed.errors import LayoutError


def masked_mean(
    values: np.ndarray, masks: np.ndarray | None = None, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The mean over the contributors that used each element.

    ``values``: ``[n, N]`` float; ``masks``: ``[n, N]`` bool (``None``: everyone used
    everything); ``weights``: ``[n]`` non-negative per-contributor weights (``None``: equal).
    Returns ``(mean [N] float32, counts [N] int32)`` where ``counts`` is how many contributors
    used each element; where it is 0 the mean is 0 and the caller must not update.
    """
    if values.ndim != 2:
        raise LayoutError(f"values must be [n, N], got shape {values.shape}")
    n, size = values.shape
    if masks is None:
        masks = np.ones((n, size), dtype=bool)
    if masks.shape != values.shape:
        raise LayoutError(f"masks {masks.shape} do not match values {values.shape}")
    w = np.ones(n, dtype=np.float64) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (n,) or (w < 0).any():
        raise LayoutError(f"weights must be [n] non-negative, got {w}")
    weighted = np.where(masks, values.astype(np.float64) * w[:, None], 0.0).sum(axis=0)
    weight_sum = (masks * w[:, None]).sum(axis=0)
    mean = np.divide(weighted, weight_sum, out=np.zeros(size), where=weight_sum > 0)
    return mean.astype(np.float32), masks.sum(axis=0).astype(np.int32)


def rig_then_miners(
    rig_values: list[np.ndarray], miner_masks: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Scheme 2 end to end: mean inside each rig, then the masked mean across miners.

    ``rig_values[j]``: ``[p_j, N]``, the gradients of miner ``j``'s processes (one shared
    sub-network per miner); ``miner_masks``: ``[n_miners, N]`` bool. Returns ``(mean, counts)``
    as :func:`masked_mean`.
    """
    per_miner = np.stack([v.astype(np.float64).mean(axis=0) for v in rig_values])
    return masked_mean(per_miner, miner_masks)
