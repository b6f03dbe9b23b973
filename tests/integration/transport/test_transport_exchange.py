"""Two transport endpoints on 127.0.0.1: the happy path and every refusal, tried for real.

After each refusal the test checks that the server counted it under its reason and that an
honest message on the same client still goes through (the refusal changed nothing).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from eth_account import Account
from eth_account.signers.local import LocalAccount

from node.transport import (
    IncomingMessage,
    MessageTooLarge,
    MetricsRegistry,
    Mode,
    PeerClient,
    PeerRefused,
    PeerTimeout,
    PeerUnreachable,
    TransportConfig,
    TransportServer,
)
from node.transport.frames import HEADER_BYTES, TAG_BYTES, MessageHead
from node.transport.server import PREFIX, REFUSAL_HEADER
from node.transport.sessions import Initiator
from node.transport.stream import as_parts, seal_message

TASK = 42
MIB = 1 << 20
CONFIG = TransportConfig(
    chunk_bytes=256 * 1024, max_chunk_bytes=1 * MIB, max_message_bytes=16 * MIB
)

pytestmark = pytest.mark.timeout(60)


class Peers:
    def __init__(self, server: TransportServer, alice: LocalAccount, bob: LocalAccount) -> None:
        self.server, self.alice, self.bob = server, alice, bob
        self.inbox: list[IncomingMessage] = []

    def refused(self, reason: str) -> float:
        return self.server.metrics.refused.value(reason=reason)


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    alice, bob = Account.create(), Account.create()
    group = {alice.address, bob.address}

    async def membership(task_id: int, address: str) -> bool:
        return task_id == TASK and address in group

    server = await TransportServer.create(
        bob, membership, config=CONFIG, registry=MetricsRegistry()
    )
    env = Peers(server, alice, bob)

    async def keep(message: IncomingMessage) -> bytes:
        env.inbox.append(message)
        return bytes(message.payload[-5:])

    async def explode(message: IncomingMessage) -> None:
        raise RuntimeError("boom")

    server.register("keep", keep)
    server.register("explode", explode)
    yield env
    await server.shutdown()


@pytest.fixture
async def client(peers: Peers) -> AsyncIterator[PeerClient]:
    made = await PeerClient.create(
        peers.alice, peers.server.url, peers.bob.address, TASK, config=CONFIG
    )
    yield made
    await made.shutdown()


async def honest_message_works(peers: Peers, client: PeerClient) -> None:
    data = os.urandom(300_000)
    reply = await client.send("keep", data, round_id=99)
    assert bytes(reply) == data[-5:]
    assert peers.inbox[-1].payload == data


def message_frames(client: PeerClient, data: bytes, msg_type: str = "keep") -> list[bytearray]:
    """Frames of one message sealed with the client's live session (advances its sequence)."""
    session = client.session
    assert session is not None
    head = MessageHead(msg_type, "", len(data))
    frames = seal_message(session.sealer, head, 1, as_parts(data), CONFIG.chunk_bytes)
    return [bytearray(b"".join(pieces)) for pieces in frames]


async def post_raw(client: PeerClient, body: bytes) -> tuple[int, str]:
    session = client.session
    assert session is not None
    url = f"{client.url}{PREFIX}sessions/{session.session_id.hex()}/messages"
    async with aiohttp.ClientSession() as http, http.post(url, data=body) as response:
        await response.read()
        return response.status, response.headers.get(REFUSAL_HEADER, "")


async def post_hello(peers: Peers, hello: bytes) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{peers.server.url}{PREFIX}handshake", data=hello) as response,
    ):
        await response.read()
        return response.status, response.headers.get(REFUSAL_HEADER, "")


@pytest.mark.parametrize("mode", [Mode.AEAD, Mode.AUTH])
async def test_multi_mib_message_arrives_byte_equal(peers: Peers, mode: Mode) -> None:
    client = await PeerClient.create(
        peers.alice, peers.server.url, peers.bob.address, TASK, mode=mode, config=CONFIG
    )
    try:
        head, body = os.urandom(64), bytearray(os.urandom(5 * MIB + 123))
        reply = await client.send("keep", [head, memoryview(body)], round_id=7, tag="rs-3")
        assert bytes(reply) == bytes(body[-5:])
        got = peers.inbox[-1]
        assert got.payload == head + body
        assert (got.peer, got.task_id, got.round_id, got.tag, got.scope) == (
            peers.alice.address,
            TASK,
            7,
            "rs-3",
            "gradients",
        )
        await honest_message_works(peers, client)  # the connection and session are reused
        assert peers.server.metrics.messages_in.value() == 2
        assert peers.server.metrics.bytes_in.value() == len(head) + len(body) + 300_000
    finally:
        await client.shutdown()


async def test_replayed_handshake_is_refused(peers: Peers, client: PeerClient) -> None:
    hello = Initiator.start(
        peers.alice, peers.bob.address, TASK, "gradients", Mode.AEAD, time.time()
    ).encoded
    assert (await post_hello(peers, hello))[0] == 200
    assert await post_hello(peers, hello) == (401, "replay")
    assert peers.refused("replay") == 1
    await honest_message_works(peers, client)


