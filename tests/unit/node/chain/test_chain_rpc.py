"""RpcPool: retry with backoff on transport errors only, fail-over, chain-id checks."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from typing import Any

import aiohttp
import pytest
from web3.exceptions import ContractLogicError
from web3.providers.async_base import AsyncBaseProvider
from web3.types import RPCEndpoint, RPCResponse

from node.chain.errors import ChainIdMismatch, RpcError, RpcUnavailable, StaleEndpoint
from node.chain.rpc import RpcConfig, RpcPool, backoff_delay_s, redact_url

FAST = RpcConfig(timeout_s=0.5, attempts_per_endpoint=3, backoff_initial_s=0.001,
                 backoff_max_s=0.002)
REVERT = "0x08c379a0" + "00" * 28 + "20" + "00" * 31 + "01" + "78" + "00" * 31


class FakeProvider(AsyncBaseProvider):
    """A node that fails ``failures`` times, optionally hangs, then answers."""

    def __init__(
        self, chain_id: int = 1337, failures: int = 0, hang_s: float = 0.0, block_age_s: int = 0
    ) -> None:
        super().__init__()
        self.chain_id = chain_id
        self.block_age_s = block_age_s
        self.failures = failures
        self.hang_s = hang_s
        self.requests: list[str] = []

    async def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        self.requests.append(method)
        if self.hang_s:
            await asyncio.sleep(self.hang_s)
        if self.failures > 0:
            self.failures -= 1
            raise aiohttp.ClientConnectionError("connection reset")
        if method == "eth_chainId":
            return {"jsonrpc": "2.0", "id": 1, "result": hex(self.chain_id)}
        if method == "eth_getBlockByNumber":
            stamp = int(time.time()) - self.block_age_s
            block = {"number": "0x2a", "timestamp": hex(stamp)}
            return {"jsonrpc": "2.0", "id": 1, "result": block}
        if method == "eth_blockNumber":
            return {"jsonrpc": "2.0", "id": 1, "result": "0x2a"}
        if method == "eth_call":
            return {"jsonrpc": "2.0", "id": 1,
                    "error": {"code": 3, "message": "execution reverted: x", "data": REVERT}}
        return {"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "no such method"}}

    async def is_connected(self, show_traceback: bool = False) -> bool:
        return True


async def pool_of(*providers: FakeProvider, config: RpcConfig = FAST) -> RpcPool:
    return await RpcPool.create(config, providers=providers, rng=random.Random(0))


async def test_transport_errors_are_retried_on_the_same_endpoint() -> None:
    node = FakeProvider(failures=2)
    pool = await pool_of(node)
    assert pool.chain_id == 1337
    assert await pool.block_number() == 42
    assert node.requests.count("eth_chainId") == 3  # two refused, third answered


async def test_fail_over_to_the_next_endpoint_and_stay_there() -> None:
    down, up = FakeProvider(failures=10**6), FakeProvider()
    pool = await pool_of(down, up)
    assert await pool.block_number() == 42
    assert len(down.requests) == FAST.attempts_per_endpoint  # not retried again afterwards
    assert await pool.block_number() == 42
    assert len(down.requests) == FAST.attempts_per_endpoint
    assert pool.w3.provider is up


async def test_every_endpoint_down_names_each_with_its_last_error() -> None:
    with pytest.raises(RpcUnavailable) as info:
        await pool_of(FakeProvider(failures=10**6), FakeProvider(failures=10**6))
    assert len(info.value.urls) == 2 and all("reset" in e for e in info.value.errors)


async def test_a_hanging_endpoint_times_out_and_fails_over() -> None:
    config = RpcConfig(timeout_s=0.05, attempts_per_endpoint=1)
    slow, fast = FakeProvider(hang_s=5.0), FakeProvider()
    pool = await pool_of(slow, fast, config=config)
    assert pool.w3.provider is fast


async def test_reverts_and_rpc_errors_are_not_retried() -> None:
    node = FakeProvider()
    pool = await pool_of(node)
    with pytest.raises(ContractLogicError):
        await pool.call({"to": "0x" + "11" * 20, "data": b""})
    assert node.requests.count("eth_call") == 1
    with pytest.raises(RpcError):
        await pool.request("evm_nothing")
    assert node.requests.count("evm_nothing") == 1


async def test_chain_id_is_checked_on_connect_and_on_fail_over() -> None:
    with pytest.raises(ChainIdMismatch) as info:
        await pool_of(FakeProvider(chain_id=1), config=RpcConfig(chain_id=31337))
    assert (info.value.expected, info.value.actual) == (31337, 1)
    first = FakeProvider(chain_id=5)
    pool = await pool_of(first, FakeProvider(chain_id=6))
    first.failures = 10**6
    with pytest.raises(ChainIdMismatch):
        await pool.block_number()


async def test_unreachable_url_is_rpc_unavailable() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = RpcConfig(urls=(url,), timeout_s=1.0, attempts_per_endpoint=2,
                       backoff_initial_s=0.001)
    with pytest.raises(RpcUnavailable) as info:
        await RpcPool.create(config)
    assert info.value.urls == (url,)


async def test_stale_endpoint_is_skipped_and_freshness_is_cached() -> None:
    config = RpcConfig(attempts_per_endpoint=1, max_block_age_s=60)
    stale, fresh = FakeProvider(block_age_s=3600), FakeProvider(block_age_s=1)
    pool = await pool_of(stale, fresh, config=config)
    assert pool.w3.provider is fresh
    for _ in range(3):
        assert await pool.block_number() == 42
    assert fresh.requests.count("eth_getBlockByNumber") == 1  # cached for ~59 s
    with pytest.raises(RpcUnavailable) as info:
        await pool_of(FakeProvider(block_age_s=3600), config=config)
    assert "stale" in info.value.errors[0]
    assert issubclass(StaleEndpoint, RpcError)


def test_urls_are_redacted_for_logs() -> None:
    assert redact_url("https://rpc.example.org/v3/SECRETKEY") == "https://rpc.example.org/…"
    assert redact_url("https://user:pw@rpc.example.org:8545?key=1") == (
        "https://rpc.example.org:8545/…")
    assert redact_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"
    assert redact_url("not a url") == "<rpc url>"


def test_backoff_is_bounded_full_jitter() -> None:
    config = RpcConfig(backoff_initial_s=0.1, backoff_max_s=1.0)
    rng = random.Random(1)
    for attempt in range(10):
        delays = [backoff_delay_s(attempt, config, rng) for _ in range(50)]
        assert all(0.0 <= d <= min(1.0, 0.1 * 2**attempt) for d in delays)
    assert max(backoff_delay_s(8, config, rng) for _ in range(200)) > 0.5
