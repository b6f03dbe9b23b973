"""The real supernet's masks cover every gradient an arch produces, and pack tightly."""

from __future__ import annotations

import pytest
import torch

from miner.distributed.layout import FlatLayout

supernet = pytest.importorskip("miner.automl.supernet")
space_mod = pytest.importorskip("miner.automl.space")


def _tiny():
    space = space_mod.SearchSpace(
        kernel_sizes=(3, 5), expand_ratios=(2.0, 4.0), depths=(1, 2), resolutions=(16,), n_stages=2
    )
    config = supernet.SupernetConfig(
        space=space,
        in_channels=1,
        num_classes=5,
        stem_width=8,
        stage_widths=(8, 16),
        stage_strides=(2, 2),
        stage_se=(False, True),
        stage_acts=("relu", "hswish"),
        head_width=32,
        feature_width=32,
        dropout=0.0,
    )
    torch.manual_seed(0)
    return supernet.OFASupernet(config)


def test_gradients_vanish_outside_the_masks_and_sparse_packing_is_tight() -> None:
    from miner.distributed.averager import supernet_masks

    torch.set_num_threads(1)
    model = _tiny()
    params = list(model.parameters())
    used_fn = supernet_masks(model)
    arch = model.space.min_arch()
    model.set_active(arch)
    model.zero_grad()
    model(torch.randn(4, 1, 16, 16)).square().mean().backward()
    masks = used_fn([arch])
    for p, m in zip(params, masks, strict=True):
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        assert not grad[~m].any()
    layout = FlatLayout.from_masks(masks)
    used_fraction = layout.size / layout.dense_size
    assert 0 < used_fraction < 1
    both = used_fn([arch, model.space.max_arch()])
    assert all(bool((b | ~m).all()) for b, m in zip(both, masks, strict=True))  # a superset
    assert FlatLayout.from_masks(both).size > layout.size
