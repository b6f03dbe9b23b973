"""BatchNorm recalibration touches exactly the chosen sub-network's channels."""

from __future__ import annotations

import torch

from miner.automl.calibrate import recalibrate_bn
from miner.automl.config import TrainConfig
from miner.automl.space import Arch
from miner.automl.train import build_supernet

MICRO = {
    "space": {
        "kernel_sizes": [3, 5],
        "expand_ratios": [2.0, 3.0],
        "depths": [1, 2],
        "resolutions": [12, 16],
        "n_stages": 2,
    },
    "stem_width": 8,
    "stage_widths": [8, 16],
    "stage_strides": [2, 2],
    "stage_se": [False, True],
    "stage_acts": ["relu", "hswish"],
    "head_width": 32,
    "feature_width": 64,
}


def _net():
    torch.set_num_threads(1)
    net = build_supernet(TrainConfig(overrides=MICRO))
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.fill_(7.0)
        bn.running_var.fill_(9.0)
    return net


def test_stem_statistics_are_the_average_of_batch_statistics() -> None:
    net = _net()
    arch = net.space.min_arch()
    batches = [torch.randn(6, 1, 16, 16) * (i + 1) for i in range(3)]
    n = recalibrate_bn(net, arch, batches)
    assert n == 3 and not net.training and net.active_arch == arch
    conv = net.stem[0]
    with torch.no_grad():
        feats = [
            conv(torch.nn.functional.interpolate(b, size=(12, 12), mode="bilinear"))
            for b in batches
        ]
    mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in feats]).mean(0)
    bn = net.stem[1]
    assert torch.allclose(bn.running_mean, mean, atol=1e-5)
    assert torch.allclose(bn.running_var, var, rtol=1e-4)
    assert bn.momentum == 0.1


def test_unused_channels_and_blocks_are_untouched() -> None:
    net = _net()
    space = net.space
    arch = space.canonical(
        Arch(
            kernel=(3,) * space.n_slots, expand=(2.0,) * space.n_slots, depth=(1, 1), resolution=16
        )
    )
    recalibrate_bn(net, arch, [torch.randn(4, 1, 16, 16)])
    block = net.blocks[0]  # slot 0 active with expand 2 of max 3
    used = block.cfg.mid_channels(2.0)
    assert used < block.dw_bn.running_mean.numel()
    assert not torch.all(block.dw_bn.running_mean[:used] == 7.0)
    assert torch.all(block.dw_bn.running_mean[used:] == 7.0)
    assert torch.all(block.dw_bn.running_var[used:] == 9.0)
    idle = net.blocks[1]  # slot 1 inactive at depth 1
    assert torch.all(idle.dw_bn.running_mean == 7.0) and torch.all(
        idle.project_bn.running_var == 9.0
    )


def test_no_batches_changes_nothing() -> None:
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert recalibrate_bn(net, net.space.max_arch(), []) == 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
