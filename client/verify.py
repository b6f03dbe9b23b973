"""``manta task verify``: re-check a delivered result and compare what it claims.

Checks (pure file reads, no torch): the manifest hashes to the on-chain ``resultRoot``;
the weights and the architecture file hash to the manifest's sha256s; the parameter count
read from the safetensors header (BatchNorm running statistics excluded) and the FLOPs and
params recorded in ``arch.json`` match the manifest's metrics.

Evaluating the task's metric on the client's own data (:mod:`client.evaluate`: accuracy
for a classification result, end-point error for a stereo one, chosen by which metric the
manifest claims) needs torch (imported lazily, with a clear message when it is missing)
*and* a network the client can
load without miner code: a ``torch.export`` program ``model.pt2`` whose sha256 is
``program_sha256`` in ``arch.json`` (itself pinned by the manifest). The plain
``manta-static-v1`` export (``model.safetensors`` + ``arch.json``) is rebuilt only by
``miner.automl.static``, which the client may not import; without the program the report
says so (``evaluated: false``) instead of guessing.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from client.errors import VerifyError
from client.models import Check, VerifyReport
from node.documents.canonical import HashMismatch
from node.documents.manifest import Metrics, ResultManifest, parse_manifest_checked
from node.errors import SpecError

WEIGHTS_FILE, ARCH_FILE, MANIFEST_FILE = "model.safetensors", "arch.json", "manifest.json"
PROGRAM_FILE, PROGRAM_KEY = "model.pt2", "program_sha256"
#: How far below the claimed accuracy the client's own data may land before the check fails.
ACCURACY_TOLERANCE = 0.05
#: How far above the claimed EPE (as a fraction of it) the client's pairs may land.
EPE_TOLERANCE = 0.25
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
MAX_HEADER_BYTES = 100 << 20


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape, from the safetensors header alone (no tensor is loaded)."""
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) != 8:
            raise VerifyError(reason=f"{path.name} is not a safetensors file")
        (size,) = struct.unpack("<Q", head)
        if size > MAX_HEADER_BYTES:
            raise VerifyError(reason=f"{path.name} header of {size} bytes is too large")
        try:
            header = json.loads(handle.read(size))
        except ValueError as exc:
            raise VerifyError(reason=f"{path.name} header is not JSON: {exc}") from exc
    return {name: tuple(int(d) for d in meta["shape"])
            for name, meta in header.items() if name != "__metadata__"}


def count_weight_params(shapes: dict[str, tuple[int, ...]]) -> int:
    """Learnable parameters: every tensor except BatchNorm running statistics."""
    total = 0
    for name, shape in shapes.items():
        if name.endswith(_BUFFER_SUFFIXES):
            continue
        numel = 1
        for dim in shape:
            numel *= dim
        total += numel
    return total


def _sha256(path: Path) -> str:
    return "0x" + hashlib.sha256(path.read_bytes()).hexdigest()


def _file_check(name: str, path: Path, expected: str) -> Check:
    if not path.is_file():
        return Check(name=name, ok=False, detail=f"{path.name} missing")
    actual = _sha256(path)
    ok = actual.removeprefix("0x") == expected.lower().removeprefix("0x")
    return Check(name=name, ok=ok, detail=f"sha256 {actual}")


def _claims_checks(manifest: ResultManifest, arch: dict[str, Any],
                   measured_params: int) -> list[Check]:
    claimed = manifest.metrics
    checks = [
        Check(name="params (weights)", ok=measured_params == claimed.params,
              detail=f"{measured_params} counted, {claimed.params} claimed"),
    ]
    if "params" in arch:
        checks.append(Check(name="params (arch.json)", ok=arch["params"] == claimed.params,
                            detail=f"{arch['params']} recorded, {claimed.params} claimed"))
    if "flops" in arch:
        checks.append(Check(name="flops (arch.json)", ok=arch["flops"] == claimed.flops,
                            detail=f"{arch['flops']} recorded, {claimed.flops} claimed"))
    return checks


