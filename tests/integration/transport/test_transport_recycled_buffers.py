"""Receive buffers supplied by the handler's owner, over a real aiohttp server.

The gradient channel recycles the buffers of released rounds; these tests check that a
message lands in exactly the buffer handed out, that a refused message never reaches the
handler, and that the channel's pool really is reused (and only after release).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import numpy as np
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from miner.distributed.transport_channel import TransportChannel
from node.transport import (
    IncomingMessage,
    MetricsRegistry,
    Mode,
    PeerClient,
    PeerRefused,
    TransportServer,
)
from node.transport.config import TransportConfig

TASK = 5
MIB = 1 << 20
CONFIG = TransportConfig(chunk_bytes=256 * 1024, max_chunk_bytes=MIB, max_message_bytes=8 * MIB)

pytestmark = pytest.mark.timeout(60)


class Pair:
    def __init__(self, server: TransportServer, alice: LocalAccount, bob: LocalAccount) -> None:
        self.server, self.alice, self.bob = server, alice, bob


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    alice, bob = Account.create(), Account.create()

    async def membership(task_id: int, address: str) -> bool:
        return task_id == TASK and address in (alice.address, bob.address)

    server = await TransportServer.create(
        bob, membership, config=CONFIG, registry=MetricsRegistry()
    )
    yield Pair(server, alice, bob)
    await server.shutdown()


@pytest.mark.parametrize("mode", [Mode.AEAD, Mode.AUTH])
async def test_message_lands_in_the_allocated_buffer(pair: Pair, mode: Mode) -> None:
    arena = np.full(3 * MIB, 7, np.uint8)
    inbox: list[IncomingMessage] = []
    asked: list[int] = []

    def allocate(nbytes: int) -> memoryview:
        asked.append(nbytes)
        return arena.data[:nbytes]

    async def keep(message: IncomingMessage) -> None:
        inbox.append(message)

    pair.server.register("keep", keep, allocate=allocate)
    client = await PeerClient.create(
        pair.alice, pair.server.url, pair.bob.address, TASK, mode=mode, config=CONFIG
    )
    try:
        data = os.urandom(2 * MIB + 3)
        await client.send("keep", [data[:MIB], data[MIB:]])
        assert asked == [len(data)]
        payload = inbox[-1].payload
        assert isinstance(payload, memoryview) and payload.obj is arena
        assert bytes(payload) == data

        pair.server.unregister("keep")  # the allocator goes with the handler
        pair.server.register("keep", keep)
        await client.send("keep", b"fresh")
        assert asked == [len(data)] and inbox[-1].payload == bytearray(b"fresh")
    finally:
        await client.shutdown()


async def test_unknown_type_never_asks_the_allocator(pair: Pair) -> None:
    asked: list[int] = []

    async def keep(message: IncomingMessage) -> None:
        return None

    pair.server.register("keep", keep, allocate=lambda n: asked.append(n) or bytearray(n))
    client = await PeerClient.create(
        pair.alice, pair.server.url, pair.bob.address, TASK, config=CONFIG
    )
    try:
        with pytest.raises(PeerRefused) as refused:
            await client.send("other", b"x" * 1000)
        assert refused.value.refusal == "unknown_type"
        assert asked == []
        assert pair.server.metrics.refused.value(reason="unknown_type") == 1
    finally:
        await client.shutdown()


async def test_channel_recycles_receive_buffers_after_release(pair: Pair) -> None:
    alice_server = await TransportServer.create(
        pair.alice, lambda t, a: _true(), config=CONFIG, registry=MetricsRegistry()
    )
    bob = TransportChannel.attach(
        pair.server, pair.bob, {pair.alice.address: alice_server.url}, TASK, config=CONFIG
    )
    alice = TransportChannel.attach(
        alice_server, pair.alice, {pair.bob.address: pair.server.url}, TASK, config=CONFIG
    )
    try:
        data = os.urandom(MIB + 100)
        await alice.send(bob.me, 1, "part", [data[:10], data[10:]])
        first = await bob.recv(alice.me, 1, "part")
        assert bytes(first) == data
        await alice.send(bob.me, 2, "part", [data])  # round 1 still held: a new buffer
        second = await bob.recv(alice.me, 2, "part")
        assert isinstance(first, memoryview) and isinstance(second, memoryview)
        assert second.obj is not first.obj
        bob.release(2)
        other = os.urandom(MIB + 90)  # a few bytes shorter: same pooled capacity
        await alice.send(bob.me, 3, "part", [other])
        third = await bob.recv(alice.me, 3, "part")
        assert isinstance(third, memoryview) and any(third.obj is b.obj for b in (first, second))
        assert bytes(third) == other
        assert len(alice._clients[bob.me]) == alice.streams_per_peer
    finally:
        await alice.shutdown()
        await bob.shutdown()
        await alice_server.shutdown()


async def _true() -> bool:
    return True


async def test_channel_pool_is_bounded(pair: Pair) -> None:
    bob = TransportChannel.attach(pair.server, pair.bob, {}, TASK, pool_max_bytes=3 * MIB)
    try:
        for i in range(4):
            bob.mailbox.put(("x", 1, f"p{i}"), bob.take_buffer(MIB))
        bob.mailbox.put(("x", 1, "small"), bob.take_buffer(1000))  # below pool_min_bytes
        bob.release(1)
        assert sum(len(b) for b in bob._pool.values()) == 3  # capped at 3 MiB
        taken = [bob.take_buffer(MIB - 5) for _ in range(4)]
        assert [t.nbytes for t in taken] == [MIB - 5] * 4
        assert len({id(t.obj) for t in taken}) == 4 and not any(bob._pool.values())
    finally:
        await bob.shutdown()
