"""The client's commands in-process (Typer's runner, real API) against anvil and a fake miner.

A devnet (anvil + TaskMarket) per module; miners are dev accounts driven through the chain
facade; their HTTP side is a small aiohttp app following the miner daemon's documented
routes (``/tasks/{id}/manifest``, ``/artifacts/{sha256}``, ``/tasks/{id}/progress``,
``/tasks/{id}/events``). Every refused command must leave the chain and the disk unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from eth_account import Account
from pydantic import SecretStr
from typer.testing import CliRunner

from client.cli import app
from node.chain.market import TaskMarket
from node.chain.models import TaskParams, TaskState
from node.devnet import Devnet, DevnetConfig
from node.documents.manifest import Metrics, ResultManifest
from node.documents.spec import Constraint, DatasetRef, TaskSpec
from node.identity.keystore import KdfParams, import_key

pytestmark = [pytest.mark.anvil, pytest.mark.timeout(120)]
on_module_loop = pytest.mark.asyncio(loop_scope="module")
ROOT = Path(__file__).resolve().parents[3]
CLIENT, LEADER, MEMBER, ARBITER = 1, 2, 3, 4
SPEC_TOML = 'kind = "classification"\n[dataset]\nname = "digits"\n[constraint]\nmax_flops = 5000\n'
REWARD = 10**18
BOND = 10**16


@dataclass
class FakeMiner:
    """What the fake miner serves; ``tamper`` corrupts artifacts, ``events`` feed the SSE."""

    manifests: dict[int, bytes] = field(default_factory=dict)
    artifacts: dict[str, bytes] = field(default_factory=dict)
    tamper: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> web.Application:
        application = web.Application()
        application.router.add_get("/tasks/{tid}/manifest", self._manifest)
        application.router.add_get("/artifacts/{sha}", self._artifact)
        application.router.add_get("/tasks/{tid}/progress", self._progress)
        application.router.add_get("/tasks/{tid}/events", self._events)
        return application

    async def _manifest(self, request: web.Request) -> web.Response:
        raw = self.manifests.get(int(request.match_info["tid"]))
        if raw is None:
            raise web.HTTPNotFound()
        return web.Response(body=raw, content_type="application/json")

    async def _artifact(self, request: web.Request) -> web.Response:
        body = self.artifacts.get(request.match_info["sha"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body[:-1] + b"!" if self.tamper else body)

    async def _progress(self, request: web.Request) -> web.Response:
        return web.json_response(self.events[-1] if self.events else {"phase": "training"})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for seq, event in enumerate(self.events, 1):
            await response.write(f"id: {seq}\nevent: progress\ndata: {json.dumps(event)}\n\n"
                                 .encode())
        await response.write(b": keepalive\n\nevent: end\ndata: {}\n\n")
        return response


@dataclass
class Env:
    devnet: Devnet
    folder: Path
    base: list[str]
    spec: Path
    miner: FakeMiner
    miner_url: str
    market: TaskMarket

    async def cli(self, *args: str, base: list[str] | None = None) -> Any:
        argv = [*(self.base if base is None else base), *args]
        return await asyncio.to_thread(CliRunner().invoke, app, argv, env={"COLUMNS": "200"})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    config = DevnetConfig(anvil_path=ROOT / "node_modules" / ".bin" / "anvil",
                          write_keystores=True, accounts=6)
    if not config.anvil_path.exists():
        pytest.skip("anvil not installed (npm ci)")
    folder = tmp_path_factory.mktemp("client")
    miner = FakeMiner()
    server = TestServer(miner.app(), host="127.0.0.1")
    await server.start_server()
    devnet = await Devnet.start(config)
    try:
        devnet.deployment.save(folder / "deployment.json")
        (folder / "spec.toml").write_text(SPEC_TOML)
        base = ["--deployment", str(folder / "deployment.json"),
                "--keystore-dir", str(devnet.folder / "keystores"), "--keystore", f"dev{CLIENT}",
                "--password-file", str(devnet.password_file),
                "--spec-store", str(folder / "specs")]
        market = await TaskMarket.create(devnet.rpc, devnet.deployment.task_market,
                                         await devnet.sender(CLIENT))
        yield Env(devnet, folder, base, folder / "spec.toml", miner,
                  str(server.make_url("")).rstrip("/"), market)
    finally:
        await devnet.stop()
        await server.close()


def _spec() -> TaskSpec:
    return TaskSpec(kind="classification", dataset=DatasetRef(name="digits"),
                    constraint=Constraint(max_flops=5000))


def _safetensors(tensors: dict[str, list[int]]) -> bytes:
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = 4 * int.__mul__(*shape) if len(shape) == 2 else 4 * shape[0]
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0" * offset


async def _submitted_task(env: Env, endpoints: tuple[str, str]) -> tuple[int, ResultManifest]:
    """A 2-slot task posted, claimed by LEADER and MEMBER, with a result submitted by the
    leader with MEMBER's signature (the manifest's shares are the contract's equal split)."""
    devnet = env.devnet
    spec = _spec()
    params = TaskParams(reward_wei=REWARD, bond_wei=BOND, slots=2, claim_window_s=600,
                        work_window_s=600, review_window_s=600, arbitration_window_s=600,
                        arbiter=devnet.accounts[ARBITER].address, spec_hash=spec.spec_hash(),
                        validation_hash=b"\1" * 32)
    posted = await env.market.post_task(params, "file:///unused.json")
    miners = [env.market.with_sender(await devnet.sender(i)) for i in (LEADER, MEMBER)]
    for miner, endpoint in zip(miners, endpoints, strict=True):
        await miner.register(endpoint)
        await miner.claim(posted.task_id)
    weights = _safetensors({"fc.weight": [10, 16], "fc.bias": [10], "bn.running_mean": [16]})
    program = b"a torch.export program, as far as fetch is concerned"
    program_sha = hashlib.sha256(program).hexdigest()
    arch = json.dumps({"flops": 1234, "params": 170, "program_sha256": program_sha}).encode()
    sha = {name: hashlib.sha256(blob).hexdigest() for name, blob in
           (("w", weights), ("a", arch))}
    env.miner.artifacts.update({sha["w"]: weights, sha["a"]: arch, program_sha: program})
    group = tuple(devnet.accounts[i].address for i in (LEADER, MEMBER))
    manifest = ResultManifest(
        task_id=posted.task_id, spec_hash=spec.spec_hash(), arch={"d": [2]},
        weights_sha256="0x" + sha["w"], arch_json_sha256="0x" + sha["a"],
        metrics=Metrics(accuracy=0.9, flops=1234, params=170), pareto_front=(),
        training_log_sha256="0x" + "0" * 64, group=group, shares_wei=(REWARD // 2, REWARD // 2))
    env.miner.manifests[posted.task_id] = manifest.canonical()
    root = manifest.result_root()
    member = devnet.accounts[MEMBER]
    signatures: dict[str, bytes] = {
        member.address: env.market.sign_result(member, posted.task_id, root)}
    await miners[0].submit_result(posted.task_id, root, endpoints[0], signatures)
    return posted.task_id, manifest


@on_module_loop
async def test_bad_spec_changes_nothing(env: Env) -> None:
    before = await env.market.task_count()
    bad = env.folder / "bad.toml"
    bad.write_text(SPEC_TOML.replace("max_flops = 5000", "max_flops = -1"))
    result = await env.cli("task", "submit", str(bad), "--reward", "1eth",
                           "--arbiter", env.devnet.accounts[ARBITER].address)
    assert result.exit_code == 1
    assert "constraint.max_flops" in result.output and "greater than 0" in result.output
    assert await env.market.task_count() == before and not (env.folder / "specs").exists()


@on_module_loop
async def test_insufficient_funds_changes_nothing(env: Env) -> None:
    pauper = Account.create()
    keys = env.folder / "pauper-keys"
    import_key(keys, SecretStr(pauper.key.hex()), SecretStr("pw"), "pauper",
               kdf=KdfParams.insecure_fast())
    (env.folder / "pw").write_text("pw\n")
    base = ["--deployment", str(env.folder / "deployment.json"), "--keystore-dir", str(keys),
            "--keystore", "pauper", "--password-file", str(env.folder / "pw"),
            "--spec-store", str(env.folder / "specs")]
    before = await env.market.task_count()
    result = await env.cli("task", "submit", str(env.spec), "--reward", "2eth",
                           "--arbiter", env.devnet.accounts[ARBITER].address, base=base)
    assert result.exit_code == 1 and "needs" in result.output and pauper.address in result.output
    assert await env.market.task_count() == before
    assert not any((env.folder / "specs").glob("*.json"))  # the published spec was withdrawn


@on_module_loop
async def test_fetch_falls_back_verifies_and_refuses_tampering(env: Env) -> None:
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    task_id, manifest = await _submitted_task(env, (dead, env.miner_url))
    out = env.folder / "result"
    fetched = await env.cli("task", "fetch", str(task_id), "-o", str(out), "--json")
    assert fetched.exit_code == 0, fetched.output
    payload = json.loads(fetched.stdout)
    assert payload["sources"]["model.safetensors"] == env.miner_url  # after the dead leader
    assert hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest() == \
        manifest.weights_sha256[2:]
    assert (out / "manifest.json").read_bytes() == manifest.canonical()
    assert (out / "model.pt2").read_bytes().startswith(b"a torch.export program")
    assert set(payload["files"]) == {"manifest.json", "model.safetensors", "arch.json",
                                     "model.pt2"}

    verified = await env.cli("task", "verify", str(task_id), "--result", str(out), "--json")
    report = json.loads(verified.stdout)
    assert verified.exit_code == 0, verified.output
    assert {c["name"]: c["ok"] for c in report["checks"]} == {
        "manifest = on-chain resultRoot": True, "task id": True, "weights sha256": True,
        "arch.json sha256": True, "params (weights)": True, "params (arch.json)": True,
        "flops (arch.json)": True, "program sha256": True}
    assert report["measured"]["params"] == 170

    again = await env.cli("task", "fetch", str(task_id), "-o", str(out))
    assert again.exit_code == 1 and "not empty" in again.output

    env.miner.tamper = True
    try:
        refused = await env.cli("task", "fetch", str(task_id), "-o", str(env.folder / "bad"))
    finally:
        env.miner.tamper = False
    assert refused.exit_code == 1 and "hash mismatch" in refused.output
    assert not (env.folder / "bad").exists()
    assert [p.name for p in env.folder.iterdir() if p.name.startswith(".bad")] == []

    (out / "model.safetensors").write_bytes(b"tampered")
    failed = await env.cli("task", "verify", str(task_id), "--result", str(out))
    assert failed.exit_code == 1 and "FAIL" in failed.output
    state = (await env.market.get_task(task_id)).state
    assert state == TaskState.SUBMITTED
    members = [env.devnet.accounts[i].address for i in (LEADER, MEMBER)]
    before = [await env.devnet.rpc.get_balance(m) for m in members]
    accepted = await env.cli("task", "accept", str(task_id), "--json")
    assert accepted.exit_code == 0, accepted.output
    assert json.loads(accepted.stdout)["state"] == "SETTLED"
    assert (await env.market.get_task(task_id)).state == TaskState.SETTLED
    for member, was in zip(members, before, strict=True):  # accept pushed share and bond
        assert await env.devnet.rpc.get_balance(member) == was + REWARD // 2 + BOND
    nothing = await env.cli("withdraw", "--json")  # so the client has no credit to pull
    assert nothing.exit_code == 0, nothing.output
    assert json.loads(nothing.stdout)["amount_wei"] == 0
    assert json.loads(nothing.stdout)["tx_hash"] is None


@on_module_loop
async def test_no_member_reachable(env: Env) -> None:
    task_id, _ = await _submitted_task(env, ("http://127.0.0.1:9", "http://127.0.0.1:9"))
    result = await env.cli("task", "fetch", str(task_id), "-o", str(env.folder / "none"))
    assert result.exit_code == 1 and "no group member" in result.output
    assert not (env.folder / "none").exists()


@on_module_loop
async def test_watch_follows_progress_until_settled(env: Env) -> None:
    env.miner.events = [{"phase": "training", "step": s, "total_steps": 4} for s in (1, 2)]
    task_id, _ = await _submitted_task(env, (env.miner_url, env.miner_url))
    wrong = await env.cli("task", "cancel", str(task_id))
    assert wrong.exit_code == 1 and "is SUBMITTED; cancel needs OPEN" in wrong.output
    watcher = asyncio.create_task(env.cli("task", "watch", str(task_id), "--json",
                                          "--poll", "0.2"))
    await asyncio.sleep(1.5)
    assert not watcher.done()
    # The client accepts through the facade: two CliRunners at once would share sys.stdout.
    await env.market.accept(task_id)
    result = await asyncio.wait_for(watcher, 30)
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    progress = [entry["data"].get("step") for entry in lines if entry.get("kind") == "progress"]
    assert 2 in progress
    events = {entry["name"] for entry in lines if entry.get("kind") == "event"}
    assert {"TaskSettled", "ResultSubmitted"} <= events
    assert lines[-1]["state"] == "SETTLED"


@on_module_loop
async def test_token_task_and_dispute(env: Env) -> None:
    token = env.devnet.deployment.token
    assert token is not None
    posted = await env.cli("task", "submit", str(env.spec), "--reward", "1000", "--token", token,
                           "--arbiter", env.devnet.accounts[ARBITER].address, "--json")
    assert posted.exit_code == 0, posted.output
    view = await env.market.get_task(json.loads(posted.stdout)["task_id"])
    assert view.token == token and view.reward_wei == 1000 and view.state == TaskState.OPEN

    task_id, _ = await _submitted_task(env, (env.miner_url, env.miner_url))
    disputed = await env.cli("task", "dispute", str(task_id), "--reason", "accuracy is 0.1")
    assert disputed.exit_code == 0 and "DISPUTED" in disputed.output
    accept = await env.cli("task", "accept", str(task_id))
    assert accept.exit_code == 1 and "is DISPUTED; accept needs SUBMITTED" in accept.output
    assert (await env.market.get_task(task_id)).state == TaskState.DISPUTED
