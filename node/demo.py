"""The MANTA demo: the whole marketplace on one machine, or only its chain part.

``run_marketplace`` (``manta-node demo``) starts a devnet (anvil + contracts), two miner
daemons (``manta-miner run``, one torch thread each) that register on chain, and drives a
client through the ``manta`` CLI. The client splits the built-in set (animal-mnist, or
digits with ``--quick``) into two disjoint parts, packs the training part (``manta data
pack``), serves it on 127.0.0.1 (``manta data serve``) and submits a classification task
naming it by URL and sha256 (FLOPs limit, 2 slots, data parallel with 4 sub-networks per
step, reward and bonds); the miners download it, train, search, sign and submit; the
client fetches, verifies the hashes, evaluates on the held-out part (which the miners never
saw) and accepts; the daemons withdraw their pay. Node imports neither miner
nor client code: both run as processes and meet the demo only on the chain and over HTTP.
Keys stay in the devnet's encrypted keystores; passwords travel as a file path.

Every process it starts runs in its own process group, gets ``PR_SET_PDEATHSIG`` and is
stopped (SIGTERM, then SIGKILL) on the way out, also on Ctrl-C or SIGTERM.

``run_lifecycle`` / ``run_demo`` (``manta-node demo --chain-only``) do the chain part only:
post, claim, sign, submit, accept and withdraw with no training.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
from eth_utils.abi import function_abi_to_4byte_selector
from eth_utils.crypto import keccak

from node.chain.artifacts import load_artifact
from node.chain.market import TaskMarket
from node.chain.models import ZERO_ADDRESS, TaskParams, TaskState, TxReceipt
from node.chain.signing import sign_result
from node.devnet import Devnet, DevnetConfig, die_with_parent, terminate_group
from node.documents.manifest import ResultManifest
from node.errors import MantaError

logger = logging.getLogger(__name__)

CLIENT, LEADER, MEMBER, ARBITER = 1, 2, 3, 4
REWARD_WEI = 10**18
BOND_WEI = 10**17
WINDOW_S = 3600


@dataclass
class DemoSummary:
    """What the demo did: the task, its final state, gas per step and the payouts."""

    chain_id: int
    task_market: str
    task_id: int = 0
    state: str = ""
    gas_by_step: dict[str, int] = field(default_factory=dict)
    withdrawn_wei: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total_gas(self) -> int:
        return sum(self.gas_by_step.values())

    def record(self, step: str, receipt: TxReceipt) -> None:
        self.gas_by_step[step] = self.gas_by_step.get(step, 0) + receipt.gas_used

    def as_json(self) -> dict[str, object]:
        return {
            "state": self.state, "total_gas": self.total_gas, "seconds": round(self.seconds, 3),
            "task_id": self.task_id, "chain_id": self.chain_id, "task_market": self.task_market,
            "gas_by_step": self.gas_by_step, "withdrawn_wei": self.withdrawn_wei,
        }


async def run_lifecycle(devnet: Devnet) -> DemoSummary:
    """Post → claim ×2 → submit (signed by both) → accept → withdraw ×2 on ``devnet``."""
    started = time.monotonic()
    address = devnet.deployment.task_market
    summary = DemoSummary(chain_id=devnet.chain_id, task_market=address)
    client = await TaskMarket.create(devnet.rpc, address, await devnet.sender(CLIENT))
    miners = [client.with_sender(await devnet.sender(i)) for i in (LEADER, MEMBER)]
    for n, miner in enumerate(miners):
        summary.record("register", await miner.register(f"http://127.0.0.1:{9100 + n}"))
    params = TaskParams(
        reward_wei=REWARD_WEI, bond_wei=BOND_WEI, slots=2, claim_window_s=WINDOW_S,
        work_window_s=WINDOW_S, review_window_s=WINDOW_S, arbitration_window_s=WINDOW_S,
        arbiter=devnet.accounts[ARBITER].address, spec_hash=keccak(b"manta demo spec"),
        validation_hash=keccak(b"manta demo validation set"),
    )
    posted = await client.post_task(params, "manta://demo/spec.json")
    summary.task_id = posted.task_id
    summary.record("post_task", posted.receipt)
    for miner in miners:
        summary.record("claim", await miner.claim(posted.task_id))
    result_root = keccak(b"manta demo result manifest")
    shares = [REWARD_WEI * 6 // 10, REWARD_WEI - REWARD_WEI * 6 // 10]
    signatures = [
        sign_result(devnet.accounts[i], devnet.chain_id, address, posted.task_id, result_root,
                    shares)
        for i in (LEADER, MEMBER)
    ]
    summary.record("submit_result", await miners[0].submit_result(
        posted.task_id, result_root, "http://127.0.0.1:9100/result", shares, signatures))
    summary.record("accept", await client.accept(posted.task_id))
    for index, miner in zip((LEADER, MEMBER), miners, strict=True):
        credit = await miner.credit_of(devnet.accounts[index].address, ZERO_ADDRESS)
        summary.record("withdraw", await miner.withdraw(ZERO_ADDRESS))
        summary.withdrawn_wei[devnet.accounts[index].address] = credit
    summary.state = (await client.state_of(posted.task_id)).name
    summary.seconds = time.monotonic() - started
    logger.info("demo done task_id=%d state=%s total_gas=%d", summary.task_id, summary.state,
                summary.total_gas)
    return summary


async def run_demo(config: DevnetConfig) -> DemoSummary:
    """Start a devnet, run :func:`run_lifecycle`, stop the devnet; seconds include startup."""
    started = time.monotonic()
    async with await Devnet.start(config) as devnet:
        summary = await run_lifecycle(devnet)
    summary.seconds = time.monotonic() - started
    return summary


# ---- the whole marketplace -----------------------------------------------------------------

DEMO_CLIENT, DEMO_MINERS, DEMO_ARBITER = 1, (2, 3), 4
POLL_S = 0.2


class DemoError(MantaError):
    """The demo could not run to the end."""

    template = "demo: {detail}"


@dataclass(frozen=True)
class MarketDemoConfig:
    """What the full demo runs: ``quick`` = digits and a smaller budget (tests)."""

    devnet: DevnetConfig
    quick: bool = False
    folder: Path | None = None  # None = a temporary folder removed at the end
    reward_wei: int = 3 * 10**17
    bond_wei: int = 2 * 10**16
    max_flops: int = 4_000_000
    timeout_s: float = 900.0


def demo_spec(quick: bool, max_flops: int,
              dataset: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The task the demo's client posts (scheme 1: the same 4 sub-networks on every miner).

    ``dataset`` is the spec's dataset reference (the demo passes ``{url, sha256}`` of its
    training part); None names the built-in set.
    """
    # digits trains on 1,437 images: more epochs cost seconds and bring the chosen network
    # near its plateau, where its accuracy on the held-out part matches the miners' claim
    phases: list[dict[str, Any]] = [{"name": "full", "epochs": 8 if quick else 1, "lr": 0.05},
                                    {"name": "kernel", "epochs": 2 if quick else 1, "lr": 0.02,
                                     "subnets_per_step": 4}]
    if not quick:
        phases.append({"name": "depth", "epochs": 1, "lr": 0.02, "subnets_per_step": 4})
    return {
        "kind": "classification", "seed": 7,
        "dataset": dict(dataset) if dataset is not None else
        {"name": "digits" if quick else "animal-mnist"},
        "search_space": {"kernel_sizes": [3, 5], "expand_ratios": [3.0, 4.0],
                         "depths": [1, 2], "resolutions": [20, 24, 28]},
        "training": {"batch_size": 64, "phases": phases},
        "distributed": {"scheme": "data_parallel", "subnets_per_step": 4},
        "constraint": {"max_flops": max_flops},
    }


