"""Benchmark: accuracy of inherited sub-network weights against training from scratch.

On animal-mnist (10,000 28x28 silhouettes, 10 classes) with the ``ofa_mbv3_tiny`` supernet:

- ``ps``: a supernet trained by progressive shrinking (full -> kernel -> depth -> width) for
  ``--epochs`` epochs in total;
- ``flat``: the same budget with every dimension elastic from the first step (no
  progressive shrinking);
- ``scratch``: each of ``--subnets`` architectures spanning the space (FLOPs quantiles,
  largest and smallest included) trained alone from a fresh initialisation for the same
  number of epochs, with the same optimiser and schedule (no distillation).

Each sub-network is then measured on the held-out split with inherited weights and
recalibrated BatchNorm statistics (no fine-tuning), with inherited weights and the
supernet's running statistics (no recalibration), and from the flat supernet. The gap is
``scratch - inherited`` in percentage points (positive: inheriting loses).

Jobs run in ``--workers`` processes with one torch thread each.
Usage: python bench/inherit.py [--epochs 4] [--train-size 4000] [--workers 2]
Last line of output: one JSON object (``median_gap_pp``, ``n_subnets``, ...).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from miner.automl.calibrate import recalibrate_bn
from miner.automl.config import PhaseConfig, TrainConfig
from miner.automl.data import BatchIterator, ImageDataset, load_dataset, split_dataset
from miner.automl.efficiency import flops_table
from miner.automl.space import Arch, to_batch
from miner.automl.train import LossConfig, Trainer, build_supernet, evaluate_accuracy, train_step

SUPERNET = "ofa_mbv3_tiny"


def load_data(args: argparse.Namespace) -> tuple[ImageDataset, ImageDataset]:
    data = load_dataset("animal-mnist", image_size=28, in_channels=1, num_classes=10)
    train, val = split_dataset(data, 0.2, seed=args.seed)
    train = train.subset(torch.arange(min(args.train_size, len(train))))
    val = val.subset(torch.arange(min(args.val_size, len(val))))
    return train, val


def base_config(args: argparse.Namespace, phases: tuple[PhaseConfig, ...]) -> TrainConfig:
    return TrainConfig(
        supernet=SUPERNET,
        dataset="animal-mnist",
        batch_size=args.batch_size,
        seed=args.seed,
        phases=phases,
        checkpoint_every_steps=10**9,
        distill_weight=args.distill,
        label_smoothing=0.1,
        weight_decay=4e-5,
    )


# Shares of the epochs per phase (full, kernel, depth, width). At a budget of a few epochs,
# equal quarters at 0.6x lr left every sub-network 7-13 points short; most of the budget on
# the last, widest phase at the full lr (and no distillation from a teacher that is itself
# barely trained) roughly halves the gap (bench/RESULTS.md).
PS_SHARES = (0.1, 0.15, 0.25, 0.5)


def ps_phases(args: argparse.Namespace) -> tuple[PhaseConfig, ...]:
    """Progressive shrinking: the full net alone, then kernel, depth and width elastic."""
    e, k, lr = args.epochs, args.k, args.lr
    full, kernel, depth, width = (e * share for share in PS_SHARES)
    return (
        PhaseConfig(name="full", epochs=full, lr=lr, subnets_per_step=1),
        PhaseConfig(name="kernel", epochs=kernel, lr=lr, subnets_per_step=k),
        PhaseConfig(name="depth", epochs=depth, lr=lr, subnets_per_step=k),
        PhaseConfig(name="width", epochs=width, lr=lr, subnets_per_step=k),
    )


def flat_phases(args: argparse.Namespace) -> tuple[PhaseConfig, ...]:
    return (PhaseConfig(name="width", epochs=args.epochs, lr=args.lr, subnets_per_step=args.k),)


def spanning_archs(args: argparse.Namespace) -> list[Arch]:
    """Largest, smallest and FLOPs quantiles of 400 random architectures."""
    config = build_supernet(base_config(args, flat_phases(args))).config
    space, table = config.space, flops_table(config)
    rng = np.random.default_rng(args.seed + 11)
    pool = [space.sample(rng) for _ in range(400)]
    flops = table.of_batch(to_batch(space, pool))
    order = np.argsort(flops)
    inner = args.subnets - 2
    picks = [pool[order[round((i + 1) * (len(pool) - 1) / (inner + 1))]] for i in range(inner)]
    return [space.max_arch(), *picks, space.min_arch()]


# --- jobs (run in worker processes) ---------------------------------------------------------


def job_supernet(args: argparse.Namespace, name: str) -> tuple[str, Any, float]:
    torch.set_num_threads(1)
    train, _ = load_data(args)
    phases = ps_phases(args) if name == "ps" else flat_phases(args)
    config = base_config(args, phases)
    started = time.perf_counter()
    trainer = Trainer(config, build_supernet(config), train)
    trainer.run()
    return name, trainer.net.state_dict(), time.perf_counter() - started


def job_scratch(
    args: argparse.Namespace, index: int, arch_dict: dict[str, Any]
) -> tuple[str, Any, float]:
    torch.set_num_threads(1)
    train, val = load_data(args)
    arch = Arch.from_dict(arch_dict)
    config = base_config(args, flat_phases(args)).model_copy(
        update={"seed": args.seed + 100 + index}
    )
    net = build_supernet(config)
    net.set_active(arch)
    batches = BatchIterator(train, args.batch_size, config.seed)
    steps = max(1, math.ceil(args.epochs * batches.batches_per_epoch))
    decay = [p for p in net.parameters() if p.ndim > 1]
    rest = [p for p in net.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=args.lr,
        momentum=config.momentum,
        nesterov=True,
    )
    loss = LossConfig(label_smoothing=config.label_smoothing, distill_weight=0.0)
    started = time.perf_counter()
    net.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = 0.5 * args.lr * (1 + math.cos(math.pi * step / steps))
        x, y = next(batches)
        train_step(net, optimizer, x, y, [arch], loss, None)
    accuracy = evaluate_accuracy(net, arch, val)
    return f"scratch{index}", accuracy, time.perf_counter() - started


def _run_job(job: tuple[Any, ...]) -> tuple[str, Any, float]:
    kind, args, *rest = job
    return job_supernet(args, *rest) if kind == "supernet" else job_scratch(args, *rest)


# --- measuring and reporting ---------------------------------------------------------------


def measure(
    args: argparse.Namespace,
    state: dict[str, torch.Tensor],
    archs: list[Arch],
    train: ImageDataset,
    val: ImageDataset,
    recalibrate: bool,
) -> list[float]:
    config = base_config(args, flat_phases(args))
    net = build_supernet(config)
    net.load_state_dict(state)
    calib = BatchIterator(train, 256, args.seed + 1)
    batches = [next(calib)[0] for _ in range(args.calib_batches)]
    out = []
    for arch in archs:
        if recalibrate:
            recalibrate_bn(net, arch, batches)
        out.append(evaluate_accuracy(net, arch, val))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=4.0)
    parser.add_argument("--train-size", type=int, default=4000)
    parser.add_argument("--val-size", type=int, default=2000)
    parser.add_argument("--subnets", type=int, default=8)
    parser.add_argument("--k", type=int, default=5, help="sub-networks per supernet step")
    parser.add_argument("--distill", type=float, default=0.0,
                        help="in-place distillation weight (from the largest sub-network)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.08)
    parser.add_argument("--calib-batches", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(1)
    archs = spanning_archs(args)
    jobs = [("supernet", args, "ps"), ("supernet", args, "flat")]
    jobs += [("scratch", args, i, a.to_dict()) for i, a in enumerate(archs)]
    results: dict[str, tuple[Any, float]] = {}
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for name, value, seconds in pool.imap_unordered(_run_job, jobs):
            results[name] = (value, seconds)
            print(f"done {name} in {seconds:.0f}s", flush=True)
    train, val = load_data(args)
    ps_bn = measure(args, results["ps"][0], archs, train, val, recalibrate=True)
    ps_raw = measure(args, results["ps"][0], archs, train, val, recalibrate=False)
    flat_bn = measure(args, results["flat"][0], archs, train, val, recalibrate=True)
    scratch = [results[f"scratch{i}"][0] for i in range(len(archs))]
    config = build_supernet(base_config(args, flat_phases(args))).config
    flops = flops_table(config).of_batch(to_batch(config.space, archs))

    def gaps(other: list[float]) -> list[float]:
        return [100.0 * (s - o) for s, o in zip(scratch, other, strict=True)]

    header = ("#", "MMACs", "scratch", "ps+bn", "ps,no bn", "flat+bn", "gap pp")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (2, 7, 8, 8, 9, 8, 7), strict=True)))
    for i, arch in enumerate(archs):
        print(
            f"{i:>2} {flops[i] / 1e6:>7.2f} {scratch[i]:>8.4f} {ps_bn[i]:>8.4f} {ps_raw[i]:>9.4f} "
            f"{flat_bn[i]:>8.4f} {100 * (scratch[i] - ps_bn[i]):>7.2f}   {json.dumps(arch.depth)}"
        )
    summary = {
        "median_gap_pp": round(statistics.median(gaps(ps_bn)), 3),
        "mean_gap_pp": round(statistics.mean(gaps(ps_bn)), 3),
        "median_gap_no_bn_recal_pp": round(statistics.median(gaps(ps_raw)), 3),
        "median_gap_no_progressive_shrinking_pp": round(statistics.median(gaps(flat_bn)), 3),
        "n_subnets": len(archs),
        "epochs": args.epochs,
        "train_size": len(train),
        "val_size": len(val),
        "subnets_per_step": args.k,
        "distill_weight": args.distill,
        "target_met": statistics.median(gaps(ps_bn)) <= 1.0,
        "train_s": {k: round(v[1], 1) for k, v in sorted(results.items())},
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
