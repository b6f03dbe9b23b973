"""Canonical JSON: one byte string per value, so that everyone hashes the same thing.

Sorted keys, no whitespace, UTF-8, no NaN or infinity. Integers stay integers (wei and
sizes are ``int``); floats use Python's shortest round-trip spelling.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from eth_utils.crypto import keccak
from pydantic import BaseModel

from node.errors import SpecError


class HashMismatch(SpecError):  # noqa: N818 - reads as "a hash mismatch"
    """A document whose hash is not the one it was announced with."""

    template = "{what} hash mismatch: expected {expected}, got {actual}"


def canonical_bytes(value: BaseModel | dict[str, Any] | list[Any]) -> bytes:
    """The canonical JSON encoding of ``value`` (a model is dumped in JSON mode first)."""
    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    try:
        text = json.dumps(
            data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except ValueError as exc:
        raise SpecError(f"cannot encode canonically: {exc}") from exc
    return text.encode("utf-8")


def sha256_hex(data: bytes) -> str:
    """``0x``-prefixed sha256 of ``data``."""
    return "0x" + hashlib.sha256(data).hexdigest()


def keccak_hex(data: bytes) -> str:
    """``0x``-prefixed keccak256 of ``data``."""
    return "0x" + keccak(data).hex()


def check_hash(what: str, expected: str, actual: str) -> None:
    """Raise :class:`HashMismatch` unless the two hex digests are equal (case-insensitive)."""
    if expected.lower().removeprefix("0x") != actual.lower().removeprefix("0x"):
        raise HashMismatch(what=what, expected=expected, actual=actual)
