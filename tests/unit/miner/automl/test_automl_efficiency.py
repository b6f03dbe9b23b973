"""Cost models, for every registered supernet (classification and stereo): analytic FLOPs =
traced FLOPs, tables = direct counts, latency table runs."""

from __future__ import annotations

import logging
from collections.abc import Iterator

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
from miner.automl.registry import list_supernets, supernet_config
from miner.automl.space import SearchSpace, to_batch
from miner.automl.supernet import SupernetConfig

logger = logging.getLogger(__name__)
SMALL = {
    "ofa_mbv3": {"space": SearchSpace(resolutions=(32, 48)), "num_classes": 10},
    "manta_mbv3": {"space": SearchSpace(resolutions=(40,)), "num_classes": 10},
    "ofa_dispnetc": {"space": SearchSpace((3, 5, 7), (3.0, 4.0, 6.0), (1, 2, 3), (32, 64), 6)},
}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: small tensors gain nothing from more, and the CPUs are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=list_supernets())
def config(request: pytest.FixtureRequest) -> SupernetConfig:
    return supernet_config(request.param, **SMALL.get(request.param, {}))


def archs(config: SupernetConfig, n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    space = config.space
    return [space.max_arch(), space.min_arch()] + [space.sample(rng) for _ in range(n)]


def test_analytic_flops_and_params_equal_the_static_net(config: SupernetConfig) -> None:
    layout = layout_of(config)
    for arch in archs(config, 20 if config.in_channels == 1 else 4):
        net = layout.build_static(arch)
        shape = (1, *layout.input_shape(arch.resolution))
        assert count_flops(config, arch) == trace_flops(net, shape)
        assert count_params(config, arch) == sum(p.numel() for p in net.parameters())


def test_additive_tables_agree_with_direct_counts(config: SupernetConfig) -> None:
    population = archs(config, 200, seed=1)
    batch = to_batch(config.space, population)
    flops = flops_table(config).of_batch(batch)
    params = params_table(config).of_batch(batch)
    assert flops.tolist() == [count_flops(config, a) for a in population]
    assert params.tolist() == [count_params(config, a) for a in population]
    assert flops[0] > flops[1] > 0  # the largest network costs more than the smallest


def test_known_size_of_the_full_space() -> None:
    config = supernet_config("ofa_mbv3")
    # the OFA-MobileNetV3 supernet's largest sub-network: ~7.6M parameters (1000 classes)
    assert 7.0e6 < count_params(config, config.space.max_arch()) < 8.0e6
    assert 0.1e9 < count_flops(config, config.space.min_arch()) < count_flops(
        config, config.space.max_arch()) < 1.0e9


def test_latency_table_predicts_measured_latency() -> None:
    config = supernet_config("ofa_mbv3_tiny", space=SearchSpace(resolutions=(28,)))
    device = torch.device("cpu")
    table = latency_table(config, device, batch_size=1, repeats=3, warmup=1)
    assert np.isfinite(table.block).all() and (table.block > 0).all() and table.base[0] > 0
    report = latency_report(config, table, archs(config, 3), device, repeats=3, warmup=1)
    logger.info("latency table predicted vs measured: %s", report)
    assert np.isfinite(report["mean_abs_rel_error"]) and report["measured_ms"] > 0
