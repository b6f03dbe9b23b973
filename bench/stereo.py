"""Benchmark: the stereo supernet after a fixed CPU training budget, and the correlation
layer against its plain reference.

Everything runs on the engine's shared pieces: ``ofa_dispnetc_tiny`` from the registry, the
shared :class:`~miner.automl.train.Trainer` (progressive shrinking full -> kernel -> depth ->
width with the sandwich rule, the stereo task head: multi-scale loss whose per-scale weights
move from coarse to fine over training), ``recalibrate_bn``, ``extract`` and
``stereo_errors``. The budget is a fixed number of optimizer steps (not wall time, so the
result does not depend on how loaded the machine is); the wall time is reported beside it.

The default budget: 1,600 steps of the largest network at half resolution (32x64; the
engine's elastic resolution resizes the pairs and rescales the disparities), then 600 at
full resolution, then kernel / depth / width phases of 150 / 150 / 700 steps with three
sub-networks each (sandwich rule: the largest, the smallest and a random one, so the
weights are shared across the space, not only between the two reported ends). The
smallest sub-network is scored at the held-out size, like the largest (the space also
holds the half resolution, for the pre-training phase); so is one random middle
sub-network (seeded), which no step singled out.

Training pairs are procedural (seeded), held-out pairs come from another seed. After
training, the largest, the smallest and the middle sub-networks get BatchNorm
recalibration on training pairs, are extracted as static networks and scored (EPE and D1,
from one pass) on the held-out pairs. The
correlation layer is timed (forward, median of repeats) against the per-displacement loop
at the bench's size and at the full DispNetC size.

Usage: python bench/stereo.py [--lowres-steps 1600] [--steps 600,150,150,700]
                              [--height 64] [--width 128]
       (GPU: --supernet ofa_dispnetc --height 256 --width 512 --max-displacement 40
        --device cuda)
Last line of output: one JSON object (``epe_max``, ``epe_min``, ``correlation_speedup``,
``steps``, ``train_s``...).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from miner.automl.calibrate import recalibrate_bn
from miner.automl.config import PhaseConfig, TrainConfig
from miner.automl.data import BatchIterator, ImageDataset, procedural_stereo
from miner.automl.efficiency import count_flops
from miner.automl.registry import supernet_config
from miner.automl.space import SearchSpace
from miner.automl.stereo.correlation import correlation, correlation_reference
from miner.automl.stereo.loss import stereo_errors
from miner.automl.stereo.supernet import StereoConfig
from miner.automl.train import StepReport, Trainer, build_supernet

PHASES = ("full", "kernel", "depth", "width")


def train_config(args: argparse.Namespace, overrides: dict[str, Any]) -> TrainConfig:
    """The phases of ``--steps``; with ``--lowres-steps`` a first full phase at half the
    height (the engine's elastic resolution: inputs resized, disparities rescaled)."""
    steps = [int(s) for s in args.steps.split(",")]
    lrs = [float(v) for v in args.lrs.split(",")]
    at = (args.height,)
    phases = tuple(
        PhaseConfig(name=name, steps=n, lr=lr, subnets_per_step=1 if name == "full" else 3,
                    resolutions=at)
        for name, n, lr in zip(PHASES, steps, lrs, strict=True) if n > 0
    )
    if args.lowres_steps:
        low = PhaseConfig(name="full", steps=args.lowres_steps, lr=lrs[0], subnets_per_step=1,
                          resolutions=(args.height // 2,))
        phases = (low, *phases)
    return TrainConfig(
        supernet=args.supernet, overrides=overrides, dataset="procedural-stereo",
        synthetic_size=args.train_pairs, batch_size=args.batch, seed=args.seed, phases=phases,
        optimizer="adamw", weight_decay=args.weight_decay, distill_weight=args.distill,
        checkpoint_every_steps=10**9,
    )


def evaluate(trainer: Trainer, held_out: ImageDataset, calib: list[torch.Tensor],
             device: torch.device) -> dict[str, float]:
    net = trainer.net
    max_disparity = stereo_config(net).max_disparity
    out: dict[str, float] = {}
    # all at the held-out pairs' size (a space with a half-resolution pre-training phase
    # would otherwise put some sub-networks at half size)
    height = int(held_out.x.shape[-2])
    middle = net.space.sample(np.random.default_rng(12345))
    archs = {"max": net.space.max_arch(), "min": net.space.min_arch(), "mid": middle}
    for name, arch in archs.items():
        arch = dataclasses.replace(arch, resolution=height)
        recalibrate_bn(net, arch, calib, device)
        static = net.extract(arch).to(device).eval()
        total, bad, count = 0.0, 0, 0
        with torch.no_grad():
            for i in range(0, len(held_out), 16):
                x, d = held_out.x[i: i + 16].to(device), held_out.y[i: i + 16].to(device)
                err, n_bad, n_valid = stereo_errors(static(x)[-1][:, 0], d, max_disparity)
                total, bad, count = total + err, bad + n_bad, count + n_valid
        out[f"epe_{name}"] = round(total / max(count, 1), 4)
        out[f"d1_{name}"] = round(bad / max(count, 1), 4)
        out[f"mmacs_{name}"] = round(count_flops(net.config, arch) / 1e6, 2)
    return out


def stereo_config(net: torch.nn.Module) -> StereoConfig:
    config = net.config
    assert isinstance(config, StereoConfig), "bench/stereo.py needs a stereo supernet"
    return config


def time_correlation(shape: tuple[int, int, int, int], max_disp: int, repeats: int,
                     device: str) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    left = torch.randn(*shape, generator=gen).to(device)
    right = torch.randn(*shape, generator=gen).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def median_ms(fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]) -> float:
        times = []
        with torch.no_grad():
            for i in range(repeats + 2):
                sync()
                t = time.perf_counter()
                fn(left, right, max_disp)
                sync()
                if i >= 2:
                    times.append((time.perf_counter() - t) * 1e3)
        return statistics.median(times)

    fast, ref = median_ms(correlation), median_ms(correlation_reference)
    return {"fast_ms": round(fast, 3), "reference_ms": round(ref, 3),
            "speedup": round(ref / fast, 2)}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", default="600,150,150,700",
                        help="optimizer steps of the full, kernel, depth and width phases")
    parser.add_argument("--lrs", default="3e-3,1e-3,1e-3,1e-3", help="peak lr per phase")
    parser.add_argument("--lowres-steps", type=int, default=1600,
                        help="steps of a first full phase at half resolution (0: none)")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--distill", type=float, default=0.0)
    parser.add_argument("--train-pairs", type=int, default=3072)
    parser.add_argument("--eval-pairs", type=int, default=64)
    parser.add_argument("--calib-batches", type=int, default=8)
    parser.add_argument("--scene-fraction", type=float, default=0.75,
                        help="scene disparities up to this fraction of the correlation's range")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--supernet", default="ofa_dispnetc_tiny")
    parser.add_argument("--max-displacement", type=int, default=0,
                        help="correlation range in feature pixels (0: the variant's own)")
    parser.add_argument("--device", default="cpu")
    return parser.parse_args()


def main() -> None:
    args = parse()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    base = supernet_config(args.supernet)
    space = base.space
    resolutions = (args.height // 2, args.height) if args.lowres_steps else (args.height,)
    overrides: dict[str, Any] = {
        "aspect": args.width // args.height,
        "space": SearchSpace(space.kernel_sizes, space.expand_ratios, space.depths,
                             resolutions, space.n_stages),
    }
    if args.max_displacement:
        overrides["max_displacement"] = args.max_displacement
    config = train_config(args, overrides)
    net = build_supernet(config).to(device)
    max_disparity = stereo_config(net).max_disparity
    scene_max = args.scene_fraction * max_disparity
    train = procedural_stereo(args.train_pairs, args.height, args.width, scene_max, args.seed)
    held_out = procedural_stereo(args.eval_pairs, args.height, args.width, scene_max,
                                 args.seed + 7_777)
    calib_it = BatchIterator(train, args.batch, args.seed + 1)
    calib = [next(calib_it)[0] for _ in range(args.calib_batches)]
    losses: list[float] = []

    def report(r: StepReport) -> None:
        losses.append(r.losses[0])
        if r.global_step % 100 == 0:
            logging.info("step=%d/%d phase=%s lr=%.2e loss_max=%.3f epe_batch=%s",
                         r.global_step, r.total_steps, r.phase, r.lr, r.losses[0],
                         [round(a, 3) for a in r.accuracies])

    trainer = Trainer(config, net, train, on_progress=report, device=device)
    started, cpu_started = time.perf_counter(), time.process_time()
    trainer.run()
    train_s = time.perf_counter() - started
    train_cpu_s = time.process_time() - cpu_started
    result: dict[str, Any] = {
        "supernet": args.supernet, "height": args.height, "width": args.width,
        "max_disparity_px": max_disparity, "scene_max_disparity_px": scene_max,
        "steps": trainer.global_step, "phase_steps": args.steps, "lrs": args.lrs,
        "lowres_steps": args.lowres_steps,
        "batch": args.batch, "train_pairs": args.train_pairs, "threads": args.threads,
        "device": args.device, "train_s": round(train_s, 1),
        "train_cpu_s": round(train_cpu_s, 1),
        "load_avg_1m_end": round(os.getloadavg()[0], 2),
        "final_loss_max": round(statistics.mean(losses[-20:]), 4),
    }
    result.update(evaluate(trainer, held_out, calib, device))
    result["ratio_min_over_max"] = round(result["epe_min"] / result["epe_max"], 3)
    bench_corr = time_correlation((args.batch, 32, args.height // 4, args.width // 4),
                                  stereo_config(net).max_displacement, 10, args.device)
    full_corr = time_correlation((1, 96, 64, 128), 40, 5, args.device)
    result["correlation"] = bench_corr
    result["correlation_full"] = full_corr
    result["correlation_speedup"] = bench_corr["speedup"]
    result["correlation_speedup_full"] = full_corr["speedup"]
    result["targets_met"] = bool(result["epe_max"] <= 1.0
                                 and result["epe_min"] <= 1.5 * result["epe_max"])
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
