"""Stereo training on the shared engine: the stereo task head in ``train_step``, the
``Trainer`` with progressive shrinking, ``recalibrate_bn`` and ``evaluate_metric``."""

from __future__ import annotations

import pytest
import torch

from miner.automl.calibrate import recalibrate_bn
from miner.automl.config import PhaseConfig, TrainConfig
from miner.automl.data import procedural_stereo
from miner.automl.errors import DatasetError
from miner.automl.registry import create_supernet
from miner.automl.stereo.loss import ScaleSchedule, default_schedule
from miner.automl.stereo.procedural import SceneConfig, render_batch
from miner.automl.stereo.supernet import OFADispNetC
from miner.automl.train import (
    StepReport,
    StereoTask,
    Trainer,
    build_supernet,
    evaluate_metric,
    make_task,
    score,
    train_step,
)

FINE_ONLY = ScaleSchedule(((0.0, (0.0,) * 6 + (1.0,)),))


def micro() -> OFADispNetC:
    net = create_supernet("ofa_dispnetc_micro")
    assert isinstance(net, OFADispNetC)
    return net


def pairs(seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    x, d = render_batch(SceneConfig(32, 64, 1, 12), seeds)
    return torch.from_numpy(x), torch.from_numpy(d)


def test_the_supernet_picks_the_stereo_head() -> None:
    task = make_task(micro(), TrainConfig(supernet="ofa_dispnetc_micro", distill_weight=0.5))
    assert isinstance(task, StereoTask)
    assert (task.metric, task.higher_is_better, task.max_disparity) == ("epe", False, 16.0)
    assert task.distill_weight == 0.5 and score(task, 1.25) == -1.25
    schedule = ((0.0, (1.0,) * 7), (1.0, (0.0,) * 6 + (1.0,)))
    custom = make_task(micro(), TrainConfig(scale_schedule=schedule))
    assert isinstance(custom, StereoTask) and custom.schedule.weights(1.0)[0] == 0.0


def test_train_step_with_the_stereo_head_reduces_the_loss() -> None:
    torch.manual_seed(0)
    net = micro()
    x, d = pairs([0, 1])
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    archs = [net.space.max_arch(), net.space.min_arch()]
    task = StereoTask(16.0, FINE_ONLY)
    first = train_step(net, opt, x, d, archs, task, None)
    calls = []
    for _ in range(4):
        last = train_step(net, opt, x, d, archs, task, None,
                          hook=lambda params, a: calls.append(len(a)))
    assert calls == [2] * 4
    assert last.losses[0] < 0.8 * first.losses[0]
    assert last.losses[1] < 0.8 * first.losses[1]
    assert all(e > 0 for e in last.accuracies)  # the batch EPE of each sub-network


def test_the_loss_weights_follow_training_progress() -> None:
    torch.manual_seed(0)
    net = micro().eval()
    x, d = pairs([3])
    task = StereoTask(16.0, default_schedule())
    with torch.no_grad():
        out = net(x)
        early, late = task.loss(out, d, None, 0.0), task.loss(out, d, None, 1.0)
    assert not torch.isclose(early, late)


def test_a_lower_resolution_input_is_scored_in_target_pixels() -> None:
    task = StereoTask(16.0, FINE_ONLY)
    d = torch.full((1, 8, 16), 4.0)
    half = (torch.full((1, 1, 4, 8), 2.0),)  # 2 px at half width = 4 px at full width
    assert task.metric_sums(half, d) == (0.0, 128)


def test_recalibration_and_evaluation_serve_stereo() -> None:
    torch.manual_seed(0)
    net = micro()
    data = procedural_stereo(6, 32, 64, 12.0, seed=0)
    arch = net.space.min_arch()
    untouched = net.head.redirect[1].running_mean.clone()
    wide = net.blocks[0].expand_bn
    tail_before = wide.running_mean[wide.num_features // 2:].clone()
    assert recalibrate_bn(net, arch, [data.x[:2], data.x[2:4]]) == 2
    assert not torch.equal(net.head.redirect[1].running_mean, untouched)
    used = net.blocks[0].active_mid
    assert used < wide.num_features
    assert torch.equal(wide.running_mean[used:], tail_before[used - wide.num_features // 2:])
    assert not net.training
    task = StereoTask(16.0)
    epe = evaluate_metric(net, arch, data, task, batch_size=4)
    one_batch = evaluate_metric(net, arch, data, task, batch_size=6)
    assert epe > 0 and abs(epe - one_batch) < 1e-5
    static = net.extract(arch)
    assert abs(evaluate_metric(static, None, data, task, batch_size=3) - epe) < 1e-4


def test_the_shared_trainer_runs_progressive_shrinking_on_stereo() -> None:
    config = TrainConfig(
        supernet="ofa_dispnetc_micro", dataset="procedural-stereo", batch_size=4,
        optimizer="adamw", distill_weight=0.5, checkpoint_every_steps=100,
        phases=(PhaseConfig(name="full", steps=6, lr=3e-3, subnets_per_step=1),
                PhaseConfig(name="width", steps=3, lr=1e-3, subnets_per_step=3)),
    )
    net = build_supernet(config)
    data = procedural_stereo(16, 32, 64, 12.0, seed=0)
    reports: list[StepReport] = []
    trainer = Trainer(config, net, data, on_progress=reports.append)
    assert isinstance(trainer.optimizer, type(None))
    trainer.run()
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    assert [r.phase for r in reports] == ["full"] * 6 + ["width"] * 3
    assert {r.metric for r in reports} == {"epe"}
    assert len(reports[-1].losses) == 3
    assert all(torch.isfinite(torch.tensor(r.losses)).all() for r in reports)
    assert reports[5].losses[0] < reports[0].losses[0]


def test_the_procedural_stereo_set_is_seeded_and_checked() -> None:
    a, b = procedural_stereo(4, 32, 64, 12.0, seed=3), procedural_stereo(4, 32, 64, 12.0, seed=3)
    assert a.x.shape == (4, 6, 32, 64) and a.y.shape == (4, 32, 64) and a.num_classes == 0
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, procedural_stereo(4, 32, 64, 12.0, seed=4).x)
    assert float(a.y.max()) <= 12.0 + 1e-4
    with pytest.raises(DatasetError, match="disparities up to 80"):
        procedural_stereo(4, 32, 64, 80.0, seed=0)
