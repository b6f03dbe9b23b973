"""The whole marketplace on one machine (``manta-node demo``): see :mod:`node.demo`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from node.chain.market import TaskMarket
from node.chain.models import TaskState
from node.demo.data import (
    HELD_OUT_FOLD,
    HELD_OUT_FOLDS,
    STEREO_HELD_OUT_SEED_OFFSET,
    STEREO_MAX_FLOPS,
    demo_spec,
    split_client_data,
    stereo_client_pairs,
    stereo_demo_spec,
)
from node.demo.processes import (
    DEVNET_ARBITER,
    ClientCli,
    DemoError,
    MinerProcess,
    start_data_server,
    start_miner,
    until,
    until_served,
)
from node.demo.summary import (
    MarketSummary,
    ProgressWatcher,
    Stages,
    balances,
    gas_by_call,
    read_result,
)
from node.devnet import Devnet, DevnetConfig, terminate_group

logger = logging.getLogger(__name__)

DEMO_CLIENT, DEMO_MINERS, DEMO_ARBITER = 1, (2, 3), DEVNET_ARBITER
#: How long the miners may take to decide and claim (they fetch the spec and price it).
CLAIM_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class MarketDemoConfig:
    """What the full demo runs: ``quick`` = digits and a smaller budget (tests); ``stereo`` =
    the stereo flavour (a stereo supernet on procedural pairs, EPE verified by the client)."""

    devnet: DevnetConfig
    quick: bool = False
    stereo: bool = False
    folder: Path | None = None  # None = a temporary folder removed at the end
    reward_wei: int = 3 * 10**17
    bond_wei: int = 2 * 10**16
    max_flops: int | None = None  # None = the flavour's default
    timeout_s: float = 900.0

    @property
    def flops_limit(self) -> int:
        if self.max_flops is not None:
            return self.max_flops
        return STEREO_MAX_FLOPS[self.quick] if self.stereo else 4_000_000

    @property
    def dataset(self) -> str:
        if self.stereo:
            return "procedural-stereo"
        return "digits" if self.quick else "animal-mnist"


@dataclass(frozen=True)
class _Run:
    """One demo run's fixed parts, passed down the stages."""

    config: MarketDemoConfig
    devnet: Devnet
    market: TaskMarket
    client: ClientCli
    work: Path
    miners: list[MinerProcess]


async def _run_task(run: _Run, summary: MarketSummary, stages: Stages) -> None:
    """Client data → submit → train/search/submit → fetch/verify → accept (pays the miners)."""
    if run.config.stereo:
        await _run_stereo_task(run, summary, stages)
        return
    data = await split_client_data(run.config.quick, run.work / "client-data")
    log = run.work / "data-server.log"
    server, base_url = start_data_server(data.train_file.parent, log)
    try:
        summary.dataset_url = f"{base_url}/{data.train_file.name}"
        summary.train_images, summary.eval_images = data.train_images, data.eval_images
        summary.eval_set = f"i % {HELD_OUT_FOLDS} == {HELD_OUT_FOLD}"
        await until_served(summary.dataset_url, server, log)
        stages.done("client_data")
        dataset = {"url": summary.dataset_url, "sha256": data.sha256}
        spec = demo_spec(run.config.quick, run.config.flops_limit, dataset)
        await _post_and_settle(run, spec, data.eval_file, summary, stages)
    finally:
        await asyncio.to_thread(terminate_group, server, 5.0)


async def _run_stereo_task(run: _Run, summary: MarketSummary, stages: Stages) -> None:
    """The stereo flavour: the miners render the task's procedural scenes themselves (the
    spec names the built-in set and its seed); the client renders its own pairs from
    another seed and verifies the delivered network's EPE on them."""
    spec = stereo_demo_spec(run.config.quick, run.config.flops_limit)
    folder = run.work / "client-data"
    folder.mkdir(parents=True, exist_ok=True)
    pairs = 64 if run.config.quick else 128
    eval_file = await stereo_client_pairs(spec, pairs, folder)
    summary.eval_images = pairs
    summary.eval_set = f"procedural seed {spec['seed'] + STEREO_HELD_OUT_SEED_OFFSET}"
    stages.done("client_data")
    await _post_and_settle(run, spec, eval_file, summary, stages)


