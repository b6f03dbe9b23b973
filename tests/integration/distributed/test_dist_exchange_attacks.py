"""A dishonest member of a real group (servers, sessions, AEAD on 127.0.0.1): lying as a
reducer, poisoning its parts, flooding a peer's mailbox. Nothing it does reaches an honest
member's update, it is caught where it lies, and the mailbox never holds more than its
budget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pytest
from eth_account import Account

from miner.distributed.channel import InMemoryHub
from miner.distributed.exchange import ExchangeConfig, GradientExchange, RoundResult
from miner.distributed.transport_channel import TransportChannel
from node.transport import PeerRefused, TransportServer
from tests.unit.miner.distributed.liars import Liar, forge_result

TASK_ID = 21
CONFIG = ExchangeConfig(round_timeout_s=3.0)
SIZE = 20_000
BUDGET = 512 * 1024
pytestmark = pytest.mark.timeout(90)


@dataclass
class Group:
    names: list[str]
    servers: list[TransportServer]
    channels: list[TransportChannel]

    def exchanges(self, liar: int | None = None, lie: Liar | None = None) -> list[GradientExchange]:
        out = []
        for i, ch in enumerate(self.channels):
            channel: object = ch
            if i == liar and lie is not None:
                lie.inner = ch  # type: ignore[assignment]
                channel = lie
            out.append(GradientExchange(channel, self.names, CONFIG))  # type: ignore[arg-type]
        return out


async def _group(n: int) -> Group:
    accounts = sorted((Account.create() for _ in range(n)), key=lambda a: a.address)
    names = [a.address for a in accounts]

    async def membership(task_id: int, address: str) -> bool:
        return task_id == TASK_ID and address in names

    servers = [await TransportServer.create(a, membership) for a in accounts]
    urls = {s.address: s.url for s in servers}
    channels = [
        TransportChannel.attach(
            s,
            a,
            {k: v for k, v in urls.items() if k != a.address},
            TASK_ID,
            mailbox_peer_bytes=BUDGET,
            rounds_ahead=2,
        )
        for s, a in zip(servers, accounts, strict=True)
    ]
    return Group(names, servers, channels)


@pytest.fixture
async def three() -> AsyncIterator[Group]:
    group = await _group(3)
    yield group
    for ch in group.channels:
        await ch.shutdown()
    for s in group.servers:
        await s.shutdown()


async def _round(
    exchanges: list[GradientExchange], round_id: int, values: list[np.ndarray], skip: set[int]
) -> dict[int, RoundResult]:
    live = [i for i in range(len(exchanges)) if i not in skip]
    results = await asyncio.gather(*(exchanges[i].allreduce(round_id, values[i]) for i in live))
    return dict(zip(live, results, strict=True))


async def _reference(
    names: tuple[str, ...], round_id: int, values: dict[str, np.ndarray]
) -> np.ndarray:
    """The same round among honest ``names`` over the in-memory hub."""
    hub = InMemoryHub()
    group = [GradientExchange(hub.channel(n), names, CONFIG) for n in names]
    results = await asyncio.gather(*(ex.allreduce(round_id, values[ex.me]) for ex in group))
    return results[0].mean


async def test_lying_reducer_over_the_real_transport_is_caught_and_applied_nowhere(
    three: Group,
) -> None:
    liar = 2
    exchanges = three.exchanges(liar, Liar(None, forge_result(lambda x: np.full_like(x, 1e30))))  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    for round_id in range(1, 4):
        values = [rng.normal(size=SIZE).astype(np.float32) for _ in three.names]
        skip = {liar} if three.names[liar] in exchanges[0].caught else set()
        reference = await _reference(
            exchanges[0].alive, round_id, dict(zip(three.names, values, strict=True))
        )
        results = await _round(exchanges, round_id, values, skip)
        for i in (0, 1):
            r = results[i]
            assert np.isfinite(r.mean).all() and np.abs(r.mean).max() < 10
            applied = np.asarray(r.counts) > 0
            np.testing.assert_array_equal(r.mean[applied], reference[applied])
            assert not {three.names[0], three.names[1]} & set(r.report.dropped)
        np.testing.assert_array_equal(results[0].mean, results[1].mean)
    for i in (0, 1):
        assert exchanges[i].caught == {three.names[liar]}
        assert any(e.accused == three.names[liar] for e in exchanges[i].evidence)


async def test_mailbox_flood_is_refused_past_the_window_and_the_budget(three: Group) -> None:
    exchanges = three.exchanges()
    rng = np.random.default_rng(1)
    values = [rng.normal(size=SIZE).astype(np.float32) for _ in three.names]
    await _round(exchanges, 1, values, set())  # round 1 released: the window is (1, 3]
    attacker, victim = three.channels[2], three.channels[0]
    with pytest.raises(PeerRefused) as info:
        await attacker.send(victim.me, 1_000_000, "part.0", [b"x" * 1000])
    assert (info.value.refusal, info.value.status) == ("round_window", 409)
    with pytest.raises(PeerRefused) as info:
        await attacker.send(victim.me, 1, "part.0", [b"x" * 1000])  # a finished round
    assert info.value.refusal == "round_window"
    refused = 0
    for i in range(40):  # 40 x 64 KiB in the window, against a 512 KiB budget
        try:
            await attacker.send(victim.me, 3, f"junk.{i}", [bytes(64 * 1024)])
        except PeerRefused as exc:
            assert (exc.refusal, exc.status) == ("peer_budget", 429)
            refused += 1
    assert refused >= 30
    assert victim.mailbox.held[attacker.me] <= BUDGET
    server = three.servers[0]
    assert server.metrics.refused.value(reason="round_window") == 2
    assert server.metrics.refused.value(reason="peer_budget") == refused
    # the flooder stops; the honest members drop it together and go on, and its junk goes
    # when its round is released
    for round_id in (2, 3):
        values = [rng.normal(size=SIZE).astype(np.float32) for _ in three.names]
        results = await _round(exchanges, round_id, values, {2})
        for i in (0, 1):
            assert np.isfinite(results[i].mean).all()
            assert set(results[i].report.dropped) <= {attacker.me}
        np.testing.assert_array_equal(results[0].mean, results[1].mean)
    assert exchanges[0].alive == exchanges[1].alive == (victim.me, three.channels[1].me)
    assert attacker.me not in victim.mailbox.held


async def test_two_peers_over_the_transport_bound_a_huge_part() -> None:
    group = await _group(2)
    try:
        exchanges = group.exchanges()
        rng = np.random.default_rng(2)
        honest = rng.normal(size=SIZE).astype(np.float32)
        results = await _round(exchanges, 1, [honest, np.full(SIZE, 1e30, np.float32)], set())
        rms = float(np.sqrt(np.mean(np.square(honest, dtype=np.float64))))
        got = float(np.sqrt(np.mean(np.square(results[0].mean, dtype=np.float64))))
        assert got <= 2.5 * rms * 1.001
        np.testing.assert_array_equal(results[0].mean, results[1].mean)
    finally:
        for ch in group.channels:
            await ch.shutdown()
        for s in group.servers:
            await s.shutdown()
