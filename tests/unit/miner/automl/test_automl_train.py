"""Progressive-shrinking training: the plan, one step, the loop, and exact resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from miner.automl.checkpoint import CheckpointStore
from miner.automl.config import PhaseConfig, TrainConfig
from miner.automl.data import ImageDataset, load_dataset
from miner.automl.errors import CheckpointError
from miner.automl.train import LossConfig, Trainer, build_supernet, make_plan, train_step

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
    "dropout": 0.1,
}


def _config(**kw) -> TrainConfig:
    phases = (
        PhaseConfig(name="full", steps=2, lr=0.1, subnets_per_step=1),
        PhaseConfig(name="width", steps=6, lr=0.05, subnets_per_step=3),
    )
    args = {
        "overrides": MICRO,
        "batch_size": 8,
        "synthetic_size": 40,
        "phases": phases,
        "checkpoint_every_steps": 3,
    }
    return TrainConfig(**(args | kw))


def _data(config: TrainConfig) -> ImageDataset:
    return load_dataset(
        "synthetic",
        image_size=16,
        in_channels=1,
        num_classes=10,
        synthetic_size=config.synthetic_size,
        seed=config.seed,
    )


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_plan_counts_steps_and_decays_lr() -> None:
    config = TrainConfig(
        overrides=MICRO,
        phases=(PhaseConfig(name="full", epochs=1.5, lr=0.2), PhaseConfig(name="kernel", steps=4)),
    )
    plan = make_plan(config, build_supernet(config).space, batches_per_epoch=10)
    assert [p.steps for p in plan.phases] == [15, 4] and plan.total_steps == 19
    assert plan.locate(0) == (0, 0) and plan.locate(15) == (1, 0) and plan.locate(19) == (2, 0)
    full = plan.phases[0]
    assert full.lr_at(0) == pytest.approx(0.2)
    assert full.lr_at(15 // 2) == pytest.approx(0.1 * (1 + math.cos(math.pi * 7 / 15)))
    assert plan.phases[1].space.kernel_sizes == (3, 5)


def test_step_calls_the_hook_once_before_the_update() -> None:
    config = _config()
    net = build_supernet(config)
    space = net.space
    archs = [space.max_arch(), space.min_arch()]
    calls = []

    def zero_grads(params, used):
        calls.append(list(used))
        assert all(p.grad is not None for n, p in params if n.startswith("classifier"))
        for _, p in params:
            if p.grad is not None:
                p.grad.zero_()

    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    x, y = torch.randn(8, 1, 16, 16), torch.arange(8)
    outcome = train_step(net, optimizer, x, y, archs, LossConfig(), space.max_arch(), zero_grads)
    assert calls == [archs] and len(outcome.losses) == 2
    after = dict(net.named_parameters())
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(("sandwich", "forwards"), [(True, 3), (False, 4)])
def test_teacher_is_computed_once_per_step(sandwich: bool, forwards: int) -> None:
    config = _config()
    net = build_supernet(config)
    count = []
    net.classifier.register_forward_hook(lambda *a: count.append(1))
    space = net.space
    archs = (
        [space.max_arch(), space.min_arch(), space.min_arch()]
        if sandwich
        else [space.min_arch()] * 3
    )
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(8, 1, 16, 16), torch.arange(8)
    train_step(net, optimizer, x, y, archs, LossConfig(distill_weight=1.0), space.max_arch())
    assert len(count) == forwards


def test_loop_reports_progress_and_learns() -> None:
    phases = (
        PhaseConfig(name="full", steps=30, lr=0.2, subnets_per_step=1),
        PhaseConfig(name="kernel", steps=2, lr=0.05, subnets_per_step=2),
    )
    config = _config(phases=phases, synthetic_size=64, distill_weight=0.5)
    reports = []
    trainer = Trainer(config, build_supernet(config), _data(config), on_progress=reports.append)
    trainer.run()
    assert trainer.done and [r.global_step for r in reports] == list(range(1, 33))
    assert {r.phase for r in reports} == {"full", "kernel"}
    assert (
        len(reports[-1].losses) == 2
        and reports[-1].archs[0] == trainer.plan.phases[1].space.max_arch()
    )
    first = sum(r.losses[0] for r in reports[:5]) / 5
    last = sum(r.losses[0] for r in reports[25:30]) / 5
    assert last < first - 0.2


def _weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize(("crash_at", "every"), [(5, 3), (2, 100)])
def test_resume_after_a_crash_equals_training_straight(
    tmp_path: Path, crash_at: int, every: int
) -> None:
    config = _config(checkpoint_every_steps=every)
    data = _data(config)
    global_rng = torch.get_rng_state()
    straight = Trainer(config, build_supernet(config), data)
    straight.run()
    assert torch.equal(torch.get_rng_state(), global_rng)  # training leaves the global RNG alone

    store = CheckpointStore(tmp_path)
    first = Trainer(config, build_supernet(config), data, store=store)
    first.run(until_step=crash_at)
    del first  # the crash: everything in memory is gone
    resumed = Trainer(config, build_supernet(config), data, store=CheckpointStore(tmp_path))
    assert resumed.resume() and resumed.global_step == min(crash_at, 3 if every == 3 else 2)
    resumed.run()
    a, b = _weights(straight.net), _weights(resumed.net)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6, rtol=0), key


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path: Path) -> None:
    config = _config()
    Trainer(config, build_supernet(config), _data(config), store=CheckpointStore(tmp_path)).run(3)
    other = _config(seed=9)
    trainer = Trainer(other, build_supernet(other), _data(other), store=CheckpointStore(tmp_path))
    with pytest.raises(CheckpointError, match="this run's config"):
        trainer.resume()
