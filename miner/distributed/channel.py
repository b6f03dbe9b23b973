"""The peer channel the all-reduce runs over, and an in-memory one for tests.

:class:`PeerChannel` is all the exchange needs from a network: deliver one frame, given
as consecutive bytes-like parts (header, payload: sent back to back so nobody concatenates
large buffers), to a named peer under a ``(round_id, tag)`` key, and hand over the frame a
named peer sent under a key, as one buffer, waiting until it arrives (the caller bounds the
wait). Frames may arrive before anyone waits for them; the channel buffers them until
``release(round_id)`` drops every round up to that one (after which the caller no longer
uses the buffers it received, so a channel may recycle them). A :class:`Mailbox` bounds what
each sender may park, in bytes and in rounds ahead of the last one released. Authentication,
encryption and streaming belong to the implementation (:mod:`miner.distributed.transport_channel`
adapts ``node.transport``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from miner.distributed.errors import ExchangeError
from node.transport.errors import PeerBudgetExceeded, RoundOutOfWindow

Key = tuple[str, int, str]  # (sender, round_id, tag)
Payload = bytes | bytearray | memoryview


class PeerChannel(Protocol):
    """What :class:`miner.distributed.exchange.GradientExchange` sends and receives through."""

    @property
    def me(self) -> str: ...

    async def send(self, peer: str, round_id: int, tag: str, frame: Sequence[Payload]) -> None: ...

    async def recv(self, peer: str, round_id: int, tag: str) -> Payload: ...

    def release(self, round_id: int) -> None: ...


SLOT_COST_BYTES = 1024
"""What a parked payload costs its sender's budget at least (an empty message still holds a
slot), so that tiny messages cannot fill a mailbox with slots either."""


@dataclass
class Mailbox:
    """Payloads addressed to one peer, by ``(sender, round_id, tag)``.

    Each key holds one future, created by whichever of :meth:`put` and :meth:`get` comes
    first, so the order of arrival and waiting does not matter.

    Budgets per sender (``None``: unbounded): ``peer_bytes`` parked at once (each payload
    costs at least :data:`SLOT_COST_BYTES`), and ``rounds_ahead`` rounds past the last one
    released (nothing for a finished round, nothing for the far future). What a sender
    parked is freed when its round is released. :meth:`admit` runs the same checks from a
    message's head, before it is received.
    """

    slots: dict[Key, asyncio.Future[Payload]] = field(default_factory=dict)
    bytes_in: int = 0
    peer_bytes: int | None = None
    rounds_ahead: int | None = None
    floor: int | None = None  # the last round released
    held: dict[str, int] = field(default_factory=dict)
    _cost: dict[Key, int] = field(default_factory=dict)

    def _slot(self, key: Key) -> asyncio.Future[Payload]:
        if key not in self.slots:
            self.slots[key] = asyncio.get_running_loop().create_future()
        return self.slots[key]

    def admit(self, sender: str, round_id: int, nbytes: int) -> None:
        """:class:`RoundOutOfWindow` or :class:`PeerBudgetExceeded` unless ``sender`` may
        park ``nbytes`` more under ``round_id`` now."""
        floor, ahead = self.floor, self.rounds_ahead
        if floor is not None and (
            round_id <= floor or (ahead is not None and round_id > floor + ahead)
        ):
            high = "∞" if ahead is None else str(floor + ahead)
            raise RoundOutOfWindow(round_id=round_id, peer=sender, window=f"({floor}, {high}]")
        held, cost = self.held.get(sender, 0), max(nbytes, SLOT_COST_BYTES)
        if self.peer_bytes is not None and held + cost > self.peer_bytes:
            raise PeerBudgetExceeded(
                f"{held} + {cost} bytes over {self.peer_bytes}", peer=sender, budget="mailbox"
            )

    def put(self, key: Key, payload: Payload) -> None:
        """File ``payload`` (a duplicate is ignored: first delivery wins, and so is one for
        a round already released); raises as :meth:`admit` when the sender is too far ahead
        or over its budget."""
        slot = self.slots.get(key)
        if (slot is not None and slot.done()) or (self.floor is not None and key[1] <= self.floor):
            return  # a duplicate, or late for a round already released: nobody will read it
        size = len(payload) if not isinstance(payload, memoryview) else payload.nbytes
        self.admit(key[0], key[1], size)
        cost = max(size, SLOT_COST_BYTES)
        self._slot(key).set_result(payload)
        self._cost[key] = cost
        self.held[key[0]] = self.held.get(key[0], 0) + cost
        self.bytes_in += size

    async def get(self, key: Key) -> Payload:
        return await asyncio.shield(self._slot(key))

    def release(self, round_id: int) -> list[Payload]:
        """Forget rounds up to ``round_id``; returns the payloads they held (for reuse)."""
        self.floor = round_id if self.floor is None else max(self.floor, round_id)
        freed = []
        for key in [k for k in self.slots if k[1] <= round_id]:
            slot = self.slots.pop(key)
            cost = self._cost.pop(key, 0)
            if cost:
                left = self.held.get(key[0], 0) - cost
                if left > 0:
                    self.held[key[0]] = left
                else:
                    self.held.pop(key[0], None)
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
