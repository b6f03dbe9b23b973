"""Pure checks behind ``task submit`` and ``task verify``: parameters and a result folder."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

from client.api import SubmitRequest, task_params
from client.errors import ClientError, VerifyError
from client.verify import verify_folder
from node.documents.manifest import Metrics, ResultManifest
from node.documents.spec import Constraint, DatasetRef, TaskSpec

ARBITER = "0x" + "44" * 20
SPEC = TaskSpec(kind="classification", dataset=DatasetRef(name="digits"),
                constraint=Constraint(max_params=10))


def test_params_out_of_range_name_the_field() -> None:
    request = SubmitRequest(spec_path=Path("s.toml"), reward_wei=2**96, work_window_s=2**32)
    with pytest.raises(ClientError) as info:
        task_params(request, SPEC, ARBITER)
    assert "reward_wei" in str(info.value) and "work_window_s" in str(info.value)
    ok = task_params(SubmitRequest(spec_path=Path("s.toml"), reward_wei=5), SPEC, ARBITER)
    assert ok.spec_hash.hex() == SPEC.spec_hash()[2:] and ok.reward_wei == 5


def _result(folder: Path, params_claimed: int = 26) -> str:
    header = {"fc.weight": {"dtype": "F32", "shape": [2, 12], "data_offsets": [0, 96]},
              "fc.bias": {"dtype": "F32", "shape": [2], "data_offsets": [96, 104]}}
    raw = json.dumps(header).encode()
    weights = struct.pack("<Q", len(raw)) + raw + b"\0" * 104
    arch = json.dumps({"flops": 99, "params": 26}).encode()
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "arch.json").write_bytes(arch)
    manifest = ResultManifest(
        task_id=4, spec_hash=SPEC.spec_hash(), arch={}, pareto_front=(),
        weights_sha256="0x" + hashlib.sha256(weights).hexdigest(),
        arch_json_sha256="0x" + hashlib.sha256(arch).hexdigest(),
        metrics=Metrics(accuracy=0.5, flops=99, params=params_claimed),
        training_log_sha256="0x" + "0" * 64, group=(ARBITER,), shares_wei=(1,))
    (folder / "manifest.json").write_bytes(manifest.canonical())
    return manifest.result_root()


def test_verify_folder_counts_params_and_compares_claims(tmp_path: Path) -> None:
    root = _result(tmp_path / "ok")
    report = verify_folder(4, tmp_path / "ok", root, None)
    assert report.ok and report.measured["params"] == 26
    inflated = _result(tmp_path / "bad", params_claimed=20)
    bad = verify_folder(4, tmp_path / "bad", inflated, None)
    assert not bad.ok
    assert {c.name for c in bad.checks if not c.ok} == {"params (weights)", "params (arch.json)"}


def test_verify_refuses_a_manifest_that_is_not_the_onchain_root(tmp_path: Path) -> None:
    _result(tmp_path / "r")
    report = verify_folder(4, tmp_path / "r", "0x" + "12" * 32, None)
    assert not report.ok and len(report.checks) == 1 and "hash mismatch" in report.checks[0].detail


def test_verify_data_path_must_exist(tmp_path: Path) -> None:
    root = _result(tmp_path / "r")
    with pytest.raises(VerifyError, match="does not exist"):
        verify_folder(4, tmp_path / "r", root, tmp_path / "missing.npz")


def test_verify_data_without_torch_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    root = _result(tmp_path / "r")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(VerifyError, match="needs torch, which is not installed"):
        verify_folder(4, tmp_path / "r", root, tmp_path / "r" / "arch.json")
