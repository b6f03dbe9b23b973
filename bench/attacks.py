"""Benchmark: every attack of issue 15, and more, against real servers and real exchanges.

Each attack runs on 127.0.0.1 against a real :class:`node.transport.TransportServer` (a
stranger without a key, or an authenticated member that is greedy) or a real group of 2-4
miners exchanging small gradients over the authenticated transport (a member that lies as a
reducer, a verifier, a sender, or a rejoin coordinator). An attack counts as refused or
harmless when:

- transport: the server refused it under a named reason (counted in
  ``manta_transport_refused_total``) or bounded it (closed, evicted), and an honest member's
  message on the same server went through within a second while it ran;
- exchange: no honest member applied anything but the honest aggregate (each piece either
  exactly what an all-honest group computes, or no update), honest replicas agree, no honest
  member was dropped or caught, and the liar was caught where its lie is attributable;
- poisoned parts: the honest members' update is finite, no larger than the robust rule
  guarantees, and (with an honest majority) still points along the honest mean.

``poisoned_updates`` counts honest updates that broke those rules; ``honest_rounds_lost``
counts rounds an honest member lost beyond the one in which a dropped peer timed out (and
honest transport messages that failed or stalled during an attack); ``rss_growth_mib`` is
this process's resident memory after all attacks minus before (the servers live in it).

Usage: python bench/attacks.py
Last line of output: one JSON object.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the liars of the exchange tests

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from eth_account import Account  # noqa: E402
from eth_account.signers.local import LocalAccount  # noqa: E402

from miner.distributed.channel import InMemoryHub  # noqa: E402
from miner.distributed.exchange import ExchangeConfig, GradientExchange  # noqa: E402
from miner.distributed.frames import Status  # noqa: E402
from miner.distributed.rejoin import (  # noqa: E402
    GroupState,
    Membership,
    decode_state,
    encode_state,
    group_payload,
)
from miner.distributed.transport_channel import TransportChannel  # noqa: E402
from node.transport import (  # noqa: E402
    IncomingMessage,
    MetricsRegistry,
    Mode,
    PeerClient,
    PeerRefused,
    TransportConfig,
    TransportError,
    TransportServer,
)
from node.transport.frames import FRAME_VERSION, HEADER, HEADER_BYTES, Kind, MessageHead  # noqa: E402
from node.transport.server import PREFIX, REFUSAL_HEADER  # noqa: E402
from node.transport.sessions import Initiator  # noqa: E402
from node.transport.stream import as_parts, seal_message  # noqa: E402
from tests.unit.miner.distributed.liars import (  # noqa: E402
    Liar,
    clear_part,
    equivocate,
    false_verdicts,
    forge_declaration,
    forge_result,
    mark_rejected,
    two_faced_parts,
)

TASK = 15
MIB = 1 << 20
CONFIG = TransportConfig(
    chunk_bytes=64 * 1024,
    max_chunk_bytes=1 * MIB,
    max_message_bytes=4 * MIB,
    read_timeout_s=1.0,
    message_timeout_s=4.0,
    handshake_timeout_s=2.0,
    keepalive_timeout_s=0.5,
    max_connections=32,
    max_sessions_per_peer=4,
    peer_inflight_bytes=1 * MIB,
)
EXCHANGE = ExchangeConfig(round_timeout_s=1.5, piece_elems=4000)
SIZE = 12_000
MAILBOX_BYTES = 256 * 1024


@dataclass
class Outcome:
    attack: str
    actor: str
    peers: int
    harmless: bool
    detail: str
    poisoned: int = 0
    lost: int = 0


@dataclass
class Stage:
    """One server (bob's) that strangers and members attack, an honest member's client."""

    server: TransportServer
    bob: LocalAccount
    members: list[LocalAccount]
    honest: PeerClient
    stranger: LocalAccount = field(default_factory=Account.create)
    lost: int = 0

    def refused(self, reason: str) -> float:
        return self.server.metrics.refused.value(reason=reason)

    def path(self, client: PeerClient) -> str:
        assert client.session is not None
        return f"{PREFIX}sessions/{client.session.session_id.hex()}/messages"

    async def prompt(self) -> bool:
        """The honest member's message goes through within a second (else a lost round)."""
        start = time.monotonic()
        try:
            ok = bytes(await self.honest.send("keep", os.urandom(50_000))) == b"ok"
        except TransportError:
            ok = False
        ok = ok and time.monotonic() - start < 1.0
        self.lost += not ok
        return ok

    async def client(self, who: LocalAccount) -> PeerClient:
        return await PeerClient.create(who, self.server.url, self.bob.address, TASK, config=CONFIG)


Attack = Callable[[Stage], Awaitable[tuple[bool, str]]]
TRANSPORT: list[tuple[str, str, Attack]] = []


def transport_attack(name: str, actor: str) -> Callable[[Attack], Attack]:
    def register(fn: Attack) -> Attack:
        TRANSPORT.append((name, actor, fn))
        return fn

    return register


async def _raw(stage: Stage) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", stage.server.port)


def _post(path: str, length: int) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode()


async def _http(stage: Stage, path: str, body: bytes) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(stage.server.url + path, data=body) as response,
    ):
        await response.read()
        return response.status, response.headers.get(REFUSAL_HEADER, "")


