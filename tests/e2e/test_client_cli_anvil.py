"""``manta`` as a real subprocess against a devnet: submit → status → cancel → withdraw, and
a second task that expires; settings from a TOML config file plus ``MANTA_`` environment,
and refused commands that exit 1 with one line and leave the chain as it was."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from node.chain.market import TaskMarket
from node.chain.models import TaskState
from node.devnet import Devnet, DevnetConfig

pytestmark = [pytest.mark.e2e, pytest.mark.anvil, pytest.mark.timeout(180)]
on_module_loop = pytest.mark.asyncio(loop_scope="module")
ROOT = Path(__file__).resolve().parents[2]
SPEC = 'kind = "classification"\n[dataset]\nname = "digits"\n[constraint]\nmax_params = 9000\n'


@dataclass
class Proc:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Env:
    devnet: Devnet
    folder: Path
    market: TaskMarket

    async def manta(self, *args: str) -> Proc:
        script = Path(sys.executable).with_name("manta")
        argv = [str(script)] if script.exists() else [
            sys.executable, "-c", "import sys; from client.cli import main; sys.exit(main())"]
        environ = {**os.environ, "COLUMNS": "200",
                   "MANTA_CHAIN__RPC_URLS": json.dumps([self.devnet.rpc_url])}
        process = await asyncio.create_subprocess_exec(
            *argv, "--config", str(self.folder / "manta.toml"), *args, cwd=self.folder,
            env=environ, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode is not None
        return Proc(process.returncode, out.decode(), err.decode())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    config = DevnetConfig(anvil_path=ROOT / "node_modules" / ".bin" / "anvil",
                          write_keystores=True, accounts=4)
    if not config.anvil_path.exists():
        pytest.skip("anvil not installed (npm ci)")
    folder = tmp_path_factory.mktemp("client-e2e")
    devnet = await Devnet.start(config)
    try:
        devnet.deployment.model_copy(update={"rpc_url": ""}).save(folder / "deployment.json")
        (folder / "spec.toml").write_text(SPEC)
        (folder / "manta.toml").write_text(
            f'[chain]\ndeployment_file = "{folder / "deployment.json"}"\n'
            f'[identity]\nkeystore_dir = "{devnet.folder / "keystores"}"\nkeystore = "dev1"\n'
            f'password_file = "{devnet.password_file}"\n')
        market = await TaskMarket.create(devnet.rpc, devnet.deployment.task_market)
        yield Env(devnet, folder, market)
    finally:
        await devnet.stop()


@on_module_loop
async def test_submit_status_cancel_withdraw(env: Env) -> None:
    arbiter = env.devnet.accounts[2].address
    client = env.devnet.accounts[1].address
    posted = await env.manta("task", "submit", "spec.toml", "--reward", "0.5eth", "--slots", "2",
                             "--bond", "0.03eth", "--arbiter", arbiter, "--json")
    assert posted.code == 0, posted.stderr
    outcome = posted.json()
    task_id = outcome["task_id"]
    view = await env.market.get_task(task_id)
    assert view.state == TaskState.OPEN and view.reward_wei == 5 * 10**17
    assert view.bond_wei == 3 * 10**16 and view.client == client
    assert "0x" + view.spec_hash.hex() == outcome["plan"]["spec_hash"]
    spec_file = env.folder / ".manta" / "specs" / (outcome["plan"]["spec_hash"][2:] + ".json")
    assert spec_file.is_file() and outcome["plan"]["spec_uri"] == spec_file.resolve().as_uri()

    status = await env.manta("task", "status", str(task_id))
    assert status.code == 0 and "OPEN" in status.stdout and "0.5 ETH" in status.stdout

    balance = await env.devnet.rpc.get_balance(client)
    cancelled = await env.manta("task", "cancel", str(task_id), "--json")
    assert cancelled.code == 0 and cancelled.json()["state"] == "CANCELLED"
    receipt = await env.devnet.rpc.request("eth_getTransactionReceipt",
                                           [cancelled.json()["tx_hash"]])
    gas_wei = int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)
    # the refund is pushed inside cancel: nothing is left to withdraw
    assert await env.devnet.rpc.get_balance(client) == balance + 5 * 10**17 - gas_wei
    again = await env.manta("task", "cancel", str(task_id))
    assert again.code == 1 and again.stderr.strip() == (
        f"error: task {task_id} is CANCELLED; cancel needs OPEN")

    assert await env.market.credit_of(client) == 0
    nothing = await env.manta("withdraw", "--json")
    assert nothing.code == 0 and nothing.json()["tx_hash"] is None


@on_module_loop
async def test_expire_only_after_the_claim_deadline(env: Env) -> None:
    arbiter = env.devnet.accounts[2].address
    posted = await env.manta("task", "submit", "spec.toml", "--reward", "1000gwei",
                             "--claim-window", "60s", "--arbiter", arbiter, "--json")
    task_id = posted.json()["task_id"]
    early = await env.manta("task", "expire", str(task_id))
    assert early.code == 1 and "TaskMarketDeadlineNotReached" in early.stderr
    assert (await env.market.get_task(task_id)).state == TaskState.OPEN
    await env.devnet.rpc.request("evm_increaseTime", [120])
    await env.devnet.rpc.request("evm_mine", [])
    expired = await env.manta("task", "expire", str(task_id), "--json")
    assert expired.code == 0, expired.stderr
    assert expired.json()["state"] == "EXPIRED"
    listed = await env.manta("task", "list", "--json")
    assert {t["task_id"]: t["state"] for t in listed.json()["tasks"]}[task_id] == "EXPIRED"


@on_module_loop
async def test_usage_error_and_unknown_task(env: Env) -> None:
    usage = await env.manta("task", "submit", "spec.toml")
    assert usage.code == 2
    unknown = await env.manta("task", "status", "999")
    assert unknown.code == 1 and "TaskMarketUnknownTask" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
