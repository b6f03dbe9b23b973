"""The :class:`PeerChannel` over ``node.transport``: authenticated (and AEAD) miner links.

Outgoing: ``streams_per_peer`` :class:`node.transport.PeerClient` sessions per peer, taken
in turn (one session carries one message at a time), opened on first use (the peer may
still be starting, so the handshake is retried until ``connect_timeout_s``); a frame's
parts are streamed as one transport message of type ``gradients`` under the round id, with
the exchange's tag (``part``/``result``), never joined. Incoming: a handler registered on
this miner's :class:`node.transport.TransportServer` files each message by (sender address,
round, tag) in a mailbox, from which :meth:`TransportChannel.recv` takes it. Payloads are
opened straight into receive buffers recycled once the exchange releases their round (a
fresh 50 MiB buffer costs more in page faults than its transfer). Peers are named
by their checksum Ethereum address, the identity the transport authenticates.

Every gradient message is admitted from its verified head, before a buffer is taken for it
(:meth:`TransportChannel.admit`): one from another task or from an address outside the
group is refused (``not_a_member``), one for a round already released or more than
``rounds_ahead`` rounds past it (``round_window``), one that would take its sender over
``mailbox_peer_bytes`` parked in the mailbox (``peer_budget``). The refusals are counted
in the transport's ``manta_transport_refused_total``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from eth_account.signers.local import LocalAccount

from miner.distributed.channel import Mailbox, Payload
from miner.distributed.errors import ExchangeError
from node.transport import (
    Admission,
    IncomingMessage,
    Mode,
    NotAMember,
    PeerClient,
    PeerUnreachable,
    TransportConfig,
    TransportServer,
)
from node.transport.metrics import MetricsRegistry

log = logging.getLogger(__name__)
MSG_TYPE = "gradients"


@dataclass
class TransportChannel:
    """This miner's end of the gradient links to its group, for one task."""

    server: TransportServer
    account: LocalAccount
    peer_urls: Mapping[str, str]
    task_id: int
    mode: Mode = Mode.AEAD
    config: TransportConfig = field(default_factory=TransportConfig)
    registry: MetricsRegistry | None = None
    connect_timeout_s: float = 30.0
    mailbox: Mailbox = field(default_factory=Mailbox)
    mailbox_peer_bytes: int = 1 << 30
    rounds_ahead: int = 2
    streams_per_peer: int = 2
    pool_min_bytes: int = 1 << 20
    pool_per_size: int = 16
    pool_granule_bytes: int = 1 << 16
    pool_max_bytes: int = 1 << 30
    _clients: dict[str, list[PeerClient]] = field(default_factory=dict)
    _next_stream: dict[str, int] = field(default_factory=dict)
    _opening: dict[str, asyncio.Lock] = field(default_factory=dict)
    _pool: dict[int, list[np.ndarray]] = field(default_factory=dict)
    _pooled_bytes: int = 0

    def __post_init__(self) -> None:
        self.mailbox.peer_bytes = self.mailbox_peer_bytes
        self.mailbox.rounds_ahead = self.rounds_ahead

    @classmethod
    def attach(
        cls,
        server: TransportServer,
        account: LocalAccount,
        peer_urls: Mapping[str, str],
        task_id: int,
        **options: object,
    ) -> TransportChannel:
        """Register the ``gradients`` handler on ``server`` and return the channel.

        ``peer_urls`` maps every other member's checksum address to its server URL.
        """
        channel = cls(server, account, dict(peer_urls), task_id, **options)  # type: ignore[arg-type]
        server.register(
            MSG_TYPE, channel._on_message, allocate=channel.take_buffer, admit=channel.admit
        )
        return channel

    @property
    def me(self) -> str:
        return str(self.account.address)

    async def send(self, peer: str, round_id: int, tag: str, frame: Sequence[Payload]) -> None:
        client = await self._client(peer)
        await client.send(MSG_TYPE, list(frame), round_id=round_id, tag=tag)

    async def recv(self, peer: str, round_id: int, tag: str) -> Payload:
        return await self.mailbox.get((peer, round_id, tag))

    async def request(
        self,
        peer: str,
        msg_type: str,
        payload: Sequence[Payload],
        round_id: int = 0,
        timeout_s: float | None = None,
    ) -> Payload:
        """Send one message of another type (``join``, ``state``) over the peer's sessions;
        the peer's reply."""
        client = await self._client(peer)
        return await client.send(msg_type, list(payload), round_id=round_id, timeout_s=timeout_s)

    def release(self, round_id: int) -> None:
        """Forget the round; its receive buffers go back to the pool (the caller is done)."""
        for payload in self.mailbox.release(round_id):
            base = payload.obj if isinstance(payload, memoryview) else None
            if not isinstance(base, np.ndarray) or base.nbytes < self.pool_min_bytes:
                continue
            bucket = self._pool.setdefault(base.nbytes, [])
            if (
                len(bucket) < self.pool_per_size
                and self._pooled_bytes + base.nbytes <= self.pool_max_bytes
            ):
                bucket.append(base)
                self._pooled_bytes += base.nbytes

    def take_buffer(self, nbytes: int) -> memoryview:
        """A receive buffer of ``nbytes``: a view of a pooled one when there is one (no page
        faults), else of a fresh uninitialised one. Capacities are rounded up to
        ``pool_granule_bytes`` so that frames whose headers differ by a few bytes share
        buffers. The transport fills every byte with verified data before anyone sees it
        (and drops the buffer if a chunk fails)."""
        granule = self.pool_granule_bytes
        capacity = -(-nbytes // granule) * granule
        bucket = self._pool.get(capacity)
        if bucket:
            base = bucket.pop()
            self._pooled_bytes -= base.nbytes
        else:
            base = np.empty(capacity, np.uint8)
        return base.data[:nbytes]

    async def set_peer_url(self, peer: str, url: str) -> None:
        """``peer`` now listens at ``url`` (it restarted): later sends open new sessions there
        and the sessions to its old address are closed."""
        if peer not in self.peer_urls:
            raise ExchangeError(f"unknown peer {peer!r}")
        if self.peer_urls[peer] == url:
            return
        self.peer_urls = {**self.peer_urls, peer: url}
        stale = self._clients.pop(peer, [])
        self._next_stream.pop(peer, None)
        await asyncio.gather(*(c.shutdown() for c in stale), return_exceptions=True)

    async def shutdown(self) -> None:
        """Stop taking gradient messages and close the sessions this channel opened."""
        self.server.unregister(MSG_TYPE)
        self._pool, self._pooled_bytes = {}, 0
        clients = [c for streams in self._clients.values() for c in streams]
        self._clients = {}
        await asyncio.gather(*(c.shutdown() for c in clients), return_exceptions=True)

    def admit(self, head: Admission) -> None:
        """Refuse a gradient message from its head: another task, a sender outside the group,
        a round outside the window, a sender over its mailbox budget."""
        if head.task_id != self.task_id or head.peer not in self.peer_urls:
            raise NotAMember(address=head.peer, task_id=head.task_id)
        self.mailbox.admit(head.peer, head.round_id, head.total_bytes)

    async def _on_message(self, msg: IncomingMessage) -> None:
        if msg.task_id != self.task_id or msg.peer not in self.peer_urls:
            raise NotAMember(address=msg.peer, task_id=msg.task_id)
        self.mailbox.put((msg.peer, msg.round_id, msg.tag), msg.payload)
        return None

    async def _client(self, peer: str) -> PeerClient:
        """One of the peer's sessions, taken in turn: messages on one session go one at a
        time (each waits for the peer's reply), so several let the next message stream while
        the peer still opens the last one."""
        if peer not in self._clients:
            if peer not in self.peer_urls:
                raise ExchangeError(f"unknown peer {peer!r}")
            async with self._opening.setdefault(peer, asyncio.Lock()):
                if peer not in self._clients:
                    self._clients[peer] = await self._open_streams(peer)
        streams = self._clients[peer]
        turn = self._next_stream.get(peer, 0)
        self._next_stream[peer] = turn + 1
        return streams[turn % len(streams)]

    async def _open_streams(self, peer: str) -> list[PeerClient]:
        """``streams_per_peer`` sessions to ``peer``; none is left open if one fails."""
        first = await self._open(peer)  # retried while the peer starts
        rest = await asyncio.gather(
            *(self._open(peer) for _ in range(self.streams_per_peer - 1)),
            return_exceptions=True,
        )
        opened = [first, *(c for c in rest if isinstance(c, PeerClient))]
        failure = next((c for c in rest if isinstance(c, BaseException)), None)
        if failure is not None:
            await asyncio.gather(*(c.shutdown() for c in opened), return_exceptions=True)
            raise failure
        return opened

    async def _open(self, peer: str) -> PeerClient:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout_s
        while True:
            try:
                return await PeerClient.create(
                    self.account,
                    self.peer_urls[peer],
                    peer,
                    self.task_id,
                    mode=self.mode,
                    config=self.config,
                    registry=self.registry,
                )
            except PeerUnreachable:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.1)
