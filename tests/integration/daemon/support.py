"""What the daemon's anvil tests share besides the conftest fixtures: the arbiter every test
daemon trusts, chain time travel, and the money an account moved (v2 pushes payouts inside
``accept``/``finalize``, so the tests follow wallet balances and the contract's state, not
``Withdrawn`` events)."""

from __future__ import annotations

from typing import Any

from node.chain.rpc import RpcPool
from node.devnet import Devnet

#: The devnet account the daemon tests name as a task's arbiter (the conftest's, too).
ARBITER = 9


def trusted_policy(devnet: Devnet, **more: Any) -> dict[str, Any]:
    """``[policy]`` settings that trust :data:`ARBITER` (v2 daemons trust no arbiter by
    default), plus ``more``."""
    return {"arbiters": [devnet.accounts[ARBITER].address], **more}


async def warp(rpc: RpcPool, seconds: int) -> None:
    """Move chain time forward by ``seconds`` and mine a block at the new time."""
    await rpc.request("evm_increaseTime", [seconds])
    await rpc.request("evm_mine", [])


async def gas_spent_wei(rpc: RpcPool, address: str, first: int, last: int) -> tuple[int, int]:
    """(transactions, wei of gas) ``address`` paid in blocks ``first..last``."""
    count, wei = 0, 0
    for number in range(first, last + 1):
        block = await rpc.request("eth_getBlockByNumber", [hex(number), True])
        for tx in block["transactions"]:
            if tx["from"].lower() == address.lower():
                receipt = await rpc.request("eth_getTransactionReceipt", [tx["hash"]])
                count += 1
                wei += int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)
    return count, wei


class Wallets:
    """Balances of some accounts at one block, to check each one's change to the wei with
    the gas it paid since (:meth:`change`)."""

    def __init__(self, rpc: RpcPool, first_block: int, balances: dict[str, int]) -> None:
        self._rpc = rpc
        self.first_block = first_block
        self._before = balances

    @classmethod
    async def snapshot(cls, rpc: RpcPool, *addresses: str) -> Wallets:
        """The balances now; gas is counted from the next block on."""
        first = await rpc.block_number() + 1
        return cls(rpc, first, {a: await rpc.get_balance(a) for a in addresses})

    async def change(self, address: str) -> tuple[int, int]:
        """(balance change + gas paid, transactions sent) since the snapshot: what the
        account gained or lost apart from gas."""
        last = await self._rpc.block_number()
        sent, gas = await gas_spent_wei(self._rpc, address, self.first_block, last)
        return await self._rpc.get_balance(address) - self._before[address] + gas, sent
