"""Rebuild ``node/chain/artifacts/*.json`` from ``contracts/src``: ``python -m node.chain.compile``.

A developer tool, not used at run time: it gathers the sources and every file they import
(``@openzeppelin/...`` from ``node_modules``, relative imports next to the importer), builds a
solc standard-JSON input, runs solc-js through ``node scripts/solc-compile.cjs``, refuses any
compiler error, and writes one artifact per contract stamped with the source hash of
:mod:`node.chain.artifacts`.
"""

from __future__ import annotations

import argparse
import json
import logging
import posixpath
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from node.chain.artifacts import (
    ARTIFACTS_DIR,
    CONTRACT_NAMES,
    EVM_VERSION,
    OPTIMIZER,
    REPO_ROOT,
    SOLC_PACKAGE,
    VIA_IR,
    ArtifactError,
    compiler_settings,
    contract_sources,
    hash_sources,
    package_versions,
)

logger = logging.getLogger(__name__)

IMPORT_RE = re.compile(r"""^\s*import\s+(?:[^;]*?\bfrom\s+)?["']([^"']+)["']""", re.MULTILINE)
SOLC_TIMEOUT_S = 300.0


class CompileError(ArtifactError):
    """solc reported errors (or could not be run); no artifact was written."""

    template: ClassVar[str] = "compilation failed: {reason}"

    def __init__(self, reason: str) -> None:
        super().__init__(name="*", reason=reason)


def resolve_import(importer: str, target: str) -> str:
    """The source unit name of ``target`` as imported from unit ``importer``."""
    if target.startswith("."):
        return posixpath.normpath(posixpath.join(posixpath.dirname(importer), target))
    return target


def unit_path(unit: str, root: Path) -> Path:
    """Where the file of a source unit lives: packages under node_modules, ours under contracts/."""
    if unit.startswith("@"):
        return root / "node_modules" / unit
    return root / "contracts" / unit


def gather_sources(root: Path) -> dict[str, str]:
    """Our sources plus the transitive closure of their imports, keyed by source unit name."""
    sources = contract_sources(root)
    pending = list(sources)
    while pending:
        unit = pending.pop()
        for target in IMPORT_RE.findall(sources[unit]):
            name = resolve_import(unit, target)
            if name in sources:
                continue
            path = unit_path(name, root)
            try:
                sources[name] = path.read_text(encoding="utf-8")
            except FileNotFoundError as exc:
                raise CompileError(f"{unit} imports {target!r}, not found at {path}") from exc
            pending.append(name)
    return dict(sorted(sources.items()))


def standard_json_input(sources: Mapping[str, str]) -> dict[str, Any]:
    """The solc standard-JSON input for ``sources`` with the pinned settings."""
    return {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in sources.items()},
        "settings": {
            "evmVersion": EVM_VERSION,
            "optimizer": dict(OPTIMIZER),
            "viaIR": VIA_IR,
            "metadata": {"bytecodeHash": "none"},
            "outputSelection": {
                "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}
            },
        },
    }


def run_solc(standard_input: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Run solc-js on a standard-JSON input; raise :class:`CompileError` on any error."""
    script = root / "scripts" / "solc-compile.cjs"
    try:
        done = subprocess.run(
            ["node", str(script)],
            input=json.dumps(standard_input),
            capture_output=True,
            text=True,
            cwd=root,
            timeout=SOLC_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CompileError(f"cannot run node {script}: {exc}") from exc
    if done.returncode != 0:
        raise CompileError(f"node {script} exited {done.returncode}: {done.stderr.strip()}")
    output: dict[str, Any] = json.loads(done.stdout)
    problems = output.get("errors", [])
    for problem in problems:
        from_package = str(problem.get("sourceLocation", {}).get("file", "")).startswith("@")
        if problem.get("severity") == "warning" and not from_package:
            logger.warning("solc warning: %s", problem.get("formattedMessage", problem))
    errors = [p for p in problems if p.get("severity") == "error"]
    if errors:
        raise CompileError("\n".join(str(e.get("formattedMessage", e)) for e in errors))
    return output


def solc_version(root: Path) -> str:
    """The full version of the solc-js in node_modules, checked against package.json."""
    script = root / "scripts" / "solc-compile.cjs"
    done = subprocess.run(
        ["node", str(script), "--version"], capture_output=True, text=True, cwd=root, check=False
    )
    version = done.stdout.strip()
    pinned = package_versions(root)[SOLC_PACKAGE]
    if done.returncode != 0 or not version.startswith(pinned + "+"):
        raise CompileError(f"solc-js reports {version!r}, package.json pins {pinned}")
    return version


def build_artifacts(output: Mapping[str, Any], source_hash: str, version: str) -> dict[str, Any]:
    """One artifact document per contract in :data:`CONTRACT_NAMES` from the solc output."""
    by_name = {
        name: contract
        for unit, contracts in output.get("contracts", {}).items()
        if not unit.startswith("@")
        for name, contract in contracts.items()
    }
    artifacts: dict[str, Any] = {}
    for name in CONTRACT_NAMES:
        if name not in by_name:
            raise CompileError(f"contract {name} not found in the compiler output")
        evm = by_name[name]["evm"]
        artifacts[name] = {
            "contractName": name,
            "abi": by_name[name]["abi"],
            "bytecode": "0x" + evm["bytecode"]["object"],
            "deployedBytecode": "0x" + evm["deployedBytecode"]["object"],
            "sourceHash": source_hash,
            "compiler": {
                "version": version,
                "evmVersion": EVM_VERSION,
                "optimizer": dict(OPTIMIZER),
            },
        }
    return artifacts


def compile_contracts(root: Path = REPO_ROOT, out_dir: Path = ARTIFACTS_DIR) -> list[Path]:
    """Compile the contracts and write their artifacts; returns the files written."""
    version = solc_version(root)
    sources = gather_sources(root)
    output = run_solc(standard_json_input(sources), root)
    source_hash = hash_sources(contract_sources(root), compiler_settings(root))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in build_artifacts(output, source_hash, version).items():
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        logger.info("wrote artifact=%s bytes=%d", path, len(document["deployedBytecode"]) // 2 - 1)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line: compile and write the artifacts; exit 1 with solc's message on error."""
    parser = argparse.ArgumentParser(prog="python -m node.chain.compile", description=__doc__)
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root")
    parser.add_argument("--out", type=Path, default=ARTIFACTS_DIR, help="artifact directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        compile_contracts(args.root, args.out)
    except ArtifactError as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
