"""What the full demo reports (:class:`MarketSummary`) and how it measures it: wall time per
stage, gas per contract call, the result manifest, the miners' progress, the balances."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
from eth_utils.abi import function_abi_to_4byte_selector

from node.chain.artifacts import load_artifact
from node.devnet import Devnet
from node.documents.manifest import ResultManifest

logger = logging.getLogger(__name__)


@dataclass
class MarketSummary:
    """What the full demo saw: the result, the money, the gas and the time of each stage."""

    task_id: int = 0
    state: str = ""
    dataset: str = ""
    dataset_url: str = ""  # the training part, as the spec references it
    train_images: int = 0  # images i % HELD_OUT_FOLDS != HELD_OUT_FOLD of the built-in set
    eval_images: int = 0  # the others (or the client's own stereo pairs): never sent to miners
    eval_set: str = ""  # which held-out data the client verified on
    metric: str = "accuracy"  # the task's metric: "accuracy" or, for stereo, "epe" (px)
    accuracy: float | None = None  # on the client's held-out data (manta task verify)
    claimed_accuracy: float | None = None  # on the miners' validation split
    epe: float | None = None  # stereo: on the client's own pairs
    claimed_epe: float | None = None
    largest_epe: float | None = None
    front_max_epe: float | None = None
    flops: int = 0
    max_flops: int = 0
    front_max_flops: int = 0  # the largest network on the Pareto front
    front_max_accuracy: float | None = None
    largest_accuracy: float | None = None  # the full supernet, miners' validation split
    largest_flops: int = 0  # the full supernet (0: the manifest does not say)
    grad_bytes_sent: dict[str, int] = field(default_factory=dict)
    front_size: int = 0
    verified: bool = False
    miner_urls: dict[str, str] = field(default_factory=dict)
    leader: str = ""
    monitor_url: str = ""  # the leader's monitor page for this task
    stage_s: dict[str, float] = field(default_factory=dict)
    gas_by_call: dict[str, list[int]] = field(default_factory=dict)
    balances_before_wei: dict[str, int] = field(default_factory=dict)
    balances_after_wei: dict[str, int] = field(default_factory=dict)
    paid_wei: dict[str, int] = field(default_factory=dict)  # pushed by accept
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
            "eval_set": self.eval_set, "metric": self.metric, "epe": self.epe,
            "claimed_epe": self.claimed_epe, "largest_epe": self.largest_epe,
            "front_max_epe": self.front_max_epe,
            "claimed_accuracy": self.claimed_accuracy, "max_flops": self.max_flops,
            "front_max_flops": self.front_max_flops,
            "front_max_accuracy": self.front_max_accuracy,
            "largest_accuracy": self.largest_accuracy, "largest_flops": self.largest_flops,
            "grad_bytes_sent": self.grad_bytes_sent,
            "front_size": self.front_size, "leader": self.leader,
            "monitor_url": self.monitor_url,
            "miner_urls": self.miner_urls, "stage_s": {k: round(v, 2) for k, v in
                                                        self.stage_s.items()},
            "gas_by_call": self.gas_by_call, "paid_wei": self.paid_wei,
            "balances_before_wei": self.balances_before_wei,
            "balances_after_wei": self.balances_after_wei,
        }


class Stages:
    """Wall time per named stage, measured back to back."""

    def __init__(self, summary: MarketSummary) -> None:
        self._summary = summary
        self._mark = time.monotonic()

    def done(self, name: str) -> None:
        now = time.monotonic()
        self._summary.stage_s[name] = now - self._mark
        self._mark = now
        logger.info("demo stage done stage=%s seconds=%.1f", name, self._summary.stage_s[name])


async def gas_by_call(devnet: Devnet, from_block: int) -> dict[str, list[int]]:
    """Gas used by every TaskMarket call mined since ``from_block``, by function name; a call
    that reverted on chain (a claim that lost the race for the group to another miner's in
    the same block) is listed apart as ``<name> (reverted)``: it paid gas, and changed nothing."""
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
            if int(receipt["status"], 16) != 1:
                name += " (reverted)"
            found.setdefault(name, []).append(int(receipt["gasUsed"], 16))
    return found


def read_result(folder: Path, summary: MarketSummary) -> None:
    """Chosen and largest network from the fetched (already hash-checked) manifest."""
    manifest = ResultManifest.model_validate_json((folder / "manifest.json").read_bytes())
    summary.flops = manifest.metrics.flops
    summary.claimed_accuracy = manifest.metrics.accuracy
    summary.front_size = len(manifest.pareto_front)
    stereo = manifest.metrics.epe is not None
    if stereo:  # scores are -EPE
        summary.metric, summary.claimed_epe = "epe", manifest.metrics.epe
    if manifest.pareto_front:
        largest = max(manifest.pareto_front, key=lambda p: p.flops)
        summary.front_max_flops = largest.flops
        if stereo:
            summary.front_max_epe = -largest.score
        else:
            summary.front_max_accuracy = largest.score
    if manifest.largest is not None:
        summary.largest_flops = manifest.largest.flops
        if stereo:
            summary.largest_epe = -manifest.largest.score
        else:
            summary.largest_accuracy = manifest.largest.score


class ProgressWatcher:
    """Reads the miners' progress over HTTP (``/tasks/{id}/progress``) while they train:
    the gradient traffic."""

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
            sent = snapshot.get("grad_bytes_sent")
            if isinstance(sent, int):
                self._summary.grad_bytes_sent[url] = sent


async def balances(devnet: Devnet, who: Mapping[str, str]) -> dict[str, int]:
    """The wallet balance of each named address."""
    return {role: await devnet.rpc.get_balance(address) for role, address in who.items()}
