"""A member killed mid-training rejoins over the real transport: new URL, join, admission by
the coordinator, state transfer from every member (the joiner takes what the majority
holds); afterwards all three train in lockstep again."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import torch
from eth_account import Account
from eth_account.signers.local import LocalAccount

from miner.distributed.exchange import ExchangeConfig, GradientExchange
from miner.distributed.rejoin import (
    REFUSED,
    JoinRequest,
    Membership,
    decode_state,
    encode_state,
    group_payload,
    merge_payload,
)
from miner.distributed.robust import RobustConfig
from miner.distributed.transport_channel import TransportChannel
from node.transport import TransportServer

TASK_ID = 11
CONFIG = ExchangeConfig(round_timeout_s=4.0, robust=RobustConfig(clip="none"))
JOINED_ROUNDS = 3


@dataclass
class Peer:
    """A tiny 'trainer': a linear model with SGD momentum, one update per round."""

    account: LocalAccount
    server: TransportServer
    channel: TransportChannel
    exchange: GradientExchange
    membership: Membership
    model: torch.nn.Linear = field(default_factory=lambda: _model())
    step: int = 0

    def __post_init__(self) -> None:
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)

    async def train_round(self) -> None:
        gen = torch.Generator().manual_seed(1000 * self.step + int(self.account.address, 16) % 97)
        x = torch.randn(8, 4, generator=gen)
        self.opt.zero_grad()
        self.model(x).square().mean().backward()
        grads = torch.cat([p.grad.reshape(-1) for p in self.model.parameters()])  # type: ignore[union-attr]
        result = await self.exchange.allreduce(self.step, grads.numpy())
        mean = torch.from_numpy(result.mean.copy())
        for p in self.model.parameters():
            p.grad.copy_(mean[: p.numel()].reshape(p.shape))  # type: ignore[union-attr]
            mean = mean[p.numel() :]
        self.opt.step()
        self.step += 1
        report = result.report
        if report.admitted:  # every live member offers its state; the joiner counts votes
            state = encode_state(group_payload(self.payload(), self.step))
            await self.membership.offer_state(
                report.admitted, self.step, self.exchange.alive, state
            )

    def payload(self) -> dict[str, Any]:
        return {
            "format": 1,
            "config_hash": "tiny",
            "global_step": self.step,
            "model": {k: v.clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.opt.state_dict(),
            "data_epoch": 0,
            "data_index": self.step,
        }

    def load(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"])
        self.opt.load_state_dict(payload["optimizer"])
        self.step = int(payload["global_step"])


def _model() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3)


async def _peer(
    account: LocalAccount, group: list[str], urls: dict[str, str], membership: Any
) -> Peer:
    server = await TransportServer.create(account, membership)
    peers = {a: u for a, u in urls.items() if a != account.address}
    channel = TransportChannel.attach(server, account, peers, TASK_ID, connect_timeout_s=3.0)
    exchange = GradientExchange(channel, group, CONFIG)
    return Peer(
        account, server, channel, exchange, Membership.attach(channel, exchange, server.url)
    )


async def _close(peer: Peer) -> None:
    await peer.membership.shutdown()
    await peer.channel.shutdown()
    await peer.server.shutdown()


async def test_killed_member_rejoins_with_the_groups_state() -> None:
    accounts = sorted((Account.create() for _ in range(3)), key=lambda a: a.address)
    outsider = Account.create()
    group = [a.address for a in accounts]
    allowed = {*group, outsider.address}  # the outsider passes the transport, not the group

    async def membership(task_id: int, address: str) -> bool:
        return task_id == TASK_ID and address in allowed

    placeholder = {a: "http://127.0.0.1:1" for a in group}
    peers = [await _peer(a, group, placeholder, membership) for a in accounts]
    for p in peers:
        for q in peers:
            if q is not p:
                await p.channel.set_peer_url(q.exchange.me, q.server.url)
    a, b, c = peers
    restarted: Peer | None = None
    try:
        for _ in range(3):
            await asyncio.gather(*(p.train_round() for p in peers))
        checkpoint = c.payload()  # c's last checkpoint: step 3
        old_url = c.server.url
        await _close(c)  # killed: its server and sessions are gone
        await asyncio.gather(a.train_round(), b.train_round())  # round 3 drops c
        assert a.exchange.alive == b.exchange.alive == (a.exchange.me, b.exchange.me)
        for _ in range(2):
            await asyncio.gather(a.train_round(), b.train_round())

        # c restarts on a new port from its step-3 checkpoint
        urls = {p.exchange.me: p.server.url for p in (a, b)}
        restarted = await _peer(accounts[2], group, urls, membership)
        restarted.load(checkpoint)
        assert restarted.server.url != old_url

        async def survivors() -> None:
            for _ in range(500):  # a training step takes a while: give the join time
                await asyncio.gather(a.train_round(), b.train_round())
                await asyncio.sleep(0.02)
                back = [r for r in a.exchange.reports[4:] if group[2] in r.peers]  # after round 3
                if len(back) >= JOINED_ROUNDS:
                    return

        async def rejoiner() -> None:
            assert restarted is not None
            state = await restarted.membership.rejoin(restarted.step, timeout_s=15.0)
            assert state is not None and state.alive == tuple(group)
            own = restarted.payload()
            restarted.load(merge_payload(own, decode_state(state.state), batches_per_epoch=100))
            assert restarted.step == state.round_id > checkpoint["global_step"]
            for _ in range(JOINED_ROUNDS):
                await restarted.train_round()

        await asyncio.wait_for(asyncio.gather(survivors(), rejoiner()), 120.0)

        everyone = (a, b, restarted)
        assert a.step == b.step == restarted.step
        for r in (p.exchange.reports[-JOINED_ROUNDS:] for p in everyone):
            assert all(x.contributed == tuple(group) for x in r)
        for p in (b, restarted):
            for x, y in zip(a.model.parameters(), p.model.parameters(), strict=True):
                assert torch.equal(x, y)
            for x, y in zip(a.opt.state.values(), p.opt.state.values(), strict=True):
                assert torch.equal(x["momentum_buffer"], y["momentum_buffer"])
        admitted = [r for r in a.exchange.reports if r.admitted]
        assert [r.admitted for r in admitted] == [(group[2],)]

        # a join from an authenticated address outside the group changes nothing
        stranger = TransportChannel.attach(
            await TransportServer.create(outsider, membership),
            outsider,
            {group[0]: a.server.url},
            TASK_ID,
        )
        try:
            reply = await stranger.request(
                group[0], "join", [JoinRequest("http://127.0.0.1:2", 0).encode()]
            )
            assert bytes(reply).decode() == REFUSED and a.membership.refused == 1
            assert outsider.address not in a.channel.peer_urls
            await asyncio.gather(*(p.train_round() for p in everyone))
            assert all(p.exchange.reports[-1].peers == tuple(group) for p in everyone)
            assert not any(p.exchange.reports[-1].admitted for p in everyone)
        finally:
            await stranger.shutdown()
            await stranger.server.shutdown()
    finally:
        for p in (a, b, *([restarted] if restarted else [])):
            await _close(p)
