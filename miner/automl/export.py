"""Export a sub-network as a standalone artifact, and load it back without the supernet.

An export directory holds ``model.safetensors`` (the static network's state dict) and
``arch.json`` (the layer-level description of the static network — a
:class:`~miner.automl.static.NetSpec`, or a stereo
:class:`~miner.automl.stereo.static_net.StereoNetSpec` — the architecture, the input shape
and its analytic costs). The same functions export every supernet kind; loading picks the
static network by the description's ``format`` and needs only torch and the static module of
that format (:mod:`miner.automl.static`, :mod:`miner.automl.stereo.static_net`).

With ``program=True`` (the default) it also holds ``model.pt2``, the same network as a
``torch.export`` program with a dynamic batch dimension (outputs: logits, or the stereo
net's tuple of disparity maps), pinned by ``program_sha256`` inside
``arch.json``: a client verifies a result with torch alone, without any miner code.
With ``onnx=True`` it also holds ``model.onnx`` (``torch.onnx`` export, dynamic batch,
pinned by ``onnx_sha256`` in ``arch.json``), for runtimes without torch; it needs the
``onnx`` extra (``pip install 'manta[onnx]'``: onnx and onnxscript, and onnxruntime to run
it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from miner.automl.errors import CheckpointError
from miner.automl.space import Arch
from miner.automl.static import FORMAT as STATIC_FORMAT
from miner.automl.static import NetSpec, build_static
from node.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from miner.automl.supernet import OFASupernet

WEIGHTS_FILE = "model.safetensors"
ARCH_FILE = "arch.json"
PROGRAM_FILE = "model.pt2"
ONNX_FILE = "model.onnx"


@dataclass(frozen=True)
class ExportedSubnet:
    """Where an export went, and the hash a result manifest records."""

    weights_path: Path
    arch_path: Path
    weights_sha256: str
    program_path: Path | None = None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_program(net: nn.Module, input_shape: tuple[int, int, int], path: Path) -> str:
    """Save ``net`` as a ``torch.export`` program taking ``[B, *input_shape]``; returns its
    sha256."""
    import torch

    example = torch.zeros(2, *input_shape)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    was_training = net.training
    net.eval()
    try:
        program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
    finally:
        net.train(was_training)
    torch.export.save(program, str(path))
    return _sha256(path)


def require_onnx() -> None:
    """Raise :class:`ConfigError` (what to install) unless ONNX export can run."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"ONNX export needs {' and '.join(missing)}: "
                          "pip install 'manta[onnx]'")


def _write_onnx(net: nn.Module, input_shape: tuple[int, int, int], path: Path) -> str:
    """Save ``net`` as ONNX taking ``[B, *input_shape]``; returns its sha256."""
    require_onnx()
    import torch

    was_training = net.training
    net.eval()
    try:
        exported = torch.onnx.export(
            net, (torch.zeros(2, *input_shape),), dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 16)},),
            verbose=False)
        assert exported is not None
        exported.save(str(path))
    finally:
        net.train(was_training)
    return _sha256(path)


def export_subnet(
    supernet: OFASupernet, arch: Arch, out_dir: Path, program: bool = True, onnx: bool = False
) -> ExportedSubnet:
    """Extract ``arch`` from ``supernet`` and write it to ``out_dir`` (created if needed)."""
    # the cost models import the supernet code; loading stays torch-only
    from miner.automl.efficiency import count_flops, count_params, layout_of

    arch = supernet.space.canonical(arch)
    net = supernet.extract(arch)
    spec = net.spec.to_dict()
    input_shape = layout_of(supernet.config).input_shape(arch.resolution)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS_FILE
    state = {name: t.detach().cpu().contiguous() for name, t in net.state_dict().items()}
    save_file(state, str(weights), metadata={"format": spec["format"]})
    description = {
        "arch": arch.to_dict(),
        "net": spec,
        "input_shape": list(input_shape),
        "flops": count_flops(supernet.config, arch),
        "params": count_params(supernet.config, arch),
    }
    program_path = None
    if program:
        program_path = out_dir / PROGRAM_FILE
        description["program_sha256"] = _write_program(net, input_shape, program_path)
    if onnx:
        description["onnx_sha256"] = _write_onnx(net, input_shape, out_dir / ONNX_FILE)
    arch_path = out_dir / ARCH_FILE
    arch_path.write_text(json.dumps(description, sort_keys=True, indent=1), encoding="utf-8")
    return ExportedSubnet(weights, arch_path, _sha256(weights), program_path)


def build_described(description: dict[str, Any]) -> nn.Module:
    """A freshly initialised static network for a description's ``format``."""
    fmt = description.get("format")
    if fmt == STATIC_FORMAT:
        return build_static(NetSpec.from_dict(description))
    from miner.automl.stereo import static_net  # torch and the static blocks only

    if fmt == static_net.FORMAT:
        return static_net.build_stereo_static(static_net.StereoNetSpec.from_dict(description))
    raise ValueError(f"unknown network format {fmt!r}")


def load_exported(directory: Path) -> Any:
    """The static network saved in ``directory``, in eval mode, on the CPU
    (a :class:`~miner.automl.static.StaticNet` or a stereo ``StereoStaticNet``)."""
    try:
        description = json.loads((directory / ARCH_FILE).read_text(encoding="utf-8"))
        net = build_described(description["net"])
        state = load_file(str(directory / WEIGHTS_FILE))
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise CheckpointError(path=str(directory), detail=f"{type(exc).__name__}: {exc}") from exc
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(path=str(directory), detail=str(exc)) from exc
    return net.eval()


def load_exported_arch(directory: Path) -> Arch:
    """The architecture recorded beside an export."""
    try:
        description = json.loads((directory / ARCH_FILE).read_text(encoding="utf-8"))
        return Arch.from_dict(description["arch"])
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(path=str(directory), detail=str(exc)) from exc
