"""``manta task monitor``'s server against two real miner apps (aiohttp test servers) and a
stand-in chain: the group's histories side by side (a member down is listed with its
error), one merged live stream tagged by member with a ``resync`` after a member's restart
and ``end`` once both ended, rigs named by member, and the manifest checked against the
on-chain result root (a lying member is skipped)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from eth_utils.crypto import keccak

from client.monitor import GroupMonitor, MonitorOptions
from client.serve import serve_app
from client.session import Connection
from miner.daemon.monitor import MinerMonitor
from miner.daemon.progress import ProgressHub, append_progress
from miner.daemon.rig import RigSampler
from miner.daemon.server import create_app
from miner.daemon.store import StateStore, TaskPhase
from node.chain.models import Deployment, TaskState
from node.documents.manifest import Metrics, ParetoPoint, ResultManifest
from tests.daemon_support import server_deps

TASK = 1
LEADER, MEMBER = "0x" + "A1" * 20, "0x" + "B2" * 20


@dataclass
class FakeMiner:
    """One miner's real app (server, store, hub) on a test server."""

    address: str
    folder: Path
    store: StateStore
    hub: ProgressHub
    server: TestServer | None = None

    def app(self) -> web.Application:
        deps = server_deps(self.folder, self.store, self.address, self.hub)
        monitor = MinerMonitor(lambda t: self.folder / f"progress-{t}.jsonl", None,
                               RigSampler())
        return create_app(deps, routes=monitor.routes())

    async def start(self, port: int | None = None) -> None:
        self.server = TestServer(self.app(), port=port)
        await self.server.start_server()

    async def stop(self) -> None:
        assert self.server is not None
        for task_id in self.hub.tasks():
            self.hub.end(task_id)
        await self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def report(self, update: dict[str, Any]) -> None:
        append_progress(self.folder / f"progress-{TASK}.jsonl", update)
        self.hub.publish(TASK, update)


@dataclass
class StubMarket:
    endpoints: dict[str, str]
    result_root: bytes = b"\x00" * 32
    calls: list[str] = field(default_factory=list)

    async def members_of(self, task_id: int) -> list[str]:
        self.calls.append("members_of")
        return [LEADER, MEMBER]

    async def endpoint_of(self, miner: str) -> str:
        return self.endpoints[miner]

    async def state_of(self, task_id: int) -> TaskState:
        return TaskState.RUNNING

    async def get_task(self, task_id: int) -> Any:
        return type("View", (), {"result_root": self.result_root})()


@dataclass
class Group:
    client: TestClient
    market: StubMarket
    miners: dict[str, FakeMiner]
    monitor: GroupMonitor


@pytest_asyncio.fixture
async def group(tmp_path: Path) -> AsyncIterator[Group]:
    miners = {}
    for address in (LEADER, MEMBER):
        folder = tmp_path / address[:6]
        folder.mkdir()
        store = StateStore.open(folder / "state.sqlite")
        store.record_task(TASK, "0xspec", TaskPhase.FORMED)
        miners[address] = FakeMiner(address, folder, store, ProgressHub(64))
        await miners[address].start()
    market = StubMarket({a: m.url for a, m in miners.items()})
    deployment = Deployment(chain_id=31337, task_market="0x" + "11" * 20)
    conn = Connection(rpc=None, market=market, deployment=deployment,  # type: ignore[arg-type]
                      account=None)
    async with aiohttp.ClientSession() as http:
        monitor = GroupMonitor(conn, http, TASK, MonitorOptions(members_refresh_s=0.1,
                                                                retry_s=0.1, max_retry_s=0.2))
        async with TestClient(TestServer(monitor.app())) as client:
            yield Group(client, market, miners, monitor)
    for miner in miners.values():
        if miner.server is not None and miner.server.runner is not None:
            await miner.stop()
        miner.store.close()


async def test_histories_side_by_side_and_a_member_down(group: Group) -> None:
    group.miners[LEADER].report({"phase": "training", "step": 1, "subnets": []})
    body = await (await group.client.get(f"/tasks/{TASK}/history")).json()
    rows = {m["address"]: m for m in body["members"]}
    assert rows[LEADER]["slot"] == 0 and len(rows[LEADER]["updates"]) == 1
    assert rows[MEMBER]["updates"] == [] and rows[MEMBER]["error"] is None
    await group.miners[MEMBER].stop()
    body = await (await group.client.get(f"/tasks/{TASK}/history")).json()
    down = body["members"][1]
    assert down["address"] == MEMBER and down["error"]
    assert (await group.client.get("/tasks/2/history")).status == 404  # not this task