async def test_stale_timestamp_is_refused(peers: Peers, client: PeerClient) -> None:
    for skew_s in (-3600, +3600):
        hello = Initiator.start(
            peers.alice, peers.bob.address, TASK, "gradients", Mode.AEAD, time.time() + skew_s
        ).encoded
        assert await post_hello(peers, hello) == (401, "stale_timestamp")
    assert peers.refused("stale_timestamp") == 2
    await honest_message_works(peers, client)


async def test_wrong_recipient_is_refused(peers: Peers, client: PeerClient) -> None:
    with pytest.raises(PeerRefused) as info:
        await PeerClient.create(peers.alice, peers.server.url, Account.create().address, TASK)
    assert (info.value.refusal, info.value.status) == ("wrong_recipient", 401)
    assert peers.refused("wrong_recipient") == 1
    assert peers.server.session_count == 1  # only the honest client's
    await honest_message_works(peers, client)


@pytest.mark.parametrize("task_id", [TASK, TASK + 1])
async def test_unknown_peer_is_refused(peers: Peers, client: PeerClient, task_id: int) -> None:
    stranger = Account.create() if task_id == TASK else peers.alice  # alice is not in task 43
    with pytest.raises(PeerRefused) as info:
        await PeerClient.create(stranger, peers.server.url, peers.bob.address, task_id)
    assert (info.value.refusal, info.value.status) == ("not_a_member", 403)
    assert peers.refused("not_a_member") == 1
    await honest_message_works(peers, client)


async def test_forged_hello_signature_is_refused(peers: Peers, client: PeerClient) -> None:
    hello = bytearray(
        Initiator.start(
            peers.alice, peers.bob.address, TASK, "gradients", Mode.AEAD, time.time()
        ).encoded
    )
    hello[-30] ^= 0x01
    assert await post_hello(peers, bytes(hello)) == (401, "bad_signature")
    assert peers.refused("bad_signature") == 1
    await honest_message_works(peers, client)


async def test_replayed_frame_is_refused(peers: Peers, client: PeerClient) -> None:
    body = b"".join(message_frames(client, os.urandom(600_000)))
    assert await post_raw(client, body) == (200, "")
    assert await post_raw(client, body) == (401, "replay")
    assert peers.refused("replay") == 1
    assert peers.server.metrics.messages_in.value() == 1
    await honest_message_works(peers, client)


@pytest.mark.parametrize(
    ("frame", "offset", "mode"),
    [
        (1, HEADER_BYTES + 1000, Mode.AEAD),  # ciphertext of a chunk
        (1, HEADER_BYTES + 1000, Mode.AUTH),  # clear data of a chunk
        (2, -1, Mode.AEAD),  # the tag
        (1, HEADER_BYTES - 1, Mode.AEAD),  # the round id in a chunk header
        (0, HEADER_BYTES - 9, Mode.AUTH),  # the sequence number in the head's header
        (0, HEADER_BYTES + 2, Mode.AEAD),  # the sealed message head
    ],
)
async def test_tampered_frame_is_refused(peers: Peers, frame: int, offset: int, mode: Mode) -> None:
    client = await PeerClient.create(
        peers.alice, peers.server.url, peers.bob.address, TASK, mode=mode, config=CONFIG
    )
    try:
        frames = message_frames(client, os.urandom(700_000))
        frames[frame][offset] ^= 0x40
        assert await post_raw(client, b"".join(frames)) == (400, "tampered_frame")
        assert peers.refused("tampered_frame") == 1
        assert peers.inbox == []
        await honest_message_works(peers, client)
    finally:
        await client.shutdown()


@pytest.mark.parametrize("cut", [1, TAG_BYTES + 10, 256 * 1024 + HEADER_BYTES + TAG_BYTES])
async def test_truncated_body_is_refused(peers: Peers, client: PeerClient, cut: int) -> None:
    body = b"".join(message_frames(client, os.urandom(700_000)))
    assert await post_raw(client, body[:-cut]) == (400, "truncated")
    assert peers.refused("truncated") == 1
    assert peers.inbox == []
    await honest_message_works(peers, client)


async def test_oversized_message_is_refused(peers: Peers, client: PeerClient) -> None:
    roomy = TransportConfig(max_message_bytes=64 * MIB)
    big = await PeerClient.create(
        peers.alice, peers.server.url, peers.bob.address, TASK, config=roomy
    )
    try:
        with pytest.raises(PeerRefused) as info:
            await big.send("keep", bytes(17 * MIB))
        assert (info.value.refusal, info.value.status) == ("too_large", 413)
        assert peers.refused("too_large") == 1
        await honest_message_works(peers, client)
    finally:
        await big.shutdown()
    with pytest.raises(MessageTooLarge):  # refused locally, before anything is sent
        await client.send("keep", bytes(17 * MIB))
    await honest_message_works(peers, client)