async def _post_and_settle(run: _Run, spec: dict[str, Any], eval_file: Path,
                           summary: MarketSummary, stages: Stages) -> None:
    config, market, client = run.config, run.market, run.client
    spec_file = run.work / "spec.json"
    spec_file.write_text(json.dumps(spec))
    posted = await client.run(
        ["task", "submit", str(spec_file), "--reward", f"{config.reward_wei}wei",
         "--bond", f"{config.bond_wei}wei", "--slots", "2",
         "--arbiter", run.devnet.accounts[DEMO_ARBITER].address, "--work-window", "1d"])
    task_id = summary.task_id = int(posted["task_id"])
    stages.done("submit")

    async def claimed() -> bool:  # a refusal (its reason is in the daemon logs) fails here
        return len(await market.members_of(task_id)) == len(run.miners)

    await until(claimed, run.miners, CLAIM_TIMEOUT_S, f"claims of task {task_id} by both miners")

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        watcher = ProgressWatcher(http, [m.url for m in run.miners], task_id, summary)

        async def submitted() -> bool:
            await watcher.poll()
            return await market.state_of(task_id) in (TaskState.SUBMITTED, TaskState.SETTLED)

        await until(submitted, run.miners, config.timeout_s, "submitted result")
    summary.leader = (await market.members_of(task_id))[0]
    summary.monitor_url = f"{summary.miner_urls.get(summary.leader, '')}/?task={task_id}"
    stages.done("train_search_submit")

    result = run.work / "result"
    await client.run(["task", "fetch", str(task_id), "--out", str(result)])
    read_result(result, summary)
    report = await client.run(["task", "verify", str(task_id), "--result", str(result),
                               "--data", str(eval_file)])
    summary.verified = all(c["ok"] for c in report["checks"]) and report["_exit_code"] == 0
    summary.accuracy = report["measured"].get("accuracy")  # None: not measured (no program)
    summary.epe = report["measured"].get("epe")
    if not summary.verified:
        raise DemoError(f"the result failed verification: {report['checks']}")
    stages.done("fetch_verify")

    await client.run(["task", "accept", str(task_id)])
    stages.done("accept")

    # accept pushes each signer its share and bond; nothing is left to withdraw
    view = await market.get_task(task_id)
    for slot, member in enumerate(await market.members_of(task_id, view)):
        if view.miners_paid and view.signed(slot):
            summary.paid_wei[member] = view.share_wei(slot) + view.bond_wei
        if await market.credit_of(member, view.token):
            raise DemoError(f"the payout to {member} was not pushed (a credit is left)")
    summary.state = view.state.name
    stages.done("paid")


async def _with_miners(config: MarketDemoConfig, devnet: Devnet, work: Path,
                       miners: list[MinerProcess], summary: MarketSummary,
                       stages: Stages) -> None:
    """Start the daemons, wait for their registrations, run the task; the caller stops them."""
    for n, index in enumerate(DEMO_MINERS):
        miners.append(start_miner(work / f"miner{n}", devnet, index))
    market = await TaskMarket.create(devnet.rpc, devnet.deployment.task_market)

    async def registered() -> bool:
        urls = [await market.endpoint_of(m.address) for m in miners]
        return urls == [m.url for m in miners]

    await until(registered, miners, 120.0, "miner registrations")
    summary.miner_urls = {m.address: m.url for m in miners}
    stages.done("miners_registered")
    client = ClientCli(devnet, DEMO_CLIENT, work / "specs")
    await _run_task(_Run(config, devnet, market, client, work, miners), summary, stages)


async def run_marketplace(config: MarketDemoConfig) -> MarketSummary:
    """The whole demo (see :mod:`node.demo`); every process started is stopped on exit,
    also when cancelled (Ctrl-C)."""
    started = time.monotonic()
    owns = config.folder is None
    work = Path(tempfile.mkdtemp(prefix="manta-demo-")) if owns else config.folder
    assert work is not None
    work.mkdir(parents=True, exist_ok=True)
    summary = MarketSummary(dataset=config.dataset, max_flops=config.flops_limit)
    stages = Stages(summary)
    net_config = dataclasses.replace(config.devnet, folder=work / "net",
                                     deployment_file=work / "deployment.json",
                                     write_keystores=True)
    miners: list[MinerProcess] = []
    try:
        async with await Devnet.start(net_config) as devnet:
            stages.done("devnet")
            first_block = devnet.deployment.start_block
            who = {"client": devnet.accounts[DEMO_CLIENT].address}
            who.update({f"miner{n}": devnet.accounts[i].address
                        for n, i in enumerate(DEMO_MINERS)})
            summary.balances_before_wei = await balances(devnet, who)
            try:
                await _with_miners(config, devnet, work, miners, summary, stages)
            finally:
                for miner in miners:
                    await asyncio.to_thread(terminate_group, miner.process, 20.0)
            summary.balances_after_wei = await balances(devnet, who)
            summary.gas_by_call = await gas_by_call(devnet, first_block)
    finally:
        for miner in miners:  # a second Ctrl-C may have cut the graceful stop short
            terminate_group(miner.process, 1.0)
        if owns:
            shutil.rmtree(work, ignore_errors=True)
    summary.seconds = time.monotonic() - started
    logger.info("demo done task_id=%d state=%s seconds=%.1f", summary.task_id, summary.state,
                summary.seconds)
    return summary


async def until_signal(work: Any) -> Any:
    """Await the coroutine ``work``, cancelling it on SIGINT or SIGTERM (its cleanup runs)."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
