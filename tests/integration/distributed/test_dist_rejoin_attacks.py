"""A rejoining member takes the state a majority of the training members hold, not what a
message naming itself coordinator sends (real transport on 127.0.0.1)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import torch
from eth_account import Account
from eth_account.signers.local import LocalAccount

from miner.distributed.exchange import ExchangeConfig, GradientExchange
from miner.distributed.rejoin import (
    GroupState,
    Membership,
    decode_state,
    encode_state,
    group_payload,
    state_digest,
)
from miner.distributed.transport_channel import TransportChannel
from node.transport import TransportServer

TASK_ID = 12
pytestmark = pytest.mark.timeout(60)


@dataclass
class Member:
    account: LocalAccount
    server: TransportServer
    channel: TransportChannel
    exchange: GradientExchange
    membership: Membership

    @property
    def me(self) -> str:
        return str(self.account.address)


def _payload(weight: float, step: int = 7) -> dict[str, object]:
    return {
        "format": 1,
        "config_hash": "tiny",
        "global_step": step,
        "model": {"w": torch.full((4, 3), weight)},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
    }


async def _members(n: int, allowed_extra: list[str]) -> list[Member]:
    accounts = sorted((Account.create() for _ in range(n)), key=lambda a: a.address)
    group = [a.address for a in accounts]
    allowed = {*group, *allowed_extra}

    async def membership(task_id: int, address: str) -> bool:
        return task_id == TASK_ID and address in allowed

    servers = [await TransportServer.create(a, membership) for a in accounts]
    urls = {a.address: s.url for a, s in zip(accounts, servers, strict=True)}
    out = []
    for account, server in zip(accounts, servers, strict=True):
        peers = {p: u for p, u in urls.items() if p != account.address}
        channel = TransportChannel.attach(server, account, peers, TASK_ID, connect_timeout_s=3.0)
        exchange = GradientExchange(channel, group, ExchangeConfig(round_timeout_s=2.0))
        out.append(
            Member(
                account, server, channel, exchange, Membership.attach(channel, exchange, server.url)
            )
        )
    return out


@pytest.fixture
async def four() -> AsyncIterator[list[Member]]:
    made = await _members(4, [])
    yield made
    for m in made:
        await m.membership.shutdown()
        await m.channel.shutdown()
        await m.server.shutdown()


async def _rejoin_with(members: list[Member], joiner: Member, states: dict[str, bytes]) -> object:
    """``joiner`` asks to come back; once every other member filed its join, each sends the
    state it is given (round 8, everyone live)."""
    others = [m for m in members if m is not joiner]
    for m in others:
        m.exchange.alive = tuple(p.me for p in others)
    task = asyncio.create_task(joiner.membership.rejoin(7, timeout_s=3.0))
    for _ in range(200):
        if all(joiner.me in m.exchange._joins for m in others):
            break
        await asyncio.sleep(0.01)
    alive = tuple(sorted(m.me for m in members))
    for m in others:
        await m.membership.offer_state([joiner.me], 8, alive, states[m.me])
    return await task


async def test_coordinator_sending_its_own_weights_is_outvoted(four: list[Member]) -> None:
    honest = encode_state(group_payload(_payload(1.0), 8))
    poisoned = encode_state(group_payload(_payload(1e30), 8))
    coordinator, joiner = four[0], four[3]
    states = {m.me: honest for m in four}
    states[coordinator.me] = poisoned
    got = await _rejoin_with(four, joiner, states)
    assert got is not None
    payload = decode_state(got.state)  # type: ignore[attr-defined]
    assert torch.equal(payload["model"]["w"], torch.full((4, 3), 1.0))
    assert state_digest(payload) == state_digest(decode_state(honest))
    assert joiner.exchange.alive == tuple(sorted(m.me for m in four))


async def test_without_a_majority_nothing_is_taken() -> None:
    three = await _members(3, [])
    try:
        honest = encode_state(group_payload(_payload(1.0), 8))
        lie = encode_state(group_payload(_payload(-1.0), 8))
        states = {three[0].me: lie, three[1].me: honest}
        assert await _rejoin_with(three, three[2], states) is None
        assert three[2].exchange.alive == tuple(sorted(m.me for m in three))  # unchanged
    finally:
        for m in three:
            await m.membership.shutdown()
            await m.channel.shutdown()
            await m.server.shutdown()


async def test_states_from_outside_the_group_or_that_do_not_fit_are_refused() -> None:
    outsider = Account.create()  # passes the transport's membership, not the group
    members = await _members(4, [outsider.address])
    joiner = members[3]
    server = await TransportServer.create(outsider, _anyone)
    stranger = TransportChannel.attach(server, outsider, {joiner.me: joiner.server.url}, TASK_ID)
    try:
        honest = encode_state(group_payload(_payload(1.0), 8))
        alive = tuple(sorted(m.me for m in members))
        forged = [
            (stranger, GroupState(8, (*alive, outsider.address), honest, (joiner.me,)), 8),
            (members[0].channel, GroupState(8, alive, honest, (joiner.me, members[0].me)), 8),
            (members[1].channel, GroupState(8, alive, honest, (joiner.me,)), 9),  # round
            (members[2].channel, GroupState(8, alive, honest, ()), 8),  # not for the joiner
        ]

        async def attack() -> None:
            while joiner.membership._ballot is None:
                await asyncio.sleep(0.01)
            for channel, state, round_id in forged:
                reply = await channel.request(joiner.me, "state", state.encode(), round_id)
                assert bytes(reply) == b"refused"

        states = {m.me: honest for m in members}
        got, _ = await asyncio.gather(_rejoin_with(members, joiner, states), attack())
        assert got is not None and joiner.membership.refused == len(forged)
    finally:
        await stranger.shutdown()
        await server.shutdown()
        for m in members:
            await m.membership.shutdown()
            await m.channel.shutdown()
            await m.server.shutdown()


async def _anyone(task_id: int, address: str) -> bool:
    return True
