"""Decode revert data into :class:`~node.chain.errors.ContractRevert` (pure, no I/O).

A revert reaches Python in different shapes depending on the backend:

- a JSON-RPC node (anvil, geth…) answers ``eth_call``/``eth_estimateGas`` with an error whose
  ``data`` is the revert payload; web3 raises ``ContractCustomError``/``ContractLogicError``/
  ``ContractPanicError`` with that payload (``0x…`` hex) in ``.data``;
- eth-tester raises its own ``TransactionFailed``, whose first argument is the raw payload
  (bytes), or — once web3's eth-tester provider has re-raised it — the text
  ``"execution reverted: b'…'"`` (the repr of the payload) or ``"execution reverted: <reason>"``
  for ``Error(string)``.

:func:`revert_payload` reduces all of these to the payload bytes, and
:func:`decode_revert_data` turns a payload into a named error with its arguments using a
:class:`RevertTable` built once from the ABI. :func:`decode_revert` does both.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import DecodingError
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from node.chain.errors import ContractRevert

logger = logging.getLogger(__name__)

ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)

PANIC_REASONS: Mapping[int, str] = {
    0x00: "generic compiler panic",
    0x01: "assertion failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division or modulo by zero",
    0x21: "invalid enum value",
    0x22: "corrupt storage byte array",
    0x31: "pop on empty array",
    0x32: "array index out of bounds",
    0x41: "out of memory",
    0x51: "call to a zero-initialised internal function",
}

_REVERT_PREFIX = "execution reverted"


@dataclass(frozen=True)
class ErrorParam:
    """One parameter of a Solidity error: its name, ABI type and enum name if any."""

    name: str
    abi_type: str
    enum_name: str | None = None


@dataclass(frozen=True)
class ErrorSpec:
    """A Solidity ``error`` entry: name, parameters and 4-byte selector."""

    name: str
    params: tuple[ErrorParam, ...]

    @property
    def signature(self) -> str:
        return f"{self.name}({','.join(p.abi_type for p in self.params)})"

    @property
    def selector(self) -> bytes:
        return keccak(text=self.signature)[:4]


@dataclass(frozen=True)
class RevertTable:
    """Selector → error spec, plus the Python enums used to name enum arguments."""

    errors: Mapping[bytes, ErrorSpec]
    enums: Mapping[str, type[IntEnum]] = field(default_factory=dict)

    def merged(self, other: RevertTable) -> RevertTable:
        """A table knowing the errors of both (e.g. TaskMarket's and the token's)."""
        return RevertTable({**self.errors, **other.errors}, {**self.enums, **other.enums})


def _param_type(entry: Mapping[str, Any]) -> str:
    """The canonical ABI type of one input, expanding tuples from their components."""
    abi_type = str(entry["type"])
    if abi_type.startswith("tuple"):
        inner = ",".join(_param_type(c) for c in entry.get("components", []))
        return f"({inner}){abi_type[len('tuple'):]}"
    return abi_type


def _enum_name(entry: Mapping[str, Any]) -> str | None:
    internal = str(entry.get("internalType", ""))
    if internal.startswith("enum "):
        return internal[len("enum ") :].split(".")[-1]
    return None


def build_revert_table(
    abi: Sequence[Mapping[str, Any]], enums: Mapping[str, type[IntEnum]] | None = None
) -> RevertTable:
    """Index every ``error`` entry of ``abi`` by selector; add ``Error(string)`` and ``Panic``.

    ``enums`` maps a Solidity enum's short name (``State`` for ``enum TaskMarket.State``) to
    the Python enum with the same member order, so that its arguments decode by name.
    """
    specs = [
        ErrorSpec("Error", (ErrorParam("message", "string"),)),
        ErrorSpec("Panic", (ErrorParam("code", "uint256"),)),
    ]
    for entry in abi:
        if entry.get("type") != "error":
            continue
        params = tuple(
            ErrorParam(str(i.get("name") or f"arg{n}"), _param_type(i), _enum_name(i))
            for n, i in enumerate(entry.get("inputs", []))
        )
        specs.append(ErrorSpec(str(entry["name"]), params))
    return RevertTable({spec.selector: spec for spec in specs}, dict(enums or {}))


def _friendly(param: ErrorParam, value: Any, table: RevertTable) -> Any:
    """Decoded ABI value → what a caller wants to see (checksummed address, enum member)."""
    if param.enum_name is not None and param.enum_name in table.enums:
        try:
            return table.enums[param.enum_name](value)
        except ValueError:
            return value
    if param.abi_type == "address":
        return to_checksum_address(value)
    return value


def decode_revert_data(data: bytes, table: RevertTable) -> ContractRevert:
    """Turn a revert payload (selector + ABI-encoded arguments) into a named error.

    An empty payload (``revert()`` without reason) becomes ``Revert()``; a selector that is
    not in the table, or arguments that do not decode, become ``UnknownError(data=0x…)``.
    """
    if len(data) < 4:
        return ContractRevert("Revert", {"data": data} if data else {}, b"")
    selector, body = bytes(data[:4]), bytes(data[4:])
    spec = table.errors.get(selector)
    if spec is None:
        return ContractRevert("UnknownError", {"data": bytes(data)}, selector)
    try:
        values = abi_decode([p.abi_type for p in spec.params], body)
    except (DecodingError, ValueError, OverflowError):
        return ContractRevert("UnknownError", {"data": bytes(data)}, selector)
    args = {p.name: _friendly(p, v, table) for p, v in zip(spec.params, values, strict=True)}
    if selector == PANIC_SELECTOR:
        args["reason"] = PANIC_REASONS.get(int(args["code"]), "unknown panic code")
    return ContractRevert(spec.name, args, selector)


def _hex_to_bytes(text: str) -> bytes | None:
    body = text[2:] if text.startswith(("0x", "0X")) else None
    if body is None or len(body) % 2:
        return None
    try:
        return bytes.fromhex(body)
    except ValueError:
        return None


def _from_tester_text(text: str) -> bytes | None:
    """Payload from eth-tester's ``"execution reverted: …"`` text (see the module docstring)."""
    if not text.startswith(_REVERT_PREFIX):
        return None
    rest = text[len(_REVERT_PREFIX) :].lstrip(":").strip()
    if rest.startswith(("b'", 'b"')):
        try:
            literal = ast.literal_eval(rest)
        except (ValueError, SyntaxError):
            return None
        return bytes(literal) if isinstance(literal, bytes) else None
    if not rest:
        return b""
    return ERROR_STRING_SELECTOR + abi_encode(["string"], [rest])


