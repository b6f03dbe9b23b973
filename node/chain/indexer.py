"""An event indexer over one contract's logs: confirmations, reorgs, a persistent cursor.

Semantics (what a consumer can rely on):

- **Confirmed delivery.** A log in block ``b`` is handed to the handler as an *addition*
  once the head is at ``b + confirmations - 1`` (``confirmations=1``: as soon as mined).
  Additions arrive in chain order (block, then log index).
- **Once per key.** A log is identified by ``(block hash, tx hash, log index)``. The key is
  recorded in the cursor file right after the handler returns, so a restart resumes after
  the last handled log without repeating it. The only window for a repeat is a crash
  between the handler's return and that commit (milliseconds); a handler that must be
  strictly exactly-once keys its own effects on :attr:`IndexedLog.key`.
- **Reorgs.** The indexer keeps the hashes of the last ``reorg_window_blocks`` handled
  blocks. Each poll it checks the newest one against the chain; if it changed, it walks
  back to the newest block whose hash still matches (the fork point), reports every
  handled log above the fork as a *removal* (newest first), rewinds the cursor to the fork
  and reads the new branch. With ``confirmations`` larger than any reorg the chain makes,
  no removal ever happens; with ``confirmations=1`` a removal follows every reorg that
  drops a handled log. A reorg deeper than the window raises :class:`ReorgTooDeep`.
- **Persistence.** The cursor file (SQLite, WAL) holds the last fully handled block, the
  recent block hashes and the handled keys of the window. Each change is one transaction,
  run on a private one-thread executor so the event loop never blocks on the disk.

The chain is read through the small :class:`BlockSource` protocol, so the reorg logic is
unit tested against an in-memory chain; :class:`RpcBlockSource` is the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from web3.exceptions import BlockNotFound, Web3RPCError

from node.chain.errors import ChainError, RpcError
from node.chain.models import ChainEvent, LogEntry, checksum_address
from node.chain.rpc import RpcPool
from node.config import IndexerSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")
EventKey = tuple[bytes, bytes, int]


class IndexerError(ChainError):
    """The indexer cannot go on safely (see the message)."""

    template = "indexer: {detail}"


class ReorgTooDeep(IndexerError):  # noqa: N818
    """The chain replaced more blocks than the indexer remembers."""

    template = "reorg deeper than the {window} remembered blocks (none of them is canonical)"


@dataclass(frozen=True)
class BlockRef:
    """A block's place in the chain: number, hash and parent hash."""

    number: int
    hash: bytes
    parent_hash: bytes


class BlockSource(Protocol):
    """What the indexer reads from a chain."""

    async def head(self) -> int:
        """The newest block number."""
        ...

    async def block(self, number: int) -> BlockRef | None:
        """The canonical block at ``number`` now, or None past the head."""
        ...

    async def logs(self, from_block: int, to_block: int) -> Sequence[LogEntry]:
        """The watched contract's logs in ``[from_block, to_block]``."""
        ...


class RpcBlockSource:
    """:class:`BlockSource` over JSON-RPC for the logs of one contract address."""

    def __init__(self, rpc: RpcPool, address: str) -> None:
        self._rpc = rpc
        self.address = checksum_address(address)

    async def head(self) -> int:
        return await self._rpc.block_number()

    async def block(self, number: int) -> BlockRef | None:
        try:
            raw = await self._rpc.get_block(number)
        except BlockNotFound:
            return None
        if raw is None:
            return None
        return BlockRef(int(raw["number"]), bytes(raw["hash"]), bytes(raw["parentHash"]))

    async def logs(self, from_block: int, to_block: int) -> Sequence[LogEntry]:
        """The logs of the range; a range the node refuses (public RPCs cap the blocks or
        results per call) is split in halves until the node answers."""
        try:
            raw = await self._rpc.get_logs(
                {"address": self.address, "fromBlock": from_block, "toBlock": to_block}
            )
        except Web3RPCError as exc:
            if from_block >= to_block:
                raise
            middle = (from_block + to_block) // 2
            logger.info("eth_getLogs range refused, splitting from=%d to=%d error=%s",
                        from_block, to_block, exc)
            return [*await self.logs(from_block, middle), *await self.logs(middle + 1, to_block)]
        return [LogEntry.from_rpc(log) for log in raw]


@dataclass(frozen=True)
class IndexedLog:
    """One update for the consumer: a confirmed log, or the removal of one handled earlier."""

    log: LogEntry
    removed: bool = False

    @property
    def key(self) -> EventKey:
        return key_of(self.log)


def key_of(log: LogEntry) -> EventKey:
    """The identity of a log: ``(block hash, tx hash, log index)``."""
    return (log.block_hash, log.tx_hash, log.log_index)


Handler = Callable[[IndexedLog], Awaitable[None]]


