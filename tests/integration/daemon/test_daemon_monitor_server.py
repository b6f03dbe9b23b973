"""The monitor's routes on the miner's aiohttp app, through aiohttp's test client: the page
and its assets (and a clear 503 when the chart library was not set up), the task list,
the history from the progress file, the timeline source's errors, the rig with a fake
/proc and a fake nvidia-smi."""

from __future__ import annotations

import json
import shutil
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from miner.daemon.monitor import MinerMonitor
from miner.daemon.progress import append_progress
from miner.daemon.rig import RigSampler
from miner.daemon.server import ServerDeps, create_app
from miner.daemon.store import StateStore, TaskPhase
from node.chain.errors import ContractRevert, RpcUnavailable
from node.monitor.page import STATIC_DIR, MonitorPage, missing_assets
from node.monitor.timeline import Timeline
from tests.daemon_support import server_deps

ADDRESS = "0x" + "ab" * 20


class StubTimelines:
    """Answers with a canned timeline, or raises what a test sets."""

    def __init__(self) -> None:
        self.error: Exception | None = None

    async def read(self, task_id: int) -> Timeline:
        if self.error is not None:
            raise self.error
        return Timeline(task_id=task_id, state="RUNNING", chain_time_s=100, slots=1, claimed=1,
                        reward_wei=1, bond_wei=0, token="0x" + "00" * 20, current="running",
                        stages=(), events=(), members=())


@dataclass
class Rig:
    client: TestClient
    deps: ServerDeps
    folder: Path
    timelines: StubTimelines

    def progress(self, task_id: int) -> Path:
        return self.folder / "tasks" / str(task_id) / "progress.jsonl"


def fake_proc(folder: Path) -> Path:
    folder.mkdir()
    (folder / "stat").write_text("cpu  100 0 100 800 0 0 0 0 0 0\n")
    (folder / "meminfo").write_text("MemTotal: 2000 kB\nMemAvailable: 500 kB\n")
    (folder / "loadavg").write_text("0.50 0.25 0.10 1/99 123\n")
    return folder


