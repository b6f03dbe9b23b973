"""Pareto ranking for the multi-objective search (NSGA-II's sorting and crowding).

Every function takes an objective matrix ``f`` of shape ``[N, M]`` where every column is
to be MINIMISED (pass ``-accuracy`` for accuracy). All of it is vectorised numpy: the search
calls :func:`select` once per generation on a few hundred rows, so the per-call cost is a
handful of array operations, not Python loops over individuals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_UNRANKED = np.iinfo(np.int64).max // 4


def dominance(f: np.ndarray) -> np.ndarray:
    """``[N, N]`` bool: ``out[i, j]`` when row ``i`` Pareto-dominates row ``j``.

    ``i`` dominates ``j`` when it is no worse in every objective and better in one.
    """
    n = f.shape[0]
    no_worse = np.ones((n, n), dtype=bool)
    better = np.zeros((n, n), dtype=bool)
    for column in f.T:  # one [N, N] comparison per objective beats one [N, N, M] array
        no_worse &= column[:, None] <= column[None, :]
        better |= column[:, None] < column[None, :]
    return no_worse & better


def nondominated_ranks(f: np.ndarray, n_needed: int | None = None) -> np.ndarray:
    """``[N]`` front index of each row: 0 for the non-dominated, 1 for the next front...

    Fronts are peeled until ``n_needed`` rows are ranked (all rows by default); rows left
    over get a rank larger than any front's, since a truncating selection never reaches them.
    """
    n = f.shape[0]
    n_needed = n if n_needed is None else min(n_needed, n)
    dom = dominance(f)
    dominators = dom.sum(axis=0)
    ranks = np.full(n, _UNRANKED, dtype=np.int64)
    unranked = np.ones(n, dtype=bool)
    front_index, n_ranked = 0, 0
    while n_ranked < n_needed:
        front = unranked & (dominators == 0)
        ranks[front] = front_index
        unranked &= ~front
        n_ranked += int(front.sum())
        dominators = dominators - dom[front].sum(axis=0)
        front_index += 1
    return ranks


def crowding_distance(f: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """``[N]`` NSGA-II crowding distance of each row within its own front.

    The two extremes of a front in each objective get ``inf`` (they are always kept); the
    others sum, over objectives, the normalised gap between their neighbours in the front.
    """
    n, m = f.shape
    distance = np.zeros(n, dtype=np.float64)
    if n == 0:
        return distance
    for j in range(m):
        order = np.lexsort((f[:, j], ranks))
        values, front = f[order, j], ranks[order]
        starts = np.flatnonzero(np.r_[True, front[1:] != front[:-1]])
        lengths = np.diff(np.r_[starts, n])
        first = np.repeat(starts, lengths)
        last = np.repeat(starts + lengths - 1, lengths)
        span = values[last] - values[first]
        position = np.arange(n)
        inner = (position != first) & (position != last)
        gap = np.zeros(n)
        idx = np.flatnonzero(inner)
        gap[idx] = values[idx + 1] - values[idx - 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            part = np.where(span > 0, gap / np.where(span > 0, span, 1.0), 0.0)
        part[~inner] = np.inf
        distance[order] += part
    return distance


def duplicate_rows(f: np.ndarray) -> np.ndarray:
    """``[N]`` bool: rows equal to an earlier row (the first occurrence is not marked)."""
    n = f.shape[0]
    if n < 2:
        return np.zeros(n, dtype=bool)
    order = np.lexsort((np.arange(n), *f.T[::-1]))
    same_as_previous = np.all(f[order][1:] == f[order][:-1], axis=1)
    dup = np.zeros(n, dtype=bool)
    dup[order[1:]] = same_as_previous
    return dup


@dataclass(frozen=True)
class Selection:
    """Survivors of one generation with what tournament selection needs about them."""

    index: np.ndarray  # [n] rows of the pooled population that survive
    rank: np.ndarray  # [n] their front index (duplicates rank after every front)
    crowding: np.ndarray  # [n] their crowding distance


def select(f: np.ndarray, n: int) -> Selection:
    """Pick ``n`` rows of ``f`` by NSGA-II: whole fronts in order, the last one by crowding.

    Rows whose objectives repeat an earlier row are kept only when there are not enough
    distinct rows: a population of copies stops exploring. Ties keep the lower row index,
    so the result is a pure function of ``f``.
    """
    total = f.shape[0]
    dup = duplicate_rows(f)
    unique = np.flatnonzero(~dup)
    ranks = np.full(total, _UNRANKED + 1, dtype=np.int64)
    ranks[unique] = nondominated_ranks(f[unique], n_needed=n)
    crowding = np.zeros(total)
    crowding[unique] = crowding_distance(f[unique], ranks[unique])
    order = np.lexsort((np.arange(total), -crowding, ranks))[:n]
    return Selection(index=order, rank=ranks[order], crowding=crowding[order])


def pareto_mask(f: np.ndarray) -> np.ndarray:
    """``[N]`` bool: rows no other row dominates."""
    return np.logical_not(dominance(f).any(axis=0))
