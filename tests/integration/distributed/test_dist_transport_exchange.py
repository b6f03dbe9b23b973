"""The all-reduce over the real transport: signed handshakes, AEAD or GMAC frames."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from eth_account import Account

from miner.distributed.exchange import ExchangeConfig, GradientExchange
from miner.distributed.robust import RobustConfig

transport = pytest.importorskip("node.transport")
channel_mod = pytest.importorskip("miner.distributed.transport_channel")

TASK_ID = 7


@pytest.mark.parametrize("mode", ["AEAD", "AUTH"])
async def test_allreduce_over_transport(mode: str) -> None:
    accounts = [Account.create() for _ in range(3)]
    group = {a.address for a in accounts}

    async def membership(task_id: int, address: str) -> bool:
        return task_id == TASK_ID and address in group

    servers = [await transport.TransportServer.create(a, membership) for a in accounts]
    urls = {s.address: s.url for s in servers}
    channels = [
        channel_mod.TransportChannel.attach(
            s,
            a,
            {k: v for k, v in urls.items() if k != a.address},
            TASK_ID,
            mode=transport.Mode[mode],
        )
        for s, a in zip(servers, accounts, strict=True)
    ]
    names = sorted(group)
    config = ExchangeConfig(round_timeout_s=20.0, robust=RobustConfig(clip="none"))
    exchanges = [GradientExchange(ch, names, config) for ch in channels]
    rng = np.random.default_rng(0)
    try:
        for round_id in (1, 2):
            values = [rng.normal(size=50_001).astype(np.float32) for _ in names]
            results = await asyncio.gather(
                *(ex.allreduce(round_id, v) for ex, v in zip(exchanges, values, strict=True))
            )
            for r in results:
                np.testing.assert_allclose(r.mean, np.mean(values, axis=0), rtol=1e-5, atol=1e-6)
                assert r.report.contributed == tuple(names) and not r.report.dropped
    finally:
        for ch in channels:
            await ch.shutdown()
        for s in servers:
            await s.shutdown()


async def test_outsider_cannot_reach_the_group() -> None:
    insider, outsider = Account.create(), Account.create()

    async def membership(task_id: int, address: str) -> bool:
        return address == insider.address

    server = await transport.TransportServer.create(insider, membership)
    channel = channel_mod.TransportChannel.attach(
        await transport.TransportServer.create(outsider, membership),
        outsider,
        {insider.address: server.url},
        TASK_ID,
        connect_timeout_s=0.5,
    )
    try:
        with pytest.raises(transport.TransportError):
            await channel.send(insider.address, 1, "part", [b"x"])
    finally:
        await channel.shutdown()
        await channel.server.shutdown()
        await server.shutdown()
