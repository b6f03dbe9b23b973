"""Checkpoint files: verified on load, atomic on write, pruned after the new one lands."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from miner.automl import checkpoint as C
from miner.automl.errors import CheckpointError

PAYLOAD = {"global_step": 3, "weights": torch.arange(6.0), "nested": {"rng": torch.ones(2)}}


def test_round_trip() -> None:
    out = C.decode_checkpoint(C.encode_checkpoint(PAYLOAD, "abc"), "abc")
    assert out["global_step"] == 3 and torch.equal(out["weights"], PAYLOAD["weights"])


def test_corrupt_truncated_foreign_and_mismatched_are_refused() -> None:
    data = C.encode_checkpoint(PAYLOAD, "abc")
    flipped = bytearray(data)
    flipped[-20] ^= 0xFF
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        C.decode_checkpoint(bytes(flipped), "abc")
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        C.decode_checkpoint(data[:-10], "abc")
    with pytest.raises(CheckpointError, match="bad header"):
        C.decode_checkpoint(b"PK\x03\x04 some zip", "abc")
    with pytest.raises(CheckpointError, match="made by config abc"):
        C.decode_checkpoint(data, "def")


def test_store_keeps_the_newest_two_and_loads_the_latest(tmp_path: Path) -> None:
    store = C.CheckpointStore(tmp_path / "ckpt", keep=2)
    assert store.latest() is None and store.load_latest("h") is None
    for step in (1, 2, 3):
        store.save(step, {"global_step": step}, "h")
    assert store.steps() == [2, 3]
    assert store.load_latest("h")["global_step"] == 3
    assert [p.name for p in (tmp_path / "ckpt").iterdir() if p.name.startswith(".")] == []


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    store = C.CheckpointStore(tmp_path, keep=1)
    store.save(1, {"global_step": 1}, "h")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.save(2, {"global_step": 2}, "h")
    monkeypatch.undo()
    assert store.steps() == [1] and sorted(p.name for p in tmp_path.iterdir()) == [
        store.path(1).name
    ]
    assert store.load_latest("h")["global_step"] == 1


def test_load_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot read"):
        C.load_checkpoint(tmp_path / "none.pt", None)