def _frames(client: PeerClient, data: bytes, msg_type: str = "keep") -> list[bytes]:
    session = client.session
    assert session is not None
    head = MessageHead(msg_type, "", len(data))
    return [
        bytes(b"".join(p))
        for p in seal_message(session.sealer, head, 1, as_parts(data), CONFIG.chunk_bytes)
    ]


def _hello(stage: Stage, who: LocalAccount, to: str, when_s: float, task: int = TASK) -> bytes:
    return Initiator.start(who, to, task, "gradients", Mode.AEAD, when_s).encoded


async def _closed_within(reader: asyncio.StreamReader, timeout_s: float) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            while await reader.read(1024):
                pass
        return True
    except (TimeoutError, ConnectionError):
        return False


async def _during(stage: Stage, attack: Awaitable[object], settle_s: float = 0.3) -> bool:
    """Run ``attack`` in the background while the honest member sends three messages."""
    task = asyncio.ensure_future(attack)
    try:
        await asyncio.sleep(settle_s)
        return all([await stage.prompt() for _ in range(3)])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@transport_attack("replayed handshake", "stranger")
async def replayed_handshake(stage: Stage) -> tuple[bool, str]:
    hello = _hello(stage, stage.members[0], stage.bob.address, time.time())
    first = await _http(stage, PREFIX + "handshake", hello)
    second = await _http(stage, PREFIX + "handshake", hello)
    return first[0] == 200 and second == (401, "replay"), f"second={second}"


@transport_attack("stale handshake", "stranger")
async def stale_handshake(stage: Stage) -> tuple[bool, str]:
    got = await _http(
        stage, PREFIX + "handshake", _hello(stage, stage.members[0], stage.bob.address, 0)
    )
    return got == (401, "stale_timestamp"), str(got)


@transport_attack("forged hello signature", "stranger")
async def forged_hello(stage: Stage) -> tuple[bool, str]:
    hello = bytearray(_hello(stage, stage.members[0], stage.bob.address, time.time()))
    hello[-30] ^= 1
    got = await _http(stage, PREFIX + "handshake", bytes(hello))
    return got == (401, "bad_signature"), str(got)


@transport_attack("hello for another server", "stranger")
async def wrong_recipient(stage: Stage) -> tuple[bool, str]:
    hello = _hello(stage, stage.members[0], Account.create().address, time.time())
    got = await _http(stage, PREFIX + "handshake", hello)
    return got == (401, "wrong_recipient"), str(got)


@transport_attack("handshake by a non-member", "stranger")
async def non_member(stage: Stage) -> tuple[bool, str]:
    got = await _http(
        stage, PREFIX + "handshake", _hello(stage, stage.stranger, stage.bob.address, time.time())
    )
    return got == (403, "not_a_member"), str(got)


@transport_attack("oversized hello", "stranger")
async def big_hello(stage: Stage) -> tuple[bool, str]:
    got = await _http(stage, PREFIX + "handshake", bytes(4096))
    return got == (400, "bad_frame"), str(got)


@transport_attack("replayed message", "stranger")
async def replayed_message(stage: Stage) -> tuple[bool, str]:
    body = b"".join(_frames(stage.honest, os.urandom(100_000)))
    first = await _http(stage, stage.path(stage.honest), body)
    second = await _http(stage, stage.path(stage.honest), body)
    return first[0] == 200 and second == (401, "replay"), f"second={second}"


