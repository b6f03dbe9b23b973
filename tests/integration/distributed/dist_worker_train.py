"""A worker of the 2-miner × 2-process equivalence test (run by the launcher, not by pytest).

A stand-in for the elastic supernet: a 2-layer MLP whose hidden width is the arch's expand
ratio times 16, slicing the shared weights, so different sub-networks touch different
elements. Trains both schemes in turn. Usage: ``dist_worker_train.py MINER ADDRESSES_JSON
OUT_DIR``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import torch

from miner.automl.space import Arch, SearchSpace, sample_step, subnet_rng
from miner.distributed.averager import GradientAverager
from miner.distributed.bridge import AsyncBridge, BridgedExchange
from miner.distributed.config import WorkerEnv
from miner.distributed.exchange import ExchangeConfig, GradientExchange
from miner.distributed.rig import RigGroup, leave_and_exit
from miner.distributed.robust import RobustConfig
from miner.distributed.tcp_channel import TcpChannel

SPACE = SearchSpace(
    kernel_sizes=(3,), expand_ratios=(0.25, 0.5, 1.0), depths=(1,), resolutions=(8,), n_stages=1
)
SEED, STEPS, K, HIDDEN = 11, 4, 2, 16
SCHEMES = ("data_parallel", "per_node")


def init_params() -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    shapes = [(HIDDEN, 8), (HIDDEN,), (4, HIDDEN), (4,)]
    return [torch.nn.Parameter(torch.randn(s, generator=g) * 0.3) for s in shapes]


def width(arch: Arch) -> int:
    return int(HIDDEN * arch.expand[0])


def forward(params: list[torch.Tensor], x: torch.Tensor, arch: Arch) -> torch.Tensor:
    w1, b1, w2, b2 = params
    n = width(arch)
    return torch.relu(x @ w1[:n].T + b1[:n]) @ w2[:, :n].T + b2


def used_masks(archs: list[Arch]) -> list[torch.Tensor | None]:
    (arch,) = archs
    n = width(arch)
    masks = [torch.zeros(HIDDEN, 8, dtype=torch.bool), torch.zeros(HIDDEN, dtype=torch.bool)]
    masks[0][:n] = True
    masks[1][:n] = True
    w2 = torch.zeros(4, HIDDEN, dtype=torch.bool)
    w2[:, :n] = True
    return [masks[0], masks[1], w2, None]


def batch(step: int, miner: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + 10 * miner + rank)
    return torch.randn(8, 8, generator=g), torch.randint(0, 4, (8,), generator=g)


def archs_for(scheme: str, step: int, miner: int) -> list[Arch]:
    if scheme == "data_parallel":
        return sample_step(SPACE, SEED, step, K)
    return [SPACE.sample(subnet_rng(SEED, step, 100 * miner + k)) for k in range(K)]


def make_optimizer(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01)


def accumulate(params, scheme: str, step: int, miner: int, rank: int, scale: float = 1.0) -> None:
    x, y = batch(step, miner, rank)
    for arch in archs_for(scheme, step, miner):
        loss = torch.nn.functional.cross_entropy(forward(params, x, arch), y) * scale
        loss.backward()


def train(scheme: str, rig: RigGroup, cross, names: list[str], miner: int, first_round: int):
    """``STEPS`` steps of ``scheme``; all-reduce rounds are numbered from ``first_round``."""
    averager = GradientAverager(
        scheme,  # type: ignore[arg-type]
        used_masks=used_masks,
        rig=rig,
        cross=cross,
        peer_archs=lambda r: {
            n: archs_for(scheme, r - first_round, i) for i, n in enumerate(names)
        },
        across_miners=True,
    )
    params = init_params()
    opt = make_optimizer(params)
    for step in range(STEPS):
        opt.zero_grad(set_to_none=True)
        accumulate(params, scheme, step, miner, rig.env.rank)
        averager(first_round + step, params, archs_for(scheme, step, miner))
        averager.step(opt, params)
    return [p.detach() for p in params]


def main() -> None:
    miner_name, addresses_json, out_dir = sys.argv[1:4]
    addresses = {k: (h, int(p)) for k, (h, p) in json.loads(addresses_json).items()}
    names = sorted(addresses)
    miner = names.index(miner_name)
    rig = RigGroup.join(WorkerEnv.from_environ(os.environ), torch.device("cpu"), timeout_s=30)
    bridge = channel = None
    cross = None
    if rig.is_leader:
        bridge = AsyncBridge()
        channel = bridge.run(TcpChannel.create(miner_name, addresses))
        config = ExchangeConfig(round_timeout_s=60.0, robust=RobustConfig(clip="none"))
        cross = BridgedExchange(GradientExchange(channel, names, config), bridge)
    for i, scheme in enumerate(SCHEMES):
        weights = train(scheme, rig, cross, names, miner, first_round=100 * i)
        torch.save(weights, Path(out_dir) / f"{scheme}_{miner_name}_{rig.env.rank}.pt")
    if bridge is not None and channel is not None:
        # let the peer finish reading our last frames before the sockets close
        bridge.run(asyncio.sleep(0.2))
        bridge.close(channel.shutdown)
    leave_and_exit(rig)


if __name__ == "__main__":
    main()
