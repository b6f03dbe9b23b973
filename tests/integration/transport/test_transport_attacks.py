"""Strangers and greedy members against a real server on 127.0.0.1: every attack is
refused or bounded, counted under its reason, and an honest member's messages keep going
through promptly while it runs.

Each test stops by itself: attackers run as tasks bounded by short timeouts, cancelled on
the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable

import aiohttp
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from node.transport import (
    IncomingMessage,
    MetricsRegistry,
    PeerClient,
    PeerRefused,
    TransportConfig,
    TransportServer,
)
from node.transport.frames import FRAME_VERSION, HEADER, Kind, MessageHead
from node.transport.server import PREFIX, REFUSAL_HEADER
from node.transport.stream import as_parts, seal_message

TASK = 42
MIB = 1 << 20
CONFIG = TransportConfig(
    chunk_bytes=64 * 1024,
    max_chunk_bytes=1 * MIB,
    max_message_bytes=8 * MIB,
    read_timeout_s=1.0,
    message_timeout_s=5.0,
    keepalive_timeout_s=0.5,
    max_connections=16,
    max_sessions_per_peer=4,
    peer_inflight_bytes=1 * MIB,
)

pytestmark = pytest.mark.timeout(60)


class Env:
    def __init__(self, server: TransportServer, bob: LocalAccount, members: list[LocalAccount]):
        self.server, self.bob, self.members = server, bob, members
        self.inbox: list[IncomingMessage] = []
        self.hold = asyncio.Event()

    def refused(self, reason: str) -> float:
        return self.server.metrics.refused.value(reason=reason)

    async def client(self, who: LocalAccount | None = None) -> PeerClient:
        return await PeerClient.create(
            who or self.members[0], self.server.url, self.bob.address, TASK, config=CONFIG
        )

    def session_path(self, client: PeerClient) -> str:
        assert client.session is not None
        return f"{PREFIX}sessions/{client.session.session_id.hex()}/messages"


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    bob = Account.create()
    members = [Account.create() for _ in range(3)]
    allowed = {m.address for m in members}

    async def membership(task_id: int, address: str) -> bool:
        return task_id == TASK and address in allowed

    server = await TransportServer.create(
        bob, membership, config=CONFIG, registry=MetricsRegistry()
    )
    made = Env(server, bob, members)

    async def keep(message: IncomingMessage) -> bytes:
        made.inbox.append(message)
        return b"ok"

    server.register("keep", keep)
    yield made
    await server.shutdown()


async def _prompt(client: PeerClient, within_s: float = 0.5) -> None:
    """An honest message goes through, and fast."""
    start = time.monotonic()
    assert bytes(await client.send("keep", os.urandom(100_000))) == b"ok"
    assert time.monotonic() - start < within_s


async def _raw(env: Env) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", env.server.port)


def _post(path: str, length: int) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode()


@contextlib.asynccontextmanager
async def _running(*coros: Awaitable[object]) -> AsyncIterator[list[asyncio.Task[object]]]:
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        yield tasks
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _closed_within(reader: asyncio.StreamReader, timeout_s: float) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            while await reader.read(1024):
                pass
        return True
    except (TimeoutError, ConnectionError):
        return False


async def test_stranger_trickling_a_head_on_a_session_url_never_holds_the_session(env: Env) -> None:
    """Seen on the wire: a session's URL. A stranger posts a frame header there and
    trickles the rest; nothing is locked before the HEAD frame verifies, so the member's
    messages on that very session go through while it trickles."""
    client = await env.client()
    try:
        fake = HEADER.pack(FRAME_VERSION, Kind.HEAD, 0, 100, 10**6, 1)

        async def trickle() -> None:
            _reader, writer = await _raw(env)
            writer.write(_post(env.session_path(client), 10_000) + fake)
            for _ in range(100):
                writer.write(b"\0")
                await writer.drain()
                await asyncio.sleep(0.1)

        async with _running(trickle()):
            await asyncio.sleep(0.3)
            for _ in range(3):
                await _prompt(client)
            await asyncio.sleep(1.5)  # past the read timeout: the stranger was cut off
        assert env.refused("timeout") + env.refused("tampered_frame") >= 1
    finally:
        await client.shutdown()


async def test_eavesdropper_replaying_a_message_slowly_is_preempted(env: Env) -> None:
    """An on-path attacker copies a member's message and replays it byte by byte: its HEAD
    verifies, so it holds the session, until the member's next message preempts it."""
    client = await env.client()
    try:
        session = client.session
        assert session is not None
        head = MessageHead("keep", "", 300_000)
        parts = as_parts(os.urandom(300_000))
        captured = [
            bytes(b"".join(p)) for p in seal_message(session.sealer, head, 1, parts, 64 * 1024)
        ]

        async def replay() -> None:
            _reader, writer = await _raw(env)
            body = b"".join(captured)
            writer.write(
                _post(env.session_path(client), len(body))
                + captured[0]
                + body[len(captured[0]) : len(captured[0]) + 30]
            )
            for i in range(200):
                writer.write(body[len(captured[0]) + 30 + i : len(captured[0]) + 31 + i])
                await writer.drain()
                await asyncio.sleep(0.05)

        async with _running(replay()):
            await asyncio.sleep(0.3)
            await _prompt(client)
        assert env.refused("preempted") == 1
    finally:
        await client.shutdown()