@transport_attack("forged chunk", "stranger")
async def forged_chunk(stage: Stage) -> tuple[bool, str]:
    frames = [bytearray(f) for f in _frames(stage.honest, os.urandom(200_000))]
    frames[1][HEADER_BYTES + 500] ^= 0x40
    got = await _http(stage, stage.path(stage.honest), b"".join(frames))
    return got == (400, "tampered_frame") and await stage.prompt(), str(got)


@transport_attack("forged message head", "stranger")
async def forged_head(stage: Stage) -> tuple[bool, str]:
    frames = [bytearray(f) for f in _frames(stage.honest, os.urandom(1000))]
    frames[0][HEADER_BYTES + 2] ^= 0x40
    got = await _http(stage, stage.path(stage.honest), b"".join(frames))
    return got == (400, "tampered_frame") and await stage.prompt(), str(got)


@transport_attack("random bytes on a session", "stranger")
async def garbage(stage: Stage) -> tuple[bool, str]:
    got = await _http(stage, stage.path(stage.honest), os.urandom(5000))
    return got[0] in (400, 401, 413) and await stage.prompt(), str(got)


@transport_attack("unknown session", "stranger")
async def unknown_session(stage: Stage) -> tuple[bool, str]:
    got = await _http(stage, f"{PREFIX}sessions/{'ab' * 16}/messages", b"x")
    return got == (401, "unknown_session"), str(got)


@transport_attack("oversized message", "member")
async def oversized(stage: Stage) -> tuple[bool, str]:
    roomy = CONFIG.model_copy(update={"max_message_bytes": 64 * MIB})
    big = await PeerClient.create(
        stage.members[1], stage.server.url, stage.bob.address, TASK, config=roomy
    )
    try:
        await big.send("keep", bytes(5 * MIB))
        return False, "accepted"
    except PeerRefused as exc:
        return (exc.refusal, exc.status) == ("too_large", 413) and await stage.prompt(), exc.refusal
    finally:
        await big.shutdown()


@transport_attack("oversized head frame", "stranger")
async def big_head(stage: Stage) -> tuple[bool, str]:
    header = HEADER.pack(FRAME_VERSION, Kind.HEAD, 0, 1 * MIB, 10**9, 1)
    got = await _http(stage, stage.path(stage.honest), header + bytes(1000))
    return got == (413, "too_large"), str(got)


@transport_attack("truncated message", "stranger")
async def truncated(stage: Stage) -> tuple[bool, str]:
    body = b"".join(_frames(stage.honest, os.urandom(200_000)))
    got = await _http(stage, stage.path(stage.honest), body[:-1000])
    return got == (400, "truncated") and await stage.prompt(), str(got)


@transport_attack("unknown message type", "member")
async def unknown_type(stage: Stage) -> tuple[bool, str]:
    try:
        await stage.honest.send("nobody", b"x")
        return False, "accepted"
    except PeerRefused as exc:
        return exc.refusal == "unknown_type", exc.refusal


