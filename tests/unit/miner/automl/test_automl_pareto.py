"""Pareto ranking: dominance, front peeling, crowding, NSGA-II survivor selection."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from miner.automl.pareto import (
    crowding_distance,
    dominance,
    duplicate_rows,
    nondominated_ranks,
    pareto_mask,
    select,
)


def _reference_ranks(f: np.ndarray) -> list[int]:
    """Deb's definition, one pair at a time."""

    def dominates(a: np.ndarray, b: np.ndarray) -> bool:
        return bool(np.all(a <= b) and np.any(a < b))

    ranks = [-1] * len(f)
    remaining = set(range(len(f)))
    front = 0
    while remaining:
        current = {i for i in remaining if not any(dominates(f[j], f[i]) for j in remaining)}
        for i in current:
            ranks[i] = front
        remaining -= current
        front += 1
    return ranks


objective_matrices = st.integers(2, 40).flatmap(
    lambda n: st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=n, max_size=n).map(
        lambda rows: np.asarray(rows, dtype=float)
    )
)


def test_dominance_on_a_small_example() -> None:
    f = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    dom = dominance(f)
    assert dom[0, 1] and dom[0, 2] and dom[0, 3]
    assert not dom[0, 4] and not dom[4, 0], "equal rows do not dominate each other"
    assert not dom[2, 3] and not dom[3, 2]
    assert not dom.diagonal().any()


@settings(max_examples=60, deadline=None)
@given(objective_matrices)
def test_ranks_match_the_pairwise_definition(f: np.ndarray) -> None:
    assert nondominated_ranks(f).tolist() == _reference_ranks(f)


@settings(max_examples=40, deadline=None)
@given(objective_matrices)
def test_pareto_mask_is_mutually_nondominated_and_dominates_the_rest(f: np.ndarray) -> None:
    mask = pareto_mask(f)
    dom = dominance(f)
    assert mask.any()
    assert not dom[np.ix_(mask, mask)].any()
    assert dom[np.ix_(mask, ~mask)].any(axis=0).all()


def test_crowding_gives_extremes_infinity_and_inner_points_gaps() -> None:
    f = np.array([[0.0, 4.0], [1.0, 3.0], [3.0, 1.0], [4.0, 0.0], [9.0, 9.0]])
    ranks = nondominated_ranks(f)
    assert ranks.tolist() == [0, 0, 0, 0, 1]
    crowd = crowding_distance(f, ranks)
    assert np.isinf(crowd[[0, 3, 4]]).all()
    # point 1: neighbours 0 and 2 span 3 of 4 in each objective
    assert np.isclose(crowd[1], 3 / 4 + 3 / 4)
    assert np.isclose(crowd[2], 3 / 4 + 3 / 4)


def test_duplicate_rows_marks_all_but_the_first_copy() -> None:
    f = np.array([[1.0, 2.0], [0.0, 0.0], [1.0, 2.0], [1.0, 2.0]])
    assert duplicate_rows(f).tolist() == [False, False, True, True]


@settings(max_examples=40, deadline=None)
@given(objective_matrices, st.integers(1, 30))
def test_select_takes_whole_fronts_in_order(f: np.ndarray, n: int) -> None:
    n = min(n, len(f))
    chosen = select(f, n)
    assert len(set(chosen.index.tolist())) == n
    dup = duplicate_rows(f)
    distinct = np.flatnonzero(~dup)
    ranks = nondominated_ranks(f[distinct])
    picked = set(chosen.index.tolist())
    if n <= distinct.size:
        assert not dup[chosen.index].any(), "copies are kept only when distinct rows run out"
        worst_picked = max(ranks[i] for i, row in enumerate(distinct) if row in picked)
        left_out = [ranks[i] for i, row in enumerate(distinct) if row not in picked]
        assert all(r >= worst_picked for r in left_out)
    else:
        assert set(distinct.tolist()) <= picked


def test_select_prefers_spread_points_in_the_last_front() -> None:
    xs = np.linspace(0.0, 1.0, 11)
    f = np.stack([xs, 1.0 - xs], axis=1)  # one front of 11 points on a line
    f = np.concatenate([f, [[0.52, 0.52]]])  # a near-duplicate crowding the middle
    chosen = select(f, 3)
    assert {0, 10} <= set(chosen.index.tolist()), "the extremes always survive"
