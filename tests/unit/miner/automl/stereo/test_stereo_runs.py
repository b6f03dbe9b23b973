"""``manta-miner automl train`` / ``search`` on a stereo spec: procedural pairs, the shared
trainer, EPE instead of accuracy, the search minimising EPE under a FLOPs limit, and an
export that reproduces the reported EPE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from miner.automl.config import TrainConfig
from miner.automl.efficiency import flops_table
from miner.automl.export import load_exported, load_exported_arch
from miner.automl.registry import supernet_config
from miner.automl.runs import load_splits
from miner.automl.train import StereoTask, build_supernet, evaluate_metric
from miner.cli import app

SPEC = """
supernet = "ofa_dispnetc_micro"
dataset = "{dataset}"
synthetic_size = 24
val_fraction = 0.25
batch_size = 4
eval_batch_size = 8
optimizer = "adamw"
checkpoint_every_steps = 2

[[phases]]
name = "full"
steps = 2
lr = 0.003

[[phases]]
name = "width"
steps = 2
lr = 0.001
subnets_per_step = 2
"""


def _invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("stereo-cli")
    spec = tmp / "spec.toml"
    spec.write_text(SPEC.format(dataset="procedural-stereo"))
    threads = torch.get_num_threads()  # module scope: the per-test one-thread fixture is not on
    torch.set_num_threads(1)
    try:
        result = _invoke("automl", "train", str(spec), "--out", str(tmp / "run"), "--json")
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["steps"] == 4 and set(summary["val_accuracy"]) == {"largest", "smallest"}
    assert all(epe > 0 for epe in summary["val_accuracy"].values())  # EPE in pixels
    return tmp / "run"


def test_search_minimises_epe_under_a_flops_limit_and_exports(trained: Path) -> None:
    config = supernet_config("ofa_dispnetc_micro")
    table = flops_table(config)
    low, high = table.of(config.space.min_arch()), table.of(config.space.max_arch())
    limit = low + 0.5 * (high - low)
    out = trained / "search"
    result = _invoke("automl", "search", "--run", str(trained), "--out", str(out),
                     "--max-flops", str(limit), "--n-subnets", "10", "--population", "8",
                     "--generations", "2", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["costs"]["flops"] <= limit
    written = json.loads((out / "search.json").read_text())
    assert written["metric"] == "epe" and "val_accuracy" not in written
    assert written["val_epe"] == pytest.approx(summary["val_accuracy"])
    assert all(m["val_epe"] > 0 for m in written["measured"])
    # the exported network, alone, has the EPE the search reported on the val split
    run_config = TrainConfig.model_validate_json((trained / "train_config.json").read_text())
    _, val = load_splits(run_config, build_supernet(run_config))
    net = load_exported(out)
    assert load_exported_arch(out).to_dict() == summary["arch"]
    epe = evaluate_metric(net, None, val, StereoTask(config.max_disparity), 8)
    assert epe == pytest.approx(written["val_epe"], rel=1e-4)


def test_a_classification_dataset_is_refused_for_a_stereo_net(tmp_path: Path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(dataset="digits"))
    result = CliRunner().invoke(app, ["automl", "train", str(spec), "--out",
                                      str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "procedural-stereo" in result.output
    assert not (tmp_path / "run").exists()
