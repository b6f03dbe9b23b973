"""``task verify --data``: a torch.export program pinned by arch.json, evaluated on the
client's own .npz, its accuracy compared with the claim (needs torch; skipped without)."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from client.errors import VerifyError
from client.verify import verify_folder
from node.documents.manifest import Metrics, ResultManifest

torch = pytest.importorskip("torch")


def _program(path: Path) -> str:
    """A 'network' that says class 1 when the image is bright on average, else class 0."""
    torch.set_num_threads(1)
    linear = torch.nn.Linear(16, 2)
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[1].fill_(1.0)
        linear.bias.zero_()
    model = torch.nn.Sequential(torch.nn.Flatten(), linear).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (torch.zeros(2, 1, 4, 4),),
                                  dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return "0x" + hashlib.sha256(path.read_bytes()).hexdigest()


def _write_result(folder: Path, header: dict[str, Any], arch_json: dict[str, Any],
                  metrics: Metrics) -> str:
    """Weights (a safetensors header over zeros), arch.json and the manifest pinning both;
    ``folder/model.pt2`` is already there. Returns the manifest's root."""
    raw = json.dumps(header).encode()
    size = max(meta["data_offsets"][1] for meta in header.values())
    weights = struct.pack("<Q", len(raw)) + raw + b"\0" * size
    program_sha = "0x" + hashlib.sha256((folder / "model.pt2").read_bytes()).hexdigest()
    arch = json.dumps({**arch_json, "program_sha256": program_sha}).encode()
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "arch.json").write_bytes(arch)
    manifest = ResultManifest(
        task_id=1, spec_hash="0x" + "1" * 64, arch={}, pareto_front=(),
        weights_sha256="0x" + hashlib.sha256(weights).hexdigest(),
        arch_json_sha256="0x" + hashlib.sha256(arch).hexdigest(), metrics=metrics,
        training_log_sha256="0x" + "0" * 64, group=("0x" + "4" * 40,), shares_wei=(1,))
    (folder / "manifest.json").write_bytes(manifest.canonical())
    return manifest.result_root()


def _delivery(folder: Path, claimed_accuracy: float) -> str:
    folder.mkdir()
    _program(folder / "model.pt2")
    header = {"1.weight": {"dtype": "F32", "shape": [2, 16], "data_offsets": [0, 128]},
              "1.bias": {"dtype": "F32", "shape": [2], "data_offsets": [128, 136]}}
    return _write_result(folder, header, {"flops": 32, "params": 34, "arch": {"resolution": 4},
                                          "net": {"in_channels": 1}},
                         Metrics(accuracy=claimed_accuracy, flops=32, params=34))


def test_accuracy_on_own_data_is_measured_and_compared(tmp_path: Path) -> None:
    bright, dark = np.full((8, 8), 255, np.uint8), np.zeros((8, 8), np.uint8)
    x = np.stack([bright] * 6 + [dark] * 4)  # 8x8 images, resized to the arch's 4x4
    y = np.array([1] * 6 + [0, 0, 1, 1])  # the last two are "wrong": accuracy 0.8
    np.savez(tmp_path / "heldout.npz", x=x, y=y)
    root = _delivery(tmp_path / "honest", claimed_accuracy=0.82)
    report = verify_folder(1, tmp_path / "honest", root, tmp_path / "heldout.npz")
    assert report.evaluated and report.measured["accuracy"] == pytest.approx(0.8)
    assert report.ok, report.checks

    inflated_root = _delivery(tmp_path / "inflated", claimed_accuracy=0.99)
    inflated = verify_folder(1, tmp_path / "inflated", inflated_root, tmp_path / "heldout.npz")
    assert not inflated.ok
    assert [c.name for c in inflated.checks if not c.ok] == ["accuracy (your data)"]

    (tmp_path / "honest" / "model.pt2").write_bytes(b"swapped")
    swapped = verify_folder(1, tmp_path / "honest", root, tmp_path / "heldout.npz")
    assert not swapped.ok and not swapped.evaluated
    assert [c.name for c in swapped.checks if not c.ok] == ["program sha256"]


