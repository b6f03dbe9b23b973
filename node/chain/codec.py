"""Pure ABI encoding and decoding for one contract: calls, outputs, constructor, event logs.

The facade (:mod:`node.chain.market`) and the event indexer use :class:`ContractCodec`
instead of web3 contract objects so that nothing is bound to one RPC endpoint: calldata is
built here, sent through the pool (which may fail over), and the answer decoded here.
Addresses come back checksummed, tuples (structs) come back as ``{name: value}`` dicts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from node.chain.errors import ChainError
from node.chain.models import LogEntry


class AbiError(ChainError):
    """A name or argument list that does not match the contract's ABI."""

    template = "{contract}: {reason}"


def abi_type(entry: Mapping[str, Any]) -> str:
    """The canonical type of one ABI parameter (tuples expanded from their components)."""
    kind = str(entry["type"])
    if kind.startswith("tuple"):
        inner = ",".join(abi_type(c) for c in entry.get("components", []))
        return f"({inner}){kind[len('tuple'):]}"
    return kind


def friendly(entry: Mapping[str, Any], value: Any) -> Any:
    """A decoded value made readable: checksummed addresses, structs as name → value dicts."""
    kind = str(entry["type"])
    if kind == "address":
        return to_checksum_address(value)
    if kind.endswith("]"):
        element = dict(entry, type=kind[: kind.rindex("[")])
        return tuple(friendly(element, v) for v in value)
    if kind == "tuple":
        return {
            str(c["name"]): friendly(c, v)
            for c, v in zip(entry.get("components", []), value, strict=True)
        }
    return value


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    inputs: tuple[Mapping[str, Any], ...]
    outputs: tuple[Mapping[str, Any], ...]

    @property
    def input_types(self) -> list[str]:
        return [abi_type(i) for i in self.inputs]

    @property
    def selector(self) -> bytes:
        return keccak(text=f"{self.name}({','.join(self.input_types)})")[:4]


@dataclass(frozen=True)
class EventSpec:
    name: str
    inputs: tuple[Mapping[str, Any], ...]

    @property
    def topic(self) -> bytes:
        return keccak(text=f"{self.name}({','.join(abi_type(i) for i in self.inputs)})")

    @property
    def indexed(self) -> tuple[Mapping[str, Any], ...]:
        return tuple(i for i in self.inputs if i.get("indexed"))


class ContractCodec:
    """Encode calls to and decode answers and logs from one contract ABI."""

    def __init__(self, name: str, abi: Sequence[Mapping[str, Any]]) -> None:
        self.name = name
        self.abi = tuple(abi)
        self._functions: dict[str, FunctionSpec] = {}
        self._events: dict[str, EventSpec] = {}
        self._by_topic: dict[bytes, EventSpec] = {}
        self._constructor: tuple[Mapping[str, Any], ...] = ()
        for entry in abi:
            kind = entry.get("type")
            if kind == "function":
                spec = FunctionSpec(
                    str(entry["name"]), tuple(entry.get("inputs", [])),
                    tuple(entry.get("outputs", [])),
                )
                self._functions[spec.name] = spec
            elif kind == "event" and not entry.get("anonymous"):
                event = EventSpec(str(entry["name"]), tuple(entry.get("inputs", [])))
                self._events[event.name] = event
                self._by_topic[event.topic] = event
            elif kind == "constructor":
                self._constructor = tuple(entry.get("inputs", []))

    def function(self, name: str) -> FunctionSpec:
        try:
            return self._functions[name]
        except KeyError:
            raise AbiError(contract=self.name, reason=f"no function {name!r}") from None

    def event(self, name: str) -> EventSpec:
        try:
            return self._events[name]
        except KeyError:
            raise AbiError(contract=self.name, reason=f"no event {name!r}") from None

    @property
    def event_names(self) -> tuple[str, ...]:
        return tuple(self._events)

    def encode_call(self, name: str, *args: Any) -> bytes:
        """Calldata for ``name(args)``: selector followed by the ABI-encoded arguments."""
        spec = self.function(name)
        if len(args) != len(spec.inputs):
            raise AbiError(
                contract=self.name,
                reason=f"{name} takes {len(spec.inputs)} arguments, got {len(args)}",
            )
        return spec.selector + abi_encode(spec.input_types, list(args))

    def decode_output(self, name: str, data: bytes) -> tuple[Any, ...]:
        """The return values of ``name`` from ``eth_call`` output, made friendly."""
        spec = self.function(name)
        values = abi_decode([abi_type(o) for o in spec.outputs], data)
        return tuple(friendly(o, v) for o, v in zip(spec.outputs, values, strict=True))

    def encode_deploy(self, bytecode: bytes, *args: Any) -> bytes:
        """Init code: the creation bytecode followed by the encoded constructor arguments."""
        if len(args) != len(self._constructor):
            raise AbiError(contract=self.name, reason="wrong number of constructor arguments")
        return bytecode + abi_encode([abi_type(i) for i in self._constructor], list(args))

    def topic_filter(self, event: str, *indexed: Any) -> list[Any]:
        """``topics`` for ``eth_getLogs``: the event's topic, then indexed values (None = any)."""
        spec = self.event(event)
        topics: list[Any] = ["0x" + spec.topic.hex()]
        for param, value in zip(spec.indexed, indexed, strict=False):
            if value is None:
                topics.append(None)
            else:
                topics.append("0x" + abi_encode([abi_type(param)], [value]).hex())
        while topics and topics[-1] is None:
            topics.pop()
        return topics

    def decode_log(self, log: LogEntry) -> tuple[str, dict[str, Any]] | None:
        """``(event name, {arg: value})`` for one of this contract's logs, else None.

        Indexed parameters of a dynamic type (string, bytes, arrays) are only present as their
        keccak hash in the topic, and are returned as that hash.
        """
        if not log.topics or log.topics[0] not in self._by_topic:
            return None
        spec = self._by_topic[log.topics[0]]
        indexed = spec.indexed
        if len(log.topics) != len(indexed) + 1:
            return None
        args: dict[str, Any] = {}
        for param, topic in zip(indexed, log.topics[1:], strict=True):
            kind = abi_type(param)
            dynamic = kind in ("string", "bytes") or kind.endswith("]") or kind.startswith("(")
            args[str(param["name"])] = (
                topic if dynamic else friendly(param, abi_decode([kind], topic)[0])
            )
        plain = [i for i in spec.inputs if not i.get("indexed")]
        values = abi_decode([abi_type(p) for p in plain], log.data)
        for param, value in zip(plain, values, strict=True):
            args[str(param["name"])] = friendly(param, value)
        ordered = {str(i["name"]): args[str(i["name"])] for i in spec.inputs}
        return spec.name, ordered
