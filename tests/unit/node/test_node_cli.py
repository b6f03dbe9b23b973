"""``manta-node keys``/``deploy`` through Typer's CliRunner: parsing, rendering, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from typer.testing import CliRunner

from node.cli import app

KEY_HEX = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
ENV = {"MANTA_IDENTITY__KDF_WORK": "16", "PW": "pw-in-env"}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_keys_new_list_import(runner: CliRunner, tmp_path: Path) -> None:
    keys = str(tmp_path / "keys")
    made = runner.invoke(app, ["keys", "new", "alice", "--dir", keys, "--password-env", "PW",
                               "--json"], env=ENV)
    assert made.exit_code == 0, made.output
    alice = _json(made.output)
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY_HEX + "\n")
    imported = runner.invoke(app, ["keys", "import", "bob", "--key-file", str(key_file),
                                   "--dir", keys, "--password-env", "PW", "--json"], env=ENV)
    assert imported.exit_code == 0, imported.output
    assert _json(imported.output)["address"] == Account.from_key(KEY_HEX).address
    listed = runner.invoke(app, ["keys", "list", "--dir", keys, "--json"], env=ENV)
    assert [k["name"] for k in _json(listed.output)["keystores"]] == ["alice", "bob"]
    assert _json(listed.output)["keystores"][0]["address"] == alice["address"]
    for result in (made, imported, listed):
        assert KEY_HEX not in result.output and "pw-in-env" not in result.output
    human = runner.invoke(app, ["keys", "list", "--dir", keys], env=ENV)
    assert "alice" in human.output and alice["address"] in human.output


def test_our_errors_exit_1_with_a_clean_message(runner: CliRunner, tmp_path: Path) -> None:
    args = ["keys", "new", "alice", "--dir", str(tmp_path), "--password-env", "PW"]
    assert runner.invoke(app, args, env=ENV).exit_code == 0
    again = runner.invoke(app, args, env=ENV)
    assert again.exit_code == 1
    assert "error: a keystore for name 'alice' already exists" in again.output
    assert "Traceback" not in again.output
    unset = runner.invoke(app, ["keys", "new", "x", "--dir", str(tmp_path),
                                "--password-env", "NOT_SET"], env=ENV)
    assert unset.exit_code == 1 and "NOT_SET: not set" in unset.output


def test_usage_errors_exit_2(runner: CliRunner) -> None:
    assert runner.invoke(app, ["deploy"]).exit_code == 2  # --rpc-url missing
    assert runner.invoke(app, ["keys", "new"]).exit_code == 2
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2


def test_deploy_needs_a_keystore(runner: CliRunner) -> None:
    result = runner.invoke(app, ["deploy", "--rpc-url", "http://127.0.0.1:9"], env=ENV)
    assert result.exit_code == 1 and "no deployer keystore" in result.output


def test_deploy_refuses_unreachable_endpoint_cleanly(runner: CliRunner, tmp_path: Path) -> None:
    keys = str(tmp_path / "keys")
    runner.invoke(app, ["keys", "new", "d", "--dir", keys, "--password-env", "PW"], env=ENV)
    result = runner.invoke(app, [
        "deploy", "--rpc-url", "http://127.0.0.1:9", "--keystore", "d",
        "--password-env", "PW", "--deployment-file", str(tmp_path / "dep.json"),
    ], env={**ENV, "MANTA_IDENTITY__KEYSTORE_DIR": keys, "MANTA_CHAIN__TIMEOUT_S": "0.5"})
    assert result.exit_code == 1, result.output
    assert "no RPC endpoint answered" in result.output
    assert not (tmp_path / "dep.json").exists()