@transport_attack("slow head on a session URL", "stranger")
async def slow_head(stage: Stage) -> tuple[bool, str]:
    before = stage.refused("timeout")

    async def trickle() -> None:
        _, writer = await _raw(stage)
        fake = HEADER.pack(FRAME_VERSION, Kind.HEAD, 0, 100, 10**6, 1)
        writer.write(_post(stage.path(stage.honest), 10_000) + fake)
        for _ in range(100):
            writer.write(b"\0")
            await writer.drain()
            await asyncio.sleep(0.1)

    task = asyncio.ensure_future(trickle())
    ok = await _during(stage, asyncio.sleep(0), settle_s=0.3)
    await asyncio.sleep(1.5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return ok and stage.refused("timeout") > before, "honest messages unaffected; cut off"


@transport_attack("slow replay of a captured message", "stranger")
async def slow_replay(stage: Stage) -> tuple[bool, str]:
    captured = _frames(stage.honest, os.urandom(200_000))
    body = b"".join(captured)
    before = stage.refused("preempted")

    async def replay() -> None:
        _, writer = await _raw(stage)
        writer.write(_post(stage.path(stage.honest), len(body)) + body[: len(captured[0]) + 30])
        for i in range(len(captured[0]) + 30, len(body)):
            writer.write(body[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0.05)

    ok = await _during(stage, replay())
    return ok and stage.refused("preempted") > before, "preempted by the next honest message"


@transport_attack("slow request headers", "stranger")
async def slow_headers(stage: Stage) -> tuple[bool, str]:
    reader, writer = await _raw(stage)

    async def trickle() -> None:
        for ch in b"POST /manta/v1/transport/handshake HTTP/1.1\r\nHost: x":
            writer.write(bytes([ch]))
            await writer.drain()
            await asyncio.sleep(0.05)

    task = asyncio.ensure_future(trickle())
    closed = await _closed_within(reader, 2.0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    writer.close()
    return closed and await stage.prompt(), "closed by the keep-alive timeout"


@transport_attack("idle connection flood", "stranger")
async def idle_flood(stage: Stage) -> tuple[bool, str]:
    opened = [await _raw(stage) for _ in range(4 * CONFIG.max_connections)]
    try:
        capped = stage.server.connection_count <= CONFIG.max_connections
        ok = await stage.prompt()
        closed = all([await _closed_within(r, 2.0) for r, _ in opened])
        return capped and ok and closed, f"{len(opened)} opened, cap {CONFIG.max_connections}"
    finally:
        for _, w in opened:
            w.close()


@transport_attack("connection dropped mid-body", "stranger")
async def dropped(stage: Stage) -> tuple[bool, str]:
    before = stage.refused("disconnected")
    body = b"".join(_frames(stage.honest, os.urandom(300_000)))
    _, writer = await _raw(stage)
    writer.write(_post(stage.path(stage.honest), len(body)) + body[:150_000])
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.transport.abort()
    for _ in range(40):
        if stage.refused("disconnected") > before:
            break
        await asyncio.sleep(0.05)
    return stage.refused("disconnected") > before and await stage.prompt(), "counted"


@transport_attack("hello flood", "stranger")
async def hello_flood(stage: Stage) -> tuple[bool, str]:
    """Twice the connection cap of garbage hellos at once: each is refused, or its
    connection is closed for a newcomer (none is a member's message)."""

    async def one() -> str:
        try:
            return str((await _http(stage, PREFIX + "handshake", os.urandom(300)))[1])
        except aiohttp.ClientError:
            return "closed"

    got = await asyncio.gather(*(one() for _ in range(2 * CONFIG.max_connections)))
    refused = sum(r == "bad_signature" or r == "closed" for r in got)
    return refused == len(got) and await stage.prompt(), f"{len(got)} refused or closed"


@transport_attack("session flood", "member")
async def session_flood(stage: Stage) -> tuple[bool, str]:
    flooder = stage.members[1]
    made = [await stage.client(flooder) for _ in range(30)]
    try:
        held = stage.server.sessions_of(flooder.address)
        ok = held == CONFIG.max_sessions_per_peer and await stage.prompt()
        other = await stage.client(stage.members[2])
        ok = ok and bytes(await other.send("keep", b"x")) == b"ok"
        await other.shutdown()
        return ok, f"flooder holds {held}, evicted its own"
    finally:
        await asyncio.gather(*(c.shutdown() for c in made))


@transport_attack("in-flight bytes hog", "member")
async def inflight_hog(stage: Stage) -> tuple[bool, str]:
    hog = await stage.client(stage.members[1])
    frames = _frames(hog, os.urandom(900_000))
    _, writer = await _raw(stage)
    writer.write(_post(stage.path(hog), sum(map(len, frames))) + frames[0] + frames[1])
    await writer.drain()
    await asyncio.sleep(0.2)
    try:
        await hog.send("keep", os.urandom(300_000))
        return False, "accepted"
    except PeerRefused as exc:
        return exc.refusal == "peer_budget" and await stage.prompt(), exc.refusal
    finally:
        writer.transport.abort()
        await hog.shutdown()


async def _stage() -> Stage:
    bob = Account.create()
    members = [Account.create() for _ in range(3)]
    allowed = {m.address for m in members}

    async def membership(task_id: int, address: str) -> bool:
        return task_id == TASK and address in allowed

    server = await TransportServer.create(
        bob, membership, config=CONFIG, registry=MetricsRegistry()
    )

    async def keep(message: IncomingMessage) -> bytes:
        return b"ok"

    server.register("keep", keep)
    honest = await PeerClient.create(members[0], server.url, bob.address, TASK, config=CONFIG)
    return Stage(server, bob, members, honest)


async def run_transport() -> list[Outcome]:
    out = []
    for name, actor, attack in TRANSPORT:
        stage = await _stage()
        try:
            harmless, detail = await asyncio.wait_for(attack(stage), 20.0)
        except Exception as exc:  # an attack that breaks the bench counts as harm
            harmless, detail = False, f"{type(exc).__name__}: {exc}"
        finally:
            await stage.honest.shutdown()
            await stage.server.shutdown()
        out.append(Outcome(name, actor, 0, harmless and stage.lost == 0, detail, lost=stage.lost))
    return out


# --- real groups ---------------------------------------------------------------------------


@dataclass
class Group:
    names: list[str]
    accounts: list[LocalAccount]
    servers: list[TransportServer]
    channels: list[TransportChannel]
    exchanges: list[GradientExchange]

    async def close(self) -> None:
        for ch in self.channels:
            await ch.shutdown()
        for s in self.servers:
            await s.shutdown()


async def _group(
    n: int, liar: int | None = None, lie: Liar | None = None, extra: tuple[str, ...] = ()
) -> Group:
    accounts = sorted((Account.create() for _ in range(n)), key=lambda a: a.address)
    names = [a.address for a in accounts]
    allowed = {*names, *extra}

    async def membership(task_id: int, address: str) -> bool:
        return task_id == TASK and address in allowed

    servers = [await TransportServer.create(a, membership, config=CONFIG) for a in accounts]
    urls = {s.address: s.url for s in servers}
    channels = [
        TransportChannel.attach(
            s,
            a,
            {k: v for k, v in urls.items() if k != a.address},
            TASK,
            config=CONFIG,
            mailbox_peer_bytes=MAILBOX_BYTES,
            connect_timeout_s=3.0,
        )
        for s, a in zip(servers, accounts, strict=True)
    ]
    exchanges = []
    for i, ch in enumerate(channels):
        channel: object = ch
        if i == liar and lie is not None:
            lie.inner = ch  # type: ignore[assignment]
            channel = lie
        exchanges.append(GradientExchange(channel, names, EXCHANGE))  # type: ignore[arg-type]
    return Group(names, accounts, servers, channels, exchanges)


async def _reference(
    names: tuple[str, ...], round_id: int, values: dict[str, np.ndarray]
) -> np.ndarray:
    hub = InMemoryHub()
    group = [GradientExchange(hub.channel(n), names, EXCHANGE) for n in names]
    results = await asyncio.gather(*(ex.allreduce(round_id, values[ex.me]) for ex in group))
    return results[0].mean


async def _liar_rounds(
    n: int, liar: int, lie: Liar, rounds: int, must_catch: bool, deaf_to_first: bool = False
) -> Outcome:
    """``rounds`` rounds with a lying member; every honest update checked exactly."""
    group = await _group(n, liar, lie)
    if deaf_to_first:  # it acts as if the first member's parts never came
        lie.deaf_to = {group.names[0]}
    honest = [i for i in range(n) if i != liar]
    poisoned = lost = 0
    rng = np.random.default_rng(n * 100 + liar)
    try:
        for round_id in range(1, rounds + 1):
            base = rng.normal(size=SIZE)
            values = {
                m: (base + 0.3 * rng.normal(size=SIZE)).astype(np.float32) for m in group.names
            }
            caught = all(group.names[liar] in group.exchanges[i].caught for i in honest)
            live = [i for i in range(n) if not (caught and i == liar)]
            reference = await _reference(group.exchanges[honest[0]].alive, round_id, values)
            results = await asyncio.gather(
                *(group.exchanges[i].allreduce(round_id, values[group.names[i]]) for i in live)
            )
            by = dict(zip(live, results, strict=True))
            first = by[honest[0]].mean
            for i in honest:
                r = by[i]
                applied = np.asarray(r.counts) > 0
                wrong = not np.isfinite(r.mean).all() or not np.array_equal(
                    r.mean[applied], reference[applied]
                )
                poisoned += wrong
                if caught and not applied.all():
                    lost += 1  # after the liar is gone, every honest piece must go through
                if {group.names[j] for j in honest} & set(r.report.dropped):
                    lost += 1
                if not np.array_equal(r.mean, first):
                    lost += 1
        caught_all = all(group.names[liar] in group.exchanges[i].caught for i in honest)
        framed = any(group.exchanges[i].caught - {group.names[liar]} for i in honest)
        ok = poisoned == 0 and lost == 0 and not framed and (caught_all or not must_catch)
        detail = f"caught by all={caught_all}"
        return Outcome("", "member", n, ok, detail, poisoned, lost)
    finally:
        await group.close()


async def _poisoned_part(
    n: int, poison: Callable[[np.ndarray], np.ndarray], direction: bool
) -> Outcome:
    """The attacker sends ``poison(its gradient)`` as its part for three rounds."""
    group = await _group(n)
    poisoned = 0
    rng = np.random.default_rng(n)
    try:
        for round_id in range(1, 4):
            base = rng.normal(size=SIZE).astype(np.float32)
            values = [(base + 0.3 * rng.normal(size=SIZE)).astype(np.float32) for _ in range(n)]
            honest_mean = np.mean(values[:-1], axis=0)
            values[-1] = poison(values[-1]).astype(np.float32)
            results = await asyncio.gather(
                *(ex.allreduce(round_id, v) for ex, v in zip(group.exchanges, values, strict=True))
            )
            rms = lambda x: float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))  # noqa: E731
            limit = (1 + EXCHANGE.robust.bound_factor) / 2 * max(rms(v) for v in values[:-1])
            for r in results[:-1]:
                bad = not np.isfinite(r.mean).all() or rms(r.mean) > limit * 1.001
                if direction:
                    bad |= float(np.dot(r.mean, honest_mean)) <= 0
                poisoned += bad
        detail = "bounded" if direction else "bounded (no majority to tell direction)"
        return Outcome("", "member", n, poisoned == 0, detail, poisoned)
    finally:
        await group.close()


async def _mailbox_flood(far: bool) -> Outcome:
    group = await _group(3)
    try:
        rng = np.random.default_rng(9)
        values = [rng.normal(size=SIZE).astype(np.float32) for _ in range(3)]
        await asyncio.gather(
            *(ex.allreduce(1, v) for ex, v in zip(group.exchanges, values, strict=True))
        )
        attacker, victim = group.channels[2], group.channels[0]
        refused = 0
        for i in range(200 if not far else 50):
            round_id = 10**6 + i if far else 3
            try:
                await attacker.send(victim.me, round_id, f"junk.{i}", [bytes(32 * 1024)])
            except PeerRefused:
                refused += 1
        held = victim.mailbox.held.get(attacker.me, 0)
        ok = held <= MAILBOX_BYTES and refused > 0
        return Outcome(
            "", "member", 3, ok, f"held {held} B <= {MAILBOX_BYTES} B, {refused} refused"
        )
    finally:
        await group.close()


async def _rejoin_spoof(n: int, liar_sends: str) -> Outcome:
    """A member names itself coordinator and sends weights of its own to a rejoining one."""
    group = await _group(n)
    memberships = [
        Membership.attach(ch, ex, s.url)
        for ch, ex, s in zip(group.channels, group.exchanges, group.servers, strict=True)
    ]
    try:

        def state(weight: float) -> bytes:
            payload = {
                "format": 1,
                "config_hash": "c",
                "global_step": 8,
                "model": {"w": torch.full((8,), weight)},
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
            }
            return encode_state(group_payload(payload, 8))

        joiner, liar = n - 1, 0
        others = [i for i in range(n) if i != joiner]
        for i in others:
            group.exchanges[i].alive = tuple(group.names[j] for j in others)
        task = asyncio.create_task(memberships[joiner].rejoin(7, timeout_s=2.5))
        for _ in range(300):
            if all(group.names[joiner] in group.exchanges[i]._joins for i in others):
                break
            await asyncio.sleep(0.01)
        alive = tuple(group.names)
        for i in others:
            if i == liar and liar_sends == "malformed":
                forged = GroupState(8, alive, state(1e30), (group.names[liar],))
                await group.channels[i].request(group.names[joiner], "state", forged.encode(), 8)
            weight = 1e30 if i == liar else 1.0
            await memberships[i].offer_state([group.names[joiner]], 8, alive, state(weight))
        got = await task
        if got is None:  # no majority: nothing taken, the joiner resumes alone, unpoisoned
            return Outcome("", "member", n, n <= 3, "no majority: nothing taken")
        w = decode_state(got.state)["model"]["w"]
        return Outcome(
            "", "member", n, bool(torch.all(w == 1.0)), "outvoted", int(not torch.all(w == 1.0))
        )
    finally:
        for m in memberships:
            await m.shutdown()
        await group.close()


def _huge(x: np.ndarray) -> np.ndarray:
    return np.full_like(x, 1e30)


def _lie(rewrite: object = None) -> Liar:
    return Liar(None, rewrite)  # type: ignore[arg-type]  # its channel comes with the group


EXCHANGE_ATTACKS: list[tuple[str, Callable[[], Awaitable[Outcome]]]] = [
    ("NaN part, 4 peers", lambda: _poisoned_part(4, lambda x: x * np.nan, True)),
    ("1e30 part, 4 peers", lambda: _poisoned_part(4, lambda x: x * 1e30, True)),
    ("sign-flipped x3 part, 4 peers", lambda: _poisoned_part(4, lambda x: -3 * x, True)),
    ("NaN part, 2 peers", lambda: _poisoned_part(2, lambda x: x * np.nan, False)),
    ("1e30 part, 2 peers", lambda: _poisoned_part(2, _huge, False)),
    ("sign-flipped x4 part, 2 peers", lambda: _poisoned_part(2, lambda x: -4 * x, False)),
    (
        "reducer returns NaN, 3 peers",
        lambda: _liar_rounds(3, 2, _lie(forge_result(lambda x: x * np.nan)), 3, True),
    ),
    (
        "reducer returns 1e30, 2 peers",
        lambda: _liar_rounds(2, 1, _lie(forge_result(_huge)), 4, True),
    ),
    (
        "reducer returns a biased result, 4 peers",
        lambda: _liar_rounds(4, 3, _lie(forge_result(lambda x: x + 1e-3)), 3, True),
    ),
    (
        "reducer clears a contributor bit, 3 peers",
        lambda: _liar_rounds(3, 2, _lie(forge_declaration(clear_part(0))), 3, True),
    ),
    (
        "reducer marks an honest part rejected, 4 peers",
        lambda: _liar_rounds(4, 3, _lie(forge_declaration(mark_rejected(0))), 3, True),
    ),
    ("reducer leaves a part out silently, 3 peers", lambda: _silent_omission()),
    ("owner equivocates its result, 4 peers", lambda: _equivocation()),
    (
        "verifier condemns every piece, 4 peers",
        lambda: _liar_rounds(4, 1, _lie(false_verdicts()), 3, True),
    ),
    (
        "verifier frames owners (omitted), 3 peers",
        lambda: _liar_rounds(3, 0, _lie(false_verdicts(Status.OMITTED)), 3, True),
    ),
    (
        "sender shows each reducer another part, 4 peers",
        lambda: _liar_rounds(4, 2, _lie(two_faced_parts(lambda x: 3 * x)), 3, True),
    ),
    ("mailbox flood, far-future rounds", lambda: _mailbox_flood(True)),
    ("mailbox flood, within the window", lambda: _mailbox_flood(False)),
    ("rejoin: coordinator sends its own weights, 4 members", lambda: _rejoin_spoof(4, "own")),
    ("rejoin: coordinator spoof, no majority, 3 members", lambda: _rejoin_spoof(3, "own")),
    ("rejoin: malformed state, then own weights", lambda: _rejoin_spoof(4, "malformed")),
    ("join and gradients from outside the group", lambda: _outsider()),
]


async def _silent_omission() -> Outcome:
    """An owner that acts as if one honest part never came: indistinguishable from a late
    part, so nobody is caught. Harmless means: what honest members apply is the verified
    aggregate of the parts the owner declared (the victim's part missing from the owner's
    pieces, as when late: the liar's own weight there bounded by the robust rule), and the
    victim stays credited (the verifier holds its part) and is never dropped."""
    group = await _group(3, 2, _lie())
    liar, victim = group.exchanges[2].channel, group.names[0]
    assert isinstance(liar, Liar)
    liar.deaf_to = {victim}
    poisoned = lost = 0
    try:
        for round_id in (1, 2):
            rng = np.random.default_rng(round_id)
            values = {m: rng.normal(size=SIZE).astype(np.float32) for m in group.names}
            hub = InMemoryHub()
            ref = [
                GradientExchange(
                    Liar(hub.channel(m), None, {victim}) if i == 2 else hub.channel(m),  # type: ignore[arg-type]
                    tuple(group.names),
                    EXCHANGE,
                )
                for i, m in enumerate(group.names)
            ]
            expect = (await asyncio.gather(*(ex.allreduce(round_id, values[ex.me]) for ex in ref)))[
                0
            ]
            results = await asyncio.gather(
                *(ex.allreduce(round_id, values[ex.me]) for ex in group.exchanges)
            )
            for r in results[:2]:
                poisoned += not np.array_equal(r.mean, expect.mean)
                lost += victim not in r.report.contributed or bool(r.report.dropped)
        return Outcome(
            "", "member", 3, poisoned == lost == 0, "victim credited, never dropped", poisoned, lost
        )
    finally:
        await group.close()


async def _outsider() -> Outcome:
    """An address the transport lets in (another task's member, say) but the group does
    not: its join and its gradients are refused."""
    outsider = Account.create()
    group = await _group(2, extra=(outsider.address,))
    server = await TransportServer.create(outsider, _anyone, config=CONFIG)
    channel = TransportChannel.attach(
        server, outsider, {group.names[0]: group.servers[0].url}, TASK, config=CONFIG
    )
    membership = Membership.attach(group.channels[0], group.exchanges[0], group.servers[0].url)
    try:
        request = b'{"url": "http://127.0.0.1:1", "step": 1}'
        join = bytes(await channel.request(group.names[0], "join", [request]))
        try:
            await channel.send(group.names[0], 1, "part.0", [bytes(100)])
            sent = "accepted"
        except PeerRefused as exc:
            sent = exc.refusal
        kept_out = outsider.address not in group.channels[0].peer_urls
        ok = join == b"refused" and sent == "not_a_member" and kept_out
        return Outcome("", "stranger", 2, ok, f"join={join.decode()} gradients={sent}")
    finally:
        await membership.shutdown()
        await channel.shutdown()
        await server.shutdown()
        await group.close()


async def _anyone(task_id: int, address: str) -> bool:
    return True


async def _equivocation() -> Outcome:
    """Equivocation reaches one victim; it applies none of it (a split for that piece)."""
    group = await _group(4, 3, Liar(None, None))
    victim = group.names[0]
    lie = group.exchanges[3].channel
    assert isinstance(lie, Liar)
    lie.rewrite = equivocate([victim], _huge)
    try:
        rng = np.random.default_rng(4)
        values = {m: rng.normal(size=SIZE).astype(np.float32) for m in group.names}
        reference = await _reference(tuple(group.names), 1, values)
        results = await asyncio.gather(*(ex.allreduce(1, values[ex.me]) for ex in group.exchanges))
        poisoned = 0
        for r in results[:3]:
            applied = np.asarray(r.counts) > 0
            poisoned += not np.isfinite(r.mean).all() or not np.array_equal(
                r.mean[applied], reference[applied]
            )
        return Outcome("", "member", 4, poisoned == 0, "victim applies nothing forged", poisoned)
    finally:
        await group.close()


async def run_exchange() -> list[Outcome]:
    out = []
    for name, make in EXCHANGE_ATTACKS:
        try:
            outcome = await asyncio.wait_for(make(), 60.0)
        except Exception as exc:  # an attack that breaks the bench counts as harm
            outcome = Outcome("", "member", 0, False, f"{type(exc).__name__}: {exc}")
        outcome.attack = name
        out.append(outcome)
    return out


async def _warm_up() -> None:
    stage = await _stage()
    await stage.prompt()
    await stage.honest.shutdown()
    await stage.server.shutdown()
    group = await _group(3)
    values = np.ones(SIZE, np.float32)
    await asyncio.gather(*(ex.allreduce(1, values) for ex in group.exchanges))
    await group.close()


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


async def main() -> None:
    logging.basicConfig(level=logging.CRITICAL)  # the attacks are meant to be refused
    torch.set_num_threads(1)
    await _warm_up()  # one-time allocations (imports, first servers) are not growth
    gc.collect()
    before = _rss_mib()
    started = time.monotonic()
    outcomes = await run_transport() + await run_exchange()
    gc.collect()
    growth = _rss_mib() - before
    width = max(len(o.attack) for o in outcomes)
    print(f"{'attack':<{width}}  actor     peers  outcome    detail")
    for o in outcomes:
        verdict = "harmless" if o.harmless else "HARM"
        peers = str(o.peers) if o.peers else "-"
        print(f"{o.attack:<{width}}  {o.actor:<8}  {peers:>5}  {verdict:<9}  {o.detail}")
    summary = {
        "attacks_tried": len(outcomes),
        "refused_or_harmless": sum(o.harmless for o in outcomes),
        "poisoned_updates": sum(o.poisoned for o in outcomes),
        "honest_rounds_lost": sum(o.lost for o in outcomes),
        "rss_growth_mib": round(growth, 1),
        "wall_s": round(time.monotonic() - started, 1),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
