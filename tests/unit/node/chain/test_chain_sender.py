"""TxSender against a fake chain: nonce management, gas cap, funds, pre-flight, fee bumps."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_abi.abi import encode
from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3.exceptions import ContractCustomError, Web3RPCError

from node.chain.errors import (
    ContractRevert,
    GasCapExceeded,
    InsufficientFunds,
    NonceError,
    TxReverted,
    TxTimeout,
)
from node.chain.revert import build_revert_table
from node.chain.sender import Fees, SenderConfig, TxSender, bump_fee, gas_limit_for

TARGET = "0x" + "22" * 20
GWEI = 10**9
ERROR_ABI = [{"type": "error", "name": "Nope", "inputs": [{"name": "code", "type": "uint256"}]}]


@dataclass
class FakeChain:
    """Just enough of EthRpc: a pool of sent transactions mined on demand."""

    balance_wei: int = 10**18
    chain_nonce: int = 0
    estimate: int = 50_000
    base_fee_wei: int = 10 * GWEI
    revert_data: bytes | None = None
    mine_on_send: int = 1  # the n-th send (1-based) for a nonce gets mined; 0 = never
    nonce_errors: int = 0  # refuse this many sends with "nonce too low"
    receipt_status: int = 1
    revert_on_replay: bytes | None = None  # revert only for calls at a past block number
    refusals: int = 0  # sends refused for their nonce
    sent: list[dict[str, Any]] = field(default_factory=list)
    receipts: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    @property
    def chain_id(self) -> int:
        return 1337

    async def get_block(self, block: str | int = "latest") -> Mapping[str, Any]:
        return {"baseFeePerGas": self.base_fee_wei}

    async def get_balance(self, address: str, block: str | int = "latest") -> int:
        return self.balance_wei

    async def get_nonce(self, address: str, block: str | int = "pending") -> int:
        self.calls.append("get_nonce")
        return self.chain_nonce

    async def call(self, tx: Mapping[str, Any], block: str | int = "latest") -> bytes:
        self.calls.append("call")
        data = self.revert_on_replay if isinstance(block, int) else self.revert_data
        if data is not None:
            payload = "0x" + data.hex()
            raise ContractCustomError(payload, data=payload)
        return b""

    async def estimate_gas(self, tx: Mapping[str, Any]) -> int:
        self.calls.append("estimate_gas")
        return self.estimate

    async def max_priority_fee(self) -> int:
        return GWEI

    async def send_raw_transaction(self, raw_tx: bytes) -> bytes:
        tx = TypedTransaction.from_bytes(HexBytes(raw_tx)).as_dict()
        if self.nonce_errors:
            self.nonce_errors -= 1
            raise Web3RPCError("nonce too low")
        if tx["nonce"] != self.chain_nonce:
            self.refusals += 1
            raise Web3RPCError(f"nonce too high: {tx['nonce']} vs {self.chain_nonce}")
        tx_hash = keccak(raw_tx)
        self.sent.append(dict(tx, hash=tx_hash))
        same_nonce = [t for t in self.sent if t["nonce"] == tx["nonce"]]
        if len(same_nonce) == self.mine_on_send:
            self.receipts[tx_hash] = {
                "transactionHash": tx_hash, "blockNumber": 7, "blockHash": b"\x07" * 32,
                "gasUsed": 42_000, "effectiveGasPrice": 11 * GWEI,
                "status": self.receipt_status, "logs": [], "contractAddress": None,
            }
            self.chain_nonce += 1
        return tx_hash

    async def get_receipt(self, tx_hash: bytes) -> Mapping[str, Any] | None:
        return self.receipts.get(tx_hash)


FAST = SenderConfig(receipt_timeout_s=0.5, poll_interval_s=0.001, bump_after_s=0.02, max_bumps=3)


def make_sender(chain: FakeChain, config: SenderConfig = FAST) -> TxSender:
    account = Account.from_key(keccak(text="manta-unit-sender"))
    return TxSender(chain, account, config, build_revert_table(ERROR_ABI))


async def test_sends_with_local_nonce_and_eip1559_fees() -> None:
    chain = FakeChain(chain_nonce=5)
    sender = await TxSender.create(chain, Account.from_key(keccak(text="k")), FAST)
    first = await sender.send(TARGET, b"\x01", label="one")
    second = await sender.send(TARGET, b"\x02", label="two")
    assert [t["nonce"] for t in chain.sent] == [5, 6]
    assert chain.calls.count("get_nonce") == 1  # synced once, then tracked locally
    tx = chain.sent[0]
    assert tx["maxPriorityFeePerGas"] == GWEI
    assert tx["maxFeePerGas"] == 2 * 10 * GWEI + GWEI
    assert tx["gas"] == 60_000 and tx["chainId"] == 1337 and tx["type"] == 2
    assert first.status and first.gas_used == 42_000 and first.tx_hash != second.tx_hash


async def test_nonce_refusal_resyncs_from_chain_and_retries() -> None:
    chain = FakeChain(chain_nonce=3)
    sender = make_sender(chain)
    await sender.resync_nonce()
    chain.chain_nonce = 9  # another process used the account meanwhile
    receipt = await sender.send(TARGET, b"")
    assert receipt.status and [t["nonce"] for t in chain.sent] == [9]


async def test_nonce_refusal_for_an_already_mined_copy_is_not_resent() -> None:
    """A retried send whose first attempt was mined answers 'nonce too low': no second tx."""
    chain = FakeChain()
    sender = make_sender(chain)
    original = chain.send_raw_transaction

    async def send_twice(raw_tx: bytes) -> bytes:
        await original(raw_tx)  # the node took it, but the answer was lost...
        raise Web3RPCError("nonce too low")  # ...and the retry is refused

    chain.send_raw_transaction = send_twice  # type: ignore[method-assign]
    receipt = await sender.send(TARGET, b"")
    assert receipt.status and len(chain.sent) == 1
    assert chain.calls.count("get_nonce") == 1  # no resync: the nonce was ours


async def test_persistent_nonce_refusal_is_a_named_error() -> None:
    chain = FakeChain(nonce_errors=5)
    with pytest.raises(NonceError):
        await make_sender(chain).send(TARGET, b"")
    assert chain.sent == []


async def test_stuck_transaction_is_replaced_with_bumped_fees_same_nonce() -> None:
    chain = FakeChain(mine_on_send=3)  # the original and one replacement stay pending
    receipt = await make_sender(chain).send(TARGET, b"")
    assert [t["nonce"] for t in chain.sent] == [0, 0, 0]
    fees = [(t["maxFeePerGas"], t["maxPriorityFeePerGas"]) for t in chain.sent]
    for (old_max, old_tip), (new_max, new_tip) in itertools.pairwise(fees):
        assert new_max * 1000 >= old_max * 1125 and new_tip * 1000 >= old_tip * 1125
    assert receipt.tx_hash == chain.sent[-1]["hash"]


async def test_never_mined_times_out_after_max_bumps_and_resyncs() -> None:
    chain = FakeChain(mine_on_send=0)
    sender = make_sender(chain)
    with pytest.raises(TxTimeout):
        await sender.send(TARGET, b"")
    assert len(chain.sent) == 1 + FAST.max_bumps
    chain.mine_on_send = 1 + FAST.max_bumps + 1
    chain.calls.clear()
    await sender.send(TARGET, b"")
    assert "get_nonce" in chain.calls  # the nonce was re-read after the timeout


async def test_cancelled_wait_resyncs_the_nonce_next_time() -> None:
    chain = FakeChain(mine_on_send=0)
    sender = make_sender(chain, SenderConfig(poll_interval_s=0.001, bump_after_s=60))
    waiting = asyncio.create_task(sender.send(TARGET, b""))
    while not chain.sent:
        await asyncio.sleep(0.001)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    chain.calls.clear()
    chain.chain_nonce, chain.mine_on_send = 1, 1  # the first one got mined meanwhile
    await sender.send(TARGET, b"")
    assert "get_nonce" in chain.calls and chain.sent[-1]["nonce"] == 1
    assert chain.refusals == 0  # resynced before signing, not after a refusal


async def test_gas_cap_refuses_before_sending() -> None:
    chain = FakeChain(estimate=400_000)
    with pytest.raises(GasCapExceeded) as info:
        await make_sender(chain).send(TARGET, b"", gas_cap=300_000)
    assert info.value.estimated_gas == 400_000 and chain.sent == []


async def test_insufficient_funds_refuses_before_sending() -> None:
    chain = FakeChain(balance_wei=10**15)
    with pytest.raises(InsufficientFunds) as info:
        await make_sender(chain).send(TARGET, b"", value_wei=10**16)
    assert info.value.balance_wei == 10**15 and chain.sent == []
    chain.balance_wei = 60_000 * 21 * GWEI - 1  # covers the intrinsic gas, not the gas limit
    with pytest.raises(InsufficientFunds):
        await make_sender(chain).send(TARGET, b"")
    assert chain.sent == []


async def test_preflight_revert_is_decoded_and_nothing_is_sent() -> None:
    chain = FakeChain(revert_data=keccak(text="Nope(uint256)")[:4] + encode(["uint256"], [4]))
    with pytest.raises(ContractRevert) as info:
        await make_sender(chain).send(TARGET, b"")
    assert str(info.value) == "Nope(code=4)"
    assert chain.sent == [] and "estimate_gas" not in chain.calls


async def test_mined_but_reverted_raises_and_consumes_the_nonce() -> None:
    chain = FakeChain(receipt_status=0)
    sender = make_sender(chain)
    with pytest.raises(TxReverted) as plain:
        await sender.send(TARGET, b"")
    assert plain.value.revert is None
    chain.revert_on_replay = keccak(text="Nope(uint256)")[:4] + encode(["uint256"], [8])
    with pytest.raises(TxReverted) as replayed:
        await sender.send(TARGET, b"")
    assert str(replayed.value.revert) == "Nope(code=8)" and "Nope(code=8)" in str(replayed.value)
    chain.receipt_status = 1
    await sender.send(TARGET, b"")
    assert [t["nonce"] for t in chain.sent] == [0, 1, 2]


def test_fee_arithmetic() -> None:
    assert bump_fee(1000, 1.125) == 1125
    assert bump_fee(1, 1.125) == 2  # always strictly higher
    assert bump_fee(7, 1.125) == 8  # ceil(7.875)
    assert Fees(80, 8).bumped(1.125) == Fees(90, 9)
    assert gas_limit_for(100_000, 1.2, 10**6) == 120_000
    assert gas_limit_for(100_000, 1.2, 110_000) == 110_000


def test_bump_ratio_below_replacement_rule_is_refused() -> None:
    with pytest.raises(ValueError):
        make_sender(FakeChain(), SenderConfig(bump_ratio=1.05))
