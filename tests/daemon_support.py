"""Waiting on a miner daemon in tests: a condition polled until a deadline, a task's phase."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from miner.daemon.store import StateStore, TaskPhase


async def until(what: Callable[[], bool], timeout_s: float = 30.0,
                store: StateStore | None = None, poll_s: float = 0.05) -> None:
    """Poll ``what`` until it holds; past ``timeout_s`` fail, showing ``store``'s tasks and
    transactions when given."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not what():
        if loop.time() > deadline:
            state = (store.tasks(), store.txs()) if store is not None else ()
            raise AssertionError(f"condition not reached in time; store: {state}")
        await asyncio.sleep(poll_s)


def phase(store: StateStore, task_id: int) -> TaskPhase | None:
    """The task's phase in the daemon's store (None: the daemon has not seen it)."""
    record = store.task(task_id)
    return record.phase if record is not None else None
