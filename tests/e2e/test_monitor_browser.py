"""The task monitor page in a real browser on a real daemon: anvil with the contracts, one
``manta-miner run`` process training a tiny supernet, headless chromium (Debian's, driven
by Playwright) on the daemon's page. The curves get points, the timeline advances from
claimed to submitted and, once the client accepts, settled; the daemon is killed and
restarted mid-training and the page follows the new daemon; the Pareto plot appears after
the search. Then ``manta task monitor`` serves the same page from the group. A screenshot
of the miner's page at the end is saved as a test artifact."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from node.chain.market import TaskMarket
from node.chain.models import TaskParams
from node.demo.processes import ClientCli, MinerProcess, child_env, start_miner, tail, tool
from node.devnet import Devnet, DevnetConfig, terminate_group
from node.documents.spec import (
    Constraint,
    DatasetRef,
    PhaseBudget,
    SearchSpaceSpec,
    TaskSpec,
    TrainingBudget,
)
from node.monitor.page import STATIC_DIR, missing_assets
from tests.browser_support import artifact_dir, browser_page, require_browser, wait_page

pytestmark = [pytest.mark.e2e, pytest.mark.anvil, pytest.mark.browser,
              pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]
MINER = 2


def tiny_spec() -> TaskSpec:
    """Two phases of progressive shrinking on synthetic data: a few dozen steps."""
    return TaskSpec(
        kind="classification", dataset=DatasetRef(name="synthetic"), seed=7,
        search_space=SearchSpaceSpec(kernel_sizes=(3, 5), expand_ratios=(3.0, 4.0),
                                     depths=(1, 2), resolutions=(20, 24, 28)),
        training=TrainingBudget(batch_size=32, phases=(
            PhaseBudget(name="full", epochs=1, lr=0.05),
            PhaseBudget(name="kernel", epochs=1, lr=0.02, subnets_per_step=2))),
        constraint=Constraint(max_flops=5_000_000))


def restart(miner: MinerProcess) -> MinerProcess:
    """SIGKILL the daemon (its runner ends when its stdin closes) and start it again with
    the same settings, so on the same port."""
    miner.process.send_signal(signal.SIGKILL)
    miner.process.wait(10)
    with miner.log.open("ab") as out:
        process = subprocess.Popen(
            [*tool("manta-miner"), "--config", str(miner.folder / "miner.toml"),
             "--log-level", "INFO", "run"], env=child_env(), stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return MinerProcess(miner.address, miner.url, miner.folder, process)


async def test_monitor_page_follows_a_daemon_from_claim_to_settlement(tmp_path: Path) -> None:
    require_browser()
    if missing_assets(STATIC_DIR):
        pytest.skip("chart library not set up (make setup)")
    anvil = ROOT / "node_modules" / ".bin" / "anvil"
    if not anvil.exists() or not (Path(sys.executable).parent / "manta-miner").exists():
        pytest.skip("anvil (npm ci) or the console scripts (pip install -e .) missing")
    config = DevnetConfig(anvil_path=anvil, folder=tmp_path / "net",
                          deployment_file=tmp_path / "deployment.json", write_keystores=True)
    async with await Devnet.start(config) as devnet:
        # the daemon trusts the task's arbiter (account 9); the restart replaces it
        current = [start_miner(tmp_path / "miner", devnet, MINER,
                               arbiters=[devnet.accounts[9].address])]
        try:
            await run_scenario(devnet, current, tmp_path)
        finally:
            await asyncio.to_thread(terminate_group, current[0].process, 20.0)


async def run_scenario(devnet: Devnet, current: list[MinerProcess], tmp_path: Path) -> None:
    miner = current[0]

    def alive() -> None:
        process = current[0].process
        assert process.poll() is None, (f"daemon exited with {process.returncode}: "
                                        + tail(current[0].log, 3000))

    client = await TaskMarket.create(devnet.rpc, devnet.deployment.task_market,
                                     await devnet.sender(1))
    for _ in range(300):  # the daemon announces its endpoint once it serves
        if await client.endpoint_of(miner.address) == miner.url:
            break
        alive()
        await asyncio.sleep(0.1)
    spec = tiny_spec()
    (tmp_path / "spec.json").write_bytes(spec.canonical())
    posted = await client.post_task(TaskParams(
        reward_wei=10**17, bond_wei=10**15, slots=1, claim_window_s=600, work_window_s=7200,
        review_window_s=600, arbitration_window_s=60, arbiter=devnet.accounts[9].address,
        spec_hash=spec.spec_hash(), validation_hash="0x" + "48" * 32),
        (tmp_path / "spec.json").as_uri())
    task_id = posted.task_id

    async with browser_page() as page:
        await page.goto(f"{miner.url}/?task={task_id}")
        # the timeline is polled every 2 s and may trail the points (which the page's first
        # history load can bring several at once): wait for both
        state = await wait_page(page, lambda s: s.get("points", 0) >= 3
                                and s.get("stage") not in (None, "", "posted"), 90,
                                "training points and the claim on the timeline", alive)
        assert state["stage"] in ("claimed", "running")
        assert await page.locator("#chart-loss canvas").count() == 1

        before = state["points"]
        current[0] = restart(current[0])
        await wait_page(page, lambda s: s.get("connection") == "reconnecting", 20,
                        "the lost stream", alive)
        state = await wait_page(page, lambda s: s.get("connection") == "live"
                                and s.get("points", 0) > before and s.get("historyLoads", 0) >= 2,
                                60, "new points after the restart", alive)

        state = await wait_page(page, lambda s: s.get("pareto", 0) > 0
                                and s.get("stage") == "submitted", 120,
                                "the Pareto plot and the submission", alive)
        assert await page.locator("#chart-pareto canvas").count() == 1
        assert state["points"] >= state["lastStep"] > before
        await client.accept(task_id)
        await wait_page(page, lambda s: s.get("stage") == "settled", 30, "the settlement",
                        alive)
        shot = artifact_dir(tmp_path) / "monitor-e2e.png"
        await page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
        errors: list[Any] = page.errors
        assert errors == [], errors

        # the client's side: `manta task monitor` serves the same page from the group
        cli = ClientCli(devnet, 1, tmp_path / "specs")
        monitor = subprocess.Popen(
            cli.command(["task", "monitor", str(task_id), "--port", "0", "--json"]),
            env=child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            assert monitor.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(monitor.stdout.readline), 60)
            url = json.loads(line)["url"]
            await page.goto(url)
            state = await wait_page(page, lambda s: s.get("pareto", 0) > 0
                                    and s.get("stage") == "settled"
                                    and s.get("connection") == "ended", 30, "the group's page")
            assert state["members"] == 1 and state["points"] == state["lastStep"] > 0
            assert page.errors == []
        finally:
            await asyncio.to_thread(terminate_group, monitor, 10.0)
