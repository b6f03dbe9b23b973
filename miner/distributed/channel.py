"""The peer channel the all-reduce runs over, and an in-memory one for tests.

:class:`PeerChannel` is all the exchange needs from a network: deliver one frame, given
as consecutive bytes-like parts (header, payload: sent back to back so nobody concatenates
large buffers), to a named peer under a ``(round_id, tag)`` key, and hand over the frame a
named peer sent under a key, as one buffer, waiting until it arrives (the caller bounds the
wait). Frames may arrive before anyone waits for them; the channel buffers them until
``release(round_id)`` drops every round up to that one (after which the caller no longer
uses the buffers it received, so a channel may recycle them). Authentication, encryption
and streaming belong to the implementation (:mod:`miner.distributed.transport_channel`
adapts ``node.transport``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from miner.distributed.errors import ExchangeError

Key = tuple[str, int, str]  # (sender, round_id, tag)
Payload = bytes | bytearray | memoryview


class PeerChannel(Protocol):
    """What :class:`miner.distributed.exchange.GradientExchange` sends and receives through."""

    @property
    def me(self) -> str: ...

    async def send(self, peer: str, round_id: int, tag: str, frame: Sequence[Payload]) -> None: ...

    async def recv(self, peer: str, round_id: int, tag: str) -> Payload: ...

    def release(self, round_id: int) -> None: ...


@dataclass
class Mailbox:
    """Payloads addressed to one peer, by ``(sender, round_id, tag)``.

    Each key holds one future, created by whichever of :meth:`put` and :meth:`get` comes
    first, so the order of arrival and waiting does not matter.
    """

    slots: dict[Key, asyncio.Future[Payload]] = field(default_factory=dict)
    bytes_in: int = 0

    def _slot(self, key: Key) -> asyncio.Future[Payload]:
        if key not in self.slots:
            self.slots[key] = asyncio.get_running_loop().create_future()
        return self.slots[key]

    def put(self, key: Key, payload: Payload) -> None:
        slot = self._slot(key)
        if not slot.done():  # a duplicate is ignored: first delivery wins
            slot.set_result(payload)
            self.bytes_in += len(payload)

    async def get(self, key: Key) -> Payload:
        return await asyncio.shield(self._slot(key))

    def release(self, round_id: int) -> list[Payload]:
        """Forget rounds up to ``round_id``; returns the payloads they held (for reuse)."""
        freed = []
        for key in [k for k in self.slots if k[1] <= round_id]:
            slot = self.slots.pop(key)
            if not slot.done():
                slot.cancel()
            elif not slot.cancelled():
                freed.append(slot.result())
        return freed


@dataclass
class InMemoryHub:
    """Peers in one event loop.

    Tests inject faults: :meth:`kill` cuts a peer off, ``delay_s`` slows its sends, and
    ``die_after[peer] = n`` lets it deliver ``n`` more payloads and then cuts it off (a crash
    in the middle of a round).
    """

    mailboxes: dict[str, Mailbox] = field(default_factory=dict)
    dead: set[str] = field(default_factory=set)
    die_after: dict[str, int] = field(default_factory=dict)
    delay_s: dict[str, float] = field(default_factory=dict)
    bytes_sent: dict[str, int] = field(default_factory=dict)

    def channel(self, me: str) -> InMemoryChannel:
        self.mailboxes.setdefault(me, Mailbox())
        self.bytes_sent.setdefault(me, 0)
        return InMemoryChannel(self, me)

    def channels(self, names: Iterable[str]) -> list[InMemoryChannel]:
        return [self.channel(name) for name in names]

    def kill(self, peer: str) -> None:
        """From now on ``peer`` neither sends nor receives anything."""
        self.dead.add(peer)


@dataclass
class InMemoryChannel:
    hub: InMemoryHub
    name: str

    @property
    def me(self) -> str:
        return self.name

    async def send(self, peer: str, round_id: int, tag: str, frame: Sequence[Payload]) -> None:
        if peer not in self.hub.mailboxes:
            raise ExchangeError(f"unknown peer {peer!r}")
        delay = self.hub.delay_s.get(self.name, 0.0)
        if delay:
            await asyncio.sleep(delay)
        if self.name in self.hub.die_after:
            self.hub.die_after[self.name] -= 1
            if self.hub.die_after[self.name] < 0:
                self.hub.kill(self.name)
        if self.name in self.hub.dead or peer in self.hub.dead:
            return
        data = b"".join(frame)
        self.hub.bytes_sent[self.name] += len(data)
        self.hub.mailboxes[peer].put((self.name, round_id, tag), data)

    async def recv(self, peer: str, round_id: int, tag: str) -> Payload:
        return await self.hub.mailboxes[self.name].get((peer, round_id, tag))

    def release(self, round_id: int) -> None:
        self.hub.mailboxes[self.name].release(round_id)