@dataclass(frozen=True)
class IndexerConfig:
    """Confirmations, pacing and memory of the indexer (see the module docstring)."""

    start_block: int = 0
    confirmations: int = 1
    poll_interval_s: float = 1.0
    reorg_window_blocks: int = 64
    max_range_blocks: int = 1000

    def __post_init__(self) -> None:
        if self.confirmations < 1 or self.reorg_window_blocks < self.confirmations:
            raise IndexerError("need 1 <= confirmations <= reorg_window_blocks")

    @classmethod
    def from_settings(cls, settings: IndexerSettings, start_block: int) -> IndexerConfig:
        """The ``[indexer]`` process settings, scanning from ``start_block``."""
        return cls(start_block=start_block, confirmations=settings.confirmations,
                   poll_interval_s=settings.poll_interval_s,
                   reorg_window_blocks=settings.reorg_window_blocks,
                   max_range_blocks=settings.max_range_blocks)


EventHandler = Callable[[ChainEvent, bool], Awaitable[None]]


def decoding(decode: Callable[[Sequence[LogEntry]], Sequence[ChainEvent]],
             handler: EventHandler) -> Handler:
    """A :data:`Handler` that decodes each log (e.g. with ``TaskMarket.decode_logs``) and
    calls ``handler(event, removed)``; logs the decoder does not know are skipped."""

    async def handle(update: IndexedLog) -> None:
        for event in decode([update.log]):
            await handler(event, update.removed)

    return handle


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS handled (
    block_hash BLOB, tx_hash BLOB, log_index INTEGER, block_number INTEGER NOT NULL,
    log TEXT NOT NULL, PRIMARY KEY (block_hash, tx_hash, log_index));
"""


class CursorStore:
    """The SQLite cursor file; every method is one transaction on the store's own thread."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="indexer-db")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._db is None:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self._path)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
            with self._db:  # one transaction: commit on success, rollback on error
                return fn(self._db)

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def open(self, source_id: str, start_block: int) -> int:
        """The cursor (last fully handled block); refuses a file kept for another source."""

        def op(db: sqlite3.Connection) -> int:
            rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if not rows:
                db.executemany("INSERT INTO meta VALUES (?, ?)", [
                    ("source", source_id), ("cursor", str(start_block - 1)),
                    ("start", str(start_block))])
                return start_block - 1
            if rows["source"] != source_id:
                raise IndexerError(f"cursor file {self._path} belongs to {rows['source']}")
            return int(rows["cursor"])

        return await self._run(op)

    async def blocks(self) -> dict[int, bytes]:
        return await self._run(lambda db: {
            int(n): bytes(h) for n, h in db.execute("SELECT number, hash FROM blocks")})

    async def handled_above(self, block: int) -> list[LogEntry]:
        """Handled logs in blocks above ``block``, newest first."""
        rows = await self._run(lambda db: db.execute(
            "SELECT log FROM handled WHERE block_number > ? "
            "ORDER BY block_number DESC, log_index DESC", (block,)).fetchall())
        return [LogEntry.model_validate_json(row[0]) for row in rows]

    async def mark(self, log: LogEntry) -> None:
        await self._run(lambda db: db.execute(
            "INSERT OR IGNORE INTO handled VALUES (?, ?, ?, ?, ?)",
            (*key_of(log), log.block_number, log.model_dump_json())))

    async def forget(self, log: LogEntry) -> None:
        await self._run(lambda db: db.execute(
            "DELETE FROM handled WHERE block_hash = ? AND tx_hash = ? AND log_index = ?",
            key_of(log)))

    async def advance(self, cursor: int, headers: Sequence[BlockRef], keep_from: int) -> None:
        """Move the cursor, remember ``headers`` and forget what fell out of the window."""

        def op(db: sqlite3.Connection) -> None:
            db.executemany("INSERT OR REPLACE INTO blocks VALUES (?, ?)",
                           [(h.number, h.hash) for h in headers])
            db.execute("DELETE FROM blocks WHERE number < ? OR number > ?", (keep_from, cursor))
            db.execute("DELETE FROM handled WHERE block_number < ?", (keep_from,))
            db.execute("UPDATE meta SET value = ? WHERE key = 'cursor'", (str(cursor),))

        await self._run(op)

    async def close(self) -> None:
        def op() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._executor, op)
        self._executor.shutdown(wait=True)


class _Inconsistent(Exception):  # noqa: N818
    """The chain moved while one range was being read; retry on the next poll."""


