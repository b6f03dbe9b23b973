"""``manta-miner automl``: train, resume, search and export; bad input -> one line, exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from miner.cli import app

SPEC = """
supernet = "ofa_mbv3_tiny"
dataset = "{dataset}"
synthetic_size = 80
batch_size = 16
eval_batch_size = 64
checkpoint_every_steps = 2

[overrides]
stem_width = 8
stage_widths = [8, 16]
stage_strides = [2, 2]
stage_se = [false, true]
stage_acts = ["relu", "hswish"]
head_width = 32
feature_width = 64
num_classes = 10
in_channels = 1

[overrides.space]
kernel_sizes = [3, 5]
expand_ratios = [2.0, 3.0]
depths = [1, 2]
resolutions = [12, 16]
n_stages = 2

[[phases]]
name = "full"
steps = 2

[[phases]]
name = "width"
steps = 2
subnets_per_step = 2
"""


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _spec(tmp_path: Path, dataset: str = "synthetic", supernet: str = "ofa_mbv3_tiny") -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.format(dataset=dataset).replace("ofa_mbv3_tiny", supernet))
    return path


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    result = _invoke("automl", "train", str(_spec(tmp)), "--out", str(tmp / "run"), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["steps"] == 4 and set(summary["val_accuracy"]) == {"largest", "smallest"}
    return tmp / "run"


def test_train_writes_a_run_and_refuses_to_overwrite_it(trained: Path) -> None:
    assert (trained / "train_config.json").exists()
    assert sorted(p.name for p in (trained / "checkpoints").iterdir()) == [
        "ckpt-0000000002.pt",
        "ckpt-0000000004.pt",
    ]
    spec = trained.parent / "spec.toml"
    again = _invoke("automl", "train", str(spec), "--out", str(trained))
    assert again.exit_code == 1 and "already holds a run; pass --resume" in again.output
    resumed = _invoke("automl", "train", str(spec), "--out", str(trained), "--resume", "--json")
    assert resumed.exit_code == 0
    assert json.loads(resumed.output.strip().splitlines()[-1])["resumed_step"] == 4


def test_search_exports_a_network_within_the_limit(trained: Path) -> None:
    from miner.automl.export import load_exported, load_exported_arch

    out = trained.parent / "found"
    result = _invoke(
        "automl",
        "search",
        "--run",
        str(trained),
        "--out",
        str(out),
        "--max-flops",
        "400000",
        "--n-subnets",
        "10",
        "--population",
        "8",
        "--generations",
        "2",
        "--onnx",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert (out / "model.onnx").stat().st_size > 0  # --onnx: beside the torch files
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["costs"]["flops"] <= 400_000 and 0.0 <= summary["val_accuracy"] <= 1.0
    arch = load_exported_arch(out)
    net = load_exported(out)
    assert net(torch.zeros(2, 1, arch.resolution, arch.resolution)).shape == (2, 10)
    report = json.loads((out / "search.json").read_text())
    assert len(report["measured"]) == 10 and not list(trained.parent.glob(".*partial"))


def test_impossible_constraint_writes_nothing(trained: Path) -> None:
    out = trained.parent / "never"
    result = _invoke(
        "automl", "search", "--run", str(trained), "--out", str(out), "--max-flops", "10"
    )
    assert result.exit_code == 1
    assert result.output.startswith("error: impossible constraint flops <= 10")
    assert not out.exists()


def test_corrupt_checkpoint_is_refused(trained: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    latest = copy / "checkpoints" / "ckpt-0000000004.pt"
    data = bytearray(latest.read_bytes())
    data[len(data) // 2] ^= 0x55
    latest.write_bytes(bytes(data))
    result = _invoke("automl", "search", "--run", str(copy), "--out", str(tmp_path / "x"))
    assert result.exit_code == 1 and "sha256 mismatch" in result.output
    resumed = _invoke(
        "automl", "train", str(trained.parent / "spec.toml"), "--out", str(copy), "--resume"
    )
    assert resumed.exit_code == 1 and "sha256 mismatch" in resumed.output
    assert not (tmp_path / "x").exists()


def test_unknown_supernet_suggests_a_name(tmp_path: Path) -> None:
    result = _invoke(
        "automl",
        "train",
        str(_spec(tmp_path, supernet="ofa_mbv3_tinny")),
        "--out",
        str(tmp_path / "run"),
    )
    assert result.exit_code == 1
    assert "did you mean 'ofa_mbv3_tiny'" in result.output and len(result.output.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_wrong_shape_dataset_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "set.npz"
    np.savez(data, x=np.zeros((20, 3, 16, 16), dtype=np.float32), y=np.arange(20) % 10)
    result = _invoke(
        "automl", "train", str(_spec(tmp_path, dataset=str(data))), "--out", str(tmp_path / "run")
    )
    assert result.exit_code == 1 and "3 channels, the network takes 1" in result.output
    assert not (tmp_path / "run").exists()


def test_bad_spec_field_is_named(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    spec.write_text(spec.read_text().replace("batch_size = 16", "batch_size = -1"))
    result = _invoke("automl", "train", str(spec), "--out", str(tmp_path / "run"))
    assert result.exit_code == 1 and "batch_size" in result.output


def test_daemon_commands_are_mounted_on_manta_miner() -> None:
    from typer.testing import CliRunner

    from miner.cli import app as miner_app

    result = CliRunner().invoke(miner_app, ["--help"])
    assert result.exit_code == 0
    for command in ("init", "register", "run", "status", "withdraw", "automl"):
        assert command in result.output


def test_export_dataset_writes_disjoint_folds_that_cover_the_set(tmp_path: Path) -> None:
    from miner.automl.data import digits_arrays

    train, held = tmp_path / "train.npz", tmp_path / "held"  # no suffix: written as named
    first = _invoke("automl", "export-dataset", "digits", str(train), "--folds", "5",
                    "--fold", "4", "--rest", "--json")
    second = _invoke("automl", "export-dataset", "digits", str(held), "--folds", "5",
                     "--fold", "4", "--json")
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    a, b = json.loads(first.output.splitlines()[-1]), json.loads(second.output.splitlines()[-1])
    assert (a["images"], b["images"], a["total"]) == (1438, 359, 1797)
    x, y = digits_arrays()
    index = np.arange(len(y))
    with np.load(train) as part:
        assert np.array_equal(part["x"], x[index % 5 != 4])
        assert np.array_equal(part["y"], y[index % 5 != 4])
    with np.load(held) as part:
        assert np.array_equal(part["x"], x[4::5]) and part["y"].dtype == np.int64
        assert set(part["y"].tolist()) == set(range(10))


def test_export_dataset_refuses_unknown_names_and_bad_folds(tmp_path: Path) -> None:
    unknown = _invoke("automl", "export-dataset", "mnist", str(tmp_path / "a.npz"))
    bad = _invoke("automl", "export-dataset", "digits", str(tmp_path / "b.npz"),
                  "--folds", "3", "--fold", "3")
    empty = _invoke("automl", "export-dataset", "digits", str(tmp_path / "c.npz"), "--rest")
    assert unknown.exit_code == 1 and "cannot export 'mnist'" in unknown.output
    assert bad.exit_code == 1 and "outside 0..2" in bad.output
    assert empty.exit_code == 1 and "is empty" in empty.output
    assert not any(tmp_path.iterdir())


def test_export_dataset_renders_the_stereo_scenes_a_run_trains_on(tmp_path: Path) -> None:
    from miner.automl.registry import supernet_config
    from miner.automl.runs import stereo_pairs

    out = tmp_path / "pairs.npz"
    result = _invoke("automl", "export-dataset", "procedural-stereo", str(out), "--pairs", "3",
                     "--seed", "11", "--resolution", "32", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["height"] == 32
    with np.load(out) as archive:
        left, right, disparity = archive["left"], archive["right"], archive["disparity"]
    assert left.shape == right.shape == (3, 3, 32, 64) and disparity.shape == (3, 32, 64)
    assert left.min() >= 0.0 and left.max() <= 1.0 and disparity.min() > 0
    # the same seed and size as a stereo run's: the very scenes it trains on
    config = supernet_config("ofa_dispnetc_micro",
                             space={"resolutions": [32], "n_stages": 6})
    trained = stereo_pairs(config, 3, 11)
    np.testing.assert_allclose(left * 2 - 1, trained.x[:, :3].numpy(), atol=1e-6)
    np.testing.assert_array_equal(disparity, trained.y.numpy())
    other = _invoke("automl", "export-dataset", "procedural-stereo", str(tmp_path / "b.npz"),
                    "--supernet", "ofa_mbv3_tiny")
    assert other.exit_code == 1 and "not a stereo supernet" in other.output
