"""``Indexer.shutdown`` ends a polling task that swallowed one cancellation (what Python
3.11's ``wait_for`` does when the cancel meets a completing call, gh-86296), so everything
that owns an indexer (the miner daemon among them) stops cleanly."""

from __future__ import annotations

import asyncio

from node.chain.indexer import Indexer


class StubbornPoll:
    """A polling loop whose first cancellation is lost."""

    def __init__(self) -> None:
        self.swallowed = 0

    async def loop(self) -> None:
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if self.swallowed:
                    raise
                self.swallowed += 1  # the first cancellation is lost


class Store:
    closed = False

    async def close(self) -> None:
        self.closed = True


async def test_shutdown_survives_a_swallowed_cancellation() -> None:
    poll, store = StubbornPoll(), Store()
    indexer = Indexer.__new__(Indexer)  # only the polling task and the store matter here
    task = asyncio.create_task(poll.loop())
    await asyncio.sleep(0.02)
    indexer._task, indexer._store = task, store  # type: ignore[assignment]
    await asyncio.wait_for(indexer.shutdown(), 5)
    assert poll.swallowed == 1 and store.closed and task.done()
