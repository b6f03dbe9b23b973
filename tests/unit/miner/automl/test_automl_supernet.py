"""The supernet: every registered variant (classification and stereo) runs, extracts
exactly, reorders losslessly."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from miner.automl.efficiency import layout_of
from miner.automl.errors import ArchError
from miner.automl.registry import create_supernet, list_supernets
from miner.automl.space import Arch, SearchSpace
from miner.automl.supernet import OFASupernet

# the big spaces at a small input size and a small classifier, so they run in a unit test
STEREO_SPACE = SearchSpace(kernel_sizes=(3, 5, 7), expand_ratios=(3.0, 4.0, 6.0),
                           depths=(1, 2, 3), resolutions=(32,), n_stages=6)
SMALL: dict[str, dict[str, Any]] = {
    "ofa_mbv3": {"space": SearchSpace(resolutions=(32, 40)), "num_classes": 10},
    "manta_mbv3": {"space": SearchSpace(resolutions=(32,)), "num_classes": 10},
    "ofa_dispnetc": {"space": STEREO_SPACE},  # 32x64 pairs (non-square)
    "ofa_dispnetc_tiny": {"space": SearchSpace((3, 5), (2.0, 3.0, 4.0), (1, 2), (32,), 6)},
}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: small tensors gain nothing from more, and the CPUs are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build(name: str, seed: int = 0) -> OFASupernet:
    torch.manual_seed(seed)
    net = create_supernet(name, **SMALL.get(name, {}))
    randomize(net, torch.Generator().manual_seed(seed))
    return net


@torch.no_grad()
def randomize(net: torch.nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BN statistics, SE biases and kernel transforms, so copies are checked."""
    for name, p in net.named_parameters():
        if "transforms" in name:
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
        elif p.ndim == 1:
            low = 0.75 if "weight" in name else -0.25
            p.copy_(torch.rand(p.shape, generator=gen) * 0.5 + low)
    for name, b in net.named_buffers():
        if name.endswith("running_mean"):
            b.copy_(0.1 * torch.randn(b.shape, generator=gen))
        elif name.endswith("running_var"):
            b.copy_(torch.rand(b.shape, generator=gen) + 0.5)


