"""Export to safetensors + arch.json, and loading it back without the supernet code."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from miner.automl.errors import CheckpointError
from miner.automl.export import export_subnet, load_exported, load_exported_arch
from miner.automl.registry import create_supernet

# run in a fresh interpreter where the supernet modules cannot be imported
LOADER = """
import sys
for name in ("miner.automl.supernet", "miner.automl.ops", "miner.automl.blocks",
             "miner.automl.efficiency", "miner.automl.registry"):
    sys.modules[name] = None
from pathlib import Path
import torch
from miner.automl.export import load_exported
out = Path(sys.argv[1])
net = load_exported(out)
x = torch.load(out / "x.pt")
torch.save(net(x), out / "y.pt")
"""


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: small tensors gain nothing from more, and the CPUs are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_export_roundtrip_in_a_process_without_supernet_code(tmp_path: Path) -> None:
    torch.manual_seed(0)
    supernet = create_supernet("ofa_mbv3_tiny").eval()
    arch = supernet.space.sample(np.random.default_rng(3))
    with torch.no_grad():
        for p in supernet.parameters():
            if p.ndim == 1:
                p.add_(0.1)
    exported = export_subnet(supernet, arch, tmp_path)
    assert exported.weights_sha256 == hashlib.sha256(exported.weights_path.read_bytes()).hexdigest()
    description = json.loads(exported.arch_path.read_text())
    assert description["arch"] == supernet.space.canonical(arch).to_dict()
    assert load_exported_arch(tmp_path) == supernet.space.canonical(arch)

    x = torch.randn(3, 1, arch.resolution, arch.resolution)
    supernet.set_active(arch)
    with torch.no_grad():
        want = supernet(x)
        assert torch.allclose(load_exported(tmp_path)(x), want, rtol=1e-5, atol=1e-6)
    torch.save(x, tmp_path / "x.pt")
    subprocess.run([sys.executable, "-c", LOADER, str(tmp_path)], check=True, timeout=120)
    got = torch.load(tmp_path / "y.pt")
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)

    # the torch-only program, pinned by arch.json, computes the same at any batch size
    assert exported.program_path is not None
    assert description["program_sha256"] == hashlib.sha256(
        exported.program_path.read_bytes()
    ).hexdigest()
    program = torch.export.load(str(exported.program_path)).module()
    with torch.no_grad():
        assert torch.allclose(program(x), want, rtol=1e-5, atol=1e-6)
        assert torch.allclose(program(x[:1]), want[:1], rtol=1e-5, atol=1e-6)


def test_load_refuses_missing_or_corrupt(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        load_exported(tmp_path)
    supernet = create_supernet("ofa_mbv3_tiny")
    export_subnet(supernet, supernet.space.min_arch(), tmp_path, program=False)
    (tmp_path / "model.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(CheckpointError):
        load_exported(tmp_path)