def fake_nvidia_smi(folder: Path) -> Path:
    script = folder / "nvidia-smi"
    script.write_text("#!/bin/sh\necho '0, Fake GPU, 42, 1024, 4096'\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = StateStore.open(tmp_path / "state.sqlite")
    deps = server_deps(tmp_path, store, ADDRESS)
    timelines = StubTimelines()
    sampler = RigSampler(proc=fake_proc(tmp_path / "proc"),
                         nvidia_smi=str(fake_nvidia_smi(tmp_path)),
                         min_interval_s=0.0)
    monitor = MinerMonitor(lambda t: tmp_path / "tasks" / str(t) / "progress.jsonl", timelines,
                           sampler)
    client = TestClient(TestServer(create_app(deps, routes=monitor.routes())))
    await client.start_server()
    try:
        yield Rig(client, deps, tmp_path, timelines)
    finally:
        await client.close()
        store.close()


@pytest.mark.skipif(bool(missing_assets(STATIC_DIR)), reason="chart library not set up "
                    "(make setup)")
async def test_page_and_assets_are_served_with_a_self_only_policy(rig: Rig) -> None:
    page = await rig.client.get("/?task=3")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    text = await page.text()
    assert 'src="static/monitor.js"' in text and "http" not in text.split("<body")[0]
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    script = await rig.client.get("/static/monitor.js")
    assert script.headers["Content-Type"].startswith("text/javascript")
    assert "EventSource" in await script.text()
    chart = await rig.client.get("/static/vendor/uPlot.esm.js")
    assert chart.status == 200 and "export" in await chart.text()
    for bad in ("/static/../server.py", "/static/.stamp", "/static/vendor/.stamp",
                "/static/nothere.js", "/static/a/b/c.js"):
        assert (await rig.client.get(bad)).status == 404, bad


async def test_missing_chart_library_answers_503_with_the_fix(tmp_path: Path) -> None:
    bare = tmp_path / "static"
    shutil.copytree(STATIC_DIR, bare, ignore=shutil.ignore_patterns("vendor"))
    assert missing_assets(bare) == ["uPlot.esm.js", "uPlot.min.css"]
    from aiohttp import web

    app = web.Application()
    app.add_routes(MonitorPage(bare).routes())
    async with TestClient(TestServer(app)) as client:
        page = await client.get("/")
        assert page.status == 503 and page.headers["Content-Type"].startswith("text/html")
        assert "make setup" in await page.text()
        asset = await client.get("/static/vendor/uPlot.esm.js")
        assert asset.status == 503 and "make setup" in await asset.text()
        assert (await client.get("/static/monitor.css")).status == 200


async def test_task_list_leaves_out_tasks_not_taken(rig: Rig) -> None:
    store = rig.deps.store
    store.record_task(1, "0xa", TaskPhase.SEEN)
    store.record_task(2, "0xb", TaskPhase.REFUSED)
    store.record_task(3, "0xc", TaskPhase.TRAINING)
    body = await (await rig.client.get("/tasks")).json()
    assert [(t["task_id"], t["phase"]) for t in body["tasks"]] == [(3, "training")]


async def test_history_reads_the_progress_file_thinned(rig: Rig) -> None:
    empty = await (await rig.client.get("/tasks/5/history")).json()
    assert empty == {"task_id": 5, "members": [{
        "address": ADDRESS, "slot": None, "phase": None, "updates": [], "snapshot": None,
        "error": None}]}
    rig.deps.store.record_task(5, "0xc", TaskPhase.FORMED)
    rig.deps.store.set_group(5, [ADDRESS], ADDRESS)
    path = rig.progress(5)
    for step in range(1, 101):
        append_progress(path, {"phase": "training", "step": step, "total_steps": 100,
                               "subnets": [{"name": "max", "loss": 1.0 / step}]})
    append_progress(path, {"phase": "searching", "subnets_measured": 3, "subnets_total": 9})
    with path.open("ab") as handle:
        handle.write(b'{"phase": "sea')  # being written
    rig.deps.hub.publish(5, {"phase": "searching", "step": 100})
    body = await (await rig.client.get("/tasks/5/history")).json()
    member = body["members"][0]
    assert (member["slot"], member["phase"]) == (0, "formed")
    assert len(member["updates"]) == 101 and member["updates"][-1]["subnets_measured"] == 3
    assert member["snapshot"]["phase"] == "searching"
    thin = await (await rig.client.get("/tasks/5/history?max_points=10")).json()
    steps = [u["step"] for u in thin["members"][0]["updates"] if "subnets" in u]
    assert len(steps) <= 11 and steps[-1] == 100
    assert (await rig.client.get("/tasks/5/history?max_points=0")).status == 400
    assert (await rig.client.get("/tasks/0/history")).status == 400


async def test_timeline_errors_become_http_statuses(rig: Rig) -> None:
    body = await (await rig.client.get("/tasks/2/timeline")).json()
    assert (body["task_id"], body["current"]) == (2, "running")
    rig.timelines.error = ContractRevert("TaskMarketUnknownTask", {"taskId": 2}, b"\x00" * 4)
    unknown = await rig.client.get("/tasks/2/timeline")
    assert unknown.status == 404 and "TaskMarketUnknownTask" in await unknown.text()
    rig.timelines.error = RpcUnavailable("eth_call", ["http://x"], ["refused"])
    assert (await rig.client.get("/tasks/2/timeline")).status == 503


async def test_rig_reports_cpu_memory_load_and_gpus(rig: Rig) -> None:
    (rig.folder / "proc" / "stat").write_text("cpu  100 0 100 800 0 0 0 0 0 0\n")
    first = (await (await rig.client.get("/rig")).json())["hosts"]
    assert len(first) == 1
    host = first[0]
    assert host["name"] == ADDRESS and host["load_avg"] == [0.5, 0.25, 0.1]  # not a hostname
    assert (host["memory_total_bytes"], host["memory_available_bytes"]) == (2048000, 512000)
    assert host["gpus"] == [{"index": 0, "name": "Fake GPU", "utilization_percent": 42.0,
                             "memory_used_bytes": 1024 * 2**20,
                             "memory_total_bytes": 4096 * 2**20}]
    assert host["cpu_percent"] is None  # the file did not move between the two samples
    assert json.dumps(host)  # plain JSON
    (rig.folder / "proc" / "stat").write_text("cpu  160 0 130 810 0 0 0 0 0 0\n")
    second = (await (await rig.client.get("/rig")).json())["hosts"][0]
    assert second["cpu_percent"] == 90.0  # 90 of the 100 jiffies since were busy
