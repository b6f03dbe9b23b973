"""Benchmark: the stereo supernet after a bounded CPU training budget, and the correlation
layer against its plain reference.

Trains ``ofa_dispnetc_tiny`` on procedural pairs (a fresh batch every step, seeds from the
step number) for ``--minutes`` of wall time with the sandwich rule (the largest
sub-network every step, then alternately the smallest and a random one), the multi-scale
loss with its coarse-to-fine weight schedule and a cosine learning rate over the budget.
Then, for the largest and the smallest sub-network: BatchNorm recalibration on training
pairs, extraction of the static network, and EPE / D1 on held-out pairs (seeds disjoint
from training). The correlation layer is timed (forward, median of repeats) against the
per-displacement loop at the bench's size and at the full DispNetC size.

Usage: python bench/stereo.py [--minutes 15] [--height 64] [--width 128] [--threads 1]
       (GPU: --supernet ofa_dispnetc --height 256 --width 512 --device cuda)
Last line of output: one JSON object (``epe_max``, ``epe_min``, ``correlation_speedup``...).
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
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from miner.automl.space import SearchSpace, subnet_rng
from miner.automl.stereo.correlation import correlation, correlation_reference
from miner.automl.stereo.cost import count_flops
from miner.automl.stereo.loss import default_schedule
from miner.automl.stereo.procedural import SceneConfig, render_batch
from miner.automl.stereo.supernet import OFADispNetC, create_stereo_supernet, stereo_config
from miner.automl.stereo.train import evaluate_stereo, recalibrate_stereo_bn, stereo_train_step

HELD_OUT_SEED = 10_000_000


def batch(scene: SceneConfig, seeds: range,
          device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    x, d = render_batch(scene, list(seeds))
    return torch.from_numpy(x).to(device), torch.from_numpy(d).to(device)


def train(net: OFADispNetC, scene: SceneConfig, args: argparse.Namespace,
          max_disparity: float) -> dict[str, Any]:
    space, schedule = net.space, default_schedule()
    with torch.no_grad():  # start every prediction at the middle of the scene's range
        net.head.predict_bottom.bias.fill_(0.5 * (scene.min_disparity + scene.max_disparity))
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    budget_s, start = args.minutes * 60.0, time.perf_counter()
    step, losses = 0, []
    net.train()
    while (elapsed := time.perf_counter() - start) < budget_s:
        progress = elapsed / budget_s
        for group in opt.param_groups:
            group["lr"] = args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))
        x, d = batch(scene, range(step * args.batch, (step + 1) * args.batch), args.device)
        other = space.min_arch() if step % 2 == 0 else space.sample(subnet_rng(args.seed, step, 1))
        out = stereo_train_step(net, opt, x, d, [space.max_arch(), other],
                                schedule.weights(progress), max_disparity)
        losses.append(out.losses[0])
        if step % 50 == 0:
            logging.info("step=%d t=%.0fs progress=%.2f loss_max=%.3f loss_other=%.3f",
                         step, elapsed, progress, out.losses[0], out.losses[1])
        step += 1
    return {"steps": step, "train_s": time.perf_counter() - start,
            "final_loss_max": statistics.mean(losses[-20:]) if losses else float("nan")}


def evaluate(net: OFADispNetC, scene: SceneConfig, args: argparse.Namespace,
             max_disparity: float) -> dict[str, float]:
    x, d = batch(scene, range(HELD_OUT_SEED, HELD_OUT_SEED + args.eval_pairs), args.device)
    calib = [batch(scene, range(5_000_000 + i * args.batch, 5_000_000 + (i + 1) * args.batch),
                   args.device)[0] for i in range(args.calib_batches)]
    out: dict[str, float] = {}
    for name, arch in (("max", net.space.max_arch()), ("min", net.space.min_arch())):
        recalibrate_stereo_bn(net, arch, calib)
        static = net.extract(arch).to(args.device).eval()
        metrics = evaluate_stereo(static, x, d, max_disparity)
        out[f"epe_{name}"] = round(metrics["epe"], 4)
        out[f"d1_{name}"] = round(metrics["d1"], 4)
        out[f"mmacs_{name}"] = round(count_flops(net.stereo_config, arch) / 1e6, 2)
    return out


def time_correlation(shape: tuple[int, int, int, int], max_disp: int, repeats: int,
                     device: str) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    left = torch.randn(*shape, generator=gen).to(device)
    right = torch.randn(*shape, generator=gen).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def median_ms(fn: Any) -> float:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-pairs", type=int, default=64)
    parser.add_argument("--calib-batches", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--supernet", default="ofa_dispnetc_tiny")
    parser.add_argument("--max-displacement", type=int, default=0,
                        help="correlation range in 1/4-scale pixels (0: the variant's own)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    overrides: dict[str, Any] = {"aspect": args.width // args.height,
                                 "space": _space_at(args.supernet, args.height)}
    if args.max_displacement:
        overrides["max_displacement"] = args.max_displacement
    net = create_stereo_supernet(args.supernet, **overrides).to(args.device)
    stride = 4  # both registered variants correlate at 1/4 of the input size
    max_disparity = float(net.stereo_config.max_displacement * stride)
    scene = SceneConfig(height=args.height, width=args.width, min_disparity=1.0,
                        max_disparity=0.75 * max_disparity)
    result: dict[str, Any] = {
        "height": args.height, "width": args.width, "max_disparity_px": max_disparity,
        "scene_max_disparity_px": scene.max_disparity, "minutes": args.minutes,
        "threads": args.threads, "batch": args.batch, "supernet": args.supernet,
        "device": args.device,
    }
    result.update(train(net, scene, args, max_disparity))
    result.update(evaluate(net, scene, args, max_disparity))
    result["ratio_min_over_max"] = round(result["epe_min"] / result["epe_max"], 3)
    bench_corr = time_correlation((args.batch, 32, args.height // 4, args.width // 4),
                                  net.stereo_config.max_displacement, 10, args.device)
    full_corr = time_correlation((1, 96, 64, 128), 40, 5, args.device)
    result["correlation"] = bench_corr
    result["correlation_full"] = full_corr
    result["correlation_speedup"] = bench_corr["speedup"]
    result["correlation_speedup_full"] = full_corr["speedup"]
    result["targets_met"] = bool(result["epe_max"] <= 1.0
                                 and result["epe_min"] <= 1.5 * result["epe_max"])
    print(json.dumps(result, sort_keys=True))


def _space_at(supernet: str, height: int) -> SearchSpace:
    """The variant's space with ``height`` as its one resolution."""
    return replace(stereo_config(supernet).space, resolutions=(height,))


if __name__ == "__main__":
    main()
