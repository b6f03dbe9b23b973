"""The :class:`PeerChannel` over ``node.transport``: authenticated (and AEAD) miner links.

Outgoing: one :class:`node.transport.PeerClient` per peer, opened on first use (the peer
may still be starting, so the handshake is retried until ``connect_timeout_s``); a frame's
parts are streamed as one transport message of type ``gradients`` under the round id, with
the exchange's tag (``part``/``result``), never joined. Incoming: a handler registered on
this miner's :class:`node.transport.TransportServer` files each message by (sender address,
round, tag) in a mailbox, from which :meth:`TransportChannel.recv` takes it. Peers are named
by their checksum Ethereum address, the identity the transport authenticates; a message
from another task or from an address outside the group is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount

from miner.distributed.channel import Mailbox, Payload
from miner.distributed.errors import ExchangeError
from node.transport import (
    IncomingMessage,
    Mode,
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
    _clients: dict[str, PeerClient] = field(default_factory=dict)
    _opening: dict[str, asyncio.Lock] = field(default_factory=dict)

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
        server.register(MSG_TYPE, channel._on_message)
        return channel

    @property
    def me(self) -> str:
        return str(self.account.address)

    async def send(self, peer: str, round_id: int, tag: str, frame: Sequence[Payload]) -> None:
        client = await self._client(peer)
        await client.send(MSG_TYPE, list(frame), round_id=round_id, tag=tag)

    async def recv(self, peer: str, round_id: int, tag: str) -> Payload:
        return await self.mailbox.get((peer, round_id, tag))

    def release(self, round_id: int) -> None:
        self.mailbox.release(round_id)

    async def shutdown(self) -> None:
        """Stop taking gradient messages and close the sessions this channel opened."""
        self.server.unregister(MSG_TYPE)
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(c.shutdown() for c in clients), return_exceptions=True)

    async def _on_message(self, msg: IncomingMessage) -> None:
        if msg.task_id != self.task_id or msg.peer not in self.peer_urls:
            log.warning("gradient message dropped peer=%s task=%d", msg.peer, msg.task_id)
            return None
        self.mailbox.put((msg.peer, msg.round_id, msg.tag), msg.payload)
        return None

    async def _client(self, peer: str) -> PeerClient:
        if peer in self._clients:
            return self._clients[peer]
        if peer not in self.peer_urls:
            raise ExchangeError(f"unknown peer {peer!r}")
        async with self._opening.setdefault(peer, asyncio.Lock()):
            if peer not in self._clients:
                self._clients[peer] = await self._open(peer)
        return self._clients[peer]

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
