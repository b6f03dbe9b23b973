"""The all-reduce over real sockets (the plain TCP channel), 3 peers in one event loop."""

from __future__ import annotations

import asyncio

import numpy as np

from miner.distributed.exchange import ExchangeConfig, GradientExchange
from miner.distributed.robust import RobustConfig
from miner.distributed.tcp_channel import TcpChannel
from node.ports import free_port


async def test_allreduce_over_tcp_two_rounds() -> None:
    names = ["0x1", "0x2", "0x3"]
    addresses = {n: ("127.0.0.1", free_port()) for n in names}
    channels = [await TcpChannel.create(n, addresses) for n in names]
    config = ExchangeConfig(round_timeout_s=10.0, robust=RobustConfig(clip="none"))
    group = [GradientExchange(ch, names, config) for ch in channels]
    rng = np.random.default_rng(0)
    try:
        for round_id in (1, 2):
            values = [rng.normal(size=100_003).astype(np.float32) for _ in names]
            results = await asyncio.gather(
                *(ex.allreduce(round_id, v) for ex, v in zip(group, values, strict=True))
            )
            for r in results:
                np.testing.assert_allclose(r.mean, np.mean(values, axis=0), rtol=1e-5, atol=1e-6)
                assert r.report.contributed == tuple(names)
    finally:
        for ch in channels:
            await ch.shutdown()
