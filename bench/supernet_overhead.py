"""Training-step overhead of the weight-sharing supernet against the same static network.

One step = forward + backward + SGD step (momentum 0.9) with cross-entropy. For the largest,
a middle and the smallest sub-network, the supernet with that arch active and the static
network extracted from it are timed side by side: repeats are interleaved and the medians
compared, so load on a shared machine hits both alike. ``ratio_4subnets`` compares one
supernet step over four sub-networks (sandwich: max, min, two random; gradients
accumulated, one optimizer step) with four static-network steps.

CPU default: the full ``ofa_mbv3`` space (1000 classes) at 128 px, batch 8, torch's thread
count (``--threads 1`` is steadier on a machine shared with other jobs); besides wall-time
ratios it reports ``cpu_time_ratio_*`` from process CPU time, which time spent descheduled
does not inflate. On CUDA: batch 256, 224 px, bf16 autocast, channels_last, with and
without ``torch.compile`` (``compiled_*`` keys; the supernet recompiles once per arch, so
only ``--compiled-subnets``, the middle one by default, is timed compiled).

Targets: ratio_max, ratio_mid, ratio_min <= 1.05 (CPU and CUDA); compiled_ratio_mid
<= 1/0.95 on CUDA.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from miner.automl.registry import create_supernet
from miner.automl.space import Arch, SearchSpace

Step = Callable[[], None]


def mid_arch(space: SearchSpace) -> Arch:
    pick = len(space.kernel_sizes) // 2, len(space.expand_ratios) // 2, len(space.depths) // 2
    return space.canonical(Arch(
        kernel=(space.kernel_sizes[pick[0]],) * space.n_slots,
        expand=(space.expand_ratios[pick[1]],) * space.n_slots,
        depth=(space.depths[pick[2]],) * space.n_stages,
        resolution=space.resolutions[-1],
    ))


class Runner:
    """Builds step closures that share one batch and one dtype/layout setting."""

    def __init__(self, device: torch.device, batch: int, resolution: int, channels: int,
                 classes: int, amp: bool, channels_last: bool) -> None:
        self.device, self.amp, self.channels_last = device, amp, channels_last
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = torch.randn(batch, channels, resolution, resolution, device=device)
        self.x = x.to(memory_format=fmt)
        self.y = torch.randint(0, classes, (batch,), device=device)

    def autocast(self) -> torch.autocast | nullcontext[None]:
        if self.amp:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def prepare(self, model: nn.Module, compile_: bool) -> nn.Module:
        model = model.to(self.device).train()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return torch.compile(model) if compile_ else model  # type: ignore[return-value]

    def step(self, model: nn.Module, opt: torch.optim.Optimizer,
             before: Callable[[], None] | None = None) -> Step:
        def run() -> None:
            if before is not None:
                before()
            with self.autocast():
                loss = F.cross_entropy(model(self.x), self.y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return run

    def multi_step(self, supernet: nn.Module, compiled: nn.Module, archs: list[Arch],
                   opt: torch.optim.Optimizer) -> Step:
        def run() -> None:
            for arch in archs:
                supernet.set_active(arch)  # type: ignore[operator]
                with self.autocast():
                    loss = F.cross_entropy(compiled(self.x), self.y)
                loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return run


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)


def measure(steps: dict[str, Step], repeats: int, warmup: int,
            device: torch.device) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall ms and median process-CPU ms per named step; repeats interleaved.

    CPU time is the steadier figure on a machine shared with other jobs (it does not count
    time spent descheduled); on CUDA only wall time means anything.
    """
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + repeats):
        for name, step in steps.items():
            sync()
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            sync()
            if i >= warmup:
                wall[name].append((time.perf_counter() - start) * 1e3)
                cpu[name].append((time.process_time() - start_cpu) * 1e3)
    return ({n: statistics.median(t) for n, t in wall.items()},
            {n: statistics.median(t) for n, t in cpu.items()})


