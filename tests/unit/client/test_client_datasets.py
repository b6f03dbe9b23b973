"""``manta data pack``: inputs accepted, the output loadable, its sha256 right, bad input named."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from client.datasets import pack_dataset
from client.errors import DatasetPackError


def test_pack_image_folder_of_npy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "src" / cls).mkdir(parents=True)
        for i in range(3):
            np.save(tmp_path / "src" / cls / f"{i}.npy", rng.integers(0, 255, (8, 8), np.uint8))
    out = tmp_path / "packed.npz"
    packed = pack_dataset(tmp_path / "src", out)
    assert packed.samples == 6 and packed.classes == 2 and packed.class_names == ("cat", "dog")
    assert packed.sha256 == "0x" + hashlib.sha256(out.read_bytes()).hexdigest()
    with np.load(out) as archive:
        assert archive["x"].shape == (6, 8, 8) and list(archive["y"]) == [0, 0, 0, 1, 1, 1]


def test_pack_npz_roundtrip(tmp_path: Path) -> None:
    x = np.zeros((4, 1, 6, 6), np.float32)
    np.savez(tmp_path / "in.npz", x=x, y=np.array([0, 1, 2, 1]))
    packed = pack_dataset(tmp_path / "in.npz", tmp_path / "out.npz")
    assert packed.image_shape == (1, 6, 6) and packed.classes == 3


@pytest.mark.parametrize(("arrays", "fragment"), [
    ({"x": np.zeros((3, 4, 4)), "y": np.zeros(2, int)}, "y must be"),
    ({"x": np.zeros((3, 4)), "y": np.zeros(3, int)}, "x must be"),
    ({"x": np.zeros((2, 4, 4)), "y": np.array([0.5, 1.0])}, "labels"),
    ({"x": np.zeros((2, 4, 4))}, "lacks arrays"),
])
def test_pack_refuses_bad_arrays(tmp_path: Path, arrays: dict[str, np.ndarray],
                                 fragment: str) -> None:
    np.savez(tmp_path / "in.npz", **arrays)
    with pytest.raises(DatasetPackError, match=fragment):
        pack_dataset(tmp_path / "in.npz", tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()


def test_data_pack_command_prints_the_sha256(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from client.cli import app

    np.savez(tmp_path / "in.npz", x=np.zeros((2, 3, 3), np.uint8), y=np.array([0, 1]))
    out = tmp_path / "packed.npz"
    result = CliRunner().invoke(app, ["data", "pack", str(tmp_path / "in.npz"), "-o", str(out),
                                      "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["sha256"] == "0x" + hashlib.sha256(out.read_bytes()).hexdigest()
    missing = CliRunner().invoke(app, ["data", "pack", str(tmp_path / "nope.npz")])
    assert missing.exit_code == 1 and "no such file" in missing.output
