"""The indexer on a real anvil chain: confirmations, no duplicates across a restart, a reorg."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.chain.indexer import Indexer, IndexerConfig, RpcBlockSource, decoding
from node.chain.market import TaskMarket
from node.chain.models import ChainEvent, MinerRegistered
from node.devnet import Devnet, DevnetConfig

pytestmark = [pytest.mark.anvil, pytest.mark.timeout(120)]


@pytest.fixture
async def devnet(tmp_path: Path) -> AsyncIterator[Devnet]:
    net = await Devnet.start(DevnetConfig(folder=tmp_path / "devnet", accounts=4))
    try:
        yield net
    finally:
        await net.stop()


class Seen:
    """Typed events through :func:`decoding` and the market's own decoder."""

    def __init__(self) -> None:
        self.updates: list[tuple[str, str]] = []  # (+/-, endpoint)

    async def __call__(self, event: ChainEvent, removed: bool) -> None:
        assert isinstance(event, MinerRegistered)
        self.updates.append(("-" if removed else "+", event.endpoint))


async def _drain(indexer: Indexer) -> None:
    for _ in range(20):
        if await indexer.poll_once():
            return
    raise AssertionError("indexer did not catch up")


async def _indexer(market: TaskMarket, devnet: Devnet, path: Path, seen: Seen,
                   confirmations: int) -> Indexer:
    source = RpcBlockSource(devnet.rpc, devnet.deployment.task_market)
    config = IndexerConfig(start_block=devnet.deployment.start_block,
                           confirmations=confirmations, poll_interval_s=0.05)
    handler = decoding(market.decode_logs, seen)
    return await Indexer.open(source, path, handler, config, source_id=source.address)


async def test_confirmations_and_restart_without_duplicates(devnet: Devnet, tmp_path: Path) -> None:
    market = await TaskMarket.create(devnet.rpc, devnet.deployment.task_market,
                                     await devnet.sender(1))
    seen = Seen()
    cursor_file = tmp_path / "cursor.sqlite"
    indexer = await _indexer(market, devnet, cursor_file, seen, confirmations=2)
    await market.register("http://a")
    await _drain(indexer)
    assert seen.updates == []  # mined, one confirmation only
    await devnet.rpc.request("evm_mine")
    await _drain(indexer)
    assert seen.updates == [("+", "http://a")]
    await indexer.shutdown()

    await market.register("http://b")
    await devnet.rpc.request("evm_mine")
    again = await _indexer(market, devnet, cursor_file, seen, confirmations=2)
    await _drain(again)
    await again.shutdown()
    assert seen.updates == [("+", "http://a"), ("+", "http://b")]


async def test_reorg_reports_removal_and_reads_the_new_branch(
    devnet: Devnet, tmp_path: Path
) -> None:
    market = await TaskMarket.create(devnet.rpc, devnet.deployment.task_market,
                                     await devnet.sender(1))
    seen = Seen()
    indexer = await _indexer(market, devnet, tmp_path / "cursor.sqlite", seen, confirmations=1)
    await market.register("http://a")
    snapshot = await devnet.rpc.request("evm_snapshot")
    await market.register("http://old-branch")
    await _drain(indexer)
    assert seen.updates == [("+", "http://a"), ("+", "http://old-branch")]

    assert await devnet.rpc.request("evm_revert", [snapshot]) is True
    await market.sender.resync_nonce()
    await devnet.rpc.request("evm_mine")  # the new branch is longer than the old one
    await market.register("http://new-branch")
    await _drain(indexer)
    await indexer.shutdown()
    assert seen.updates[2:] == [("-", "http://old-branch"), ("+", "http://new-branch")]