@dataclass(frozen=True)
class ClientData:
    """The client's split of the built-in set: a training part the miners download by URL
    (pinned by its sha256) and a held-out part only ``manta task verify`` reads.

    The held-out part is the images ``i`` (in the set's stored order) with
    ``i % HELD_OUT_FOLDS == HELD_OUT_FOLD``, the training part all the others: disjoint by
    construction, and interleaved because animal-mnist is stored sorted by class.
    """

    train_file: Path
    sha256: str
    eval_file: Path
    train_images: int
    eval_images: int


HELD_OUT_FOLDS, HELD_OUT_FOLD = 5, 4  # the client keeps a fifth of the set for itself


async def split_client_data(quick: bool, folder: Path) -> ClientData:
    """Export the built-in set's two parts (``manta-miner automl export-dataset``, run as a
    process: node imports no miner code) and pack the training part (``manta data pack``)
    into ``folder/serve/``, the folder :func:`_start_data_server` publishes."""
    name = "digits" if quick else "animal-mnist"
    raw, eval_file = folder / "train-raw.npz", folder / "held-out.npz"
    export = [*_tool("manta-miner"), "automl", "export-dataset", name, "--folds",
              str(HELD_OUT_FOLDS), "--fold", str(HELD_OUT_FOLD), "--json"]
    train, evaluation = await asyncio.gather(_run_json([*export, str(raw), "--rest"]),
                                             _run_json([*export, str(eval_file)]))
    (serve := folder / "serve").mkdir(parents=True, exist_ok=True)
    packed = await _run_json([*_tool("manta"), "data", "pack", str(raw), "--out",
                              str(serve / "train.npz"), "--json"])
    raw.unlink()
    if train["images"] + evaluation["images"] != train["total"]:
        raise DemoError(f"the parts do not split the set: {train} {evaluation}")
    logger.info("client data split train=%d held_out=%d sha256=%s", train["images"],
                evaluation["images"], packed["sha256"])
    return ClientData(serve / "train.npz", str(packed["sha256"]), eval_file,
                      int(train["images"]), int(evaluation["images"]))


