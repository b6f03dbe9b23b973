"""Constrained multi-objective evolutionary architecture search (NSGA-II over index arrays).

Objectives: maximise the (predicted) accuracy, minimise one named cost (FLOPs, latency...).
Constraints: an upper limit on any of the named costs. Each cost is an
:class:`AdditiveCost`, so a whole population's costs are a few fancy-indexing operations.

A population is a genome matrix ``[N, G]`` of choice indices, ``G = 2 * n_slots + n_stages +
1`` (kernel per slot, expand per slot, depth per stage, resolution), which makes uniform
crossover and per-gene mutation one ``np.where`` each. Every generation scores all its
offspring in one batched call of the accuracy function and of each cost table.

Infeasible offspring are repaired, never admitted: the genes of an offender are replaced,
in a random order, by those of a feasible *anchor* (the cheapest architecture of the
space), and a vectorised bisection finds the shortest replaced prefix that meets every
limit. The anchor itself is feasible, so repair always succeeds, and the repaired
individual lands close to the constraint boundary, where accurate architectures live.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from miner.automl.errors import AutoMLError, ConstraintError
from miner.automl.pareto import pareto_mask, select
from miner.automl.space import AdditiveCost, Arch, ArchBatch, SearchSpace, from_batch

log = logging.getLogger(__name__)

AccuracyFn = Callable[[ArchBatch], np.ndarray]
"""Scores a population: ``[N]`` accuracies (higher is better), e.g. ``predictor.predict_batch``."""


@dataclass(frozen=True)
class SearchConfig:
    """Knobs of the evolution; the defaults follow once-for-all's search."""

    population: int = 100
    generations: int = 500
    mutation_prob: float = 0.1
    crossover_prob: float = 0.9

    def __post_init__(self) -> None:
        if self.population < 2 or self.generations < 0:
            raise ValueError(f"need population >= 2 and generations >= 0, got {self}")
        if not (0.0 <= self.mutation_prob <= 1.0 and 0.0 <= self.crossover_prob <= 1.0):
            raise ValueError(f"probabilities must lie in [0, 1], got {self}")


@dataclass(frozen=True)
class SearchProblem:
    """What to search: named cost tables, the one to minimise, and the limits to respect.

    ``limits`` maps cost names to inclusive upper bounds, e.g. ``{"flops": 300e6}``.
    """

    space: SearchSpace
    costs: Mapping[str, AdditiveCost]
    objective: str
    limits: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        known = sorted(self.costs)
        for name in [self.objective, *self.limits]:
            if name not in self.costs:
                raise ConstraintError(detail=f"on unknown cost {name!r}; known costs: {known}")
        for name, table in self.costs.items():
            if table.space != self.space:
                raise ConstraintError(detail=f"cost {name!r} was built for another space")


@dataclass(frozen=True)
class Candidate:
    """One searched architecture with its predicted accuracy and every named cost."""

    arch: Arch
    accuracy: float
    costs: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch.to_dict(), "accuracy": self.accuracy, "costs": dict(self.costs)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return cls(
            arch=Arch.from_dict(data["arch"]),
            accuracy=float(data["accuracy"]),
            costs={str(k): float(v) for k, v in data["costs"].items()},
        )


@dataclass(frozen=True)
class SearchResult:
    """The Pareto front (cheapest first), the chosen architecture and the work done."""

    front: list[Candidate]
    chosen: Candidate
    evaluations: int
    generations: int
    search_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "front": [c.to_dict() for c in self.front],
            "chosen": self.chosen.to_dict(),
            "evaluations": self.evaluations,
            "generations": self.generations,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], search_s: float = 0.0) -> SearchResult:
        """Read :meth:`to_dict`'s output back (``search_s`` is not part of it)."""
        return cls(
            front=[Candidate.from_dict(c) for c in data["front"]],
            chosen=Candidate.from_dict(data["chosen"]),
            evaluations=int(data["evaluations"]),
            generations=int(data["generations"]),
            search_s=search_s,
        )


# --- genome <-> index form --------------------------------------------------------------


def gene_choices(space: SearchSpace) -> np.ndarray:
    """``[G]`` number of choices of each gene."""
    return np.concatenate(
        [
            np.full(space.n_slots, len(space.kernel_sizes)),
            np.full(space.n_slots, len(space.expand_ratios)),
            np.full(space.n_stages, len(space.depths)),
            [len(space.resolutions)],
        ]
    ).astype(np.int64)


def to_genome(batch: ArchBatch) -> np.ndarray:
    """``[N, G]`` genome matrix of a population in index form."""
    return np.concatenate(
        [batch.kernel, batch.expand, batch.depth, batch.resolution[:, None]], axis=1
    ).astype(np.int64)


