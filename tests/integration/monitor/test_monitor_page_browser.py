"""The monitor page in headless chromium against a miner app fed with made-up progress: the
curves fill from the history and then live, the timeline and the group show, the server
restarting on the same port (as a restarted daemon) is survived with the points written
meanwhile, the Pareto plot and the manifest appear after the search, and the task list
opens without ``?task``. No JavaScript error along the way."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from miner.daemon.monitor import MinerMonitor
from miner.daemon.progress import ProgressHub, append_progress
from miner.daemon.server import create_app
from miner.daemon.store import StateStore, TaskPhase
from node.chain.models import TaskClaimed, TaskPosted, TaskState, TaskView
from node.monitor.page import STATIC_DIR, missing_assets
from node.monitor.timeline import Timeline, build_timeline
from node.ports import free_port
from tests.browser_support import artifact_dir, browser_page, wait_page
from tests.daemon_support import server_deps

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120),
              pytest.mark.skipif(bool(missing_assets(STATIC_DIR)),
                                 reason="chart library not set up (make setup)")]
TASK = 3
ME, PEER, CLIENT = "0x" + "A1" * 20, "0x" + "B2" * 20, "0x" + "C3" * 20
ZERO = "0x" + "00" * 20


class ChainStandIn:
    """A timeline whose state the test moves on."""

    def __init__(self) -> None:
        self.state = TaskState.RUNNING
        self.t0 = int(time.time())

    async def read(self, task_id: int) -> Timeline:
        where: dict[str, Any] = dict(block_hash=b"\x01" * 32, tx_hash=b"\x02" * 32)
        view = TaskView(client=CLIENT, token=ZERO, reward_wei=10**17, bond_wei=10**15,
                        arbiter=CLIENT, slots=2, claimed=2, state=self.state,
                        claim_deadline=self.t0 + 600, work_deadline=self.t0 + 3600,
                        settle_deadline=self.t0 + 4200 if self.state is TaskState.SUBMITTED
                        else 0, work_window_s=3600, review_window_s=600,
                        arbitration_window_s=60, spec_hash=b"\x03" * 32,
                        result_root=b"\x00" * 32)
        events = [
            TaskPosted(**where, block_number=1, log_index=0, task_id=task_id, client=CLIENT,
                       token=ZERO, reward_wei=10**17, bond_wei=10**15, slots=2,
                       claim_deadline=self.t0 + 600, work_window_s=3600, review_window_s=600,
                       arbitration_window_s=60, arbiter=CLIENT, spec_hash=b"\x03" * 32,
                       validation_hash=b"\x04" * 32, spec_uri="file:///spec.json"),
            TaskClaimed(**where, block_number=2, log_index=0, task_id=task_id, miner=ME, slot=0),
            TaskClaimed(**where, block_number=3, log_index=0, task_id=task_id, miner=PEER,
                        slot=1)]
        times = {1: self.t0 - 30, 2: self.t0 - 20, 3: self.t0 - 10}
        return build_timeline(task_id, view, events, times, int(time.time()))


class FakeDaemon:
    """A miner's app (real routes, made-up data) that can stop and start on one port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.store = StateStore.open(folder / "state.sqlite")
        self.store.record_task(TASK, "0xspec", TaskPhase.FORMED)
        self.store.set_group(TASK, [ME, PEER], ME)
        self.chain = ChainStandIn()
        self.hub = ProgressHub(256)
        self.runner: web.AppRunner | None = None

    @property
    def progress(self) -> Path:
        return self.folder / "tasks" / str(TASK) / "progress.jsonl"

    async def start(self) -> None:
        deps = server_deps(self.folder, self.store, ME, sse_keepalive_s=1.0, queue_size=256)
        self.hub = deps.hub  # a restarted daemon starts with an empty hub
        monitor = MinerMonitor(lambda t: self.folder / "tasks" / str(t) / "progress.jsonl",
                               self.chain)
        self.runner = web.AppRunner(create_app(deps, routes=monitor.routes()))
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()
        self.runner = None

    def write(self, update: dict[str, Any], live: bool = True) -> None:
        append_progress(self.progress, update)
        if live:
            self.hub.publish(TASK, update)

    def step(self, step: int, live: bool = True) -> None:
        phase = "full" if step <= 15 else "kernel"
        subnets = [{"name": "max", "loss": 2.3 * math.exp(-step / 15), "accuracy": step / 50}]
        if phase == "kernel":
            subnets.append({"name": "min", "loss": 2.5 * math.exp(-step / 20),
                            "accuracy": step / 60})
        self.write({"phase": "training", "step": step, "total_steps": 40, "train_phase": phase,
                    "subnets": subnets, "samples_per_s": 380.0 + step, "peers": [ME, PEER],
                    "exchange_rounds": step, "grad_bytes_sent": 40_000 * step,
                    "dropped_rounds": {ME: 0, PEER: step // 20}, "time_s": time.time()}, live)


def manifest() -> bytes:
    front = [{"arch": {"resolution": 20 + 2 * i, "depth": [1, 2], "kernel": [3, 5],
                       "expand": [3.0, 4.0]}, "score": 0.5 + 0.04 * i,
              "flops": 1_000_000 * (i + 1), "params": 2000 + 100 * i} for i in range(5)]
    return json.dumps({
        "version": 1, "task_id": TASK, "spec_hash": "0x" + "11" * 32, "arch": front[2]["arch"],
        "weights_sha256": "0x" + "22" * 32, "arch_json_sha256": "0x" + "23" * 32,
        "metrics": {"accuracy": 0.58, "flops": 3_000_000, "params": 2200},
        "pareto_front": front, "training_log_sha256": "0x" + "24" * 32, "group": [ME, PEER],
        "shares_wei": [5 * 10**16, 5 * 10**16]}).encode()


async def test_page_follows_a_task_through_a_restart_to_its_result(tmp_path: Path) -> None:
    daemon = FakeDaemon(tmp_path)
    for step in range(1, 21):
        daemon.step(step, live=False)  # before the daemon (re)started: history only
    await daemon.start()
    try:
        async with browser_page() as page:
            url = f"http://127.0.0.1:{daemon.port}/?task={TASK}"
            await page.goto(url)
            state = await wait_page(page, lambda s: s.get("points") == 20, 15, "the history")
            assert state["connection"] == "live" and state["stage"] == "running"
            await wait_page(page, lambda s: s.get("stage") == "running", 10, "the timeline")
            assert await page.locator("#timeline li.done").count() == 3
            assert await page.locator("#group tbody tr").count() == 2
            assert await page.locator("#chart-loss canvas").count() == 1
            legend = await page.locator("#chart-loss .u-legend").inner_text()
            assert "max" in legend and "min" in legend  # one series per sampled sub-network

            for step in range(21, 31):
                daemon.step(step)
            await wait_page(page, lambda s: s.get("points") == 30, 10, "live points")

            await daemon.stop()  # the daemon goes away…
            await wait_page(page, lambda s: s.get("connection") == "reconnecting", 10,
                            "the lost stream")
            for step in range(31, 36):
                daemon.step(step, live=False)  # …training goes on meanwhile…
            await daemon.start()  # …and it comes back on the same port
            state = await wait_page(page, lambda s: s.get("points") == 35
                                    and s.get("connection") == "live", 20, "the restart")
            assert state["historyLoads"] >= 2 and state["reconnects"] >= 1
            for step in range(36, 41):
                daemon.step(step)
            await wait_page(page, lambda s: s.get("lastStep") == 40, 10, "the last step")

            daemon.write({"phase": "searching", "subnets_measured": 5, "subnets_total": 20})
            await wait_page(page, lambda s: s.get("phase") == "searching", 10, "the search")
            daemon.store.set_manifest(TASK, manifest(), "0x" + "77" * 32)
            daemon.chain.state = TaskState.SUBMITTED
            daemon.write({"phase": "done"})
            state = await wait_page(page, lambda s: s.get("pareto") == 5
                                    and s.get("stage") == "submitted"
                                    and s.get("connection") == "ended", 15, "the result")
            assert await page.locator("#chart-pareto canvas").count() == 1
            assert "3.00 M" in await page.locator("#manifest").inner_text()
            shot = artifact_dir(tmp_path) / "monitor-page-restart.png"
            await page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
            assert page.errors == []

            await page.goto(f"http://127.0.0.1:{daemon.port}/")  # no task chosen: the list
            await page.locator("#task-list tbody tr").first.wait_for(timeout=10_000)
            assert await page.locator("#task-list tbody tr").count() == 1
            assert "formed" in await page.locator("#task-list").inner_text()
    finally:
        if daemon.runner is not None:
            await daemon.stop()
        daemon.store.close()
