"""The stereo supernet through the engine's shared pieces: registry, shapes, extraction,
costs (analytic = traced = tables), masks, export and search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from miner.automl.efficiency import (
    count_flops,
    count_params,
    flops_table,
    latency_report,
    latency_table,
    layout_of,
    params_table,
    trace_flops,
)
from miner.automl.errors import ArchError, CheckpointError, UnknownSupernetError
from miner.automl.export import export_subnet, load_exported, load_exported_arch
from miner.automl.registry import create_supernet, list_supernets, supernet_config
from miner.automl.search import SearchConfig, SearchProblem, evolve
from miner.automl.space import Arch, SearchSpace
from miner.automl.stereo.static_net import StereoNetSpec
from miner.automl.stereo.supernet import OFADispNetC, StereoConfig

H, W = 32, 64


def small_space() -> SearchSpace:
    return SearchSpace(kernel_sizes=(3, 5), expand_ratios=(2.0, 3.0, 4.0), depths=(1, 2),
                       resolutions=(16, 32), n_stages=6)


@pytest.fixture(scope="module")
def net() -> OFADispNetC:
    torch.manual_seed(0)
    model = create_supernet("ofa_dispnetc_tiny", space=small_space(), max_displacement=4)
    assert isinstance(model, OFADispNetC)
    # a couple of train-mode passes so BatchNorm statistics are not the identity
    with torch.no_grad():
        for arch in (model.space.max_arch(), model.space.min_arch()):
            model.set_active(arch)
            model(torch.randn(2, 6, H, W))
    return model.eval()


def archs(space: SearchSpace) -> list[Arch]:
    rng = np.random.default_rng(3)
    return [space.max_arch(), space.min_arch(), space.sample(rng), space.sample(rng)]


def test_stereo_variants_share_the_one_registry() -> None:
    assert {"ofa_dispnetc", "ofa_dispnetc_tiny", "ofa_dispnetc_micro",
            "ofa_mbv3_tiny"} <= set(list_supernets())
    with pytest.raises(UnknownSupernetError, match="did you mean"):
        create_supernet("ofa_dispnet_tiny")
    full = supernet_config("ofa_dispnetc")
    assert isinstance(full, StereoConfig)
    assert full.max_displacement == 40 and full.space.kernel_sizes == (3, 5, 7)
    assert full.max_disparity == 160.0
    assert isinstance(create_supernet("ofa_dispnetc_micro"), OFADispNetC)


def test_stereo_forward_predicts_seven_scales(net: OFADispNetC) -> None:
    net.set_active(net.space.max_arch())
    preds = net(torch.randn(2, 6, H, W))
    assert len(preds) == 7
    assert preds[-1].shape == (2, 1, H, W)
    assert preds[0].shape == (2, 1, H // 16, W // 16)
    with pytest.raises(ValueError, match="multiple of stride"):
        net(torch.randn(1, 6, 30, 64))


@torch.no_grad()
def test_stereo_extract_equals_supernet(net: OFADispNetC) -> None:
    x = torch.randn(2, 6, H, W)
    for arch in archs(net.space):
        net.set_active(arch)
        expected = net(x)
        got = net.extract(arch).eval()(x)
        for a, b in zip(got, expected, strict=True):
            rel = float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))
            assert rel <= 1e-5


def test_stereo_subnets_differ_and_share_weights(net: OFADispNetC) -> None:
    x = torch.randn(1, 6, H, W)
    net.set_active(net.space.max_arch())
    big = net(x)[-1]
    net.set_active(net.space.min_arch())
    small = net(x)[-1]
    assert not torch.allclose(big, small)
    masks = net.parameter_masks(net.space.min_arch())
    full = net.parameter_masks(net.space.max_arch())
    n_min = sum(int(m.sum()) for m in masks.values())
    n_max = sum(int(m.sum()) for m in full.values())
    assert n_min < n_max
    # slot 1 (second block of stage 1) runs only when the stage has depth 2
    second = [k for k in masks if k.startswith("blocks.1.")]
    assert second and not any(bool(masks[k].any()) for k in second)
    assert any(bool(full[k].any()) for k in second)


def test_stereo_costs_analytic_traced_and_tables_agree(net: OFADispNetC) -> None:
    config = net.config
    flops, params = flops_table(config), params_table(config)
    layout = layout_of(config)
    for arch in archs(net.space):
        static = net.extract(arch)
        shape = (1, *layout.input_shape(arch.resolution))
        assert shape[1:] == (6, arch.resolution, 2 * arch.resolution)
        analytic = count_flops(config, arch)
        # the trace counts Conv2d, ConvTranspose2d and the correlation layer
        assert analytic == trace_flops(static, shape) == flops.of(arch)
        n_params = sum(p.numel() for p in static.parameters())
        assert count_params(config, arch) == n_params == params.of(arch)
    space = net.space
    assert flops.of(space.min_arch()) < flops.of(space.max_arch())


def test_the_trace_counts_transposed_convs_and_the_correlation(net: OFADispNetC) -> None:
    static = net.extract(net.space.min_arch())
    with_all = trace_flops(static, (1, 6, H, W))
    static.head.correlation.macs = lambda inputs, out: 0  # type: ignore[method-assign]
    without_corr = trace_flops(static, (1, 6, H, W))
    feats = 32 * (H // 4) * (W // 4)  # stage-3 width x feature pixels
    assert with_all - without_corr == feats * 5  # C * (D + 1) per pixel, D = 4


def test_stereo_reorder_keeps_the_largest_function() -> None:
    torch.manual_seed(1)
    model = create_supernet("ofa_dispnetc_tiny", space=small_space(), max_displacement=4).eval()
    x = torch.randn(1, 6, H, W)
    model.set_active(model.space.max_arch())
    before = model(x)[-1]
    model.reorder_channels()
    torch.testing.assert_close(model(x)[-1], before, rtol=1e-4, atol=1e-5)


def test_stereo_export_round_trip_and_program(net: OFADispNetC, tmp_path: Path) -> None:
    arch = archs(net.space)[2]
    out = export_subnet(net, arch, tmp_path / "export")
    loaded = load_exported(tmp_path / "export")
    x = torch.randn(3, 6, arch.resolution, 2 * arch.resolution)
    net.set_active(arch)
    want = net(x)
    for a, b in zip(loaded(x), want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert out.program_path is not None
    program = torch.export.load(str(out.program_path)).module()
    torch.testing.assert_close(program(x)[-1], want[-1], rtol=1e-5, atol=1e-5)
    description = json.loads(out.arch_path.read_text())
    assert description["input_shape"] == [6, arch.resolution, 2 * arch.resolution]
    assert description["flops"] == count_flops(net.config, arch)
    assert load_exported_arch(tmp_path / "export") == net.space.canonical(arch)
    assert len(out.weights_sha256) == 64
    spec = loaded.spec
    assert StereoNetSpec.from_dict(spec.to_dict()) == spec
    (tmp_path / "export" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        load_exported(tmp_path / "export")


def test_stereo_bad_arch_is_refused(net: OFADispNetC) -> None:
    arch = net.space.max_arch()
    bad = Arch(arch.kernel, arch.expand, arch.depth[:-1], arch.resolution)
    with pytest.raises(ArchError):
        net.set_active(bad)


def test_stereo_search_minimises_epe_under_a_flops_limit(net: OFADispNetC) -> None:
    flops = flops_table(net.config)
    limit = 0.5 * (flops.of(net.space.min_arch()) + flops.of(net.space.max_arch()))
    problem = SearchProblem(space=net.space, costs={"flops": flops}, objective="flops",
                            limits={"flops": limit})

    def minus_epe(batch):  # type: ignore[no-untyped-def]
        return -(2.0 - flops.of_batch(batch) / limit)  # a stand-in: bigger nets err less

    result = evolve(problem, minus_epe, SearchConfig(population=12, generations=3),
                    np.random.default_rng(0))
    assert result.chosen.costs["flops"] <= limit
    assert count_flops(net.config, result.chosen.arch) == result.chosen.costs["flops"]


def test_stereo_latency_table_covers_the_space() -> None:
    config = supernet_config("ofa_dispnetc_tiny", max_displacement=4,
                             space=SearchSpace(kernel_sizes=(3,), expand_ratios=(2.0,),
                                               depths=(1, 2), resolutions=(16,), n_stages=6))
    table = latency_table(config, torch.device("cpu"), repeats=1, warmup=0)
    assert table.block.shape == (1, 12, 1, 1) and bool((table.block > 0).all())
    assert table.base[0] > 0
    space = config.space
    assert table.of(space.min_arch()) < table.of(space.max_arch())
    report = latency_report(config, table, [space.max_arch()], torch.device("cpu"),
                            repeats=1, warmup=0)
    assert report["measured_ms"] > 0 and np.isfinite(report["mean_abs_rel_error"])
