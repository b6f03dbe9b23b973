"""The chain part of the demo alone (``manta-node demo --chain-only``): post, claim ×2,
submit signed by both and accept (which pays both), with no training; gas per step."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from eth_utils.crypto import keccak

from node.chain.market import TaskMarket
from node.chain.models import TaskParams, TxReceipt
from node.chain.signing import sign_result
from node.devnet import Devnet, DevnetConfig

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
    paid_wei: dict[str, int] = field(default_factory=dict)
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
            "gas_by_step": self.gas_by_step, "paid_wei": self.paid_wei,
        }


async def run_lifecycle(devnet: Devnet) -> DemoSummary:
    """Post → claim ×2 → submit (signed by both) → accept (which pays both) on ``devnet``."""
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
    member = devnet.accounts[MEMBER]
    signature = sign_result(member, devnet.chain_id, address, posted.task_id, result_root)
    summary.record("submit_result", await miners[0].submit_result(
        posted.task_id, result_root, "http://127.0.0.1:9100/result", {member.address: signature}))
    accounts = [devnet.accounts[i].address for i in (LEADER, MEMBER)]
    before = {a: await devnet.rpc.get_balance(a) for a in accounts}
    summary.record("accept", await client.accept(posted.task_id))  # pays both members
    for account in accounts:
        summary.paid_wei[account] = await devnet.rpc.get_balance(account) - before[account]
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
