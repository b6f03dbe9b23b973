"""The receiver-supplied payload buffer (``allocate``) and the zero-copy request body."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest

from node.transport.errors import FrameError, TamperedFrame
from node.transport.frames import FrameOpener, FrameSealer, MessageHead
from node.transport.handshake import Mode
from node.transport.stream import as_parts, read_message, seal_message, stream_frames

KEY, SID, TASK = os.urandom(32), os.urandom(16), 9


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    async def readexactly(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        if len(chunk) < n:
            raise asyncio.IncompleteReadError(chunk, n)
        return chunk

    async def read(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + min(n, 333)]
        self.pos += len(chunk)
        return chunk


def wire(mode: Mode, payload: bytes, chunk: int = 1000) -> bytes:
    sealer = FrameSealer(KEY, mode, SID, TASK)
    head = MessageHead("g", "part", len(payload))
    frames = seal_message(sealer, head, 2, as_parts(payload), chunk)
    return b"".join(b"".join(bytes(p) for p in f) for f in frames)


def opener(mode: Mode) -> FrameOpener:
    return FrameOpener(KEY, mode, SID, TASK, 1 << 20)


@pytest.mark.parametrize("mode", [Mode.AEAD, Mode.AUTH])
async def test_payload_is_opened_into_the_allocated_buffer(mode: Mode) -> None:
    data = os.urandom(5000)
    stale = np.full(8192, 0xAB, np.uint8)  # a recycled buffer with old contents
    asked: list[int] = []

    def allocate(head: MessageHead) -> memoryview:
        asked.append(head.total_bytes)
        return stale.data[: head.total_bytes]

    _, _, payload = await read_message(
        Reader(wire(mode, data)), opener(mode), 10_000, None, allocate
    )
    assert asked == [5000]
    assert isinstance(payload, memoryview) and payload.obj is stale
    assert bytes(payload) == data  # every stale byte was overwritten
    assert stale[5000:].tolist() == [0xAB] * (8192 - 5000)  # nothing written past it


async def test_allocator_is_not_asked_for_a_refused_head() -> None:
    asked: list[int] = []

    def refuse(head: MessageHead) -> None:
        raise FrameError("unknown type")

    def allocate(head: MessageHead) -> bytearray:
        asked.append(head.total_bytes)
        return bytearray(head.total_bytes)

    with pytest.raises(FrameError):
        await read_message(Reader(wire(Mode.AEAD, b"abc")), opener(Mode.AEAD), 10, refuse, allocate)
    assert asked == []


@pytest.mark.parametrize("bad", [lambda n: bytearray(n + 1), lambda n: bytes(n)])
async def test_allocator_must_give_a_writable_buffer_of_the_exact_size(bad: object) -> None:
    with pytest.raises(ValueError, match="writable buffer"):
        await read_message(
            Reader(wire(Mode.AEAD, b"abcdef")),
            opener(Mode.AEAD),
            10,
            None,
            lambda head: bad(head.total_bytes),  # type: ignore[operator]
        )


@pytest.mark.parametrize("mode", [Mode.AEAD, Mode.AUTH])
async def test_tampered_chunk_into_an_allocated_buffer_is_refused(mode: Mode) -> None:
    raw = bytearray(wire(mode, os.urandom(3000)))
    raw[-100] ^= 1  # inside the last chunk
    buffer = bytearray(3000)
    with pytest.raises(TamperedFrame):
        await read_message(Reader(bytes(raw)), opener(mode), 10_000, None, lambda head: buffer)


async def test_request_body_pieces_are_views_not_copies() -> None:
    data = bytearray(os.urandom(2500))
    for mode in (Mode.AEAD, Mode.AUTH):
        sealer = FrameSealer(KEY, mode, SID, TASK)
        frames = seal_message(sealer, MessageHead("g", "", 2500), 0, as_parts(data), 1000)
        pieces = [piece async for piece in stream_frames(frames)]
        assert all(isinstance(p, memoryview) for p in pieces)
        body = b"".join(pieces)
        _, _, payload = await read_message(Reader(body), opener(mode), 10_000)
        assert payload == data
    auth_data_piece = pieces[4]  # AUTH: [head: header, body, tag], then [header, data, tag]
    assert auth_data_piece.obj is data  # the caller's buffer itself went out
