"""``manta-miner`` daemon commands (init, register, status, withdraw) through Typer's runner,
and ``run_miner`` (HTTP server + event loop, trusting the task's arbiter) claiming a task on
anvil."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from pydantic import SecretStr
from typer.testing import CliRunner

from miner.daemon.cli import app
from miner.daemon.runtime import run_miner, unlock_account
from miner.daemon.settings import MinerSettings, load_miner_settings
from miner.daemon.store import StateStore, TaskPhase
from node.chain.market import TaskMarket
from node.chain.models import TaskParams, checksum_address
from node.devnet import Devnet, DevnetConfig
from node.documents.spec import Constraint, DatasetRef, SearchSpaceSpec, TaskSpec
from node.identity.keystore import KdfParams, import_key
from node.ports import free_port
from tests.integration.daemon.support import ARBITER

pytestmark = [pytest.mark.anvil, pytest.mark.timeout(120)]
on_module_loop = pytest.mark.asyncio(loop_scope="module")
ROOT = Path(__file__).resolve().parents[3]
PASSWORD = "correct horse battery staple"
MINER = 3


@dataclass
class Env:
    devnet: Devnet
    folder: Path
    config: Path
    env: dict[str, str]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    config = DevnetConfig(anvil_path=ROOT / "node_modules" / ".bin" / "anvil")
    if not config.anvil_path.exists():
        pytest.skip("anvil not installed (npm ci)")
    folder = tmp_path_factory.mktemp("miner")
    devnet = await Devnet.start(config)
    try:
        devnet.deployment.save(folder / "deployment.json")
        account = devnet.accounts[MINER]
        import_key(folder / "keys", SecretStr(account.key.hex()), SecretStr(PASSWORD), "rig",
                   kdf=KdfParams.insecure_fast())
        port = free_port()
        toml = folder / "miner.toml"
        toml.write_text(
            f'data_dir = "{folder / "data"}"\n'
            f'[chain]\ndeployment_file = "{folder / "deployment.json"}"\n'
            f'[identity]\nkeystore_dir = "{folder / "keys"}"\nkeystore = "rig"\n'
            'password_env = "RIG_PASSWORD"\n'
            f'[http]\nport = {port}\n[indexer]\npoll_interval_s = 0.05\n'
            '[tx]\npoll_interval_s = 0.05\n'
            f'[policy]\narbiters = ["{devnet.accounts[ARBITER].address}"]\n')
        yield Env(devnet, folder, toml, {"RIG_PASSWORD": PASSWORD})
    finally:
        await devnet.stop()


async def invoke(env: Env, *args: str) -> dict[str, Any]:
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, app, ["--config", str(env.config), *args],
                                     env=env.env)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_init_writes_a_keystore_and_settings_that_load(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MANTA_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MANTA_IDENTITY__KDF_WORK", "16")
    monkeypatch.setenv("MANTA_IDENTITY__PASSWORD_ENV", "PW")
    monkeypatch.setenv("PW", PASSWORD)
    runner = CliRunner()
    arbiter = "0x" + "ab" * 20
    args = ["init", "--config-out", "rig.toml", "--rpc-url", "http://127.0.0.1:8545",
            "--public-url", "http://10.1.1.1:8700", "--gpus", "2", "--arbiter", arbiter,
            "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    untrusting = runner.invoke(app, ["init", "--config-out", "none.toml", "--name", "other"])
    assert untrusting.exit_code == 0, untrusting.output
    assert "no arbiter trusted yet" in " ".join(untrusting.output.split())
    monkeypatch.delenv("MANTA_IDENTITY__PASSWORD_ENV")
    settings = load_miner_settings(Path("rig.toml"))
    assert settings.capacity.gpus == 2 and settings.http.endpoint() == "http://10.1.1.1:8700"
    assert settings.chain.rpc_urls == ["http://127.0.0.1:8545"]
    assert settings.policy.arbiters == (checksum_address(arbiter),)
    assert load_miner_settings(Path("none.toml")).policy.arbiters == ()
    settings = load_miner_settings(Path("rig.toml"), identity={"password_env": "PW"})
    assert unlock_account(settings, {"PW": PASSWORD}).address == out["address"]
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "exists" in again.output
    offline = runner.invoke(app, ["--config", "rig.toml", "status", "--offline", "--json"])
    assert offline.exit_code == 0 and json.loads(offline.stdout)["tasks"] == []


@on_module_loop
async def test_register_status_withdraw(env: Env) -> None:
    first = await invoke(env, "register", "--json")
    assert first["sent"] is True and first["endpoint"].startswith("http://127.0.0.1:")
    assert (await invoke(env, "register", "--json"))["sent"] is False  # already there
    status = await invoke(env, "status", "--json")
    assert status["address"] == env.devnet.accounts[MINER].address
    assert status["endpoint"] == first["endpoint"] and status["credit_native_wei"] == 0
    assert status["reputation"] == {"completed": 0, "failed": 0, "disputes_lost": 0,
                                    "earned_wei": 0, "distinct_clients": 0}
    assert (await invoke(env, "withdraw", "--json")) == {"withdrawn_wei": {}}


@on_module_loop
async def test_run_miner_claims_and_serves(env: Env) -> None:
    settings: MinerSettings = load_miner_settings(env.config)
    account = unlock_account(settings, env.env)
    stop = asyncio.Event()
    runner = asyncio.create_task(run_miner(settings, account, stop))
    client = await TaskMarket.create(env.devnet.rpc, env.devnet.deployment.task_market,
                                     await env.devnet.sender(0))
    spec = TaskSpec(kind="classification", dataset=DatasetRef(name="digits"),
                    search_space=SearchSpaceSpec(resolutions=(32,)),
                    constraint=Constraint(max_flops=10**7))
    spec_file = env.folder / "spec.json"
    spec_file.write_bytes(spec.canonical())
    posted = await client.post_task(TaskParams(
        reward_wei=10**17, bond_wei=10**15, slots=1, claim_window_s=600, work_window_s=7200,
        review_window_s=600, arbitration_window_s=600,
        arbiter=env.devnet.accounts[ARBITER].address, spec_hash=spec.spec_hash(),
        validation_hash="0x" + "55" * 32), spec_file.as_uri())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        url = f"http://127.0.0.1:{settings.http.port}"
        async with aiohttp.ClientSession() as session:
            phase = None
            while phase != "formed":  # the daemon's view, over its own HTTP API
                assert loop.time() < deadline and not runner.done(), phase
                await asyncio.sleep(0.05)
                try:
                    async with session.get(f"{url}/tasks/{posted.task_id}/progress") as reply:
                        if reply.status == 200:
                            phase = (await reply.json())["daemon_phase"]
                except aiohttp.ClientConnectionError:
                    continue  # the server is not listening yet
            async with session.get(f"{url}/healthz") as response:
                assert (await response.json())["address"] == account.address
        assert await client.members_of(posted.task_id) == [account.address]
    finally:
        stop.set()
        await asyncio.wait_for(runner, 20)
    with StateStore.open(settings.paths().state_db) as store:
        record = store.task(posted.task_id)
        assert record is not None and record.phase is TaskPhase.FORMED