async def test_unknown_type_and_failing_handler_are_refused(
    peers: Peers, client: PeerClient
) -> None:
    with pytest.raises(PeerRefused) as info:
        await client.send("nobody-listens", b"x" * 10)
    assert (info.value.refusal, info.value.status) == ("unknown_type", 404)
    with pytest.raises(PeerRefused) as info:
        await client.send("explode", b"x" * 10)
    assert (info.value.refusal, info.value.status) == ("handler_failed", 500)
    assert peers.refused("unknown_type") == peers.refused("handler_failed") == 1
    await honest_message_works(peers, client)


async def test_lost_session_is_reopened(peers: Peers, client: PeerClient) -> None:
    peers.server._state.sessions.clear()  # as after a restart or expiry
    replies = await asyncio.gather(
        *(client.send("keep", b"12345678", round_id=i) for i in range(3))
    )
    assert [bytes(r) for r in replies] == [b"45678"] * 3
    assert peers.refused("unknown_session") == 3
    assert peers.server.metrics.handshakes.value(role="responder") == 2  # reopened once
    await honest_message_works(peers, client)


async def test_dead_peer_fails_fast_with_a_named_error(peers: Peers) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(PeerUnreachable):
        await PeerClient.create(peers.alice, f"http://127.0.0.1:{port}", peers.bob.address, TASK)


async def test_metrics_endpoint_exposes_refusals(peers: Peers, client: PeerClient) -> None:
    with pytest.raises(PeerRefused):
        await client.send("nobody-listens", b"")
    async with aiohttp.ClientSession() as http, http.get(f"{peers.server.url}/metrics") as r:
        text = await r.text()
    assert 'manta_transport_refused_total{reason="unknown_type"} 1' in text
    assert 'manta_transport_handshakes_total{role="responder"} 1' in text


async def test_concurrent_sends_on_one_client_all_arrive(peers: Peers, client: PeerClient) -> None:
    payloads = [os.urandom(200_000 + i) for i in range(4)]
    replies = await asyncio.gather(
        *(client.send("keep", p, round_id=i) for i, p in enumerate(payloads))
    )
    assert [bytes(r) for r in replies] == [p[-5:] for p in payloads]
    assert sorted(bytes(m.payload) for m in peers.inbox) == sorted(payloads)


async def test_slow_peer_times_out_with_a_named_error(peers: Peers, client: PeerClient) -> None:
    release = asyncio.Event()

    async def slow(message: IncomingMessage) -> None:
        await release.wait()

    peers.server.register("slow", slow)
    with pytest.raises(PeerTimeout):
        await client.send("slow", b"x", timeout_s=0.3)
    release.set()


async def test_stalled_sender_is_cut_off_and_counted(peers: Peers) -> None:
    cfg = CONFIG.model_copy(update={"message_timeout_s": 0.3})
    server = await TransportServer.create(peers.bob, _everyone, config=cfg)
    server.register("keep", _ignore)
    client = await PeerClient.create(peers.alice, server.url, peers.bob.address, TASK, config=cfg)
    try:
        frames = message_frames(client, os.urandom(600_000))

        async def stall() -> AsyncIterator[bytes]:
            yield bytes(frames[0])
            await asyncio.sleep(3)

        session = client.session
        assert session is not None
        url = f"{client.url}{PREFIX}sessions/{session.session_id.hex()}/messages"
        async with aiohttp.ClientSession() as http, http.post(url, data=stall()) as response:
            assert response.headers[REFUSAL_HEADER] == "timeout"
        assert server.metrics.refused.value(reason="timeout") == 1
        assert bytes(await client.send("keep", b"still fine")) == b""
    finally:
        await client.shutdown()
        await server.shutdown()


async def _everyone(task_id: int, address: str) -> bool:
    return True


async def _ignore(message: IncomingMessage) -> None:
    return None


async def test_logs_carry_no_keys_signatures_or_payloads(
    peers: Peers, client: PeerClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="node.transport")
    secret = b"SECRET-PAYLOAD-" + os.urandom(8).hex().encode()
    await client.send("keep", secret)
    hello = Initiator.start(
        peers.alice, peers.bob.address, TASK, "gradients", Mode.AEAD, time.time()
    ).encoded
    await post_hello(peers, hello)
    await post_hello(peers, hello)  # refused: replay, logged
    with pytest.raises(PeerRefused):
        await client.send("explode", secret)  # handler failure, logged with its traceback
    text = caplog.text
    assert "replay" in text and "handler failed" in text
    for needle in (
        secret.decode(),
        peers.alice.key.hex()[2:],
        peers.bob.key.hex()[2:],
        hello[-65:].hex(),
    ):
        assert needle not in text


async def test_other_routes_mount_beside_the_exchange(peers: Peers) -> None:
    async def hello_route(request: web.Request) -> web.Response:
        return web.Response(text="artifact")

    extra = web.Application()
    extra.router.add_get("/x", hello_route)
    server = await TransportServer.create(peers.bob, _everyone, subapps={"/artifacts/": extra})
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{server.url}/artifacts/x") as response,
        ):
            assert await response.text() == "artifact"
    finally:
        await server.shutdown()
