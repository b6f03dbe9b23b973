"""The devnet: in-process start/stop with the chain demo, and ``manta-node devnet``/``deploy``
as real processes (deployment file, code on chain, chain-id check, clean stop, no orphan)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from node.chain.models import Deployment
from node.chain.token import Erc20
from node.cli import app
from node.demo import run_lifecycle
from node.devnet import Devnet, DevnetConfig
from node.identity.keystore import unlock
from node.identity.passwords import password_from_file

pytestmark = [pytest.mark.anvil, pytest.mark.timeout(120)]
MANTA_NODE = Path(sys.executable).parent / "manta-node"


def _rpc(url: str, method: str, params: list[Any] | None = None) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    request = urllib.request.Request(url, body.encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())["result"]


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie awaiting an init that does not reap counts)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return True
    return state in {"Z", "X"}


def _group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid`` (anvil runs in its own)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in {"Z", "X"}:
            alive.append(int(stat.parent.name))
    return alive


def _wait_gone(pgid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return True
        time.sleep(0.05)
    return False


async def test_devnet_start_demo_stop(tmp_path: Path) -> None:
    deployment_file = tmp_path / "deployment.json"
    config = DevnetConfig(folder=tmp_path / "net", deployment_file=deployment_file,
                          accounts=5, write_keystores=True, mint_wei=123)
    devnet = await Devnet.start(config)
    try:
        assert Deployment.load(deployment_file) == devnet.deployment
        assert devnet.deployment.rpc_url == devnet.rpc_url
        assert len(await devnet.rpc.get_code(devnet.deployment.task_market)) > 100
        token = Erc20(devnet.rpc, devnet.deployment.token or "", _token_abi())
        assert await token.balance_of(devnet.accounts[4].address) == 123
        assert devnet.password_file is not None
        account = unlock(devnet.keystores[2].path, password_from_file(devnet.password_file))
        assert account.address == devnet.accounts[2].address
        summary = await run_lifecycle(devnet)
        assert summary.state == "SETTLED"
        # accept pushed each of the two members its half of the reward and its bond
        assert summary.total_gas > 0 and sum(summary.paid_wei.values()) == 12 * 10**17
        assert set(summary.paid_wei.values()) == {6 * 10**17}
        watched = await asyncio.to_thread(CliRunner().invoke, app, [
            "watch", "--no-follow", "--json", "--deployment-file", str(deployment_file)])
        assert watched.exit_code == 0, watched.output
        events = [json.loads(line) for line in watched.output.splitlines()]
        assert [e["event"] for e in events] == [
            "MinerRegistered", "MinerRegistered", "TaskPosted", "TaskClaimed", "TaskClaimed",
            "TaskStarted", "ResultSubmitted", "TaskSettled"]  # paid inside accept: no Withdrawn
        assert not any(e["removed"] for e in events)
        assert {e.get("task_id") for e in events[2:8]} == {summary.task_id}
    finally:
        await devnet.stop()
    assert _gone(devnet.pid) and not _group_alive(devnet.pid)
    assert not deployment_file.exists()  # a file pointing at a dead chain would mislead


def _token_abi() -> Any:
    from node.chain.artifacts import load_artifact

    return load_artifact("MantaTestToken").abi


def _start_cli_devnet(tmp_path: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    process = subprocess.Popen(
        [str(MANTA_NODE), "devnet", "--json", "--accounts", "3", "--folder", str(tmp_path / "net"),
         "--deployment-file", str(tmp_path / "deployment.json")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, f"devnet exited with {process.wait()}"
    return process, json.loads(line)


def test_cli_devnet_deploy_and_clean_stop(tmp_path: Path) -> None:
    process, info = _start_cli_devnet(tmp_path)
    try:
        deployment = Deployment.load(tmp_path / "deployment.json")
        assert deployment.task_market == info["task_market"]
        assert len(_rpc(info["rpc_url"], "eth_getCode", [info["task_market"], "latest"])) > 200

        deployer = info["accounts"][1]
        nonce_before = _rpc(info["rpc_url"], "eth_getTransactionCount", [deployer, "latest"])
        args = ["deploy", "--rpc-url", info["rpc_url"], "--keystore", info["keystores"][1],
                "--password-file", info["password_file"],
                "--deployment-file", str(tmp_path / "mine.json"), "--json"]
        refused = CliRunner().invoke(app, [*args, "--chain-id", "5"])
        assert refused.exit_code == 1
        assert "chain id mismatch" in refused.output and "expected 5" in refused.output
        assert _rpc(info["rpc_url"], "eth_getTransactionCount", [deployer, "latest"]) \
            == nonce_before  # nothing was sent
        deployed = CliRunner().invoke(app, [*args, "--chain-id", "31337"])
        assert deployed.exit_code == 0, deployed.output
        mine = json.loads(deployed.output.strip().splitlines()[-1])
        assert mine["task_market"] != info["task_market"]
        assert Deployment.load(tmp_path / "mine.json").task_market == mine["task_market"]
        assert len(_rpc(info["rpc_url"], "eth_getCode", [mine["task_market"], "latest"])) > 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    assert _wait_gone(info["anvil_pid"])
    assert not (tmp_path / "deployment.json").exists()


def test_anvil_dies_with_a_killed_cli(tmp_path: Path) -> None:
    process, info = _start_cli_devnet(tmp_path)
    assert _group_alive(info["anvil_pid"]) == [info["anvil_pid"]]  # anvil itself, no launcher
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=5)
    survivors = [] if _wait_gone(info["anvil_pid"]) else _group_alive(info["anvil_pid"])
    for pid in survivors:  # do not leave them behind if the check fails
        os.kill(pid, signal.SIGKILL)
    assert not survivors, "anvil outlived its parent"