class _FlatDisparity(torch.nn.Module):
    """A 'stereo network' on 4x8 inputs that predicts 1.5 px everywhere: coarse, then full."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        full = x[:, :1] * 0.0 + 1.5
        return full[:, :, ::2, ::2], full


def _stereo_delivery(folder: Path, claimed_epe: float) -> str:
    folder.mkdir()
    torch.set_num_threads(1)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(_FlatDisparity().eval(), (torch.zeros(2, 6, 4, 8),),
                                  dynamic_shapes=({0: batch},))
    torch.export.save(program, str(folder / "model.pt2"))
    header = {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    return _write_result(folder, header, {"flops": 8, "params": 1, "input_shape": [6, 4, 8]},
                         Metrics(epe=claimed_epe, flops=8, params=1))


def test_stereo_epe_on_own_pairs_is_measured_at_their_size_and_compared(tmp_path: Path) -> None:
    # pairs twice the network's size: the prediction (1.5 px at 4x8) comes back as 3.0 px
    left = np.zeros((3, 3, 8, 16), np.uint8)
    disparity = np.full((3, 8, 16), 4.0, np.float32)  # |3.0 - 4.0| = 1 on known pixels
    disparity[0] = 0.0  # unknown: not counted
    disparity[1, :, :8] = 2.0  # |3.0 - 2.0| = 1 too
    disparity[2, 0, 0] = np.inf  # unknown
    np.savez(tmp_path / "pairs.npz", left=left, right=left, disparity=disparity)
    root = _stereo_delivery(tmp_path / "honest", claimed_epe=0.9)
    report = verify_folder(1, tmp_path / "honest", root, tmp_path / "pairs.npz")
    assert report.evaluated and report.measured["epe"] == pytest.approx(1.0, abs=1e-5)
    assert report.ok, report.checks  # 1.0 <= 0.9 * 1.25

    inflated_root = _stereo_delivery(tmp_path / "inflated", claimed_epe=0.5)
    inflated = verify_folder(1, tmp_path / "inflated", inflated_root, tmp_path / "pairs.npz")
    assert [c.name for c in inflated.checks if not c.ok] == ["EPE (your data)"]

    np.savez(tmp_path / "classification.npz", x=np.zeros((2, 4, 8)), y=np.zeros(2))
    with pytest.raises(VerifyError, match="left, right, disparity"):
        verify_folder(1, tmp_path / "honest", root, tmp_path / "classification.npz")
    np.savez(tmp_path / "grey.npz", left=left[:, :1], right=left[:, :1],
             disparity=disparity)
    with pytest.raises(VerifyError, match="3-channel views"):
        verify_folder(1, tmp_path / "honest", root, tmp_path / "grey.npz")


def test_bad_data_or_a_program_that_does_not_fit_is_a_verify_error(tmp_path: Path) -> None:
    root = _stereo_delivery(tmp_path / "stereo", claimed_epe=1.0)
    np.savez(tmp_path / "empty.npz", left=np.zeros((0, 3, 8, 16)), right=np.zeros((0, 3, 8, 16)),
             disparity=np.zeros((0, 8, 16)))
    with pytest.raises(VerifyError, match="N > 0"):
        verify_folder(1, tmp_path / "stereo", root, tmp_path / "empty.npz")
    # a classification program delivered for a stereo claim: it cannot take a stereo pair
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    _program(wrong / "model.pt2")
    header = {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    wrong_root = _write_result(wrong, header, {"flops": 8, "params": 1, "input_shape": [6, 4, 8]},
                               Metrics(epe=1.0, flops=8, params=1))
    np.savez(tmp_path / "pairs.npz", left=np.zeros((2, 3, 4, 8), np.uint8),
             right=np.zeros((2, 3, 4, 8), np.uint8), disparity=np.ones((2, 4, 8), np.float32))
    with pytest.raises(VerifyError, match=r"model\.pt2 failed on your data"):
        verify_folder(1, wrong, wrong_root, tmp_path / "pairs.npz")
    np.savez(tmp_path / "none.npz", x=np.zeros((0, 8, 8)), y=np.zeros(0))
    classification_root = _delivery(tmp_path / "classification", claimed_accuracy=0.5)
    with pytest.raises(VerifyError, match="same number"):
        verify_folder(1, tmp_path / "classification", classification_root, tmp_path / "none.npz")
