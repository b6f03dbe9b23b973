"""Send transactions for one local account: nonces, gas, fees, pre-flight, receipts, bumps.

:class:`TxSender` signs locally (eth-account; coincurve makes it fast) and sends raw
transactions through an :class:`~node.chain.rpc.EthRpc` (the RPC pool, or a fake in unit
tests). One transaction is in flight per sender at a time (an asyncio lock), which keeps
the local nonce exact without asking the node for every transaction.

``send`` does, in this order, and stops at the first failure *before anything is signed*:

1. EIP-1559 fees: ``maxFee = base_fee_multiplier × baseFee + priorityFee``; balance ≥
   value + 21000 × maxFee (else :class:`InsufficientFunds`);
2. pre-flight ``eth_call``: a call that must revert raises the decoded
   :class:`ContractRevert` without spending gas;
3. ``eth_estimateGas``; above the per-call cap → :class:`GasCapExceeded`;
4. balance ≥ value + gasLimit × maxFee (else :class:`InsufficientFunds`);
5. sign with the local nonce and send; a nonce refusal resyncs the nonce from the chain
   (``pending`` count) and retries once;
6. poll for the receipt; every ``bump_after_s`` without one, re-sign the *same nonce* with
   both fees raised by ``bump_ratio`` (≥ 1.125, the replacement rule of geth/anvil) and
   send the replacement; whichever version is mined wins. No receipt within
   ``receipt_timeout_s`` → :class:`TxTimeout` (the nonce is resynced on the next send);
7. a mined transaction with status 0 → :class:`TxReverted`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from eth_account.signers.local import LocalAccount

from node.chain.errors import (
    GasCapExceeded,
    InsufficientFunds,
    NonceError,
    TxReverted,
    TxTimeout,
)
from node.chain.models import TxReceipt, checksum_address
from node.chain.revert import RevertTable, build_revert_table, decode_revert
from node.chain.rpc import EthRpc

logger = logging.getLogger(__name__)

INTRINSIC_GAS = 21_000
_NONCE_MARKERS = ("nonce too low", "nonce too high", "invalid nonce", "invalid transaction nonce")
_KNOWN_MARKERS = ("already known", "already imported", "known transaction")
_UNDERPRICED_MARKERS = ("underpriced", "replacement transaction")


@dataclass(frozen=True)
class SenderConfig:
    """Policy of a :class:`TxSender` (the defaults suit a public chain; tests shorten times)."""

    gas_cap: int = 3_000_000
    gas_margin: float = 1.2
    priority_fee_wei: int | None = None
    base_fee_multiplier: int = 2
    receipt_timeout_s: float = 180.0
    poll_interval_s: float = 0.5
    bump_after_s: float = 45.0
    bump_ratio: float = 1.125
    max_bumps: int = 3


@dataclass(frozen=True)
class Fees:
    """EIP-1559 fee caps of one transaction."""

    max_fee_wei: int
    priority_fee_wei: int

    def bumped(self, ratio: float) -> Fees:
        """Both caps raised by ``ratio`` (rounded up, at least +1 wei), for a replacement."""
        return Fees(bump_fee(self.max_fee_wei, ratio), bump_fee(self.priority_fee_wei, ratio))


def bump_fee(fee_wei: int, ratio: float) -> int:
    """``ceil(fee × ratio)``, strictly above ``fee`` (exact rational arithmetic, no float)."""
    bumped = math.ceil(fee_wei * Fraction(ratio).limit_denominator(10_000))
    return max(bumped, fee_wei + 1)


def gas_limit_for(estimate: int, margin: float, cap: int) -> int:
    """The gas limit to sign: the estimate plus a margin, never above ``cap``."""
    return min(cap, math.ceil(estimate * Fraction(margin).limit_denominator(1000)))


def _message(exc: BaseException) -> str:
    return str(exc).lower()


class TxSender:
    """Signs and sends transactions for one local account (see the module docstring)."""

    def __init__(
        self,
        rpc: EthRpc,
        account: LocalAccount,
        config: SenderConfig | None = None,
        revert_table: RevertTable | None = None,
    ) -> None:
        if (config or SenderConfig()).bump_ratio < 1.125:
            raise ValueError("bump_ratio must be at least 1.125 (replacement rule)")
        self._rpc = rpc
        self._account = account
        self._config = config or SenderConfig()
        self._table = revert_table or build_revert_table([])
        self._lock = asyncio.Lock()
        self._nonce: int | None = None

    @classmethod
    async def create(
        cls,
        rpc: EthRpc,
        account: LocalAccount,
        config: SenderConfig | None = None,
        revert_table: RevertTable | None = None,
    ) -> TxSender:
        """A sender whose nonce is synced from the chain (``pending`` count)."""
        sender = cls(rpc, account, config, revert_table)
        await sender.resync_nonce()
        return sender

    @property
    def address(self) -> str:
        return str(self._account.address)

    @property
    def config(self) -> SenderConfig:
        return self._config

    @property
    def rpc(self) -> EthRpc:
        return self._rpc

    @property
    def revert_table(self) -> RevertTable:
        return self._table

    def with_revert_table(self, table: RevertTable) -> None:
        """Decode reverts with ``table`` from now on (e.g. once the ABI is known)."""
        self._table = self._table.merged(table)

    async def resync_nonce(self) -> int:
        """Forget the local nonce and read it again from the chain."""
        self._nonce = await self._rpc.get_nonce(self.address, "pending")
        return self._nonce

    async def fees(self) -> Fees:
        """Current EIP-1559 fee caps from the latest block's base fee."""
        block = await self._rpc.get_block("latest")
        base_fee = int(block.get("baseFeePerGas") or 0)
        priority = self._config.priority_fee_wei
        if priority is None:
            priority = await self._rpc.max_priority_fee()
        return Fees(self._config.base_fee_multiplier * base_fee + priority, priority)

    async def preflight(self, tx: Mapping[str, Any], label: str) -> int:
        """Run the call and estimate its gas; a revert raises the decoded ContractRevert."""
        try:
            await self._rpc.call(tx)
            return await self._rpc.estimate_gas(tx)
        except Exception as exc:  # only reverts are translated; the rest re-raises untouched
            revert = decode_revert(exc, self._table)
            if revert is None:
                raise
            logger.info("preflight reverted label=%s error=%s", label, revert)
            raise revert from exc

    def _require(self, balance: int, needed_wei: int) -> None:
        if balance < needed_wei:
            raise InsufficientFunds(
                account=self.address, needed_wei=needed_wei, balance_wei=balance
            )

    async def send(
        self,
        to: str | None,
        data: bytes,
        *,
        value_wei: int = 0,
        gas_cap: int | None = None,
        gas_extra: int = 0,
        label: str = "tx",
    ) -> TxReceipt:
        """Pre-flight, sign, send and wait for one transaction; ``to`` None deploys ``data``.

        ``gas_extra`` is added to the estimate (within the cap) for a call whose cost grows if
        the state it was estimated on changes before it is mined."""
        tx: dict[str, Any] = {"from": self.address, "data": data, "value": value_wei}
        if to is not None:
            tx["to"] = checksum_address(to)
        cap = gas_cap if gas_cap is not None else self._config.gas_cap
        async with self._lock:
            fees = await self.fees()
            balance = await self._rpc.get_balance(self.address)
            # Any transaction needs its value plus the intrinsic 21000 gas; checked before the
            # pre-flight because some nodes refuse even eth_call from an account that cannot
            # afford gas (eth-tester does).
            self._require(balance, value_wei + INTRINSIC_GAS * fees.max_fee_wei)
            estimate = await self.preflight(tx, label)
            if estimate > cap:
                raise GasCapExceeded(label=label, estimated_gas=estimate, gas_cap=cap)
            gas = gas_limit_for(estimate + gas_extra, self._config.gas_margin, cap)
            self._require(balance, value_wei + gas * fees.max_fee_wei)
            fields = {k: v for k, v in tx.items() if k != "from"}
            fields.update(gas=gas, chainId=self._rpc.chain_id, type=2)
            return await self._send_and_wait(fields, fees, label)

    def _sign(self, fields: Mapping[str, Any], nonce: int, fees: Fees) -> tuple[bytes, bytes]:
        tx = dict(fields, nonce=nonce, maxFeePerGas=fees.max_fee_wei,
                  maxPriorityFeePerGas=fees.priority_fee_wei)
        signed = self._account.sign_transaction(tx)
        return bytes(signed.raw_transaction), bytes(signed.hash)

    async def _broadcast(self, raw: bytes, tx_hash: bytes) -> bytes:
        """Send; a node that already has this exact transaction counts as success."""
        try:
            return await self._rpc.send_raw_transaction(raw)
        except Exception as exc:
            if any(m in _message(exc) for m in _KNOWN_MARKERS):
                return tx_hash
            raise

    async def _first_send(self, fields: Mapping[str, Any], fees: Fees) -> tuple[int, bytes]:
        """Sign and send with the local nonce; on a nonce refusal resync once and retry."""
        if self._nonce is None:
            await self.resync_nonce()
        for attempt in (1, 2):
            nonce = self._nonce if self._nonce is not None else await self.resync_nonce()
            raw, tx_hash = self._sign(fields, nonce, fees)
            try:
                return nonce, await self._broadcast(raw, tx_hash)
            except Exception as exc:
                if not any(m in _message(exc) for m in _NONCE_MARKERS):
                    raise
                if await self._rpc.get_receipt(tx_hash) is not None:
                    # the pool re-sent after a timeout and the first attempt was mined: this
                    # very transaction used the nonce, so do not sign a second one
                    return nonce, tx_hash
                logger.warning("nonce refused nonce=%d attempt=%d error=%s", nonce, attempt, exc)
                if attempt == 2:
                    raise NonceError(nonce=nonce, account=self.address, reason=str(exc)) from exc
                await self.resync_nonce()
        raise AssertionError("unreachable")

    async def _send_and_wait(
        self, fields: Mapping[str, Any], fees: Fees, label: str
    ) -> TxReceipt:
        nonce, tx_hash = await self._first_send(fields, fees)
        logger.info("tx sent label=%s nonce=%d hash=0x%s", label, nonce, tx_hash.hex())
        try:
            receipt = await self._wait(fields, nonce, fees, [tx_hash], label)
        except BaseException:  # timeout, cancellation, RPC failure while waiting
            self._nonce = None  # unknown whether it will still be mined: ask the chain next time
            raise
        self._nonce = nonce + 1
        result = TxReceipt.from_rpc(receipt)
        if not result.status:
            reason = await self._replay_revert(fields, result.block_number)
            raise TxReverted(
                tx_hash="0x" + result.tx_hash.hex(), block_number=result.block_number,
                gas_used=result.gas_used, revert=reason,
                detail=str(reason) if reason is not None else "",
            )
        return result

    async def _replay_revert(self, fields: Mapping[str, Any], block_number: int) -> Any:
        """Best effort: the named error of a transaction that passed the pre-flight but
        reverted on chain (another transaction changed the state in between), found by
        replaying it as a call on the state before its block. None when the replay passes."""
        call = {k: v for k, v in fields.items() if k in ("to", "data", "value")}
        call["from"] = self.address
        try:
            await self._rpc.call(call, max(block_number - 1, 0))
        except Exception as exc:  # only reverts are of interest here
            return decode_revert(exc, self._table)
        return None

    async def _wait(
        self, fields: Mapping[str, Any], nonce: int, fees: Fees, hashes: list[bytes], label: str
    ) -> Mapping[str, Any]:
        """Poll every version's receipt; bump fees (same nonce) when one is overdue."""
        loop = asyncio.get_running_loop()
        config = self._config
        deadline = loop.time() + config.receipt_timeout_s
        next_bump = loop.time() + config.bump_after_s
        bumps = 0
        while True:
            for tx_hash in reversed(hashes):
                receipt = await self._rpc.get_receipt(tx_hash)
                if receipt is not None:
                    return receipt
            now = loop.time()
            if now >= deadline:
                raise TxTimeout(tx_hash="0x" + hashes[-1].hex(), timeout_s=config.receipt_timeout_s)
            if now >= next_bump and bumps < config.max_bumps:
                fees = fees.bumped(config.bump_ratio)
                bumps += 1
                next_bump = now + config.bump_after_s
                replacement = await self._replace(fields, nonce, fees, label, bumps)
                if replacement is not None:
                    hashes.append(replacement)
            await asyncio.sleep(config.poll_interval_s)

    async def _replace(
        self, fields: Mapping[str, Any], nonce: int, fees: Fees, label: str, bump: int
    ) -> bytes | None:
        raw, tx_hash = self._sign(fields, nonce, fees)
        try:
            sent = await self._broadcast(raw, tx_hash)
        except Exception as exc:
            message = _message(exc)
            if any(m in message for m in _UNDERPRICED_MARKERS + _NONCE_MARKERS):
                # underpriced: the next bump goes higher; nonce: an earlier version was mined
                logger.warning("replacement refused label=%s bump=%d error=%s", label, bump, exc)
                return None
            raise
        logger.warning(
            "tx replaced label=%s nonce=%d bump=%d max_fee_wei=%d hash=0x%s",
            label, nonce, bump, fees.max_fee_wei, sent.hex(),
        )
        return sent