def inputs(net: OFASupernet, arch: Arch, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A batch of the input ``arch`` takes: images, or stereo pairs on channels."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *layout_of(net.config).input_shape(arch.resolution), generator=g)


def flat(y: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Logits, or every stereo prediction, as one vector."""
    parts = y if isinstance(y, tuple) else (y,)
    return torch.cat([t.detach().flatten() for t in parts])


def rel_err(a: Any, b: Any) -> float:
    a, b = flat(a), flat(b)
    return float((a - b).abs().max() / b.abs().max())


def check_output(net: OFASupernet, y: Any, x: torch.Tensor) -> None:
    """Logits [B, classes], or 7 disparity maps with the finest at the input size."""
    if net.task_kind == "stereo":
        assert len(y) == 7 and y[-1].shape == (x.shape[0], 1, *x.shape[-2:])
    else:
        assert y.shape == (x.shape[0], net.config.num_classes)
    assert torch.isfinite(flat(y)).all()


@pytest.fixture(scope="module", params=list_supernets())
def supernet(request: pytest.FixtureRequest) -> OFASupernet:
    return build(request.param)


def test_both_task_kinds_registered() -> None:
    assert {"ofa_mbv3", "ofa_mbv3_tiny", "ofa_dispnetc", "ofa_dispnetc_tiny"} <= set(
        list_supernets())


def test_forward_max_min_random(supernet: OFASupernet) -> None:
    space = supernet.space
    archs = [space.max_arch(), space.min_arch(), space.sample(np.random.default_rng(1))]
    supernet.eval()
    for arch in archs:
        supernet.set_active(arch)
        assert supernet.active_arch == space.canonical(arch)
        x = inputs(supernet, arch)
        check_output(supernet, supernet(x), x)


def test_extract_equals_supernet_on_random_subnets(supernet: OFASupernet) -> None:
    space = supernet.space
    rng = np.random.default_rng(7)
    n = 50 if supernet.task_kind == "classification" and supernet.config.in_channels == 1 else 8
    archs = [space.max_arch(), space.min_arch()] + [space.sample(rng) for _ in range(n)]
    supernet.eval()
    worst = 0.0
    for i, arch in enumerate(archs):
        supernet.set_active(arch)
        x = inputs(supernet, arch, seed=i)
        with torch.no_grad():
            want = supernet(x)
            got = supernet.extract(arch).eval()(x)
        worst = max(worst, rel_err(got, want))
    assert worst <= 1e-5


def test_extract_copies_and_keeps_active_arch(supernet: OFASupernet) -> None:
    space = supernet.space
    supernet.set_active(space.min_arch())
    net = supernet.extract(space.max_arch())
    assert supernet.active_arch == space.min_arch()
    stored = {p.data_ptr() for p in supernet.parameters()}
    assert not any(p.data_ptr() in stored for p in net.parameters())
    assert net.spec == supernet.spec(space.max_arch())


def test_reorder_channels_keeps_the_max_network() -> None:
    net = build("ofa_mbv3_tiny", seed=3).eval()
    arch = net.space.max_arch()
    net.set_active(arch)
    x = inputs(net, arch, batch=4)
    with torch.no_grad():
        before = net(x)
        expand_before = net.blocks[1].expand_conv.weight.clone()
        net.reorder_channels()
        after = net(x)
    assert rel_err(after, before) <= 1e-5
    assert not torch.equal(expand_before, net.blocks[1].expand_conv.weight)
    importance = net.blocks[1].project_conv.weight.abs().sum(dim=(0, 2, 3))
    assert (importance[:-1] >= importance[1:]).all()


def test_parameters_used_bounds_the_gradient() -> None:
    net = build("ofa_mbv3_tiny", seed=1).train()
    arch = net.space.sample(np.random.default_rng(5))
    net.set_active(arch)
    logits = net(inputs(net, arch, batch=4))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    masks = net.parameter_masks(arch)
    used = {name for name, _, _ in net.parameters_used(arch)}
    for name, p in net.named_parameters():
        grad = torch.zeros_like(p) if p.grad is None else p.grad
        assert not grad[~masks[name]].any(), name
        if name in used:
            assert grad[masks[name]].any(), name
    # an inactive slot is untouched
    last_slot = net.space.max_depth - 1
    if arch.depth[0] < net.space.max_depth:
        assert not masks[f"blocks.{last_slot}.dw_conv.weight"].any()


def test_bn_modules_follow_the_arch() -> None:
    net = build("ofa_mbv3_tiny")
    space = net.space
    n_max, n_min = len(net.bn_modules(space.max_arch())), len(net.bn_modules(space.min_arch()))
    assert n_max - n_min == 3 * (space.n_slots - space.n_stages * space.depths[0])


def test_set_active_rejects_foreign_arch() -> None:
    net = build("ofa_mbv3_tiny")
    bad = net.space.max_arch()
    with pytest.raises(ArchError):
        net.set_active(Arch(kernel=(9,) * len(bad.kernel), expand=bad.expand, depth=bad.depth,
                            resolution=bad.resolution))


def test_training_step_matches_the_static_network() -> None:
    """Train mode (batch statistics): same outputs, and the static grads are the used slices."""
    net = build("ofa_mbv3_tiny", seed=2).train()
    arch = net.space.sample(np.random.default_rng(11))
    net.set_active(arch)
    static = net.extract(arch).train()
    x, y = inputs(net, arch, batch=4), torch.tensor([1, 2, 3, 4])
    out_super, out_static = net(x), static(x)
    assert rel_err(out_super, out_static) <= 1e-5
    torch.nn.functional.cross_entropy(out_super, y).backward()
    torch.nn.functional.cross_entropy(out_static, y).backward()
    slot = net.space.active(arch)[2][-1]
    block = net.blocks[slot]
    static_block = static.blocks[sum(arch.depth[:3])]  # after the fixed first block
    mid = block.active_mid
    got = block.project_conv.weight.grad[:, :mid]
    want = static_block.project[0].weight.grad
    assert want is not None and rel_err(got, want) <= 1e-4
