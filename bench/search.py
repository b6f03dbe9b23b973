"""Benchmark: the vectorised constrained NSGA-II search against a one-arch-at-a-time reference.

Builds the full OFA-MobileNetV3 space (kernel 3/5/7, expand 3/4/6, depth 2/3/4, five
resolutions), takes the real FLOPs table from ``miner.automl.efficiency.flops_table`` when
that module exists and works (else the synthetic MobileNetV3 table of ``toy_problem``; the
JSON says which in ``cost_model``), trains the accuracy predictor on ~2000 synthetic
(arch, accuracy) pairs, then times population 100 x 500 generations under a FLOPs limit.

The reference runs the same algorithm the way a straightforward implementation would:
Python lists of ``Arch``, per-gene Python mutation and crossover, rejection sampling for
the constraint, one ``predictor.predict([arch])`` and one ``cost.of(arch)`` per
architecture, Deb's fast non-dominated sort in pure Python. It runs a few generations and
its per-generation time is extrapolated to the full run (``reference_s_extrapolated``).

Usage: python bench/search.py [--generations 500] [--reference-generations 10]
Last line of output: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from miner.automl.predictor import AccuracyPredictor
from miner.automl.search import (
    SearchConfig,
    SearchProblem,
    cheapest,
    evolve,
    from_genome,
    gene_choices,
)
from miner.automl.space import AdditiveCost, Arch, SearchSpace, to_batch
from miner.automl.toy_problem import ToyAccuracy, flops_table

RESOLUTIONS = (160, 176, 192, 208, 224)


def real_flops_table(space: SearchSpace) -> tuple[AdditiveCost | None, str]:
    """The supernet engineer's analytic FLOPs table for ``ofa_mbv3``, if available."""
    try:
        from miner.automl.efficiency import flops_table as real_table
        from miner.automl.registry import supernet_config

        table = real_table(supernet_config("ofa_mbv3", space=space))
        if table.space != space:
            return None, f"efficiency table space {table.space} differs from {space}"
        return table, "efficiency.flops_table(ofa_mbv3)"
    except Exception as exc:  # a benchmark edge: any failure means "use the fallback"
        return None, f"{type(exc).__name__}: {exc}"


# --- the naive reference ------------------------------------------------------------------


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[0] and a[1] <= b[1] and (a[0] < b[0] or a[1] < b[1])


def _fast_nondominated_sort(f: list[tuple[float, float]]) -> list[list[int]]:
    dominated: list[list[int]] = [[] for _ in f]
    count = [0] * len(f)
    fronts: list[list[int]] = [[]]
    for i, fi in enumerate(f):
        for j, fj in enumerate(f):
            if _dominates(fi, fj):
                dominated[i].append(j)
            elif _dominates(fj, fi):
                count[i] += 1
        if count[i] == 0:
            fronts[0].append(i)
    while fronts[-1]:
        nxt = []
        for i in fronts[-1]:
            for j in dominated[i]:
                count[j] -= 1
                if count[j] == 0:
                    nxt.append(j)
        fronts.append(nxt)
    return fronts[:-1]


def _crowding(f: list[tuple[float, float]], front: list[int]) -> dict[int, float]:
    dist = dict.fromkeys(front, 0.0)
    for m in range(2):
        ordered = sorted(front, key=lambda i: f[i][m])
        span = f[ordered[-1]][m] - f[ordered[0]][m]
        dist[ordered[0]] = dist[ordered[-1]] = math.inf
        for k in range(1, len(ordered) - 1):
            if span > 0:
                dist[ordered[k]] += (f[ordered[k + 1]][m] - f[ordered[k - 1]][m]) / span
    return dist


def reference_search(
    space: SearchSpace,
    predictor: AccuracyPredictor,
    flops: AdditiveCost,
    limit: float,
    config: SearchConfig,
    rng: np.random.Generator,
) -> tuple[float, int]:
    """The same NSGA-II, one architecture at a time. Returns (seconds, violations)."""
    started = time.perf_counter()

    def feasible_sample() -> Arch:
        while True:
            arch = space.sample(rng)
            if flops.of(arch) <= limit:
                return arch

    def evaluate(arch: Arch) -> tuple[float, float]:
        return (-float(predictor.predict([arch])[0]), flops.of(arch))

    def child_of(a: Arch, b: Arch) -> Arch:
        for _ in range(100):
            kernel, expand = [], []
            for s in range(space.n_slots):
                take_b = rng.random() < 0.5
                k = (b if take_b else a).kernel[s] or space.kernel_sizes[0]
                e = (b if take_b else a).expand[s] or space.expand_ratios[0]
                if rng.random() < config.mutation_prob:
                    k = int(rng.choice(space.kernel_sizes))
                if rng.random() < config.mutation_prob:
                    e = float(rng.choice(space.expand_ratios))
                kernel.append(k)
                expand.append(e)
            depth = [
                int(rng.choice(space.depths))
                if rng.random() < config.mutation_prob
                else (b if rng.random() < 0.5 else a).depth[i]
                for i in range(space.n_stages)
            ]
            res = (b if rng.random() < 0.5 else a).resolution
            if rng.random() < config.mutation_prob:
                res = int(rng.choice(space.resolutions))
            arch = space.canonical(Arch(tuple(kernel), tuple(expand), tuple(depth), res))
            if flops.of(arch) <= limit:
                return arch
        return feasible_sample()

    population = [feasible_sample() for _ in range(config.population)]
    f = [evaluate(a) for a in population]
    rank = [0] * len(population)
    crowd = [0.0] * len(population)
    for _ in range(config.generations):
        children = []
        for _ in range(config.population):
            picks = []
            for _ in range(2):
                i, j = int(rng.integers(len(population))), int(rng.integers(len(population)))
                better = rank[i] < rank[j] or (rank[i] == rank[j] and crowd[i] >= crowd[j])
                picks.append(population[i if better else j])
            children.append(child_of(*picks))
        pooled = population + children
        pooled_f = f + [evaluate(c) for c in children]
        survivors: list[tuple[int, int, float]] = []
        for r, front in enumerate(_fast_nondominated_sort(pooled_f)):
            dist = _crowding(pooled_f, front)
            ordered = sorted(front, key=lambda i: -dist[i])
            survivors += [(i, r, dist[i]) for i in ordered]
            if len(survivors) >= config.population:
                break
        survivors = survivors[: config.population]
        population = [pooled[i] for i, _, _ in survivors]
        f = [pooled_f[i] for i, _, _ in survivors]
        rank = [r for _, r, _ in survivors]
        crowd = [d for _, _, d in survivors]
    violations = sum(flops.of(a) > limit for a in population)
    return time.perf_counter() - started, violations