def _evaluate(folder: Path, arch: dict[str, Any], data: Path, claimed: Metrics,
              tolerance: float) -> tuple[list[Check], dict[str, Any], str]:
    """The claimed metric measured on the client's data, or why it cannot be measured."""
    from client.evaluate import accuracy_on, epe_on, require_torch

    require_torch()
    if not data.exists():
        raise VerifyError(reason=f"data {data} does not exist")
    metric = "epe" if claimed.epe is not None else "accuracy"
    if PROGRAM_KEY not in arch:
        return [], {}, (f"{metric} not evaluated: the result has no torch-only program "
                        f"({PROGRAM_FILE} pinned by {PROGRAM_KEY} in arch.json); the "
                        "manta-static-v1 export can only be rebuilt by miner code")
    program = folder / PROGRAM_FILE
    if claimed.epe is not None:
        shape = arch.get("input_shape")
        if not (isinstance(shape, list) and len(shape) == 3):
            raise VerifyError(reason="arch.json of a stereo result has no input_shape [C, H, W]")
        measured = epe_on(program, data, (int(shape[0]), int(shape[1]), int(shape[2])))
        limit = claimed.epe * (1 + EPE_TOLERANCE)
        detail = (f"{measured:.4f} px on your pairs, {claimed.epe:.4f} claimed "
                  f"(at most {limit:.4f} accepted)")
        return [Check(name="EPE (your data)", ok=measured <= limit, detail=detail)], \
            {"epe": measured}, ""
    net: dict[str, Any] = arch["net"] if isinstance(arch.get("net"), dict) else {}
    inner: dict[str, Any] = arch["arch"] if isinstance(arch.get("arch"), dict) else {}
    measured = accuracy_on(program, data, inner.get("resolution"), net.get("in_channels"))
    ok = claimed.accuracy is None or measured >= claimed.accuracy - tolerance
    detail = f"{measured:.4f} on your data, {claimed.accuracy} claimed (tolerance {tolerance})"
    return [Check(name="accuracy (your data)", ok=ok, detail=detail)], {"accuracy": measured}, ""


def verify_folder(task_id: int, folder: Path, expected_root: str, data: Path | None,
                  tolerance: float = ACCURACY_TOLERANCE) -> VerifyReport:
    """The report for a fetched result folder (manifest.json, model.safetensors, arch.json)."""
    try:
        raw = (folder / MANIFEST_FILE).read_bytes()
    except OSError as exc:
        raise VerifyError(reason=f"no manifest in {folder}: {exc.strerror}") from exc
    try:
        manifest = parse_manifest_checked(raw, expected_root)
    except HashMismatch as exc:
        check = Check(name="manifest = on-chain resultRoot", ok=False, detail=str(exc))
        return VerifyReport(task_id=task_id, checks=(check,), claimed={}, measured={},
                            evaluated=False, note="manifest refused; nothing else was read")
    except SpecError as exc:
        raise VerifyError(reason=str(exc)) from exc
    checks = [
        Check(name="manifest = on-chain resultRoot", ok=True, detail=expected_root),
        Check(name="task id", ok=manifest.task_id == task_id, detail=str(manifest.task_id)),
        _file_check("weights sha256", folder / WEIGHTS_FILE, manifest.weights_sha256),
        _file_check("arch.json sha256", folder / ARCH_FILE, manifest.arch_json_sha256),
    ]
    measured: dict[str, Any] = {}
    note, evaluated = "", False
    if all(c.ok for c in checks):
        measured["params"] = count_weight_params(safetensors_shapes(folder / WEIGHTS_FILE))
        raw_arch = json.loads((folder / ARCH_FILE).read_text(encoding="utf-8"))
        arch = raw_arch if isinstance(raw_arch, dict) else {}
        checks += _claims_checks(manifest, arch, measured["params"])
        if PROGRAM_KEY in arch:
            checks.append(_file_check("program sha256", folder / PROGRAM_FILE,
                                      str(arch[PROGRAM_KEY])))
        if data is not None and all(c.ok for c in checks):
            extra, values, note = _evaluate(folder, arch, data, manifest.metrics, tolerance)
            checks += extra
            measured.update(values)
            evaluated = bool(values)
    elif data is not None:
        note = "not evaluated: the delivery failed its hash checks"
    return VerifyReport(task_id=task_id, checks=tuple(checks),
                        claimed=manifest.metrics.model_dump(mode="json"), measured=measured,
                        evaluated=evaluated, note=note)
