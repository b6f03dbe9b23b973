"""Export to safetensors + arch.json (+ a torch.export program), and loading it back without
the supernet code, for every task kind; export equality over every registered supernet."""

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

from miner.automl.efficiency import layout_of
from miner.automl.errors import CheckpointError
from miner.automl.export import export_subnet, load_exported, load_exported_arch
from miner.automl.registry import create_supernet, list_supernets
from miner.automl.space import SearchSpace

# run in a fresh interpreter where the supernet modules cannot be imported
LOADER = """
import sys
for name in ("miner.automl.supernet", "miner.automl.ops", "miner.automl.blocks",
             "miner.automl.efficiency", "miner.automl.registry", "miner.automl.train",
             "miner.automl.stereo.supernet"):
    sys.modules[name] = None
from pathlib import Path
import torch
from miner.automl.export import load_exported
out = Path(sys.argv[1])
net = load_exported(out)
x = torch.load(out / "x.pt")
y = net(x)
torch.save(y if isinstance(y, tuple) else (y,), out / "y.pt")
"""

# every registered supernet at a small input size (stereo: 32x64 pairs)
SMALL = {
    "ofa_mbv3": {"space": SearchSpace(resolutions=(32,)), "num_classes": 10},
    "manta_mbv3": {"space": SearchSpace(resolutions=(32,)), "num_classes": 10},
    "ofa_dispnetc": {"space": SearchSpace((3, 5, 7), (3.0, 4.0, 6.0), (1, 2, 3), (32,), 6)},
    "ofa_dispnetc_tiny": {"space": SearchSpace((3, 5), (2.0, 3.0, 4.0), (1, 2), (32,), 6)},
}


def as_tuple(y: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return y if isinstance(y, tuple) else (y,)


def close(got: object, want: object) -> bool:
    return all(torch.allclose(a, b, rtol=1e-5, atol=1e-5)
               for a, b in zip(as_tuple(got), as_tuple(want), strict=True))  # type: ignore[arg-type]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: small tensors gain nothing from more, and the CPUs are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["ofa_mbv3_tiny", "ofa_dispnetc_micro"])
def test_export_roundtrip_in_a_process_without_supernet_code(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    supernet = create_supernet(name).eval()
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

    shape = layout_of(supernet.config).input_shape(arch.resolution)
    assert description["input_shape"] == list(shape)
    x = torch.randn(3, *shape)
    supernet.set_active(arch)
    with torch.no_grad():
        want = supernet(x)
        assert close(load_exported(tmp_path)(x), want)
    torch.save(x, tmp_path / "x.pt")
    subprocess.run([sys.executable, "-c", LOADER, str(tmp_path)], check=True, timeout=120)
    got = torch.load(tmp_path / "y.pt")
    assert close(got, want)

    # the torch-only program, pinned by arch.json, computes the same at any batch size
    assert exported.program_path is not None
    assert description["program_sha256"] == hashlib.sha256(
        exported.program_path.read_bytes()
    ).hexdigest()
    program = torch.export.load(str(exported.program_path)).module()
    with torch.no_grad():
        assert close(program(x), want)
        assert close(program(x[:1]), tuple(w[:1] for w in as_tuple(want)))


@pytest.mark.parametrize("name", ["ofa_mbv3_tiny", "ofa_dispnetc_micro"])
def test_onnx_export_runs_in_onnx_runtime_and_matches(tmp_path: Path, name: str) -> None:
    ort = pytest.importorskip("onnxruntime")  # the dev extra installs it (via manta[onnx])
    torch.manual_seed(0)
    supernet = create_supernet(name).eval()
    arch = supernet.space.sample(np.random.default_rng(5))
    export_subnet(supernet, arch, tmp_path, program=False, onnx=True)
    description = json.loads((tmp_path / "arch.json").read_text())
    onnx_bytes = (tmp_path / "model.onnx").read_bytes()
    assert description["onnx_sha256"] == hashlib.sha256(onnx_bytes).hexdigest()
    assert not (tmp_path / "model.pt2").exists()
    x = torch.randn(5, *description["input_shape"])
    supernet.set_active(arch)
    with torch.no_grad():
        want = as_tuple(supernet(x))
    session = ort.InferenceSession(str(tmp_path / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        error = float(np.abs(g - w.numpy()).max() / np.abs(w.numpy()).max())
        assert error <= 1e-5, error


def test_onnx_export_without_the_onnx_packages_says_what_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from node.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxscript" else real(name, *a))
    supernet = create_supernet("ofa_mbv3_tiny")
    with pytest.raises(ConfigError, match=r"onnxscript: pip install 'manta\[onnx\]'"):
        export_subnet(supernet, supernet.space.min_arch(), tmp_path, program=False, onnx=True)


@pytest.mark.parametrize("name", list_supernets())
def test_export_equals_the_supernet_on_random_subnets(tmp_path: Path, name: str) -> None:
    """Every registered supernet: the exported static network computes what the supernet
    computes with the same sub-network active (BN statistics perturbed, so they are copied)."""
    torch.manual_seed(1)
    supernet = create_supernet(name, **SMALL.get(name, {}))
    with torch.no_grad():
        for buf_name, buf in supernet.named_buffers():
            if buf_name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    supernet.eval()
    rng = np.random.default_rng(5)
    for i in range(2):
        arch = supernet.space.sample(rng)
        export_subnet(supernet, arch, tmp_path / str(i), program=False)
        x = torch.randn(2, *layout_of(supernet.config).input_shape(arch.resolution))
        supernet.set_active(arch)
        with torch.no_grad():
            assert close(load_exported(tmp_path / str(i))(x), supernet(x))


def test_load_refuses_missing_or_corrupt(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        load_exported(tmp_path)
    supernet = create_supernet("ofa_mbv3_tiny")
    export_subnet(supernet, supernet.space.min_arch(), tmp_path, program=False)
    (tmp_path / "model.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(CheckpointError):
        load_exported(tmp_path)