class Indexer:
    """Polls a :class:`BlockSource` and feeds a handler (see the module docstring)."""

    def __init__(self, source: BlockSource, store: CursorStore, handler: Handler,
                 config: IndexerConfig) -> None:
        self._source = source
        self._store = store
        self._handler = handler
        self._config = config
        self._cursor = config.start_block - 1
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    @classmethod
    async def open(cls, source: BlockSource, cursor_file: Path, handler: Handler,
                   config: IndexerConfig, source_id: str = "") -> Indexer:
        """An indexer resumed from ``cursor_file``, not yet polling (see :meth:`start`)."""
        store = CursorStore(cursor_file)
        indexer = cls(source, store, handler, config)
        indexer._cursor = await store.open(source_id, config.start_block)
        logger.info("indexer opened cursor=%d file=%s", indexer._cursor, cursor_file)
        return indexer

    @classmethod
    async def start(cls, source: BlockSource, cursor_file: Path, handler: Handler,
                    config: IndexerConfig, source_id: str = "") -> Indexer:
        """Open the cursor file and start the polling task (stop it with :meth:`shutdown`)."""
        indexer = await cls.open(source, cursor_file, handler, config, source_id)
        indexer._task = asyncio.create_task(indexer._loop(), name="indexer")
        return indexer

    @property
    def cursor(self) -> int:
        """The last block whose logs were all handled."""
        return self._cursor

    async def poll_once(self) -> bool:
        """One step (reorg check + one range); True when the caller should wait to poll again."""
        head = await self._source.head()
        await self._check_reorg()
        safe = head - self._config.confirmations + 1
        if safe <= self._cursor:
            return True
        to_block = min(safe, self._cursor + self._config.max_range_blocks)
        try:
            await self._read_range(self._cursor + 1, to_block)
        except _Inconsistent as exc:
            logger.info("indexer range changed while reading, retrying reason=%s", exc)
            return True
        return to_block == safe

    async def _check_reorg(self) -> None:
        known = await self._store.blocks()
        if not known:
            return
        for number in sorted(known, reverse=True):
            ref = await self._source.block(number)
            if ref is not None and ref.hash == known[number]:
                if number != max(known):
                    await self._rewind(number)
                return
        if min(known) == self._config.start_block:  # every block since the start changed
            await self._rewind(min(known) - 1)
            return
        raise ReorgTooDeep(window=len(known))

    async def _rewind(self, fork: int) -> None:
        removed = await self._store.handled_above(fork)
        logger.warning("indexer reorg fork_block=%d cursor=%d removals=%d",
                       fork, self._cursor, len(removed))
        for log in removed:
            await self._handler(IndexedLog(log, removed=True))
            await self._store.forget(log)
        self._cursor = fork
        await self._store.advance(fork, [], fork - self._config.reorg_window_blocks + 1)

    async def _headers(self, numbers: Sequence[int]) -> dict[int, BlockRef]:
        headers: dict[int, BlockRef] = {}
        for number in numbers:
            ref = await self._source.block(number)
            if ref is None:
                raise _Inconsistent(f"block {number} vanished")
            headers[number] = ref
        for number, ref in headers.items():
            parent = headers.get(number - 1)
            if parent is not None and ref.parent_hash != parent.hash:
                raise _Inconsistent(f"block {number} does not follow block {number - 1}")
        return headers

    async def _settle_partial(self) -> set[EventKey]:
        """Keys handled above the cursor (a range cut short); those now off-chain are removed."""
        done: set[EventKey] = set()
        for log in await self._store.handled_above(self._cursor):  # newest first
            ref = await self._source.block(log.block_number)
            if ref is None or ref.hash != log.block_hash:
                await self._handler(IndexedLog(log, removed=True))
                await self._store.forget(log)
            else:
                done.add(key_of(log))
        return done

    async def _read_range(self, from_block: int, to_block: int) -> None:
        window_start = max(from_block, to_block - self._config.reorg_window_blocks + 1)
        known = await self._store.blocks()
        done = await self._settle_partial()
        headers = await self._headers(range(window_start, to_block + 1))
        first = headers.get(from_block)
        if first is not None and from_block - 1 in known and \
                first.parent_hash != known[from_block - 1]:
            raise _Inconsistent("the new range does not follow the handled chain")
        logs = sorted(await self._source.logs(from_block, to_block),
                      key=lambda log: (log.block_number, log.log_index))
        for log in logs:
            ref = headers.get(log.block_number)
            if ref is not None and ref.hash != log.block_hash:
                raise _Inconsistent(f"log of block {log.block_number} from another branch")
        for log in logs:
            if key_of(log) not in done:
                await self._handler(IndexedLog(log))
                await self._store.mark(log)
        self._cursor = to_block
        kept = [headers[n] for n in range(window_start, to_block + 1)]
        await self._store.advance(to_block, kept, to_block - self._config.reorg_window_blocks + 1)
        logger.debug("indexer advanced cursor=%d logs=%d", to_block, len(logs))

    async def _loop(self) -> None:
        while True:
            try:
                caught_up = await self.poll_once()
            except (RpcError, Web3RPCError, _Inconsistent) as exc:
                # unreachable nodes, and load-balanced nodes that do not know a fresh block yet
                logger.warning("indexer poll failed, retrying error=%s", exc)
                caught_up = True
            except Exception as exc:
                self.error = exc
                logger.error("indexer stopped error=%s", exc, exc_info=True)
                return
            if caught_up:
                await asyncio.sleep(self._config.poll_interval_s)

    async def wait(self) -> None:
        """Until the polling task ends; raises what stopped it (a handler error, a deep reorg)."""
        if self._task is not None:
            await asyncio.shield(self._task)
        if self.error is not None:
            raise self.error

    async def shutdown(self) -> None:
        """Stop polling (cancel and await the task) and close the cursor file."""
        if self._task is not None:
            # cancel until done: a cancellation can be lost inside library code that catches it
            while not self._task.done():
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({self._task}, timeout=1.0)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                self._task.result()
            self._task = None
        await self._store.close()

