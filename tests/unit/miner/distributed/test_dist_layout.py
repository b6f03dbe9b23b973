"""Packing used elements into one flat buffer and back."""

from __future__ import annotations

import pytest
import torch

from miner.distributed.errors import LayoutError
from miner.distributed.layout import FlatLayout, union_masks


def _masks() -> list[torch.Tensor]:
    a = torch.zeros(3, 4, dtype=torch.bool)
    a[:2, :3] = True
    b = torch.ones(5, dtype=torch.bool)
    c = torch.zeros(2, 2, dtype=torch.bool)
    return [a, b, c]


def test_pack_takes_exactly_the_used_elements() -> None:
    masks = _masks()
    layout = FlatLayout.from_masks(masks)
    tensors = [torch.randn(m.shape) for m in masks]
    flat = layout.pack(tensors)
    assert layout.size == 6 + 5 + 0 == flat.numel()
    assert layout.dense_size == 12 + 5 + 4
    want = torch.cat([t[m] for t, m in zip(tensors, masks, strict=True)])
    assert torch.equal(flat, want)


def test_unpack_writes_used_and_leaves_the_rest() -> None:
    masks = _masks()
    layout = FlatLayout.from_masks(masks)
    targets = [torch.full(m.shape, -1.0) for m in masks]
    layout.unpack(torch.arange(layout.size, dtype=torch.float32), targets)
    assert targets[0][~masks[0]].eq(-1).all()
    assert targets[0][masks[0]].tolist() == [0, 1, 2, 3, 4, 5]
    assert targets[2].eq(-1).all()


def test_restrict_and_to_masks_roundtrip() -> None:
    masks = _masks()
    layout = FlatLayout.from_masks(masks)
    peer = [m.clone() for m in masks]
    peer[0][0, :] = False
    flat = layout.restrict(peer)
    assert int(flat.sum()) == 3 + 5
    back = layout.to_masks(flat)
    assert all(torch.equal(x, y) for x, y in zip(back, peer, strict=True))


def test_union_and_checks() -> None:
    x = [torch.tensor([True, False]), torch.tensor([False])]
    y = [torch.tensor([False, True]), torch.tensor([False])]
    assert [m.tolist() for m in union_masks([x, y])] == [[True, True], [False]]
    layout = FlatLayout.dense([torch.zeros(2), torch.zeros(1)])
    with pytest.raises(LayoutError):
        layout.pack([torch.zeros(3), torch.zeros(1)])
    with pytest.raises(LayoutError):
        layout.unpack(torch.zeros(5), [torch.zeros(2), torch.zeros(1)])
