"""The indexer's confirmation, dedupe, restart and reorg logic against an in-memory chain."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from node.chain.indexer import (
    BlockRef,
    IndexedLog,
    Indexer,
    IndexerConfig,
    IndexerError,
    ReorgTooDeep,
)
from node.chain.models import LogEntry

ADDRESS = "0x00000000000000000000000000000000000000AA"


def _h(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


class FakeChain:
    """A chain of blocks with logs; ``reorg`` replaces the newest blocks by another branch."""

    def __init__(self) -> None:
        self.refs: list[BlockRef] = [BlockRef(0, _h("genesis"), b"\0" * 32)]
        self.block_logs: list[list[LogEntry]] = [[]]
        self.branch = 0
        self.reads = 0

    def mine(self, logs: int = 0, tag: str = "") -> list[LogEntry]:
        number = len(self.refs)
        block_hash = _h(self.branch, number, tag)
        self.refs.append(BlockRef(number, block_hash, self.refs[-1].hash))
        entries = [
            LogEntry(address=ADDRESS, topics=(_h("topic", tag, i),), data=tag.encode(),
                     block_number=number, block_hash=block_hash,
                     tx_hash=_h("tx", self.branch, number, i), log_index=i)
            for i in range(logs)
        ]
        self.block_logs.append(entries)
        return entries

    def rewind(self, depth: int) -> None:
        self.branch += 1
        del self.refs[-depth:]
        del self.block_logs[-depth:]

    async def head(self) -> int:
        return len(self.refs) - 1

    async def block(self, number: int) -> BlockRef | None:
        return self.refs[number] if 0 <= number < len(self.refs) else None

    async def logs(self, from_block: int, to_block: int) -> Sequence[LogEntry]:
        self.reads += 1
        return [log for logs in self.block_logs[from_block:to_block + 1] for log in logs]


class Recorder:
    def __init__(self, fail_on: int | None = None) -> None:
        self.updates: list[IndexedLog] = []
        self.fail_on = fail_on

    async def __call__(self, update: IndexedLog) -> None:
        if self.fail_on is not None and len(self.updates) == self.fail_on:
            raise RuntimeError("handler crashed")
        self.updates.append(update)

    def added(self) -> list[tuple[int, int]]:
        return [(u.log.block_number, u.log.log_index) for u in self.updates if not u.removed]

    def removed(self) -> list[tuple[int, int]]:
        return [(u.log.block_number, u.log.log_index) for u in self.updates if u.removed]


async def _open(chain: FakeChain, path: Path, handler: Recorder, **config: int) -> Indexer:
    return await Indexer.open(chain, path, handler, IndexerConfig(start_block=1, **config), "t")


async def _drain(indexer: Indexer) -> None:
    for _ in range(20):
        if await indexer.poll_once():
            return
    raise AssertionError("indexer did not catch up")


async def test_waits_for_confirmations(tmp_path: Path) -> None:
    chain, seen = FakeChain(), Recorder()
    chain.mine(logs=2)
    indexer = await _open(chain, tmp_path / "c.db", seen, confirmations=3)
    chain.mine()
    await _drain(indexer)
    assert seen.added() == []  # two confirmations only
    chain.mine()
    await _drain(indexer)
    assert seen.added() == [(1, 0), (1, 1)]
    assert indexer.cursor == 1
    await indexer.shutdown()


async def test_restart_resumes_without_duplicates(tmp_path: Path) -> None:
    chain, seen = FakeChain(), Recorder()
    for _ in range(3):
        chain.mine(logs=1)
    indexer = await _open(chain, tmp_path / "c.db", seen)
    await _drain(indexer)
    await indexer.shutdown()
    chain.mine(logs=2)
    again = await _open(chain, tmp_path / "c.db", seen)
    assert again.cursor == 3
    await _drain(again)
    await again.shutdown()
    assert seen.added() == [(1, 0), (2, 0), (3, 0), (4, 0), (4, 1)]


async def test_crash_inside_a_block_redelivers_only_the_unhandled_log(tmp_path: Path) -> None:
    chain = FakeChain()
    chain.mine(logs=3)
    crashing = Recorder(fail_on=1)
    indexer = await _open(chain, tmp_path / "c.db", crashing)
    with pytest.raises(RuntimeError):
        await indexer.poll_once()
    await indexer.shutdown()
    assert crashing.added() == [(1, 0)]
    seen = Recorder()
    again = await _open(chain, tmp_path / "c.db", seen)
    await _drain(again)
    await again.shutdown()
    assert seen.added() == [(1, 1), (1, 2)]


async def test_reorg_reports_removals_then_new_branch(tmp_path: Path) -> None:
    chain, seen = FakeChain(), Recorder()
    for n in range(5):
        chain.mine(logs=1, tag=f"a{n}")
    indexer = await _open(chain, tmp_path / "c.db", seen, confirmations=1)
    await _drain(indexer)
    chain.rewind(2)  # blocks 4 and 5 replaced
    chain.mine(logs=2, tag="b4")
    chain.mine(logs=0, tag="b5")
    chain.mine(logs=1, tag="b6")
    await _drain(indexer)
    await indexer.shutdown()
    assert seen.removed() == [(5, 0), (4, 0)]  # newest first
    assert seen.added() == [(1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (4, 0), (4, 1), (6, 0)]
    removed_keys = {u.key for u in seen.updates if u.removed}
    assert all(u.log.block_hash == chain.refs[u.log.block_number].hash
               for u in seen.updates[-3:])
    assert len(removed_keys) == 2


async def test_enough_confirmations_hide_a_shallow_reorg(tmp_path: Path) -> None:
    chain, seen = FakeChain(), Recorder()
    for n in range(6):
        chain.mine(logs=1, tag=f"a{n}")
    indexer = await _open(chain, tmp_path / "c.db", seen, confirmations=3)
    await _drain(indexer)
    assert seen.added() == [(1, 0), (2, 0), (3, 0), (4, 0)]
    chain.rewind(2)
    chain.mine(logs=0, tag="b5")
    chain.mine(logs=1, tag="b6")
    chain.mine(logs=0, tag="b7")
    chain.mine(logs=0, tag="b8")
    await _drain(indexer)
    await indexer.shutdown()
    assert seen.removed() == []
    assert seen.added()[4:] == [(6, 0)]


async def test_reorg_deeper_than_the_window_stops(tmp_path: Path) -> None:
    chain, seen = FakeChain(), Recorder()
    for n in range(10):
        chain.mine(logs=1, tag=f"a{n}")
    indexer = await _open(chain, tmp_path / "c.db", seen, confirmations=1,
                          reorg_window_blocks=3)
    await _drain(indexer)
    chain.rewind(5)
    for n in range(6):
        chain.mine(tag=f"b{n}")
    with pytest.raises(ReorgTooDeep):
        await indexer.poll_once()
    await indexer.shutdown()


async def test_shorter_chain_after_revert_rolls_back(tmp_path: Path) -> None:
    chain, seen = FakeChain(), Recorder()
    for n in range(4):
        chain.mine(logs=1, tag=f"a{n}")
    indexer = await _open(chain, tmp_path / "c.db", seen)
    await _drain(indexer)
    chain.rewind(3)  # like evm_revert: head goes back to block 1
    await _drain(indexer)
    assert seen.removed() == [(4, 0), (3, 0), (2, 0)]
    assert indexer.cursor == 1
    chain.mine(logs=1, tag="c")
    await _drain(indexer)
    await indexer.shutdown()
    assert seen.added()[-1] == (2, 0)


async def test_cursor_file_of_another_source_is_refused(tmp_path: Path) -> None:
    chain = FakeChain()
    first = await Indexer.open(chain, tmp_path / "c.db", Recorder(), IndexerConfig(), "one")
    await first.shutdown()
    with pytest.raises(IndexerError, match="belongs to one"):
        await Indexer.open(chain, tmp_path / "c.db", Recorder(), IndexerConfig(), "two")


async def test_polling_task_delivers_and_shuts_down(tmp_path: Path) -> None:
    chain, seen = FakeChain(), Recorder()
    chain.mine(logs=1)
    config = IndexerConfig(start_block=1, poll_interval_s=0.01)
    indexer = await Indexer.start(chain, tmp_path / "c.db", seen, config)
    for _ in range(200):
        if seen.updates:
            break
        await asyncio.sleep(0.01)
    chain.mine(logs=1)
    for _ in range(200):
        if len(seen.updates) == 2:
            break
        await asyncio.sleep(0.01)
    await indexer.shutdown()
    assert seen.added() == [(1, 0), (2, 0)]
    reads = chain.reads
    await asyncio.sleep(0.05)
    assert chain.reads == reads  # nothing polls after shutdown


async def test_handler_error_stops_the_task_and_surfaces(tmp_path: Path) -> None:
    chain = FakeChain()
    chain.mine(logs=2)
    config = IndexerConfig(start_block=1, poll_interval_s=0.01)
    indexer = await Indexer.start(chain, tmp_path / "c.db", Recorder(fail_on=0), config)
    with pytest.raises(RuntimeError, match="handler crashed"):
        await asyncio.wait_for(indexer.wait(), 5)
    await indexer.shutdown()


def test_config_refuses_window_smaller_than_confirmations() -> None:
    with pytest.raises(IndexerError):
        IndexerConfig(confirmations=5, reorg_window_blocks=4)


class ReorgDuringRead(FakeChain):
    """Replaces the newest block between the header reads and the log read, once."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    async def logs(self, from_block: int, to_block: int) -> Sequence[LogEntry]:
        if self.armed:
            self.armed = False
            self.rewind(1)
            self.mine(logs=1, tag="new")
        return await super().logs(from_block, to_block)


