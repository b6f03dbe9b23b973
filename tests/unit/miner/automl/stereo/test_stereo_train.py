"""Stereo training pieces: the sandwich step learns, recalibration and evaluation."""

from __future__ import annotations

import torch

from miner.automl.space import SearchSpace
from miner.automl.stereo.procedural import SceneConfig, render_batch
from miner.automl.stereo.supernet import create_stereo_supernet
from miner.automl.stereo.train import evaluate_stereo, recalibrate_stereo_bn, stereo_train_step


def tiny_net():  # type: ignore[no-untyped-def]
    space = SearchSpace(kernel_sizes=(3, 5), expand_ratios=(2.0, 4.0), depths=(1, 2),
                        resolutions=(32,), n_stages=6)
    return create_stereo_supernet("ofa_dispnetc_tiny", space=space, max_displacement=4)


def test_stereo_train_step_reduces_the_loss() -> None:
    torch.manual_seed(0)
    net = tiny_net()
    x, d = (torch.from_numpy(a) for a in render_batch(SceneConfig(32, 64, 1, 12), [0, 1]))
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    archs = [net.space.max_arch(), net.space.min_arch()]
    weights = (0.0,) * 6 + (1.0,)
    first = stereo_train_step(net, opt, x, d, archs, weights, 16.0)
    calls = []
    for _ in range(4):
        last = stereo_train_step(net, opt, x, d, archs, weights, 16.0,
                                 hook=lambda params, a: calls.append(len(a)))
    assert calls == [2] * 4
    assert last.losses[0] < 0.8 * first.losses[0]
    assert last.losses[1] < 0.8 * first.losses[1]


def test_stereo_recalibration_and_evaluation() -> None:
    torch.manual_seed(0)
    net = tiny_net()
    x, d = (torch.from_numpy(a) for a in render_batch(SceneConfig(32, 64, 1, 12), [0, 1, 2]))
    arch = net.space.min_arch()
    untouched = net.head.redirect[1].running_mean.clone()
    wide = net.blocks[0].expand_bn
    tail_before = wide.running_mean[wide.num_features // 2:].clone()
    assert recalibrate_stereo_bn(net, arch, [x[:2], x[2:]]) == 2
    assert not torch.equal(net.head.redirect[1].running_mean, untouched)
    used = net.blocks[0].active_mid
    assert used < wide.num_features
    assert torch.equal(wide.running_mean[used:], tail_before[used - wide.num_features // 2:])
    assert not net.training
    metrics = evaluate_stereo(net, x, d, 16.0, batch_size=2)
    assert metrics["pixels"] == float(((d > 0) & (d < 16)).sum())
    assert metrics["epe"] > 0 and 0 <= metrics["d1"] <= 1