async def _run_json(command: list[str], timeout_s: float = 120.0) -> dict[str, Any]:
    """Run ``command`` (a helper process); its last stdout line as JSON."""
    process = await asyncio.create_subprocess_exec(
        *command, env=_child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True)
    try:
        async with asyncio.timeout(timeout_s):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    lines = stdout.decode(errors="replace").strip().splitlines()
    if process.returncode != 0 or not lines:
        raise DemoError(f"{Path(command[0]).name} {command[1]} exited with "
                        f"{process.returncode}: {stderr.decode(errors='replace')[-1500:]}")
    payload: dict[str, Any] = json.loads(lines[-1])
    return payload


def _start_data_server(folder: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``manta data serve FOLDER`` on a free 127.0.0.1 port; the process and its URL."""
    port = _free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*_tool("manta"), "data", "serve", str(folder), "--host", "127.0.0.1",
             "--port", str(port)], env=_child_env(), stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
    logger.info("data server started pid=%d port=%d", process.pid, port)
    return process, f"http://127.0.0.1:{port}"


async def _until_served(url: str, process: subprocess.Popen[bytes], log: Path,
                        timeout_s: float = 60.0) -> None:
    """Wait until ``url`` answers 200 (the server is up), failing fast if it died."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.head(url) as reply:
                    if reply.status == 200:
                        return
            if process.poll() is not None:
                raise DemoError(f"manta data serve exited with {process.returncode}: "
                                f"{_tail(log)}")
            if time.monotonic() > deadline:
                raise DemoError(f"{url} was not served within {timeout_s:.0f} s: {_tail(log)}")
            await asyncio.sleep(POLL_S)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tool(name: str) -> list[str]:
    """The console script ``name`` beside this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise DemoError(f"{name} not found (pip install -e '.[miner]')")
    return [found]


def _child_env() -> dict[str, str]:
    """Our environment without MANTA_ settings (each child gets its own), one torch thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MANTA_")}
    env.update(MANTA_TORCH_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


@dataclass
class _Daemon:
    address: str
    url: str
    log: Path
    process: subprocess.Popen[bytes]


def _miner_toml(folder: Path, devnet: Devnet, index: int, port: int) -> Path:
    """A daemon's settings: its data folder, the devnet keystore ``dev<index>``, the port."""
    assert devnet.password_file is not None and devnet.config.deployment_file is not None
    text = (f'data_dir = "{folder / "data"}"\nlog_level = "INFO"\n'
            f'[chain]\ndeployment_file = "{devnet.config.deployment_file}"\n'
            f'[identity]\nkeystore_dir = "{devnet.folder / "keystores"}"\n'
            f'keystore = "dev{index}"\npassword_file = "{devnet.password_file}"\n'
            f'[http]\nport = {port}\n[indexer]\npoll_interval_s = 0.1\n'
            '[tx]\npoll_interval_s = 0.1\n')
    path = folder / "miner.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _start_daemon(folder: Path, devnet: Devnet, index: int) -> _Daemon:
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    config = _miner_toml(folder, devnet, index, port)
    log = folder / "daemon.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*_tool("manta-miner"), "--config", str(config), "run"], env=_child_env(),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent)
    logger.info("miner daemon started pid=%d port=%d", process.pid, port)
    return _Daemon(devnet.accounts[index].address, f"http://127.0.0.1:{port}", log, process)


async def _client(args: list[str], devnet: Devnet, folder: Path,
                  timeout_s: float = 300.0) -> dict[str, Any]:
    """``manta <global options> ARGS --json`` as the demo's client; its last line as JSON."""
    assert devnet.password_file is not None and devnet.config.deployment_file is not None
    command = [*_tool("manta"), "--deployment", str(devnet.config.deployment_file),
               "--keystore", f"dev{DEMO_CLIENT}",
               "--keystore-dir", str(devnet.folder / "keystores"),
               "--password-file", str(devnet.password_file),
               "--spec-store", str(folder / "specs"), *args, "--json"]
    process = await asyncio.create_subprocess_exec(
        *command, env=_child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True)
    try:
        async with asyncio.timeout(timeout_s):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    lines = stdout.decode(errors="replace").strip().splitlines()
    if process.returncode != 0 and not (lines and lines[-1].startswith("{")):
        detail = stderr.decode(errors="replace")[-1500:]
        raise DemoError(f"manta {args[0]} {args[1] if len(args) > 1 else ''} exited with "
                        f"{process.returncode}: {detail}")
    payload: dict[str, Any] = json.loads(lines[-1])
    payload["_exit_code"] = process.returncode
    return payload


@dataclass
class MarketSummary:
    """What the full demo saw: the result, the money, the gas and the time of each stage."""

    task_id: int = 0
    state: str = ""
    dataset: str = ""
    dataset_url: str = ""  # the training part, as the spec references it
    train_images: int = 0  # images i % HELD_OUT_FOLDS != HELD_OUT_FOLD of the built-in set
    eval_images: int = 0  # the others: held out, never sent to the miners
    accuracy: float | None = None  # on the client's held-out data (manta task verify)
    claimed_accuracy: float | None = None  # on the miners' validation split
    flops: int = 0
    max_flops: int = 0
    front_max_flops: int = 0  # the largest network on the Pareto front
    front_max_accuracy: float | None = None
    largest_accuracy: float | None = None  # the full supernet, miners' validation split
    grad_bytes_sent: dict[str, int] = field(default_factory=dict)
    front_size: int = 0
    verified: bool = False
    miner_urls: dict[str, str] = field(default_factory=dict)
    leader: str = ""
    stage_s: dict[str, float] = field(default_factory=dict)
    gas_by_call: dict[str, list[int]] = field(default_factory=dict)
    balances_before_wei: dict[str, int] = field(default_factory=dict)
    balances_after_wei: dict[str, int] = field(default_factory=dict)
    withdrawn_wei: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total_gas(self) -> int:
        return sum(sum(gas) for gas in self.gas_by_call.values())

    def as_json(self) -> dict[str, object]:
        return {
            "state": self.state, "accuracy": self.accuracy, "flops": self.flops,
            "total_gas": self.total_gas, "seconds": round(self.seconds, 3),
            "task_id": self.task_id, "dataset": self.dataset, "verified": self.verified,
            "dataset_url": self.dataset_url, "train_images": self.train_images,
            "eval_images": self.eval_images,
            "eval_fold": f"i % {HELD_OUT_FOLDS} == {HELD_OUT_FOLD}",
            "claimed_accuracy": self.claimed_accuracy, "max_flops": self.max_flops,
            "front_max_flops": self.front_max_flops,
            "front_max_accuracy": self.front_max_accuracy,
            "largest_accuracy": self.largest_accuracy, "grad_bytes_sent": self.grad_bytes_sent,
            "front_size": self.front_size, "leader": self.leader,
            "miner_urls": self.miner_urls, "stage_s": {k: round(v, 2) for k, v in
                                                        self.stage_s.items()},
            "gas_by_call": self.gas_by_call, "withdrawn_wei": self.withdrawn_wei,
            "balances_before_wei": self.balances_before_wei,
            "balances_after_wei": self.balances_after_wei,
        }


class _Stages:
    """Wall time per named stage, measured back to back."""

    def __init__(self, summary: MarketSummary) -> None:
        self._summary = summary
        self._mark = time.monotonic()

    def done(self, name: str) -> None:
        now = time.monotonic()
        self._summary.stage_s[name] = now - self._mark
        self._mark = now
        logger.info("demo stage done stage=%s seconds=%.1f", name, self._summary.stage_s[name])


async def _until(what: Any, daemons: list[_Daemon], timeout_s: float, label: str) -> None:
    """Poll the coroutine function ``what`` until it returns true; a dead daemon fails fast."""
    deadline = time.monotonic() + timeout_s
    while not await what():
        for daemon in daemons:
            if daemon.process.poll() is not None:
                raise DemoError(f"miner daemon {daemon.address} exited with "
                                f"{daemon.process.returncode} while waiting for {label}: "
                                f"{_tail(daemon.log)}")
        if time.monotonic() > deadline:
            logs = " | ".join(_tail(d.log, 800) for d in daemons)
            raise DemoError(f"no {label} within {timeout_s:.0f} s; daemon logs: {logs}")
        await asyncio.sleep(POLL_S)


async def gas_by_call(devnet: Devnet, from_block: int) -> dict[str, list[int]]:
    """Gas used by every TaskMarket call mined since ``from_block``, by function name."""
    abi = load_artifact("TaskMarket").abi
    names = {"0x" + function_abi_to_4byte_selector(cast(Any, f)).hex(): f["name"]
             for f in abi if f.get("type") == "function"}
    market = devnet.deployment.task_market.lower()
    found: dict[str, list[int]] = {}
    head = int(await devnet.rpc.request("eth_blockNumber"), 16)
    for number in range(from_block, head + 1):
        block = await devnet.rpc.request("eth_getBlockByNumber", [hex(number), True])
        for tx in block["transactions"]:
            if (tx.get("to") or "").lower() != market:
                continue
            receipt = await devnet.rpc.request("eth_getTransactionReceipt", [tx["hash"]])
            name = names.get(tx["input"][:10], tx["input"][:10])
            found.setdefault(name, []).append(int(receipt["gasUsed"], 16))
    return found


def _read_result(folder: Path, summary: MarketSummary) -> None:
    """Chosen and largest network from the fetched (already hash-checked) manifest."""
    manifest = ResultManifest.model_validate_json((folder / "manifest.json").read_bytes())
    summary.flops = manifest.metrics.flops
    summary.claimed_accuracy = manifest.metrics.accuracy
    summary.front_size = len(manifest.pareto_front)
    if manifest.pareto_front:
        largest = max(manifest.pareto_front, key=lambda p: p.flops)
        summary.front_max_flops, summary.front_max_accuracy = largest.flops, largest.score


class _ProgressWatcher:
    """Reads the miners' progress over HTTP (``/tasks/{id}/progress``) while they train:
    the largest network's validation accuracy after training and the gradient traffic."""

    def __init__(self, http: aiohttp.ClientSession, urls: list[str], task_id: int,
                 summary: MarketSummary, every_s: float = 1.0) -> None:
        self._http, self._urls, self._task_id = http, urls, task_id
        self._summary, self._every_s, self._next = summary, every_s, 0.0

    async def poll(self) -> None:
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self._every_s
        for url in self._urls:
            try:
                async with self._http.get(f"{url}/tasks/{self._task_id}/progress") as reply:
                    snapshot = await reply.json() if reply.status == 200 else {}
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue
            accuracy = snapshot.get("val_accuracy")
            if isinstance(accuracy, dict) and "largest" in accuracy:
                self._summary.largest_accuracy = float(accuracy["largest"])
            sent = snapshot.get("grad_bytes_sent")
            if isinstance(sent, int):
                self._summary.grad_bytes_sent[url] = sent


async def _balances(devnet: Devnet, who: Mapping[str, str]) -> dict[str, int]:
    return {role: await devnet.rpc.get_balance(address) for role, address in who.items()}


async def _run_task(config: MarketDemoConfig, devnet: Devnet, work: Path,
                    daemons: list[_Daemon], summary: MarketSummary, stages: _Stages) -> None:
    """Submit → train/search/submit → fetch/verify → accept → withdraw, timed per stage."""
    market = await TaskMarket.create(devnet.rpc, devnet.deployment.task_market)
    data = await split_client_data(config.quick, work / "client-data")
    server, base_url = _start_data_server(data.train_file.parent, work / "data-server.log")
    try:
        summary.dataset_url = f"{base_url}/{data.train_file.name}"
        summary.train_images, summary.eval_images = data.train_images, data.eval_images
        await _until_served(summary.dataset_url, server, work / "data-server.log")
        stages.done("client_data")
        await _post_and_settle(config, devnet, market, work, data, daemons, summary, stages)
    finally:
        await asyncio.to_thread(terminate_group, server, 5.0)


async def _post_and_settle(config: MarketDemoConfig, devnet: Devnet, market: TaskMarket,
                           work: Path, data: ClientData, daemons: list[_Daemon],
                           summary: MarketSummary, stages: _Stages) -> None:
    spec_file = work / "spec.json"
    dataset = {"url": summary.dataset_url, "sha256": data.sha256}
    spec_file.write_text(json.dumps(demo_spec(config.quick, config.max_flops, dataset)))
    posted = await _client(
        ["task", "submit", str(spec_file), "--reward", f"{config.reward_wei}wei",
         "--bond", f"{config.bond_wei}wei", "--slots", "2",
         "--arbiter", devnet.accounts[DEMO_ARBITER].address, "--work-window", "1d"],
        devnet, work)
    task_id = summary.task_id = int(posted["task_id"])
    stages.done("submit")

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        watcher = _ProgressWatcher(http, [d.url for d in daemons], task_id, summary)

        async def submitted() -> bool:
            await watcher.poll()
            return await market.state_of(task_id) in (TaskState.SUBMITTED, TaskState.SETTLED)

        await _until(submitted, daemons, config.timeout_s, "submitted result")
    summary.leader = (await market.members_of(task_id))[0]
    stages.done("train_search_submit")

    result = work / "result"
    await _client(["task", "fetch", str(task_id), "--out", str(result)], devnet, work)
    _read_result(result, summary)
    report = await _client(["task", "verify", str(task_id), "--result", str(result),
                            "--data", str(data.eval_file)], devnet, work)
    summary.verified = all(c["ok"] for c in report["checks"]) and report["_exit_code"] == 0
    summary.accuracy = report["measured"].get("accuracy", summary.claimed_accuracy)
    if not summary.verified:
        raise DemoError(f"the result failed verification: {report['checks']}")
    stages.done("fetch_verify")

    await _client(["task", "accept", str(task_id)], devnet, work)
    stages.done("accept")

    async def withdrawn() -> bool:
        for daemon in daemons:
            events = await market.get_withdrawn(account=daemon.address)
            if not events:
                return False
            summary.withdrawn_wei[daemon.address] = sum(e.amount_wei for e in events)
        return True

    await _until(withdrawn, daemons, 120.0, "withdrawals")
    summary.state = (await market.state_of(task_id)).name
    stages.done("withdraw")


async def run_marketplace(config: MarketDemoConfig) -> MarketSummary:
    """The whole demo (see the module docstring); every process started is stopped on exit,
    also when cancelled (Ctrl-C)."""
    started = time.monotonic()
    owns = config.folder is None
    work = Path(tempfile.mkdtemp(prefix="manta-demo-")) if owns else config.folder
    assert work is not None
    work.mkdir(parents=True, exist_ok=True)
    summary = MarketSummary(dataset="digits" if config.quick else "animal-mnist",
                            max_flops=config.max_flops)
    stages = _Stages(summary)
    net_config = dataclasses.replace(config.devnet, folder=work / "net",
                                     deployment_file=work / "deployment.json",
                                     write_keystores=True)
    daemons: list[_Daemon] = []
    try:
        async with await Devnet.start(net_config) as devnet:
            stages.done("devnet")
            first_block = devnet.deployment.start_block
            who = {"client": devnet.accounts[DEMO_CLIENT].address}
            who.update({f"miner{n}": devnet.accounts[i].address
                        for n, i in enumerate(DEMO_MINERS)})
            summary.balances_before_wei = await _balances(devnet, who)
            try:
                for n, index in enumerate(DEMO_MINERS):
                    daemons.append(_start_daemon(work / f"miner{n}", devnet, index))
                market = await TaskMarket.create(devnet.rpc, devnet.deployment.task_market)

                async def registered() -> bool:
                    urls = [await market.endpoint_of(d.address) for d in daemons]
                    return urls == [d.url for d in daemons]

                await _until(registered, daemons, 120.0, "miner registrations")
                summary.miner_urls = {d.address: d.url for d in daemons}
                stages.done("miners_registered")
                await _run_task(config, devnet, work, daemons, summary, stages)
            finally:
                for daemon in daemons:
                    await asyncio.to_thread(terminate_group, daemon.process, 20.0)
            summary.balances_after_wei = await _balances(devnet, who)
            summary.gas_by_call = await gas_by_call(devnet, first_block)
    finally:
        for daemon in daemons:  # a second Ctrl-C may have cut the graceful stop short
            terminate_group(daemon.process, 1.0)
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