def _from_rpc_error(error: Any) -> bytes | None:
    """Payload from a JSON-RPC ``error`` object (``{"code": 3, "data": "0x…"}``)."""
    if not isinstance(error, Mapping):
        return None
    data = error.get("data")
    if isinstance(data, Mapping):  # some nodes nest it: {"data": {"data": "0x…"}}
        data = data.get("data")
    if isinstance(data, str):
        return _hex_to_bytes(data)
    message = error.get("message")
    return _from_tester_text(message) if isinstance(message, str) else None


def _is_tester_failure(exc: BaseException) -> bool:
    kind = type(exc)
    return kind.__name__ == "TransactionFailed" and kind.__module__.startswith("eth_tester")


def revert_payload(exc_or_data: object) -> bytes | None:
    """The raw revert payload carried by an exception or value, or None if it is no revert.

    Accepts payload bytes, ``0x`` hex, web3's ``ContractLogicError`` family, web3's
    ``Web3RPCError`` whose response carries revert data, and eth-tester's ``TransactionFailed``
    (raw or re-raised by web3's provider). Anything else (a timeout, a refused connection…)
    gives None: it is not a revert and must not be reported as one.
    """
    if isinstance(exc_or_data, bytes | bytearray):
        return bytes(exc_or_data)
    if isinstance(exc_or_data, str):
        as_hex = _hex_to_bytes(exc_or_data)
        return as_hex if as_hex is not None else _from_tester_text(exc_or_data)
    if not isinstance(exc_or_data, BaseException):
        return None
    from web3.exceptions import ContractLogicError, Web3RPCError

    if isinstance(exc_or_data, ContractLogicError):
        if isinstance(exc_or_data.data, str):
            return _hex_to_bytes(exc_or_data.data)
        message = exc_or_data.message or ""
        return _from_tester_text(message) or b""
    if isinstance(exc_or_data, Web3RPCError) and exc_or_data.rpc_response is not None:
        return _from_rpc_error(exc_or_data.rpc_response.get("error"))
    if _is_tester_failure(exc_or_data) and exc_or_data.args:
        first = exc_or_data.args[0]
        if isinstance(first, BaseException) and first.args:
            first = first.args[0]
        if isinstance(first, bytes | bytearray):
            return bytes(first)
        if isinstance(first, str):
            return _from_tester_text(first)
    return None


def decode_revert(exc_or_data: object, table: RevertTable) -> ContractRevert | None:
    """The named error behind a revert, identical on anvil and eth-tester; None if no revert."""
    if isinstance(exc_or_data, ContractRevert):
        return exc_or_data
    payload = revert_payload(exc_or_data)
    if payload is None:
        return None
    return decode_revert_data(payload, table)
