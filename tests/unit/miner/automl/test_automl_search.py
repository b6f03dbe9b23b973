"""Evolutionary search: constraints always met, determinism, Pareto front, impossible limits."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from miner.automl.errors import AutoMLError, ConstraintError
from miner.automl.pareto import dominance
from miner.automl.predictor import AccuracyPredictor, PredictorConfig
from miner.automl.search import (
    SearchConfig,
    SearchProblem,
    SearchResult,
    cheapest,
    evolve,
    from_genome,
    gene_choices,
    to_genome,
)
from miner.automl.space import AdditiveCost, SearchSpace, from_batch, to_batch
from miner.automl.toy_problem import ToyAccuracy, flops_table, latency_table, params_table

SPACE = SearchSpace(resolutions=(160, 192, 224))
FLOPS = flops_table(SPACE)
PARAMS = params_table(SPACE)
ACCURACY = ToyAccuracy.create(SPACE, np.random.default_rng(0))
SMALL = SearchConfig(population=16, generations=10)


def _problem(limits: dict[str, float], objective: str = "flops") -> SearchProblem:
    return SearchProblem(
        space=SPACE,
        costs={"flops": FLOPS, "params": PARAMS, "latency_ms": latency_table(SPACE)},
        objective=objective,
        limits=limits,
    )


def _limit(table: AdditiveCost, fraction: float) -> float:
    low = cheapest(table)[0]
    high = table.of(SPACE.max_arch())
    return low + fraction * (high - low)


def _assert_sound(result: SearchResult, problem: SearchProblem) -> None:
    """Every candidate meets every limit, reports true costs, and the front is non-dominated."""
    assert result.front and result.chosen in result.front
    for candidate in result.front:
        SPACE.validate(candidate.arch)
        assert candidate.arch == SPACE.canonical(candidate.arch)
        for name, limit in problem.limits.items():
            assert problem.costs[name].of(candidate.arch) <= limit
        for name, value in candidate.costs.items():
            assert value == problem.costs[name].of(candidate.arch)
    f = np.array([[-c.accuracy, c.costs[problem.objective]] for c in result.front])
    assert not dominance(f).any(), "front members must not dominate one another"
    assert len({c.arch for c in result.front}) == len(result.front)
    best = max(c.accuracy for c in result.front)
    assert result.chosen.accuracy == best
    assert result.chosen.costs[problem.objective] == min(
        c.costs[problem.objective] for c in result.front if c.accuracy == best
    )


@settings(max_examples=50, deadline=None)
@given(
    flops_fraction=st.floats(0.0, 1.0),
    params_fraction=st.one_of(st.none(), st.floats(0.0, 1.0)),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_returned_architecture_meets_every_limit(
    flops_fraction: float, params_fraction: float | None, seed: int
) -> None:
    limits = {"flops": _limit(FLOPS, flops_fraction)}
    if params_fraction is not None:
        limits["params"] = _limit(PARAMS, params_fraction)
    problem = _problem(limits)
    try:
        result = evolve(problem, ACCURACY.of_batch, SMALL, np.random.default_rng(seed))
    except ConstraintError:
        # only acceptable when the two limits cannot hold together at their own minima
        assert params_fraction is not None
        return
    _assert_sound(result, problem)
    assert result.evaluations == SMALL.population * (SMALL.generations + 1)
    assert result.generations == SMALL.generations


def test_limits_at_the_exact_minimum_leave_only_the_cheapest() -> None:
    low, _ = cheapest(FLOPS)
    problem = _problem({"flops": low})
    result = evolve(problem, ACCURACY.of_batch, SMALL, np.random.default_rng(1))
    _assert_sound(result, problem)
    assert all(c.costs["flops"] == low for c in result.front)


def test_non_monotone_cost_tables_are_still_respected() -> None:
    rng = np.random.default_rng(4)
    noisy = AdditiveCost(
        space=SPACE,
        base=rng.uniform(0.0, 5.0, size=len(SPACE.resolutions)),
        block=rng.uniform(0.0, 1.0, size=FLOPS.block.shape),
    )
    problem = SearchProblem(
        space=SPACE,
        costs={"flops": FLOPS, "noisy": noisy},
        objective="flops",
        limits={"noisy": _limit(noisy, 0.1), "flops": _limit(FLOPS, 0.5)},
    )
    result = evolve(problem, ACCURACY.of_batch, SMALL, np.random.default_rng(2))
    _assert_sound(result, problem)


def test_search_is_deterministic_for_a_seed() -> None:
    problem = _problem({"flops": _limit(FLOPS, 0.4)})
    a = evolve(problem, ACCURACY.of_batch, SMALL, np.random.default_rng(7))
    b = evolve(problem, ACCURACY.of_batch, SMALL, np.random.default_rng(7))
    c = evolve(problem, ACCURACY.of_batch, SMALL, np.random.default_rng(8))
    assert a.to_dict() == b.to_dict()
    assert a.to_dict() != c.to_dict()


def test_evolution_beats_random_sampling_at_equal_evaluations() -> None:
    config = SearchConfig(population=32, generations=40)
    limit = _limit(FLOPS, 0.4)
    problem = _problem({"flops": limit})
    result = evolve(problem, ACCURACY.of_batch, config, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    choices = gene_choices(SPACE)
    random = from_genome(
        SPACE, (rng.random((result.evaluations, choices.size)) * choices).astype(int)
    )
    feasible = FLOPS.of_batch(random) <= limit
    best_random = ACCURACY.of_batch(random)[feasible].max()
    initial = evolve(problem, ACCURACY.of_batch, SearchConfig(32, 0), np.random.default_rng(3))
    assert result.chosen.accuracy > best_random
    assert result.chosen.accuracy > initial.chosen.accuracy


def test_search_with_a_trained_predictor() -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(5)
    archs = [SPACE.sample(rng) for _ in range(300)]
    predictor = AccuracyPredictor(SPACE, PredictorConfig(hidden=(32,), epochs=20))
    predictor.fit(archs, ACCURACY.of_batch(to_batch(SPACE, archs)), rng)
    problem = _problem({"flops": _limit(FLOPS, 0.3), "latency_ms": 1e9}, objective="latency_ms")
    result = evolve(problem, predictor.predict_batch, SMALL, np.random.default_rng(6))
    _assert_sound(result, problem)
    assert result.chosen.accuracy == pytest.approx(
        float(predictor.predict([result.chosen.arch])[0])
    )
    again = SearchResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.to_dict() == result.to_dict()
    assert again.chosen.arch == result.chosen.arch


def test_impossible_limit_names_the_limit_and_the_smallest_cost() -> None:
    low = cheapest(FLOPS)[0]
    with pytest.raises(ConstraintError) as info:
        evolve(_problem({"flops": low * 0.9}), ACCURACY.of_batch, SMALL, np.random.default_rng(0))
    message = str(info.value)
    assert "flops" in message and f"{low * 0.9:.6g}" in message and f"{low:.6g}" in message


def test_a_restricted_space_is_searched_only_inside_itself() -> None:
    space = SPACE.restrict(kernel_sizes=(7,), resolutions=(224,))
    problem = SearchProblem(space=space, costs={"flops": flops_table(space)}, objective="flops")
    accuracy = ToyAccuracy.create(space, np.random.default_rng(0))
    result = evolve(problem, accuracy.of_batch, SMALL, np.random.default_rng(0))
    for candidate in result.front:
        space.validate(candidate.arch)
        assert candidate.arch.resolution == 224
        assert {k for k in candidate.arch.kernel if k} == {7}


def test_a_broken_accuracy_function_is_refused() -> None:
    problem = _problem({"flops": _limit(FLOPS, 0.5)})
    with pytest.raises(AutoMLError, match="finite scores"):
        evolve(problem, lambda b: np.full(len(b), np.nan), SMALL, np.random.default_rng(0))
    with pytest.raises(AutoMLError, match="finite scores"):
        evolve(problem, lambda b: np.zeros(3), SMALL, np.random.default_rng(0))


def test_limits_on_unknown_costs_are_refused() -> None:
    with pytest.raises(ConstraintError, match="unknown cost 'latency'"):
        _problem({"latency": 1.0})
    with pytest.raises(ConstraintError, match="unknown cost"):
        _problem({}, objective="energy")


def test_cheapest_is_exact_on_random_tables() -> None:
    space = SearchSpace(
        kernel_sizes=(3, 5),
        expand_ratios=(3.0, 6.0),
        depths=(1, 2),
        resolutions=(128, 160),
        n_stages=2,
    )
    rng = np.random.default_rng(0)
    table = AdditiveCost(
        space=space,
        base=rng.uniform(0, 3, size=2),
        block=rng.uniform(-1.0, 1.0, size=(2, space.n_slots, 2, 2)),
    )
    ranges = [range(int(c)) for c in gene_choices(space)]
    every = np.array(list(itertools.product(*ranges)))
    costs = table.of_batch(from_genome(space, every))
    low, genome = cheapest(table)
    assert low == pytest.approx(costs.min())
    assert table.of_batch(from_genome(space, genome[None, :]))[0] == pytest.approx(low)


def test_genome_round_trip() -> None:
    archs = [SPACE.sample(np.random.default_rng(i)) for i in range(8)]
    batch = to_batch(SPACE, archs)
    assert from_batch(SPACE, from_genome(SPACE, to_genome(batch))) == archs


def test_search_under_the_real_ofa_mbv3_flops_table() -> None:
    efficiency = pytest.importorskip("miner.automl.efficiency")
    registry = pytest.importorskip("miner.automl.registry")
    config = registry.supernet_config("ofa_mbv3", space=SPACE)
    table = efficiency.flops_table(config)
    limit = _limit(table, 0.3)
    problem = SearchProblem(
        space=SPACE, costs={"flops": table}, objective="flops", limits={"flops": limit}
    )
    result = evolve(problem, ACCURACY.of_batch, SMALL, np.random.default_rng(0))
    _assert_sound(result, problem)
    for candidate in result.front[:5]:
        assert efficiency.count_flops(config, candidate.arch) <= limit
