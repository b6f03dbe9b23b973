"""The averager inside the trainer's real step: two miners stay identical replicas."""

from __future__ import annotations

import threading

import pytest
import torch

from miner.distributed.averager import GradientAverager, supernet_masks
from miner.distributed.bridge import AsyncBridge, BridgedExchange
from miner.distributed.channel import InMemoryHub
from miner.distributed.exchange import ExchangeConfig, GradientExchange
from miner.distributed.robust import RobustConfig
from miner.distributed.trainer_hook import TrainerHook

registry = pytest.importorskip("miner.automl.registry")
step_mod = pytest.importorskip("miner.automl.train.step")
space_mod = pytest.importorskip("miner.automl.space")

MINERS = ["0xa", "0xb"]
STEPS = 3


def _net():
    torch.manual_seed(0)  # same initial weights on both miners (built before the threads run)
    return registry.create_supernet("ofa_mbv3_tiny")


def _space(net):
    return net.space.restrict(kernel_sizes=(3,), expand_ratios=(3.0,))


def _miner(index: int, net, hook: TrainerHook, out: dict[int, list[torch.Tensor]]) -> None:
    hook.averager.used_masks = supernet_masks(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    hook.attach(optimizer)
    g = torch.Generator().manual_seed(100 + index)  # each miner its own data
    space = _space(net)
    for step in range(STEPS):
        x, y = torch.randn(4, 1, 20, 20, generator=g), torch.randint(0, 10, (4,), generator=g)
        archs = space_mod.sample_step(space, 5, step, 2)
        step_mod.train_step(net, optimizer, x, y, archs, step_mod.LossConfig(), None, hook)
    out[index] = [p.detach().clone() for p in net.parameters()]


def test_two_miners_in_the_real_train_step_stay_identical() -> None:
    torch.set_num_threads(1)
    bridge, hub = AsyncBridge(), InMemoryHub()
    config = ExchangeConfig(round_timeout_s=30.0, robust=RobustConfig(clip="none"))
    hooks = []
    for name in MINERS:
        exchange = GradientExchange(hub.channel(name), MINERS, config)
        averager = GradientAverager("data_parallel", cross=BridgedExchange(exchange, bridge))
        hooks.append(TrainerHook(averager))
    out: dict[int, list[torch.Tensor]] = {}
    try:
        threads = [
            threading.Thread(target=_miner, args=(i, _net(), h, out)) for i, h in enumerate(hooks)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        bridge.close()
    net = _net()
    start = [p.detach() for p in net.parameters()]
    archs = [a for step in range(STEPS) for a in space_mod.sample_step(_space(net), 5, step, 2)]
    trained = supernet_masks(net)(archs)
    assert all(torch.equal(a, b) for a, b in zip(out[0], out[1], strict=True))
    assert any(not torch.equal(a, s) for a, s in zip(out[0], start, strict=True))
    untouched = sum(int((~m).sum()) for m in trained)
    assert untouched > 0
    for a, s, m in zip(out[0], start, trained, strict=True):
        # nobody trained these elements: momentum and weight decay must not have moved them
        assert torch.equal(a[~m], s[~m])
    assert all(h.next_step == STEPS for h in hooks)
    assert hooks[0].averager.last is not None
    assert hooks[0].averager.last.report.contributed == tuple(MINERS)
