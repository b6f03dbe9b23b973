# ruff: noqa: N818 (the names follow web3.py/ape: InsufficientFunds, TxTimeout, ContractRevert)
"""The chain layer's error subtree (everything under :class:`ChainError`).

Callers catch the narrowest class that they can act on: :class:`ContractRevert` carries the
decoded custom error of the contract (``name`` and ``args``), :class:`RpcUnavailable` says
that no endpoint answered, :class:`InsufficientFunds` says how much is missing. Every class
composes its message from its fields, so the same failure always reads the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any, ClassVar

from node.errors import MantaError


class ChainError(MantaError):
    """Root of every error raised by ``node.chain``."""


class RpcError(ChainError):
    """A JSON-RPC call failed for a reason that is not a contract revert."""

    template: ClassVar[str] = "RPC call {method} failed at {url}: {reason}"


class RpcUnavailable(RpcError):
    """Every configured endpoint failed (after retries) for one call."""

    template: ClassVar[str] = "no RPC endpoint answered {method}; tried {summary}"

    def __init__(self, method: str, urls: Sequence[str], errors: Sequence[str]) -> None:
        summary = "; ".join(f"{url} ({err})" for url, err in zip(urls, errors, strict=False))
        super().__init__(method=method, urls=tuple(urls), errors=tuple(errors), summary=summary)


class StaleEndpoint(RpcError):
    """An endpoint whose latest block is too old (a node still syncing or stuck)."""

    template: ClassVar[str] = (
        "endpoint {url} is stale: its latest block is {age_s} s old (allowed {max_age_s} s)"
    )


class ChainIdMismatch(ChainError):
    """An endpoint serves another chain than the one configured (wrong network or URL)."""

    template: ClassVar[str] = (
        "chain id mismatch at {url}: expected {expected}, the node reports {actual}"
    )


class InsufficientFunds(ChainError):
    """The sending account cannot pay value plus the worst-case fee; nothing was sent."""

    template: ClassVar[str] = (
        "account {account} needs {needed_wei} wei (value + max fee) but holds {balance_wei} wei"
    )


class InsufficientTokens(ChainError):
    """The account holds too little of an ERC-20 token for a deposit; nothing was sent."""

    template: ClassVar[str] = (
        "account {account} needs {needed_wei} of token {token} but holds {balance_wei}"
    )


class TxTimeout(ChainError):
    """A transaction (and its fee-bumped replacements) was not mined in time."""

    template: ClassVar[str] = "transaction {tx_hash} not mined within {timeout_s} s"


class TxReverted(ChainError):
    """A transaction was mined with status 0 (it reverted after passing the pre-flight).

    ``revert`` is the decoded :class:`ContractRevert` when replaying the call on the state
    before its block reproduces it (best effort), else None.
    """

    template: ClassVar[str] = "transaction {tx_hash} reverted in block {block_number}"


class GasCapExceeded(ChainError):
    """The gas estimate is above the per-call cap; nothing was sent."""

    template: ClassVar[str] = "{label} needs {estimated_gas} gas, above the cap of {gas_cap}"


class NonceError(ChainError):
    """The node kept refusing the nonce even after a resync from chain."""

    template: ClassVar[str] = "nonce {nonce} refused for {account}: {reason}"


class InvalidAddress(ChainError):
    """A value that is not a 20-byte address (or has a wrong EIP-55 checksum)."""

    template: ClassVar[str] = "not a valid address: {value!r}"


class InvalidHash(ChainError):
    """A value that is not a 32-byte hash (bytes or 0x-prefixed hex)."""

    template: ClassVar[str] = "not a 32-byte hash: {value!r}"


class DeploymentError(ChainError):
    """A deployment file that cannot be read, or a deployment that did not go through."""

    template: ClassVar[str] = "deployment {path}: {reason}"


def render_arg(value: Any) -> str:
    """How a decoded revert argument reads in a message: enums by name, bytes as hex."""
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, tuple | list):
        return "[" + ", ".join(render_arg(v) for v in value) + "]"
    if isinstance(value, str) and not value.startswith("0x"):
        return repr(value)
    return str(value)


class ContractRevert(ChainError):
    """The contract reverted with a (decoded) error.

    ``name`` is the Solidity error name (``TaskMarketWrongState``, ``Error`` for
    ``require(…, "msg")``, ``Panic`` for assertion failures, ``UnknownError`` when the
    selector is not in the ABI), ``arguments`` maps parameter names to decoded values (enums as
    Python enums when the table knows them) and ``selector`` is the 4-byte selector.
    The message reads like ``TaskMarketWrongState(taskId=3, state=RUNNING)``.
    """

    def __init__(self, name: str, args: Mapping[str, Any], selector: bytes) -> None:
        self.name = name
        self.arguments: dict[str, Any] = dict(args)
        self.selector = selector
        rendered = ", ".join(f"{key}={render_arg(val)}" for key, val in args.items())
        super().__init__(f"{name}({rendered})")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.arguments, self.selector))