def from_genome(space: SearchSpace, genome: np.ndarray) -> ArchBatch:
    """The population in index form (views into ``genome``)."""
    s, d = space.n_slots, space.n_stages
    return ArchBatch(
        kernel=genome[:, :s],
        expand=genome[:, s : 2 * s],
        depth=genome[:, 2 * s : 2 * s + d],
        resolution=genome[:, 2 * s + d],
    )


def cheapest(table: AdditiveCost) -> tuple[float, np.ndarray]:
    """The smallest cost any architecture of the space has under ``table``, and its genome ``[G]``.

    Exact: for each resolution every stage picks independently the depth whose active
    slots, each at its own cheapest kernel and expand, sum lowest.
    """
    space = table.space
    n_res, n_k, n_e = len(space.resolutions), len(space.kernel_sizes), len(space.expand_ratios)
    flat = table.block.reshape(n_res, space.n_slots, n_k * n_e)
    best_choice = flat.argmin(axis=2)  # [R, S]
    per_slot = flat.min(axis=2).reshape(n_res, space.n_stages, space.max_depth)
    prefix = np.cumsum(per_slot, axis=2)[:, :, np.asarray(space.depths) - 1]  # [R, stages, D]
    depth_index = prefix.argmin(axis=2)  # [R, stages]
    totals = table.base + prefix.min(axis=2).sum(axis=1)  # [R]
    r = int(totals.argmin())
    genome = np.concatenate(
        [best_choice[r] // n_e, best_choice[r] % n_e, depth_index[r], [r]]
    ).astype(np.int64)
    return float(totals[r]), genome


# --- the evolution ----------------------------------------------------------------------


class _Evaluator:
    """Scores genomes: objectives for selection and feasibility for repair."""

    def __init__(self, problem: SearchProblem, accuracy: AccuracyFn) -> None:
        self.problem = problem
        self.accuracy = accuracy
        self.evaluations = 0

    def costs(self, genome: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
        batch = from_genome(self.problem.space, genome)
        wanted = names if names is not None else list(self.problem.costs)
        return {name: self.problem.costs[name].of_batch(batch) for name in wanted}

    def feasible(self, genome: np.ndarray) -> np.ndarray:
        ok = np.ones(genome.shape[0], dtype=bool)
        for name, values in self.costs(genome, list(self.problem.limits)).items():
            ok &= values <= self.problem.limits[name]
        return ok

    def objectives(self, genome: np.ndarray) -> np.ndarray:
        """``[N, 2]``: ``-accuracy`` and the objective cost, both to minimise."""
        batch = from_genome(self.problem.space, genome)
        acc = np.asarray(self.accuracy(batch), dtype=np.float64)
        if acc.shape != (genome.shape[0],) or not np.isfinite(acc).all():
            raise AutoMLError(
                f"the accuracy function must return {genome.shape[0]} finite scores, "
                f"got shape {acc.shape} with {int(np.sum(~np.isfinite(acc)))} non-finite"
            )
        self.evaluations += genome.shape[0]
        cost = self.problem.costs[self.problem.objective].of_batch(batch)
        return np.stack([-acc, cost], axis=1)


def _find_anchor(problem: SearchProblem, evaluator: _Evaluator, pool: np.ndarray) -> np.ndarray:
    """A genome meeting every limit, as cheap as possible; raises if there is none in sight."""
    minima = {name: cheapest(problem.costs[name]) for name in problem.limits}
    for name, (low, _) in minima.items():
        if low > problem.limits[name]:
            raise ConstraintError(
                detail=f"{name} <= {problem.limits[name]:.6g}: the cheapest architecture of the "
                f"space has {name} = {low:.6g}"
            )
    candidates = np.stack(
        [cheapest(problem.costs[problem.objective])[1]] + [g for _, g in minima.values()]
    )
    candidates = np.concatenate([candidates, pool])
    ok = np.flatnonzero(evaluator.feasible(candidates))
    if ok.size == 0:
        detail = ", ".join(
            f"{n} <= {problem.limits[n]:.6g} (min {m[0]:.6g})" for n, m in minima.items()
        )
        raise ConstraintError(
            detail=f"{detail} together: no architecture found that meets all limits at once"
        )
    anchor: np.ndarray = candidates[ok[0]]
    return anchor


def _repair(
    genome: np.ndarray, anchor: np.ndarray, evaluator: _Evaluator, rng: np.random.Generator
) -> np.ndarray:
    """Make every row feasible by copying a bisected random prefix of the anchor's genes."""
    bad = np.flatnonzero(~evaluator.feasible(genome))
    if bad.size == 0:
        return genome
    rows, n_genes = genome[bad], genome.shape[1]
    gene_rank = rng.random((bad.size, n_genes)).argsort(axis=1).argsort(axis=1)
    lo = np.zeros(bad.size, dtype=np.int64)  # copying `lo` genes is infeasible
    hi = np.full(bad.size, n_genes, dtype=np.int64)  # copying `hi` genes is feasible
    while np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        trial = np.where(gene_rank < mid[:, None], anchor[None, :], rows)
        ok = evaluator.feasible(trial)
        hi = np.where(ok, mid, hi)
        lo = np.where(ok, lo, mid)
    genome = genome.copy()
    genome[bad] = np.where(gene_rank < hi[:, None], anchor[None, :], rows)
    return genome


def _offspring(
    genome: np.ndarray,
    rank: np.ndarray,
    crowding: np.ndarray,
    choices: np.ndarray,
    config: SearchConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """Binary tournaments, uniform crossover and per-gene mutation: ``[N, G]`` children."""
    n, n_genes = genome.shape
    a, b = rng.integers(0, n, size=(2, 2 * n))
    a_wins = (rank[a] < rank[b]) | ((rank[a] == rank[b]) & (crowding[a] >= crowding[b]))
    parents = np.where(a_wins, a, b).reshape(2, n)
    mother, father = genome[parents[0]], genome[parents[1]]
    cross = (rng.random((n, 1)) < config.crossover_prob) & (rng.random((n, n_genes)) < 0.5)
    child = np.where(cross, father, mother)
    # a mutated gene moves to a different choice, uniformly (a single-choice gene stays put)
    mutate = rng.random((n, n_genes)) < config.mutation_prob
    step = 1 + (rng.random((n, n_genes)) * (choices - 1)).astype(np.int64)
    children: np.ndarray = np.where(mutate, (child + step) % choices, child)
    return children


def evolve(
    problem: SearchProblem, accuracy: AccuracyFn, config: SearchConfig, rng: np.random.Generator
) -> SearchResult:
    """Search ``problem`` for architectures trading accuracy against the objective cost.

    Every architecture returned meets every limit. Raises :class:`ConstraintError` when no
    architecture of the space can. A pure function of its arguments and ``rng``'s state.
    """
    started = time.perf_counter()
    space, n = problem.space, config.population
    choices = gene_choices(space)
    evaluator = _Evaluator(problem, accuracy)
    population = (rng.random((n, choices.size)) * choices).astype(np.int64)
    anchor = _find_anchor(problem, evaluator, population)
    population = _repair(population, anchor, evaluator, rng)
    f = evaluator.objectives(population)
    chosen = select(f, n)
    population, f = population[chosen.index], f[chosen.index]
    for _ in range(config.generations):
        children = _offspring(population, chosen.rank, chosen.crowding, choices, config, rng)
        children = _repair(children, anchor, evaluator, rng)
        pooled = np.concatenate([population, children])
        pooled_f = np.concatenate([f, evaluator.objectives(children)])
        chosen = select(pooled_f, n)
        population, f = pooled[chosen.index], pooled_f[chosen.index]
    result = _result(problem, evaluator, population, f, config, time.perf_counter() - started)
    log.info(
        "search done generations=%d evaluations=%d front=%d accuracy=%.5f %s=%.6g search_s=%.3f",
        result.generations,
        result.evaluations,
        len(result.front),
        result.chosen.accuracy,
        problem.objective,
        result.chosen.costs[problem.objective],
        result.search_s,
    )
    return result


def _result(
    problem: SearchProblem,
    evaluator: _Evaluator,
    population: np.ndarray,
    f: np.ndarray,
    config: SearchConfig,
    search_s: float,
) -> SearchResult:
    """The distinct non-dominated, feasible architectures of the final population."""
    keep = pareto_mask(f) & evaluator.feasible(population)
    rows = np.flatnonzero(keep)
    archs = from_batch(problem.space, from_genome(problem.space, population[rows]))
    costs = evaluator.costs(population[rows])
    by_arch: dict[Arch, Candidate] = {}
    for i, arch in enumerate(archs):
        by_arch.setdefault(
            arch,
            Candidate(
                arch=arch,
                accuracy=float(-f[rows[i], 0]),
                costs={name: float(values[i]) for name, values in costs.items()},
            ),
        )
    front = sorted(by_arch.values(), key=lambda c: (c.costs[problem.objective], -c.accuracy))
    chosen = min(front, key=lambda c: (-c.accuracy, c.costs[problem.objective]))
    return SearchResult(
        front=front,
        chosen=chosen,
        evaluations=evaluator.evaluations,
        generations=config.generations,
        search_s=search_s,
    )
