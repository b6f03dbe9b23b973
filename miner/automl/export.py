"""Export a sub-network as a standalone artifact, and load it back without the supernet.

An export directory holds ``model.safetensors`` (the static network's state dict) and
``arch.json`` (the layer-level :class:`~miner.automl.static.NetSpec`, the architecture and
its analytic costs). Loading needs only :mod:`miner.automl.static` and torch.

With ``program=True`` (the default) it also holds ``model.pt2``, the same network as a
``torch.export`` program with a dynamic batch dimension, pinned by ``program_sha256`` inside
``arch.json``: a client verifies a result with torch alone, without any miner code.
ONNX export is not provided: the ``onnx`` package is not part of the miner's stack.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from miner.automl.errors import CheckpointError
from miner.automl.space import Arch
from miner.automl.static import NetSpec, StaticNet, build_static

if TYPE_CHECKING:
    from miner.automl.supernet import OFASupernet

WEIGHTS_FILE = "model.safetensors"
ARCH_FILE = "arch.json"
PROGRAM_FILE = "model.pt2"


@dataclass(frozen=True)
class ExportedSubnet:
    """Where an export went, and the hash a result manifest records."""

    weights_path: Path
    arch_path: Path
    weights_sha256: str
    program_path: Path | None = None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_program(net: StaticNet, in_channels: int, resolution: int, path: Path) -> str:
    """Save ``net`` as a ``torch.export`` program taking ``[B, C, R, R]``; returns its sha256."""
    import torch

    example = torch.zeros(2, in_channels, resolution, resolution)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    was_training = net.training
    net.eval()
    try:
        program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
    finally:
        net.train(was_training)
    torch.export.save(program, str(path))
    return _sha256(path)


def export_subnet(
    supernet: OFASupernet, arch: Arch, out_dir: Path, program: bool = True
) -> ExportedSubnet:
    """Extract ``arch`` from ``supernet`` and write it to ``out_dir`` (created if needed)."""
    from miner.automl.efficiency import count_flops, count_params  # keeps loading torch-only

    arch = supernet.space.canonical(arch)
    net = supernet.extract(arch)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS_FILE
    state = {name: t.detach().cpu().contiguous() for name, t in net.state_dict().items()}
    save_file(state, str(weights), metadata={"format": "manta-static-v1"})
    description = {
        "arch": arch.to_dict(),
        "net": net.spec.to_dict(),
        "flops": count_flops(supernet.config, arch),
        "params": count_params(supernet.config, arch),
    }
    program_path = None
    if program:
        program_path = out_dir / PROGRAM_FILE
        in_channels = supernet.config.in_channels
        description["program_sha256"] = _write_program(
            net, in_channels, arch.resolution, program_path
        )
    arch_path = out_dir / ARCH_FILE
    arch_path.write_text(json.dumps(description, sort_keys=True, indent=1), encoding="utf-8")
    return ExportedSubnet(weights, arch_path, _sha256(weights), program_path)


def load_exported(directory: Path) -> StaticNet:
    """The static network saved in ``directory``, in eval mode, on the CPU."""
    try:
        description = json.loads((directory / ARCH_FILE).read_text(encoding="utf-8"))
        spec = NetSpec.from_dict(description["net"])
        state = load_file(str(directory / WEIGHTS_FILE))
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise CheckpointError(path=str(directory), detail=f"{type(exc).__name__}: {exc}") from exc
    net = build_static(spec)
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
