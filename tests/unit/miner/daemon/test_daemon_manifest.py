"""The leader's manifest from a finished job folder: the metric the search summary names
(accuracy for classification, EPE for stereo), Pareto scores higher-is-better."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from miner.daemon import jobspec
from miner.daemon.errors import DaemonError
from miner.daemon.job import build_manifest
from miner.daemon.jobspec import JobFile
from node.documents.spec import Constraint, DatasetRef, TaskSpec

ARCH = {"depth": [1, 1], "expand": [2.0, 0.0], "kernel": [3, 0], "resolution": 32}
BIG = {"depth": [2, 2], "expand": [4.0, 4.0], "kernel": [5, 5], "resolution": 32}


def job_dir(tmp_path: Path, metric: str | None, value: float, score: float,
            largest: float | None) -> Path:
    """A job folder whose search wrote ``search.json`` the way ``run_search`` does."""
    export = tmp_path / jobspec.EXPORT_DIR
    export.mkdir(parents=True)
    (export / "model.safetensors").write_bytes(b"weights")
    (export / "arch.json").write_bytes(b"{}")
    key = f"val_{metric or 'accuracy'}"
    chosen = {"arch": ARCH, "accuracy": score, "costs": {"flops": 100.0, "params": 7.0}}
    summary: dict[str, Any] = {"chosen": chosen, key: value,
                               "search": {"front": [chosen], "chosen": chosen}}
    if metric is not None:
        summary["metric"] = metric
    if largest is not None:
        summary["largest"] = {"arch": BIG, key: largest, "costs": {"flops": 300.0},
                              "score": -largest if metric == "epe" else largest}
    (export / "search.json").write_text(json.dumps(summary))
    return tmp_path


def job(kind: str = "classification") -> JobFile:
    spec = TaskSpec(kind=kind, dataset=DatasetRef(name="procedural-stereo" if kind == "stereo"
                                                  else "digits"),
                    objective="min_epe" if kind == "stereo" else "max_accuracy",
                    constraint=Constraint(max_flops=200))
    return JobFile(task_id=3, spec=spec, group=(Account.create().address,), slot=0)


def test_a_stereo_manifest_reports_epe_and_negated_scores(tmp_path: Path) -> None:
    folder = job_dir(tmp_path, "epe", 1.5, -1.4, largest=1.2)
    manifest = build_manifest(job("stereo"), folder, "0x" + "11" * 32, 10, "22" * 32)
    assert manifest.metrics.epe == 1.5 and manifest.metrics.accuracy is None
    assert manifest.metrics.flops == 100 and manifest.metrics.params == 7
    assert [p.score for p in manifest.pareto_front] == [-1.4]
    assert manifest.largest is not None
    assert manifest.largest.score == -1.2 and manifest.largest.flops == 300
    assert manifest.largest.params is None


@pytest.mark.parametrize("metric", ["accuracy", None], ids=["named", "older-runner"])
def test_a_classification_manifest_reports_accuracy(tmp_path: Path, metric: str | None) -> None:
    folder = job_dir(tmp_path, metric, 0.8, 0.79, largest=0.9)
    manifest = build_manifest(job(), folder, "0x" + "11" * 32, 10, "22" * 32)
    assert manifest.metrics.accuracy == 0.8 and manifest.metrics.epe is None
    assert manifest.largest is not None and manifest.largest.score == 0.9
    assert [p.score for p in manifest.pareto_front] == [0.79]


def test_an_unknown_metric_is_a_named_error(tmp_path: Path) -> None:
    folder = job_dir(tmp_path, "d1", 0.1, -0.1, largest=None)
    with pytest.raises(DaemonError, match="d1"):
        build_manifest(job("stereo"), folder, "0x" + "11" * 32, 10, "22" * 32)