async def test_idle_and_header_trickling_connections_are_closed_and_capped(env: Env) -> None:
    """Idle connections (and ones trickling request headers) are closed after the keep-alive
    timeout; at the connection cap the oldest idle one makes room for a newcomer, so a
    member's handshake still gets through a flood of them."""
    opened = [await _raw(env) for _ in range(3 * CONFIG.max_connections)]
    assert env.server.connection_count <= CONFIG.max_connections
    client = await env.client()
    try:
        await _prompt(client)
        assert env.server.metrics.connections.value(event="evicted") > 0
        reader, writer = await _raw(env)

        async def headers() -> None:
            for ch in b"POST /manta/v1/transport/handshake HTTP/1.1\r\nHost: x":
                writer.write(bytes([ch]))
                await writer.drain()
                await asyncio.sleep(0.05)

        async with _running(headers()):
            assert await _closed_within(reader, 2.0)
        for r, _ in opened:
            assert await _closed_within(r, 2.0)
        await _prompt(client)
    finally:
        for _, w in opened:
            w.close()
        await client.shutdown()


async def test_connection_dropped_mid_body_is_counted(env: Env) -> None:
    client = await env.client()
    try:
        session = client.session
        assert session is not None
        frames = seal_message(
            session.sealer,
            MessageHead("keep", "", 500_000),
            1,
            as_parts(os.urandom(500_000)),
            64 * 1024,
        )
        body = b"".join(b"".join(p) for p in frames)
        _reader, writer = await _raw(env)
        writer.write(_post(env.session_path(client), len(body)) + body[:200_000])
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.transport.abort()
        for _ in range(50):
            if env.refused("disconnected"):
                break
            await asyncio.sleep(0.05)
        assert env.refused("disconnected") == 1
        assert env.inbox == []
        await _prompt(client)
    finally:
        await client.shutdown()


async def test_member_opening_sessions_in_a_loop_locks_out_nobody(env: Env) -> None:
    flooder, honest = env.members[1], env.members[0]
    mine = await env.client(honest)
    flood: list[PeerClient] = []
    try:
        for _ in range(30):
            flood.append(await env.client(flooder))
        assert env.server.sessions_of(flooder.address) == CONFIG.max_sessions_per_peer
        assert env.server.metrics.sessions_evicted.value() == 30 - CONFIG.max_sessions_per_peer
        await _prompt(mine)  # its session survived the flood
        other = await env.client(env.members[2])
        await _prompt(other)
        await other.shutdown()
        # the flooder's evicted sessions re-open transparently: it only churns its own
        await _prompt(flood[0], within_s=2.0)
    finally:
        await asyncio.gather(*(c.shutdown() for c in (mine, *flood)))


async def test_member_over_its_in_flight_budget_is_refused_before_allocation(env: Env) -> None:
    hog, honest = await env.client(env.members[1]), await env.client(env.members[0])
    try:
        assert hog.session is not None
        frames = seal_message(
            hog.session.sealer,
            MessageHead("keep", "", 900_000),
            1,
            as_parts(os.urandom(900_000)),
            64 * 1024,
        )
        first = [b"".join(p) for p in frames]

        async def hold() -> None:  # 900 KB announced, then the sender stalls
            _reader, writer = await _raw(env)
            body = b"".join(first)
            writer.write(_post(env.session_path(hog), len(body)) + first[0] + first[1])
            await writer.drain()
            await asyncio.sleep(10)

        async with _running(hold()):
            await asyncio.sleep(0.3)
            with pytest.raises(PeerRefused) as info:
                await hog.send("keep", os.urandom(300_000))  # 1.2 MB in flight > 1 MiB
            assert (info.value.refusal, info.value.status) == ("peer_budget", 429)
            await _prompt(honest)  # a budget is per member
        assert env.refused("peer_budget") == 1
    finally:
        await hog.shutdown()
        await honest.shutdown()


async def test_metrics_expose_every_refusal_reason(env: Env) -> None:
    client = await env.client()
    try:
        with pytest.raises(PeerRefused):
            await client.send("nobody-listens", b"")
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{env.server.url}{PREFIX}sessions/00/messages", data=b"x") as r,
        ):
            assert r.headers[REFUSAL_HEADER] == "unknown_session"
        async with aiohttp.ClientSession() as http, http.get(f"{env.server.url}/metrics") as r:
            text = await r.text()
        for line in (
            'manta_transport_refused_total{reason="unknown_type"} 1',
            'manta_transport_refused_total{reason="unknown_session"} 1',
            'manta_transport_connections_total{event="opened"}',
            "manta_transport_sessions_evicted_total 0",
        ):
            assert line in text
    finally:
        await client.shutdown()
