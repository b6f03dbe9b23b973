"""A plain-TCP :class:`PeerChannel` (asyncio), for tests, benches and trusted LANs.

No authentication and no encryption: between miners over the internet use the transport
adapter (:mod:`miner.distributed.transport_channel`). Each frame on the stream is::

    sender_len u16 | round u64 | tag_len u16 | payload_len u64 | sender | tag | payload

The receiving side is a buffered protocol that reads each payload straight into one
buffer (no stream-buffer copies), recycled once the exchange releases the round; the
sending side writes the frame's parts back to back. One outgoing connection per peer,
opened on first use (retried until ``connect_timeout_s``) and reused; sends to one peer
are serialised by a lock.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from miner.distributed.channel import Mailbox, Payload
from miner.distributed.errors import ExchangeError

log = logging.getLogger(__name__)
_PREFIX = struct.Struct("<HQHQ")


class _FrameReader(asyncio.BufferedProtocol):
    """Parses frames from one incoming connection into the channel's mailbox."""

    def __init__(self, channel: TcpChannel) -> None:
        self.channel = channel
        self.transport: asyncio.Transport | None = None
        self._start_prefix()

    def _start_prefix(self) -> None:
        self.buf: bytearray | memoryview = bytearray(_PREFIX.size)
        self.got = 0
        self.stage = "prefix"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buf)[self.got :]

    def buffer_updated(self, nbytes: int) -> None:
        self.got += nbytes
        if self.got < len(self.buf):
            return
        if self.stage == "prefix":
            n_sender, self.round_id, n_tag, n_payload = _PREFIX.unpack(bytes(self.buf))
            if n_payload > self.channel.max_payload_bytes:
                log.warning("tcp frame refused bytes=%d", n_payload)
                if self.transport is not None:
                    self.transport.close()
                return
            self.lengths = (n_sender, n_tag, n_payload)
            self.buf, self.got, self.stage = bytearray(n_sender + n_tag), 0, "names"
            if n_sender + n_tag:
                return
        if self.stage == "names":
            n_sender, n_tag, n_payload = self.lengths
            self.sender = bytes(self.buf[:n_sender]).decode()
            self.tag = bytes(self.buf[n_sender:]).decode()
            self.buf, self.got, self.stage = self.channel.take_buffer(n_payload), 0, "payload"
            if n_payload:
                return
        if self.sender in self.channel.addresses:
            self.channel.mailbox.put((self.sender, self.round_id, self.tag), self.buf)
        else:
            log.warning("tcp frame from unknown sender=%s", self.sender)
        self._start_prefix()

    def eof_received(self) -> bool:
        return False


@dataclass
class TcpChannel:
    name: str
    addresses: Mapping[str, tuple[str, int]]
    max_payload_bytes: int = 1 << 31
    connect_timeout_s: float = 10.0
    mailbox: Mailbox = field(default_factory=Mailbox)
    _server: asyncio.Server | None = None
    _sockets: dict[str, socket.socket] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    pool_min_bytes: int = 1 << 20
    pool_per_size: int = 8
    _pool: dict[int, list[memoryview]] = field(default_factory=dict)

    @classmethod
    async def create(cls, name: str, addresses: Mapping[str, tuple[str, int]]) -> TcpChannel:
        """Listen on ``addresses[name]``; the other entries are the peers."""
        channel = cls(name, dict(addresses))
        host, port = addresses[name]
        loop = asyncio.get_running_loop()
        channel._server = await loop.create_server(lambda: _FrameReader(channel), host, port)
        return channel

    @property
    def me(self) -> str:
        return self.name

    async def send(self, peer: str, round_id: int, tag: str, frame: Sequence[Payload]) -> None:
        lock = self._locks.setdefault(peer, asyncio.Lock())
        async with lock:
            sock = await self._connect(peer)
            sender, tag_b = self.name.encode(), tag.encode()
            size = sum(memoryview(part).nbytes for part in frame)
            prefix = _PREFIX.pack(len(sender), round_id, len(tag_b), size) + sender + tag_b
            loop = asyncio.get_running_loop()
            try:
                # sock_sendall sends from the caller's buffer: no copy into a write buffer
                for part in (prefix, *frame):
                    await loop.sock_sendall(sock, part)
            except (ConnectionError, OSError):
                self._sockets.pop(peer, None)
                sock.close()
                raise

    async def recv(self, peer: str, round_id: int, tag: str) -> Payload:
        return await self.mailbox.get((peer, round_id, tag))

    def release(self, round_id: int) -> None:
        """Forget the round; its receive buffers go back to the pool (the caller is done)."""
        for payload in self.mailbox.release(round_id):
            if isinstance(payload, memoryview) and payload.nbytes >= self.pool_min_bytes:
                bucket = self._pool.setdefault(payload.nbytes, [])
                if len(bucket) < self.pool_per_size:
                    bucket.append(payload)

    def take_buffer(self, nbytes: int) -> memoryview:
        """A receive buffer of ``nbytes``: a pooled one when there is one (no page faults),
        else fresh and uninitialised (it is filled from the socket before anyone reads it)."""
        bucket = self._pool.get(nbytes)
        if bucket:
            return bucket.pop()
        return np.empty(nbytes, np.uint8).data

    async def shutdown(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _connect(self, peer: str) -> socket.socket:
        if peer in self._sockets:
            return self._sockets[peer]
        if peer not in self.addresses:
            raise ExchangeError(f"unknown peer {peer!r}")
        host, port = self.addresses[peer]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout_s
        while True:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, (host, port))
                break
            except OSError:
                sock.close()
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sockets[peer] = sock
        return sock
