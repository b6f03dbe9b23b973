"""Unused elements stay put under momentum, weight decay and Adam."""

from __future__ import annotations

import pytest
import torch

from miner.distributed.optim_guard import keep_unused


def _make(opt_name: str) -> tuple[torch.nn.Parameter, torch.optim.Optimizer]:
    p = torch.nn.Parameter(torch.randn(4, 3, generator=torch.Generator().manual_seed(0)))
    if opt_name == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1)
    else:
        opt = torch.optim.AdamW([p], lr=0.1, weight_decay=0.1)
    return p, opt


@pytest.mark.parametrize("opt_name", ["sgd", "adamw"])
def test_unused_elements_do_not_move(opt_name: str) -> None:
    p, opt = _make(opt_name)
    ref, ref_opt = _make(opt_name)
    used = torch.zeros(4, 3, dtype=torch.bool)
    used[:2] = True
    for step in range(3):
        grad = torch.randn(4, 3, generator=torch.Generator().manual_seed(step + 1))
        # step 0 trains everything (momentum builds up), later steps only the used rows
        mask = None if step == 0 else used
        p.grad = grad if mask is None else grad * mask
        before = p.detach().clone()
        with keep_unused(opt, [p], [mask]):
            opt.step()
        ref.grad = p.grad.clone()
        ref_opt.step()
        if mask is not None:
            assert torch.equal(p.detach()[~used], before[~used])
            assert torch.allclose(p.detach()[used], ref.detach()[used], atol=1e-6)
    # the unguarded optimizer would have moved the unused rows on a zero gradient
    assert not torch.allclose(ref.detach()[~used], p.detach()[~used])


def test_state_of_unused_elements_is_kept() -> None:
    p, opt = _make("sgd")
    p.grad = torch.ones(4, 3)
    opt.step()
    buf = opt.state[p]["momentum_buffer"].clone()
    used = torch.zeros(4, 3, dtype=torch.bool)
    used[0] = True
    p.grad = torch.zeros(4, 3)
    with keep_unused(opt, [p], [used]):
        opt.step()
    assert torch.equal(opt.state[p]["momentum_buffer"][~used], buf[~used])
    assert not torch.equal(opt.state[p]["momentum_buffer"][used], buf[used])
