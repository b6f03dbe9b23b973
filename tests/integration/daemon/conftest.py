"""A watchdog for the daemon's anvil tests: if a test is still running after
``WATCHDOG_S``, print the stack of every asyncio task of its loop (pytest-timeout only
shows threads, and a stuck coroutine sits on an idle loop)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

import pytest_asyncio

WATCHDOG_S = 60.0


async def _dump_after(delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    current = asyncio.current_task()
    print(f"\n+++ watchdog: test still running after {delay_s} s; asyncio tasks:",
          file=sys.stderr)
    for task in asyncio.all_tasks():
        if task is not current:
            task.print_stack(file=sys.stderr)


@pytest_asyncio.fixture(loop_scope="module")
async def watchdog() -> AsyncIterator[None]:
    task = asyncio.create_task(_dump_after(WATCHDOG_S))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
