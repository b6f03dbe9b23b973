"""Codecs for gradient shards on the wire, and error feedback for the lossy ones.

- :class:`Float32Codec`: exact, 4 bytes an element.
- :class:`BF16Codec`: bfloat16 (round to nearest even), 2 bytes an element; keeps float32's
  range, so a large gradient never overflows.
- :class:`Int8BlockCodec`: blockwise absmax int8, 1 byte an element plus one float32 scale
  per block (``block`` elements).

Codecs are pure (``encode``/``decode`` over ``[n]`` float32). :class:`ErrorFeedback` adds
what a lossy codec dropped last time to the next value sent on the same stream, so the
error does not accumulate over steps (Seide et al., 2014; Karimireddy et al., 2019).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from miner.distributed.errors import FrameError

Encoded = bytes | bytearray | memoryview


class Codec(Protocol):
    """Turns ``[n]`` float32 into bytes and back; ``codec_id`` names it in frame headers."""

    @property
    def codec_id(self) -> int: ...

    @property
    def lossy(self) -> bool: ...

    def encode(self, x: np.ndarray) -> Encoded: ...

    def decode(self, data: Encoded, n: int) -> np.ndarray: ...

    def encoded_size(self, n: int) -> int: ...


@dataclass(frozen=True)
class Float32Codec:
    codec_id: int = 0
    lossy: bool = False

    def encode(self, x: np.ndarray) -> Encoded:
        """A view of ``x``'s bytes (no copy; the caller must not change ``x`` meanwhile)."""
        return np.ascontiguousarray(x, dtype="<f4").data.cast("B")

    def decode(self, data: Encoded, n: int) -> np.ndarray:
        """A read-only view of ``data`` (no copy)."""
        _expect(len(data), self.encoded_size(n), "float32")
        return np.frombuffer(data, dtype="<f4", count=n)

    def encoded_size(self, n: int) -> int:
        return 4 * n


@dataclass(frozen=True)
class BF16Codec:
    codec_id: int = 1
    lossy: bool = True

    def encode(self, x: np.ndarray) -> bytes:
        bits = np.ascontiguousarray(x, dtype="<f4").view("<u4").astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        nan = np.isnan(x)
        out = np.where(nan, 0x7FC0, np.minimum(rounded, 0xFFFF)).astype("<u2")
        return out.tobytes()

    def decode(self, data: Encoded, n: int) -> np.ndarray:
        _expect(len(data), self.encoded_size(n), "bf16")
        half = np.frombuffer(data, dtype="<u2", count=n).astype(np.uint32)
        return (half << 16).astype("<u4").view("<f4").astype(np.float32)

    def encoded_size(self, n: int) -> int:
        return 2 * n


@dataclass(frozen=True)
class Int8BlockCodec:
    block: int = 256
    codec_id: int = 2
    lossy: bool = True

    def encode(self, x: np.ndarray) -> bytes:
        n = x.shape[0]
        blocks = -(-n // self.block)
        padded = np.zeros(blocks * self.block, np.float32)
        padded[:n] = x
        rows = padded.reshape(blocks, self.block)
        with np.errstate(invalid="ignore"):
            absmax = np.abs(rows).max(axis=1)
        scale = np.where(np.isfinite(absmax), absmax / 127.0, np.nan).astype("<f4")
        safe = np.where(scale > 0, scale, 1.0)[:, None]
        q = np.clip(np.rint(np.nan_to_num(rows / safe)), -127, 127).astype(np.int8)
        return scale.tobytes() + q.reshape(-1)[:n].tobytes()

    def decode(self, data: Encoded, n: int) -> np.ndarray:
        _expect(len(data), self.encoded_size(n), "int8")
        blocks = -(-n // self.block)
        scale = np.frombuffer(data, dtype="<f4", count=blocks)
        q = np.zeros(blocks * self.block, np.float32)
        q[:n] = np.frombuffer(data, dtype=np.int8, count=n, offset=4 * blocks)
        out: np.ndarray = (q.reshape(blocks, self.block) * scale[:, None]).reshape(-1)[:n]
        return out.astype(np.float32)

    def encoded_size(self, n: int) -> int:
        return 4 * -(-n // self.block) + n


def codec_by_name(name: str) -> Codec:
    """``"float32"``, ``"bf16"`` or ``"int8"``."""
    table: dict[str, Codec] = {
        "float32": Float32Codec(),
        "bf16": BF16Codec(),
        "int8": Int8BlockCodec(),
    }
    if name not in table:
        raise FrameError(f"unknown codec {name!r}; known: {sorted(table)}", peer="local")
    return table[name]


def codec_by_id(codec_id: int) -> Codec:
    for codec in (Float32Codec(), BF16Codec(), Int8BlockCodec()):
        if codec.codec_id == codec_id:
            return codec
    raise FrameError(f"unknown codec id {codec_id}", peer="?")


@dataclass
class ErrorFeedback:
    """Residuals of a lossy codec, one per stream (e.g. ``(kind, shard, size)``)."""

    residuals: dict[Hashable, np.ndarray] = field(default_factory=dict)

    def encode(self, codec: Codec, stream: Hashable, x: np.ndarray) -> tuple[Encoded, np.ndarray]:
        """Bytes to send and the value the receiver will decode, with feedback applied."""
        if not codec.lossy:
            return codec.encode(x), x
        residual = self.residuals.get(stream)
        corrected = x if residual is None or residual.shape != x.shape else x + residual
        data = codec.encode(corrected)
        sent = codec.decode(data, x.shape[0])
        if np.isfinite(corrected).all():
            self.residuals[stream] = (corrected - sent).astype(np.float32)
        else:
            self.residuals.pop(stream, None)
        return data, sent

    def reset(self) -> None:
        self.residuals.clear()


def _expect(got: int, want: int, what: str) -> None:
    if got != want:
        raise FrameError(f"{what} payload of {got} bytes, expected {want}", peer="?")
