"""Export a stereo sub-network in the engine's artifact layout, and load it back.

Same files as :mod:`miner.automl.export` (``model.safetensors`` + ``arch.json``, with the
same hash in :class:`~miner.automl.export.ExportedSubnet`); ``arch.json`` holds a
``manta-stereo-static-v1`` description. Loading needs torch and
:mod:`miner.automl.stereo.static_net` only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from miner.automl.errors import CheckpointError
from miner.automl.export import ARCH_FILE, WEIGHTS_FILE, ExportedSubnet
from miner.automl.space import Arch
from miner.automl.stereo.static_net import FORMAT, StereoNetSpec, StereoStaticNet
from miner.automl.stereo.supernet import OFADispNetC


def export_stereo_subnet(supernet: OFADispNetC, arch: Arch, out_dir: Path) -> ExportedSubnet:
    """Extract ``arch`` and write it to ``out_dir`` (created if needed)."""
    from miner.automl.stereo.cost import count_flops, count_params

    arch = supernet.space.canonical(arch)
    net = supernet.extract(arch)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS_FILE
    state = {name: t.detach().cpu().contiguous() for name, t in net.state_dict().items()}
    save_file(state, str(weights), metadata={"format": FORMAT})
    config = supernet.config
    description = {
        "arch": arch.to_dict(),
        "net": net.spec.to_dict(),
        "flops": count_flops(config, arch),  # type: ignore[arg-type]
        "params": count_params(config, arch),  # type: ignore[arg-type]
        "input_size": list(config.image_size(arch.resolution)),  # type: ignore[attr-defined]
    }
    arch_path = out_dir / ARCH_FILE
    arch_path.write_text(json.dumps(description, sort_keys=True, indent=1), encoding="utf-8")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    return ExportedSubnet(weights, arch_path, digest)


def load_exported_stereo(directory: Path) -> StereoStaticNet:
    """The static stereo network saved in ``directory``, in eval mode, on the CPU."""
    try:
        description = json.loads((directory / ARCH_FILE).read_text(encoding="utf-8"))
        spec = StereoNetSpec.from_dict(description["net"])
        state = load_file(str(directory / WEIGHTS_FILE))
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise CheckpointError(path=str(directory), detail=f"{type(exc).__name__}: {exc}") from exc
    net = StereoStaticNet(spec)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(path=str(directory), detail=str(exc)) from exc
    return net.eval()
