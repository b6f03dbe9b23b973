"""Sealed frames and message streams, without a network."""

from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.transport.errors import (
    FrameError,
    MessageTooLarge,
    ReplayError,
    TamperedFrame,
    TruncatedFrame,
)
from node.transport.frames import HEADER_BYTES, FrameOpener, FrameSealer, Kind, MessageHead
from node.transport.handshake import Mode
from node.transport.metrics import MetricsRegistry, TransportMetrics
from node.transport.stream import as_parts, read_message, seal_message, wire_bytes

KEY, SID, TASK = os.urandom(32), os.urandom(16), 3


def pair(mode: Mode, max_chunk: int = 1 << 20) -> tuple[FrameSealer, FrameOpener]:
    return FrameSealer(KEY, mode, SID, TASK), FrameOpener(KEY, mode, SID, TASK, max_chunk)


def open_frame(opener: FrameOpener, frame: bytes | bytearray) -> bytearray:
    header = opener.parse_header(bytes(frame[:HEADER_BYTES]))
    out = bytearray(header.length)
    opener.open_into(header, bytes(frame[HEADER_BYTES:]), memoryview(out))
    return out


@pytest.mark.parametrize("mode", [Mode.AEAD, Mode.AUTH])
def test_every_flipped_byte_is_refused_and_changes_nothing(mode: Mode) -> None:
    sealer, opener = pair(mode)
    data = os.urandom(100)
    frame = sealer.seal(Kind.CHUNK, 9, data)
    assert (data in bytes(frame)) == (mode is Mode.AUTH)  # AUTH leaves the data in clear
    for i in range(len(frame)):
        bad = bytearray(frame)
        bad[i] ^= 0x01
        with pytest.raises((FrameError, TamperedFrame, ReplayError)):
            open_frame(opener, bad)
        assert opener.last_seq == 0
    assert open_frame(opener, frame) == data
    with pytest.raises(ReplayError):
        open_frame(opener, frame)


def test_frames_of_another_session_or_task_do_not_open() -> None:
    sealer, _ = pair(Mode.AEAD)
    frame = sealer.seal(Kind.CHUNK, 0, b"x" * 10)
    for other in (
        FrameOpener(KEY, Mode.AEAD, os.urandom(16), TASK, 1 << 20),
        FrameOpener(KEY, Mode.AEAD, SID, TASK + 1, 1 << 20),
        FrameOpener(KEY, Mode.AUTH, SID, TASK, 1 << 20),
    ):
        with pytest.raises(TamperedFrame):
            open_frame(other, frame)


def test_reordered_frames_are_refused() -> None:
    sealer, opener = pair(Mode.AEAD)
    first, second = sealer.seal(Kind.CHUNK, 0, b"1"), sealer.seal(Kind.CHUNK, 0, b"2")
    assert open_frame(opener, second) == b"2"
    with pytest.raises(ReplayError):
        open_frame(opener, first)


def test_oversized_frame_is_refused_from_its_header() -> None:
    sealer, opener = pair(Mode.AEAD, max_chunk=64)
    with pytest.raises(MessageTooLarge):
        opener.parse_header(bytes(sealer.seal(Kind.CHUNK, 0, bytes(65))[:HEADER_BYTES]))


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
        chunk = self.data[self.pos : self.pos + min(n, 777)]  # arrives in small pieces
        self.pos += len(chunk)
        return chunk


def sealed(mode: Mode, parts: list[bytes], chunk: int = 1000, msg_type: str = "t") -> bytes:
    sealer, _ = pair(mode)
    head = MessageHead(msg_type, "tag", sum(len(p) for p in parts))
    return b"".join(b"".join(f) for f in seal_message(sealer, head, 4, as_parts(parts), chunk))


@pytest.mark.parametrize("mode", [Mode.AEAD, Mode.AUTH])
async def test_message_streams_round_trip(mode: Mode) -> None:
    parts = [os.urandom(10), os.urandom(2500), b"", os.urandom(1)]
    _, opener = pair(mode)
    head, round_id, payload = await read_message(Reader(sealed(mode, parts)), opener, 10_000)
    assert (head.msg_type, head.tag, round_id) == ("t", "tag", 4)
    assert payload == b"".join(parts)


async def test_truncated_message_is_refused() -> None:
    wire = sealed(Mode.AEAD, [os.urandom(2500)])
    for cut in (1, 17, 1000 + 40):
        _, opener = pair(Mode.AEAD)
        with pytest.raises(TruncatedFrame):
            await read_message(Reader(wire[:-cut]), opener, 10_000)


async def test_oversized_or_unwanted_message_is_refused_before_its_payload() -> None:
    reader = Reader(sealed(Mode.AEAD, [bytes(5000)]))
    with pytest.raises(MessageTooLarge):
        await read_message(reader, pair(Mode.AEAD)[1], 4999)
    assert reader.pos < 200  # only the head frame was read

    def refuse(head: MessageHead) -> None:
        raise FrameError(f"no {head.msg_type}")

    with pytest.raises(FrameError, match="no t"):
        await read_message(Reader(sealed(Mode.AEAD, [b"x"])), pair(Mode.AEAD)[1], 10, refuse)


def test_message_head_validates_names() -> None:
    assert MessageHead.decode(MessageHead("rs", "é", 5).encode()) == MessageHead("rs", "é", 5)
    for bad in (MessageHead("", "", 0), MessageHead("x" * 65, "", 0)):
        with pytest.raises(FrameError):
            bad.encode()
    with pytest.raises(FrameError):
        MessageHead.decode(b"\x05ab")


def test_metrics_exposition_is_prometheus_text() -> None:
    registry = MetricsRegistry()
    metrics = TransportMetrics.create(registry)
    metrics.refused.inc(reason="replay")
    metrics.refused.inc(reason='we"ird')
    metrics.bytes_in.inc(1.5)
    assert TransportMetrics.create(registry).refused is metrics.refused
    text = registry.exposition()
    assert "# TYPE manta_transport_refused_total counter" in text
    assert 'manta_transport_refused_total{reason="replay"} 1\n' in text
    assert 'manta_transport_refused_total{reason="we\\"ird"} 1\n' in text
    assert "manta_transport_received_bytes_total 1.5\n" in text
    with pytest.raises(ValueError):
        metrics.refused.inc(kind="x")


@pytest.mark.parametrize("sizes", [[0], [1], [999, 1000, 1001], [5000, 0, 3]])
@pytest.mark.parametrize("mode", [Mode.AEAD, Mode.AUTH])
def test_wire_bytes_is_the_exact_body_length(sizes: list[int], mode: Mode) -> None:
    parts = [os.urandom(n) for n in sizes]
    head = MessageHead("t", "tag", sum(sizes))
    assert wire_bytes(head, as_parts(parts), 1000) == len(sealed(mode, parts))


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=4),
    chunk=st.integers(1, 2048),
    mode=st.sampled_from([Mode.AEAD, Mode.AUTH]),
)
def test_any_split_of_any_payload_round_trips(sizes: list[int], chunk: int, mode: Mode) -> None:
    parts = [os.urandom(n) for n in sizes]
    _, opener = pair(mode)
    wire = sealed(mode, parts, chunk=chunk)
    head, _, payload = asyncio.run(read_message(Reader(wire), opener, 1 << 20))
    assert payload == b"".join(parts)
    assert head.total_bytes == sum(sizes)
