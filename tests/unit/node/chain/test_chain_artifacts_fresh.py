"""The committed contract artifacts match the current sources and expose the agreed interface."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from node.chain.artifacts import (
    CONTRACT_NAMES,
    REPO_ROOT,
    ArtifactError,
    compiler_settings,
    hash_sources,
    load_artifact,
    sources_hash,
)
from node.chain.compile import (
    CompileError,
    gather_sources,
    resolve_import,
    run_solc,
    standard_json_input,
)

REBUILD = "run python -m node.chain.compile to rebuild them"


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_artifact_is_fresh(name: str) -> None:
    artifact = load_artifact(name)
    current = sources_hash()
    assert artifact.source_hash == current, (
        f"node/chain/artifacts/{name}.json was built from other sources "
        f"({artifact.source_hash} != {current}): {REBUILD}"
    )


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_artifact_has_code_and_abi(name: str) -> None:
    artifact = load_artifact(name)
    assert artifact.name == name
    assert len(artifact.bytecode) > len(artifact.deployed_bytecode) > 100
    assert artifact.compiler["evmVersion"] == "prague"


def test_task_market_abi_has_agreed_entry_points() -> None:
    abi = load_artifact("TaskMarket").abi
    functions = {e["name"] for e in abi if e["type"] == "function"}
    events = {e["name"] for e in abi if e["type"] == "event"}
    errors = {e["name"] for e in abi if e["type"] == "error"}
    assert {
        "register",
        "endpointOf",
        "postTask",
        "claim",
        "submitResult",
        "accept",
        "finalize",
        "dispute",
        "resolve",
        "expire",
        "cancel",
        "withdraw",
        "taskCount",
        "getTask",
        "stateOf",
        "checkIn",
        "endorse",
        "sweep",
        "groupHash",
        "quorum",
        "creditOf",
        "burnedOf",
        "resultDigest",
        "eip712Domain",
    } <= functions
    assert {
        "MinerRegistered",
        "TaskPosted",
        "TaskClaimed",
        "TaskStarted",
        "ResultSubmitted",
        "TaskDisputed",
        "DisputeResolved",
        "TaskSettled",
        "TaskCancelled",
        "TaskExpired",
        "Withdrawn",
    } <= events
    assert all(
        name.startswith("TaskMarket")
        for name in errors
        if not name.startswith(
            ("ReentrancyGuard", "ECDSA", "SafeERC20", "InvalidShortString", "StringTooLong")
        )
    )
    post = next(e for e in abi if e.get("name") == "postTask")
    params = [c["name"] for c in post["inputs"][0]["components"]]
    assert params == [
        "token",
        "reward",
        "bond",
        "slots",
        "claimWindow",
        "workWindow",
        "reviewWindow",
        "arbitrationWindow",
        "arbiter",
        "specHash",
        "validationHash",
    ]


def test_hash_changes_with_sources_and_settings() -> None:
    settings = compiler_settings()
    base = hash_sources({"src/A.sol": "contract A {}"}, settings)
    assert hash_sources({"src/A.sol": "contract A { }"}, settings) != base
    assert hash_sources({"src/B.sol": "contract A {}"}, settings) != base
    assert (
        hash_sources({"src/A.sol": "contract A {}"}, {**settings, "evmVersion": "cancun"}) != base
    )
    assert hash_sources({"src/A.sol": "contract A {}"}, settings) == base


def test_missing_artifact_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact("TaskMarket", directory=tmp_path)


def test_imports_resolve_relative_and_package_paths() -> None:
    assert resolve_import("src/a/B.sol", "../C.sol") == "src/C.sol"
    assert resolve_import("src/B.sol", "./lib/D.sol") == "src/lib/D.sol"
    assert resolve_import("src/B.sol", "@openzeppelin/contracts/x.sol") == (
        "@openzeppelin/contracts/x.sol"
    )


def test_gather_sources_follows_imports(tmp_path: Path) -> None:
    (tmp_path / "contracts" / "src" / "lib").mkdir(parents=True)
    (tmp_path / "node_modules" / "@pkg").mkdir(parents=True)
    (tmp_path / "package.json").write_text('{"devDependencies": {}}')
    (tmp_path / "contracts" / "src" / "A.sol").write_text(
        'import {B} from "./lib/B.sol";\nimport {\n  P\n} from "@pkg/P.sol";\ncontract A {}\n'
    )
    (tmp_path / "contracts" / "src" / "lib" / "B.sol").write_text("contract B {}\n")
    (tmp_path / "node_modules" / "@pkg" / "P.sol").write_text("contract P {}\n")
    assert sorted(gather_sources(tmp_path)) == ["@pkg/P.sol", "src/A.sol", "src/lib/B.sol"]


def test_gather_sources_reports_a_missing_import(tmp_path: Path) -> None:
    (tmp_path / "contracts" / "src").mkdir(parents=True)
    (tmp_path / "contracts" / "src" / "A.sol").write_text('import "./Missing.sol";\n')
    with pytest.raises(CompileError, match=r"Missing\.sol"):
        gather_sources(tmp_path)


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node for solc-js")
def test_compiler_errors_fail_loudly() -> None:
    broken = standard_json_input({"src/Broken.sol": "pragma solidity ^0.8.28; contract X { y }"})
    with pytest.raises(CompileError, match=r"Broken\.sol"):
        run_solc(broken, REPO_ROOT)
