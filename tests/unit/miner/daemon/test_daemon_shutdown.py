"""``MinerDaemon.shutdown`` ends an indexer whose polling task swallowed one cancellation
(what Python 3.11's ``wait_for`` does when the cancel meets a completing RPC call)."""

from __future__ import annotations

import asyncio
import contextlib

from miner.daemon.daemon import MinerDaemon


class StubbornIndexer:
    """Like ``Indexer``: one polling task; ``shutdown`` cancels it once and awaits it."""

    def __init__(self) -> None:
        self.swallowed = 0
        self.closed = False
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if self.swallowed:
                    raise
                self.swallowed += 1  # the first cancellation is lost

    async def shutdown(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.closed = True


async def test_shutdown_survives_a_swallowed_cancellation() -> None:
    daemon = MinerDaemon.__new__(MinerDaemon)  # only the indexer matters here
    indexer = StubbornIndexer()
    daemon._indexer = indexer  # type: ignore[assignment]
    await asyncio.wait_for(daemon.shutdown(), 5)
    assert indexer.swallowed == 1 and indexer.closed and indexer._task.done()
