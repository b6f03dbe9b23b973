"""2 miners × 2 Gloo processes give the weights of one process averaging the same gradients."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from miner.distributed.launch import LaunchConfig, WorkerGroup
from miner.distributed.optim_guard import keep_unused
from node.ports import free_port

WORKER = Path(__file__).with_name("dist_worker_train.py")
MINERS = ["miner0", "miner1"]
RANKS = 2


def _worker_module():
    spec = importlib.util.spec_from_file_location("dist_worker_train", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reference(w, scheme: str) -> tuple[list[torch.Tensor], bool]:
    """One process: accumulate every replica's gradients and apply the masked mean.

    Also says whether some element was used by one miner only (where DDP's rule differs).
    """
    partial = False
    params = w.init_params()
    opt = w.make_optimizer(params)
    for step in range(w.STEPS):
        per_miner, masks = [], []
        for m in range(len(MINERS)):
            opt.zero_grad(set_to_none=True)
            for rank in range(RANKS):
                w.accumulate(params, scheme, step, m, rank, scale=1.0 / RANKS)
            per_miner.append([p.grad.clone() for p in params])
            archs = w.archs_for(scheme, step, m)
            used = [w.used_masks([a]) for a in archs]
            masks.append(
                [
                    torch.stack(
                        [
                            torch.ones_like(p, dtype=torch.bool) if u[i] is None else u[i]
                            for u in used
                        ]
                    ).any(0)
                    for i, p in enumerate(params)
                ]
            )
        updated = []
        for i, p in enumerate(params):
            count = sum(mk[i].float() for mk in masks)
            total = sum(g[i] * mk[i] for g, mk in zip(per_miner, masks, strict=True))
            p.grad = torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
            updated.append(count > 0)
            partial |= bool((count == 1).any())
        with keep_unused(opt, params, updated):
            opt.step()
    return [p.detach() for p in params], partial


@pytest.mark.slow
def test_two_miners_two_processes_match_one_process(tmp_path: Path) -> None:
    """Scheme 1 and scheme 2 in one launch (4 workers, 2 rigs of 2, TCP between leaders)."""
    torch.set_num_threads(1)
    addresses = {name: ("127.0.0.1", free_port()) for name in MINERS}
    groups = [
        WorkerGroup.start(
            [sys.executable, str(WORKER), name, json.dumps(addresses), str(tmp_path)],
            LaunchConfig(nproc_per_node=RANKS),
        )
        for name in MINERS
    ]
    try:
        for group in groups:
            group.wait(timeout_s=120)
    finally:
        for group in groups:
            group.stop()
    w = _worker_module()
    for scheme in w.SCHEMES:
        want, partial = _reference(w, scheme)
        assert partial == (scheme == "per_node")  # elements used by one miner only
        for name in MINERS:
            for rank in range(RANKS):
                got = torch.load(tmp_path / f"{scheme}_{name}_{rank}.pt")
                for g, w_ in zip(got, want, strict=True):
                    assert torch.allclose(g, w_, atol=1e-5), (scheme, name, rank)
        # training moved the weights
        assert any(not torch.allclose(w_, s) for w_, s in zip(want, w.init_params(), strict=True))
