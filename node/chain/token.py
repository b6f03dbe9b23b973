"""A small async facade over an ERC-20 token (the reward/bond token of ERC-20 tasks).

Reads go through the RPC pool, writes through a :class:`~node.chain.sender.TxSender`.
The ABI is the compiled ``MantaTestToken`` (a plain OpenZeppelin ERC-20 plus a public
``mint`` for dev faucets); the standard functions work against any ERC-20.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from node.chain.codec import ContractCodec
from node.chain.errors import ChainError, InsufficientTokens
from node.chain.models import TxReceipt, checksum_address
from node.chain.revert import RevertTable, build_revert_table, decode_revert
from node.chain.rpc import RpcPool
from node.chain.sender import TxSender

logger = logging.getLogger(__name__)


class ReadOnlyError(ChainError):
    """A write was asked of a facade that has no sender (no account)."""

    template = "{contract} has no sender: pass one (with_sender) to send transactions"


async def view_call(
    rpc: RpcPool, address: str, codec: ContractCodec, table: RevertTable, name: str, *args: Any
) -> tuple[Any, ...]:
    """``eth_call`` one view function and decode its outputs; reverts raise ContractRevert."""
    data = codec.encode_call(name, *args)
    try:
        output = await rpc.call({"to": address, "data": data})
    except Exception as exc:  # only reverts are translated; the rest re-raises untouched
        revert = decode_revert(exc, table)
        if revert is None:
            raise
        raise revert from exc
    return codec.decode_output(name, output)


class Erc20:
    """One ERC-20 token contract, optionally with an account to send from."""

    def __init__(
        self,
        rpc: RpcPool,
        address: str,
        abi: Sequence[Mapping[str, Any]],
        sender: TxSender | None = None,
    ) -> None:
        self._rpc = rpc
        self.address = checksum_address(address)
        self._codec = ContractCodec("ERC20", abi)
        self._table = build_revert_table(abi)
        self._sender = sender
        if sender is not None:
            sender.with_revert_table(self._table)

    def with_sender(self, sender: TxSender) -> Erc20:
        """The same token, sending from ``sender``'s account."""
        return Erc20(self._rpc, self.address, self._codec.abi, sender)

    async def _view(self, name: str, *args: Any) -> tuple[Any, ...]:
        return await view_call(self._rpc, self.address, self._codec, self._table, name, *args)

    async def _send(self, name: str, *args: Any) -> TxReceipt:
        if self._sender is None:
            raise ReadOnlyError(contract="ERC20")
        data = self._codec.encode_call(name, *args)
        return await self._sender.send(self.address, data, label=f"ERC20.{name}")

    async def balance_of(self, account: str) -> int:
        return int((await self._view("balanceOf", checksum_address(account)))[0])

    async def allowance(self, owner: str, spender: str) -> int:
        owner, spender = checksum_address(owner), checksum_address(spender)
        return int((await self._view("allowance", owner, spender))[0])

    async def approve(self, spender: str, amount_wei: int) -> TxReceipt:
        return await self._send("approve", checksum_address(spender), amount_wei)

    async def transfer(self, to: str, amount_wei: int) -> TxReceipt:
        return await self._send("transfer", checksum_address(to), amount_wei)

    async def mint(self, to: str, amount_wei: int) -> TxReceipt:
        """Dev faucet of MantaTestToken (absent from production tokens)."""
        return await self._send("mint", checksum_address(to), amount_wei)

    async def require_balance(self, owner: str, amount_wei: int) -> None:
        """Raise :class:`InsufficientTokens` unless ``owner`` holds at least ``amount_wei``."""
        balance = await self.balance_of(owner)
        if balance < amount_wei:
            raise InsufficientTokens(
                account=checksum_address(owner), token=self.address, needed_wei=amount_wei,
                balance_wei=balance,
            )

    async def ensure_allowance(self, spender: str, amount_wei: int) -> TxReceipt | None:
        """Approve ``amount_wei`` for ``spender`` unless the sender already allows that much."""
        if self._sender is None:
            raise ReadOnlyError(contract="ERC20")
        current = await self.allowance(self._sender.address, spender)
        if current >= amount_wei:
            return None
        logger.info("approve token=%s spender=%s amount_wei=%d", self.address, spender, amount_wei)
        return await self.approve(spender, amount_wei)