# --- the benchmark ------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=500)
    parser.add_argument("--population", type=int, default=100)
    parser.add_argument("--reference-generations", type=int, default=10)
    parser.add_argument("--train-archs", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit-mflops", type=float, default=0.0, help="0: midway in the space")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    torch.set_num_threads(1)
    space = SearchSpace(resolutions=RESOLUTIONS)
    flops, why = real_flops_table(space)
    cost_model = why if flops is not None else "synthetic (toy_problem.flops_table)"
    if flops is None:
        print(f"real FLOPs table unavailable ({why}); using the synthetic one", file=sys.stderr)
        flops = flops_table(space)
    low = cheapest(flops)[0]
    high = flops.of(space.max_arch())
    limit = args.limit_mflops * 1e6 if args.limit_mflops else low + 0.4 * (high - low)

    truth = ToyAccuracy.create(space, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(args.train_archs)]
    predictor = AccuracyPredictor(space)
    fit = predictor.fit(archs, truth.of_batch(to_batch(space, archs)), np.random.default_rng(2))

    problem = SearchProblem(
        space=space, costs={"flops": flops}, objective="flops", limits={"flops": limit}
    )
    config = SearchConfig(population=args.population, generations=args.generations)
    warm_up = replace(config, generations=5)
    evolve(problem, predictor.predict_batch, warm_up, np.random.default_rng(0))
    times, results = [], []
    for seed in range(args.repeats):
        result = evolve(problem, predictor.predict_batch, config, np.random.default_rng(100 + seed))
        times.append(result.search_s)
        results.append(result)
    violations = sum(flops.of(c.arch) > limit for r in results for c in r.front)
    result = results[0]
    chosen_true = float(truth.of_batch(to_batch(space, [result.chosen.arch]))[0])

    choices = gene_choices(space)
    random_genomes = np.random.default_rng(3).random((result.evaluations, choices.size)) * choices
    random_batch = from_genome(space, random_genomes.astype(np.int64))
    random_pred = predictor.predict_batch(random_batch)
    random_pred[flops.of_batch(random_batch) > limit] = -np.inf

    ref_config = replace(config, generations=args.reference_generations)
    ref_s, ref_violations = reference_search(
        space, predictor, flops, limit, ref_config, np.random.default_rng(4)
    )
    ref_per_gen = ref_s / max(1, args.reference_generations)
    search_s = statistics.median(times)
    per_gen = search_s / max(1, args.generations)
    report = {
        "bench": "search",
        "cost_model": cost_model,
        "population": args.population,
        "generations": args.generations,
        "evaluations": result.evaluations,
        "flops_limit_m": round(limit / 1e6, 3),
        "cheapest_m": round(low / 1e6, 3),
        "search_s": round(search_s, 4),
        "search_s_all": [round(t, 4) for t in times],
        "per_generation_ms": round(per_gen * 1e3, 4),
        "constraint_violations": int(violations + ref_violations),
        "pareto_size": len(result.front),
        "chosen_predicted_accuracy": round(result.chosen.accuracy, 5),
        "chosen_true_accuracy": round(chosen_true, 5),
        "chosen_mflops": round(result.chosen.costs["flops"] / 1e6, 3),
        "random_search_best_predicted": round(float(random_pred.max()), 5),
        "predictor_kendall_tau": round(fit.kendall_tau, 4),
        "predictor_rmse": round(fit.rmse, 6),
        "predictor_fit_s": round(fit.fit_s, 3),
        "reference_generations": args.reference_generations,
        "reference_per_generation_ms": round(ref_per_gen * 1e3, 3),
        "reference_s_extrapolated": round(ref_per_gen * args.generations, 2),
        "speedup_per_generation": round(ref_per_gen / per_gen, 1),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