async def read_frames(response: aiohttp.ClientResponse, count: int,
                      timeout_s: float = 10.0) -> list[tuple[str, dict[str, Any]]]:
    frames: list[tuple[str, dict[str, Any]]] = []
    name = ""
    async with asyncio.timeout(timeout_s):
        while len(frames) < count:
            line = (await response.content.readline()).decode().rstrip("\n")
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                frames.append((name, json.loads(line.removeprefix("data: "))))
    return frames


async def test_one_merged_stream_with_resync_and_end(group: Group) -> None:
    leader, member = group.miners[LEADER], group.miners[MEMBER]
    leader.report({"phase": "training", "step": 1, "subnets": []})
    response = await group.client.get(f"/tasks/{TASK}/events")
    first = await read_frames(response, 1)
    assert first == [("snapshot", {**first[0][1], "member": LEADER, "step": 1})]
    member.report({"phase": "training", "step": 1, "subnets": []})
    got = await read_frames(response, 1)
    assert got[0][0] in ("snapshot", "progress") and got[0][1]["member"] == MEMBER
    # the member's daemon restarts on the same port: its stream comes back with a resync
    port = member.server.port  # type: ignore[union-attr]
    await member.stop()
    member.hub = ProgressHub(64)
    await member.start(port)
    member.report({"phase": "training", "step": 2, "subnets": []})
    frames = await read_frames(response, 2)
    assert frames[0] == ("resync", {"member": MEMBER})
    assert frames[1][1]["member"] == MEMBER and frames[1][1]["step"] == 2
    leader.report({"phase": "done"})
    member.report({"phase": "done"})
    rest = await read_frames(response, 5)
    ends = [data for name, data in rest if name == "end"]
    assert {e.get("member") for e in ends} == {LEADER, MEMBER, None}
    assert rest[-1] == ("end", {"task_id": TASK})  # once both ended, the stream ends
    assert (await response.content.read()).strip() == b""  # and the stream closes


async def test_a_stop_is_not_held_up_by_an_open_page(group: Group) -> None:
    group.miners[LEADER].report({"phase": "training", "step": 1, "subnets": []})
    stop, ports = asyncio.Event(), []
    served = asyncio.create_task(serve_app(group.monitor.app(), "127.0.0.1", 0, stop,
                                           ports.append))
    while not ports:
        await asyncio.sleep(0.02)
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{ports[0]}/tasks/{TASK}/events") as stream:
        assert (await stream.content.readline()).startswith(b"retry:")
        stop.set()
        await asyncio.wait_for(served, 5)  # aiohttp alone would wait 60 s for the handler


async def test_the_group_is_read_once_per_refresh_interval(group: Group) -> None:
    group.market.calls.clear()
    for _ in range(3):  # pages and streams asking within one interval (0.1 s here)
        assert [m.address for m in await group.monitor.members()] == [LEADER, MEMBER]
    assert group.market.calls.count("members_of") == 1
    await asyncio.sleep(0.15)
    await group.monitor.members()
    assert group.market.calls.count("members_of") == 2


async def test_rigs_are_named_by_member(group: Group) -> None:
    hosts = (await (await group.client.get("/rig")).json())["hosts"]
    assert [h["name"] for h in hosts] == [LEADER, MEMBER]
    assert "cpus" in hosts[0] and "memory_total_bytes" in hosts[0]
    await group.miners[MEMBER].stop()
    hosts = (await (await group.client.get("/rig")).json())["hosts"]
    assert hosts[1]["name"] == MEMBER and hosts[1]["error"]


async def test_manifest_is_checked_against_the_chain(group: Group) -> None:
    assert (await group.client.get(f"/tasks/{TASK}/manifest")).status == 404  # no result yet
    true = ResultManifest(
        task_id=TASK, spec_hash="0x" + "11" * 32, arch={"resolution": 24},
        weights_sha256="0x" + "22" * 32, arch_json_sha256="0x" + "23" * 32,
        metrics=Metrics(accuracy=0.5, flops=10, params=3),
        pareto_front=(ParetoPoint(arch={"resolution": 24}, score=0.5, flops=10),),
        training_log_sha256="0x" + "24" * 32, group=(LEADER, MEMBER),
        shares_wei=(1, 1)).canonical()
    root = "0x" + keccak(true).hex()
    group.market.result_root = keccak(true)
    group.miners[LEADER].store.set_manifest(TASK, b'{"task_id":1,"forged":true}', root)
    assert (await group.client.get(f"/tasks/{TASK}/manifest")).status == 404
    group.miners[MEMBER].store.set_manifest(TASK, true, root)
    served = await group.client.get(f"/tasks/{TASK}/manifest")
    assert served.status == 200, await served.text()
    assert await served.read() == true
    assert served.headers["X-Manta-Result-Root"] == root
