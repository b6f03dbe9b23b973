"""A message as a stream of sealed frames: the sender's generator and the receiver's reader.

A message is one HEAD frame (its :class:`~node.transport.frames.MessageHead`) followed by
CHUNK frames whose data add up to ``total_bytes``, all under one ``round_id``. The sender
slices the caller's buffers (memoryviews, no join) into chunks of at most ``chunk_bytes``
and seals one frame at a time, so at most one chunk is ever copied. The receiver checks the
head before reading on (size limit, known type), allocates the payload once, and opens
every chunk straight into its place in that buffer. A body that ends early is
:class:`~node.transport.errors.TruncatedFrame`.

The payload buffer may come from the receiver (``allocate``): a fresh 100 MiB buffer costs
tens of milliseconds of page faults on every message, more than the network and the cipher
together, so a receiver that recycles its buffers (the gradient exchange does) passes them
in. Every byte of that buffer is overwritten by authenticated data before it is returned.

A receiver that must not lock anything for an unauthenticated sender (the server) reads the
HEAD frame with :func:`read_head`, which verifies it without committing its sequence number,
and the rest with :func:`read_body` once it holds the session; :class:`PacedReader` puts a
deadline on every read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Protocol

from node.transport.errors import (
    FrameError,
    MessageTooLarge,
    PeerDisconnected,
    TruncatedFrame,
)
from node.transport.frames import (
    HEADER_BYTES,
    MAX_HEAD_BYTES,
    TAG_BYTES,
    FrameHeader,
    FrameOpener,
    FrameSealer,
    Kind,
    MessageHead,
    Payload,
)

Buffer = bytearray | memoryview
"""A writable payload buffer (a memoryview must be writable and C-contiguous)."""

Allocator = Callable[[int], Buffer]
"""Returns a writable buffer of exactly the given number of bytes for one message's payload."""


class ByteReader(Protocol):
    """What a message is read from (``aiohttp.StreamReader`` fits)."""

    async def readexactly(self, n: int) -> bytes: ...

    async def read(self, n: int) -> bytes: ...


def as_parts(payload: Payload | Sequence[Payload]) -> list[memoryview]:
    """The payload as flat byte views (one buffer, or several sent back to back)."""
    items = [payload] if isinstance(payload, bytes | bytearray | memoryview) else payload
    return [memoryview(item).cast("B") for item in items]


def seal_message(
    sealer: FrameSealer,
    head: MessageHead,
    round_id: int,
    parts: Sequence[memoryview],
    chunk_bytes: int,
) -> Iterator[list[Payload]]:
    """The frames of one message (each as its pieces), sealed lazily: the sealer advances
    as they are taken."""
    yield sealer.seal_pieces(Kind.HEAD, round_id, head.encode())
    for part in parts:
        for start in range(0, part.nbytes, chunk_bytes):
            yield sealer.seal_pieces(Kind.CHUNK, round_id, part[start : start + chunk_bytes])