async def test_chain_moving_during_a_read_is_retried_not_delivered(tmp_path: Path) -> None:
    chain, seen = ReorgDuringRead(), Recorder()
    chain.mine(logs=1, tag="old")
    indexer = await _open(chain, tmp_path / "c.db", seen)
    chain.armed = True
    assert await indexer.poll_once()  # inconsistent read: wait and retry
    assert seen.updates == [] and indexer.cursor == 0
    await _drain(indexer)
    await indexer.shutdown()
    assert [u.log.data for u in seen.updates] == [b"new"]


async def test_partly_handled_block_reorged_away_while_down(tmp_path: Path) -> None:
    chain = FakeChain()
    chain.mine(logs=2, tag="old")
    crashing = Recorder(fail_on=1)
    indexer = await _open(chain, tmp_path / "c.db", crashing)
    with pytest.raises(RuntimeError):
        await indexer.poll_once()
    await indexer.shutdown()
    chain.rewind(1)
    chain.mine(logs=1, tag="new")
    seen = Recorder()
    again = await _open(chain, tmp_path / "c.db", seen)
    await _drain(again)
    await again.shutdown()
    assert [(u.removed, u.log.data) for u in seen.updates] == [(True, b"old"), (False, b"new")]


class CappedPool:
    """An RPC pool stand-in whose eth_getLogs refuses ranges over 4 blocks."""

    def __init__(self, chain: FakeChain) -> None:
        self.chain = chain
        self.calls: list[tuple[int, int]] = []

    async def get_logs(self, log_filter: dict) -> list[dict]:
        from web3.exceptions import Web3RPCError

        start, end = log_filter["fromBlock"], log_filter["toBlock"]
        self.calls.append((start, end))
        if end - start + 1 > 4:
            raise Web3RPCError("query exceeds max block range 4")
        return [
            {"address": log.address, "topics": log.topics, "data": log.data,
             "blockNumber": log.block_number, "blockHash": log.block_hash,
             "transactionHash": log.tx_hash, "logIndex": log.log_index}
            for log in await self.chain.logs(start, end)
        ]


async def test_rpc_source_splits_refused_log_ranges() -> None:
    from node.chain.indexer import RpcBlockSource

    chain = FakeChain()
    for n in range(10):
        chain.mine(logs=1, tag=str(n))
    pool = CappedPool(chain)
    source = RpcBlockSource(pool, ADDRESS)  # type: ignore[arg-type]
    logs = await source.logs(1, 10)
    assert [log.block_number for log in logs] == list(range(1, 11))
    assert pool.calls == [(1, 10), (1, 5), (1, 3), (4, 5), (6, 10), (6, 8), (9, 10)]
