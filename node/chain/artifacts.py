"""The compiled contracts (ABI + bytecode) committed under ``node/chain/artifacts/``.

Nodes deploy and call the contracts from these JSON files, so neither node.js nor a Solidity
compiler is needed at run time. Each artifact is stamped with :func:`sources_hash` of the
sources it was built from; a test compares the stamp with the current sources so that stale
artifacts are caught before anything is deployed (rebuild with ``python -m node.chain.compile``).

The compiler settings live here, not in ``compile.py``, because they are part of the hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from node.chain.errors import ChainError

logger = logging.getLogger(__name__)

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
REPO_ROOT = Path(__file__).resolve().parents[2]
CONTRACT_NAMES: tuple[str, ...] = ("TaskMarket", "MantaTestToken")

EVM_VERSION = "prague"
OPTIMIZER: Mapping[str, Any] = {"enabled": True, "runs": 200}
VIA_IR = False
SOLC_PACKAGE = "solc"
OPENZEPPELIN_PACKAGE = "@openzeppelin/contracts"


class ArtifactError(ChainError):
    """A contract artifact (or the sources behind it) is missing, malformed or stale."""

    template: ClassVar[str] = "contract artifact {name}: {reason}"


@dataclass(frozen=True)
class Artifact:
    """One compiled contract: what a deployer and a caller need."""

    name: str
    abi: Sequence[Mapping[str, Any]]
    bytecode: bytes
    source_hash: str
    deployed_bytecode: bytes = b""
    compiler: Mapping[str, Any] = field(default_factory=dict)


def load_artifact(name: str, directory: Path = ARTIFACTS_DIR) -> Artifact:
    """Read the committed artifact of contract ``name`` (e.g. ``"TaskMarket"``)."""
    path = directory / f"{name}.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactError(name=name, reason=f"{path} not found") from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(name=name, reason=f"{path} is not JSON ({exc})") from exc
    try:
        return Artifact(
            name=str(raw["contractName"]),
            abi=tuple(raw["abi"]),
            bytecode=_hex_bytes(raw["bytecode"]),
            source_hash=str(raw["sourceHash"]),
            deployed_bytecode=_hex_bytes(raw["deployedBytecode"]),
            compiler=dict(raw["compiler"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(name=name, reason=f"{path} is malformed ({exc!r})") from exc


def _hex_bytes(value: object) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"expected 0x-prefixed hex, got {str(value)[:20]!r}")
    return bytes.fromhex(value[2:])


def package_versions(root: Path = REPO_ROOT) -> dict[str, str]:
    """The pinned solc and OpenZeppelin versions, from the repository's package.json."""
    path = root / "package.json"
    try:
        deps = json.loads(path.read_text(encoding="utf-8"))["devDependencies"]
        return {pkg: str(deps[pkg]) for pkg in (SOLC_PACKAGE, OPENZEPPELIN_PACKAGE)}
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise ArtifactError(
            name="*", reason=f"cannot read pinned versions from {path}: {exc!r}"
        ) from exc


def compiler_settings(root: Path = REPO_ROOT) -> dict[str, Any]:
    """Everything besides the sources that changes the bytecode; part of the source hash."""
    versions = package_versions(root)
    return {
        "solcVersion": versions[SOLC_PACKAGE],
        "openzeppelinVersion": versions[OPENZEPPELIN_PACKAGE],
        "evmVersion": EVM_VERSION,
        "optimizer": dict(OPTIMIZER),
        "viaIR": VIA_IR,
    }


def contract_sources(root: Path = REPO_ROOT) -> dict[str, str]:
    """``contracts/src/**/*.sol`` as {path relative to ``contracts/``: text}, sorted by path."""
    src = root / "contracts" / "src"
    files = sorted(src.rglob("*.sol"))
    if not files:
        raise ArtifactError(name="*", reason=f"no Solidity sources under {src}")
    return {
        p.relative_to(root / "contracts").as_posix(): p.read_text(encoding="utf-8") for p in files
    }


def hash_sources(sources: Mapping[str, str], settings: Mapping[str, Any]) -> str:
    """sha256 over the sorted (path, content) pairs and the canonical JSON of the settings."""
    digest = hashlib.sha256()
    for path in sorted(sources):
        for part in (path.encode(), sources[path].encode()):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    digest.update(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode())
    return "0x" + digest.hexdigest()


def sources_hash(root: Path = REPO_ROOT) -> str:
    """The hash the artifacts must carry to match the current sources (needs a source checkout)."""
    return hash_sources(contract_sources(root), compiler_settings(root))