def wire_bytes(head: MessageHead, parts: Sequence[memoryview], chunk_bytes: int) -> int:
    """How many bytes :func:`seal_message` will produce (sent as ``Content-Length``, which
    spares the chunked transfer encoding)."""
    frames = 1 + sum(-(-part.nbytes // chunk_bytes) for part in parts)
    return len(head.encode()) + head.total_bytes + frames * (HEADER_BYTES + TAG_BYTES)


async def stream_frames(frames: Iterator[list[Payload]]) -> AsyncIterator[memoryview]:
    """``frames`` as an async iterator of pieces: a streamed aiohttp request body.

    Pieces go out as memoryviews: aiohttp slices every body chunk to the remaining
    ``Content-Length``, which copies a ``bytearray`` (a whole sealed frame) but not a view.
    """
    for pieces in frames:
        for piece in pieces:
            yield memoryview(piece)


class PacedReader:
    """A :class:`ByteReader` each of whose reads must return within ``idle_s`` (a sender that
    stops, or trickles slower than one read per ``idle_s``, gets :class:`TimeoutError`)."""

    def __init__(self, reader: ByteReader, idle_s: float) -> None:
        self._reader, self._idle_s = reader, idle_s

    async def readexactly(self, n: int) -> bytes:
        async with asyncio.timeout(self._idle_s):
            return await self._reader.readexactly(n)

    async def read(self, n: int) -> bytes:
        async with asyncio.timeout(self._idle_s):
            return await self._reader.read(n)


async def _read(reader: ByteReader, n: int) -> bytes:
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError as exc:
        raise TruncatedFrame(got=len(exc.partial), expected=n) from None
    except ConnectionError:
        raise PeerDisconnected(what="a frame") from None


async def _read_some(reader: ByteReader, n: int) -> bytes:
    try:
        return await reader.read(n)
    except ConnectionError:
        raise PeerDisconnected(what="a frame") from None


async def _next_frame(reader: ByteReader, opener: FrameOpener) -> tuple[FrameHeader, bytes]:
    header = opener.parse_header(await _read(reader, HEADER_BYTES))
    return header, await _read(reader, header.length + TAG_BYTES)


async def _read_into(
    reader: ByteReader, opener: FrameOpener, header: FrameHeader, out: memoryview
) -> None:
    """Open one frame's body as it arrives, block by block, straight into ``out``."""
    opening, remaining = opener.begin(header, out), header.length
    while remaining:
        block = await _read_some(reader, remaining)
        if not block:
            raise TruncatedFrame(got=header.length - remaining, expected=header.length)
        opening.update(block)
        remaining -= len(block)
    opening.finish(await _read(reader, TAG_BYTES))


async def read_head(
    reader: ByteReader, opener: FrameOpener, max_message_bytes: int
) -> tuple[FrameHeader, MessageHead]:
    """Read and verify a message's HEAD frame WITHOUT moving the opener's sequence.

    The caller commits ``header.seq`` (:meth:`FrameOpener.commit`) once it owns the
    session; until then nothing is locked or allocated for the message, and a sender without
    the session key has not got past this function. A HEAD frame longer than the longest
    possible head is refused from its header.
    """
    header = opener.parse_header(await _read(reader, HEADER_BYTES))
    if header.kind is not Kind.HEAD:
        raise FrameError("a message must start with a HEAD frame")
    if header.length > MAX_HEAD_BYTES:
        raise MessageTooLarge(what="message head", size=header.length, limit=MAX_HEAD_BYTES)
    body = await _read(reader, header.length + TAG_BYTES)
    head_bytes = bytearray(header.length)
    opener.open_into(header, body, memoryview(head_bytes), commit=False)
    head = MessageHead.decode(head_bytes)
    if head.total_bytes > max_message_bytes:
        raise MessageTooLarge(what="message", size=head.total_bytes, limit=max_message_bytes)
    return header, head


async def read_body(
    reader: ByteReader, opener: FrameOpener, head: MessageHead, round_id: int, payload: Buffer
) -> None:
    """Open the CHUNK frames of a message whose HEAD was committed into ``payload``."""
    view, got = _writable(payload, head.total_bytes), 0
    while got < head.total_bytes:
        header = opener.parse_header(await _read(reader, HEADER_BYTES))
        if not 0 < header.length <= head.total_bytes - got:
            raise FrameError("chunk overruns the message")
        await _read_into(reader, opener, header, view[got : got + header.length])
        if header.kind is not Kind.CHUNK or header.round_id != round_id:
            raise FrameError("expected a CHUNK frame of the same round")
        got += header.length


async def read_message(
    reader: ByteReader,
    opener: FrameOpener,
    max_message_bytes: int,
    accept: Callable[[MessageHead], None] | None = None,
    allocate: Callable[[MessageHead], Buffer] | None = None,
) -> tuple[MessageHead, int, Buffer]:
    """Read, check and open one message: ``(head, round_id, payload)``.

    ``accept`` sees the head before any payload is read or allocated and may raise to refuse
    it (unknown type). ``allocate`` (default: a fresh ``bytearray``) gives the buffer the
    payload is opened into; it is returned only if every chunk verified. Raises a
    :class:`~node.transport.errors.FrameError` subclass or
    :class:`~node.transport.errors.ReplayError` on the first frame that fails a check.
    """
    header, head = await read_head(reader, opener, max_message_bytes)
    opener.commit(header.seq)
    if accept is not None:
        accept(head)
    payload = bytearray(head.total_bytes) if allocate is None else allocate(head)
    await read_body(reader, opener, head, header.round_id, payload)
    return head, header.round_id, payload


def _writable(payload: Buffer, nbytes: int) -> memoryview:
    view = memoryview(payload)
    if view.readonly or not view.c_contiguous or view.nbytes != nbytes:
        raise ValueError(f"an allocator must return a writable buffer of {nbytes} bytes")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view
