"""Gas of the TaskMarket lifecycle on anvil, with 1 and with 4 miners, native coin and ERC-20.

Starts its own anvil (``node_modules/.bin/anvil``) on a free loopback port, deploys the
committed artifacts through the chain layer, and measures ``gasUsed`` from the receipts.

Definitions (all integers, gas units):

- ``lifecycle_gas_1_miner`` (native coin): every transaction a participant must send for one
  task: ``postTask + claim + submitResult + accept`` (+ ``withdraw`` for any account left
  with a credit: the market pushes the payouts inside ``accept`` and credits only a transfer
  that fails, so none is needed here). Registration (once per miner, not per task) is
  excluded and printed separately.
- ``lifecycle_gas_N_miners``: the same with N miners: N claims, one submit by miner 0
  carrying the N - 1 other signatures, one accept that pays all N.
- ``extra_gas_per_miner = (lifecycle_gas_4_miners - lifecycle_gas_1_miner) / 3`` (rounded up).
- ERC-20 figures: the same calls for a MantaTestToken task, *excluding* the ``approve``
  transactions (whose gas is printed as ``erc20_approve_gas``; an approval is only needed when
  the allowance does not already cover the deposit).

Every scenario starts from the same chain state (``evm_snapshot``/``evm_revert``), taken after
one warm-up task, so that ``taskCount`` is already non-zero as on a live market.
Targets: ``lifecycle_gas_1_miner <= 300_000`` and ``extra_gas_per_miner <= 60_000``.
The last line printed is one JSON object.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from node.chain.deploy import deploy_market
from node.chain.market import MarketAbis, TaskMarket
from node.chain.models import ZERO_ADDRESS, TaskParams, TxReceipt
from node.chain.rpc import RpcConfig, RpcPool
from node.chain.sender import SenderConfig, TxSender
from node.chain.signing import sign_result
from node.chain.token import Erc20

ROOT = Path(__file__).resolve().parent.parent
ANVIL = ROOT / "node_modules" / ".bin" / "anvil"
ETHER = 10**18
TARGET_LIFECYCLE = 300_000
TARGET_EXTRA = 60_000
SENDER = SenderConfig(poll_interval_s=0.005, receipt_timeout_s=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def anvil() -> Any:
    port = free_port()
    process = subprocess.Popen(
        [str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class Bench:
    pool: RpcPool
    abis: MarketAbis
    market_address: str
    token_address: str
    accounts: dict[str, LocalAccount]
    senders: dict[str, TxSender] = field(default_factory=dict)

    def market(self, who: str) -> TaskMarket:
        return TaskMarket(self.pool, self.market_address, self.abis, self.senders[who])

    def params(self, slots: int, erc20: bool) -> TaskParams:
        return TaskParams(
            token=self.token_address if erc20 else ZERO_ADDRESS, reward_wei=ETHER,
            bond_wei=ETHER // 10, slots=slots, claim_window_s=3600, work_window_s=3600,
            review_window_s=3600, arbitration_window_s=3600,
            arbiter=self.accounts["arbiter"].address, spec_hash=keccak(text="spec"),
            validation_hash=keccak(text="validation"),
        )


async def setup(url: str) -> Bench:
    pool = await RpcPool.create(RpcConfig(urls=(url,), chain_id=31337))
    names = ["client", "arbiter"] + [f"miner{i}" for i in range(4)]
    accounts = {n: Account.from_key(keccak(text=f"manta-bench-gas-{n}")) for n in names}
    for account in accounts.values():
        await pool.request("anvil_setBalance", [account.address, hex(10_000 * ETHER)])
    senders = {n: await TxSender.create(pool, a, SENDER) for n, a in accounts.items()}
    deployment = await deploy_market(senders["client"], with_token=True)
    assert deployment.token is not None
    bench = Bench(pool, MarketAbis.from_artifacts(), deployment.task_market, deployment.token,
                  accounts, senders)
    token = Erc20(pool, deployment.token, bench.abis.token, senders["client"])
    for name in names:
        await token.mint(accounts[name].address, 1_000 * ETHER)
    return bench


async def reset(bench: Bench, snapshot: Any) -> Any:
    await bench.pool.request("evm_revert", [snapshot])
    for sender in bench.senders.values():
        await sender.resync_nonce()
    return await bench.pool.request("evm_snapshot", [])


def gas(receipt: TxReceipt | None) -> int:
    return 0 if receipt is None else receipt.gas_used


async def lifecycle(bench: Bench, miners: int, erc20: bool) -> dict[str, int]:
    """One full task; gas per call (sums for repeated calls), approvals apart."""
    token = bench.token_address if erc20 else ZERO_ADDRESS
    client = bench.market("client")
    names = [f"miner{i}" for i in range(miners)]
    row = {"approve": 0}
    if erc20:
        row["approve"] += gas(await client.token(token).ensure_allowance(client.address, ETHER))
        for name in names:
            market = bench.market(name)
            row["approve"] += gas(
                await market.token(token).ensure_allowance(market.address, ETHER // 10))
    posted = await client.post_task(bench.params(miners, erc20), "file://spec")
    row["postTask"] = posted.receipt.gas_used
    row["claim"] = sum([gas(await bench.market(n).claim(posted.task_id)) for n in names])
    root = keccak(text="result")
    signatures = {
        bench.accounts[n].address: sign_result(
            bench.accounts[n], bench.pool.chain_id, bench.market_address, posted.task_id, root)
        for n in names[1:]
    }
    receipt = await bench.market(names[0]).submit_result(
        posted.task_id, root, "http://miner0/result", signatures)
    row["submitResult"] = receipt.gas_used
    row["accept"] = gas(await client.accept(posted.task_id))
    # Payouts are pushed inside accept; a withdraw is only needed (and counted) where a push
    # failed and left a credit, which it does not for these accounts.
    row["withdraw"] = 0
    for name in [*names, "client"]:
        market = bench.market(name)
        if await market.credit_of(market.sender.address, token) > 0:
            row["withdraw"] += gas(await market.withdraw(token))
    row["total"] = sum(v for k, v in row.items() if k != "approve")
    return row


async def run() -> dict[str, Any]:
    with anvil() as url:
        bench = await setup(url)
        for name in [f"miner{i}" for i in range(4)]:
            registered = await bench.market(name).register(f"http://127.0.0.1:{9000}/{name}")
        register_gas = registered.gas_used
        warm = await bench.market("client").post_task(bench.params(1, False), "file://warm-up")
        await bench.market("client").cancel(warm.task_id)
        snapshot = await bench.pool.request("evm_snapshot", [])
        rows: dict[str, dict[str, int]] = {}
        for erc20 in (False, True):
            for miners in (1, 4):
                snapshot = await reset(bench, snapshot)
                label = f"{'erc20' if erc20 else 'native'}/{miners}"
                rows[label] = await lifecycle(bench, miners, erc20)
        await bench.pool.close()
    return {"rows": rows, "register": register_gas}


def render(rows: dict[str, dict[str, int]]) -> None:
    columns = list(next(iter(rows.values())))
    print(f"{'scenario':<12}" + "".join(f"{c:>18}" for c in columns))
    for label, row in rows.items():
        print(f"{label:<12}" + "".join(f"{row[c]:>18,}" for c in columns))


def main() -> int:
    if not ANVIL.exists():
        print(json.dumps({"error": f"anvil not found at {ANVIL} (run npm ci)"}))
        return 1
    result = asyncio.run(run())
    rows = result["rows"]
    render(rows)
    print(f"register (once per miner): {result['register']:,} gas")
    native1, native4 = rows["native/1"]["total"], rows["native/4"]["total"]
    erc1, erc4 = rows["erc20/1"]["total"], rows["erc20/4"]["total"]
    extra = math.ceil((native4 - native1) / 3)
    extra_erc20 = math.ceil((erc4 - erc1) / 3)
    summary = {
        "lifecycle_gas_1_miner": native1,
        "lifecycle_gas_4_miners": native4,
        "extra_gas_per_miner": extra,
        "lifecycle_gas_1_miner_erc20": erc1,
        "lifecycle_gas_4_miners_erc20": erc4,
        "extra_gas_per_miner_erc20": extra_erc20,
        "erc20_approve_gas_1_miner": rows["erc20/1"]["approve"],
        "register_gas": result["register"],
        "target_lifecycle_gas": TARGET_LIFECYCLE,
        "target_extra_gas_per_miner": TARGET_EXTRA,
        "meets_targets": native1 <= TARGET_LIFECYCLE and extra <= TARGET_EXTRA,
        "meets_targets_erc20": erc1 <= TARGET_LIFECYCLE and extra_erc20 <= TARGET_EXTRA,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