def run_setting(args: argparse.Namespace, device: torch.device, amp: bool, channels_last: bool,
                compile_: bool, names: tuple[str, ...] = ("max", "mid", "min"),
                four_subnets: bool = True) -> dict[str, float]:
    """Ratios for the sub-networks ``names`` (and the four-sub-network step if asked)."""
    torch.manual_seed(0)
    overrides = {"space": SearchSpace(resolutions=(args.resolution,))}
    supernet = create_supernet(args.supernet, **overrides)
    space = supernet.space
    config = supernet.config
    runner = Runner(device, args.batch, args.resolution, config.in_channels, config.num_classes,
                    amp, channels_last)
    rng = np.random.default_rng(0)
    every = {"max": space.max_arch(), "mid": mid_arch(space), "min": space.min_arch()}
    archs = {name: every[name] for name in names}
    compiled = runner.prepare(supernet, compile_)
    super_opt = sgd(supernet)
    steps: dict[str, Step] = {}
    for name, arch in archs.items():
        static = runner.prepare(supernet.extract(arch), compile_)
        steps[f"super_{name}"] = runner.step(compiled, super_opt,
                                             lambda a=arch: supernet.set_active(a))
        steps[f"static_{name}"] = runner.step(static, sgd(static))
    if four_subnets:
        four = [space.max_arch(), space.min_arch(), space.sample(rng), space.sample(rng)]
        statics4 = [runner.prepare(supernet.extract(a), compile_) for a in four]
        steps["super_4"] = runner.multi_step(supernet, compiled, four, super_opt)
        static4_steps = [runner.step(m, sgd(m)) for m in statics4]

        def static_4() -> None:
            for step in static4_steps:
                step()

        steps["static_4"] = static_4
    ms, cpu_ms = measure(steps, args.repeats, args.warmup, device)
    pairs = {n: n for n in archs} | ({"4subnets": "4"} if four_subnets else {})
    out = {f"ratio_{key}": ms[f"super_{n}"] / ms[f"static_{n}"] for key, n in pairs.items()}
    if device.type == "cpu":
        out.update({f"cpu_time_ratio_{key}": cpu_ms[f"super_{n}"] / cpu_ms[f"static_{n}"]
                    for key, n in pairs.items()})
    out.update({f"ms_{k}": v for k, v in ms.items()})
    return out


def save_partial(result: dict[str, object]) -> None:
    """Write what is measured so far where ``MANTA_BENCH_PARTIAL`` points (a run cut off
    by a time limit still leaves its finished settings behind)."""
    path = os.environ.get("MANTA_BENCH_PARTIAL")
    if path:
        with open(path, "w") as fh:
            json.dump(result, fh, sort_keys=True, default=float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--supernet", default="ofa_mbv3")
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time torch.compile'd models (default: on CUDA only)")
    parser.add_argument("--compiled-subnets", default="mid",
                        help="comma-separated sub-networks (max,mid,min) timed compiled; each "
                             "costs two compilations, so the default is the middle one")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.resolution = args.resolution or (224 if cuda else 128)
    args.batch = args.batch or (256 if cuda else 8)
    args.repeats = args.repeats or (20 if cuda else 9)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = {"supernet": args.supernet, "resolution": args.resolution, "batch": args.batch,
                "repeats": args.repeats, "threads": torch.get_num_threads(),
                "optimizer": "SGD(momentum=0.9)", "torch": torch.__version__}
    start = time.perf_counter()
    result: dict[str, object] = {"device": torch.cuda.get_device_name(device) if cuda else "cpu"}
    compile_ = cuda if args.compile is None else args.compile
    result["settings"] = settings
    if cuda:
        torch.backends.cudnn.benchmark = True
        settings.update({"autocast": "bf16", "channels_last": True})
    torch._dynamo.config.cache_size_limit = 64
    result.update(run_setting(args, device, amp=cuda, channels_last=cuda, compile_=False))
    save_partial(result)
    if compile_:
        names = tuple(n.strip() for n in args.compiled_subnets.split(",") if n.strip())
        compiled = run_setting(args, device, amp=cuda, channels_last=cuda, compile_=True,
                               names=names, four_subnets=False)
        result.update({f"compiled_{k}": v for k, v in compiled.items()})
    result["wall_s"] = round(time.perf_counter() - start, 1)
    for key, value in result.items():
        if isinstance(value, float):
            print(f"{key:>24s}  {value:.3f}")
    print(json.dumps(result, sort_keys=True, default=float))


if __name__ == "__main__":
    main()
