"""Miner daemons in tests: a condition polled until a deadline, a task's phase, and the
dependencies of the daemon's HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from miner.daemon.artifacts import ArtifactStore
from miner.daemon.metrics import MinerMetrics
from miner.daemon.progress import ProgressHub
from miner.daemon.server import ServerDeps
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


def server_deps(folder: Path, store: StateStore, address: str, hub: ProgressHub | None = None,
                sse_keepalive_s: float = 0.2, queue_size: int = 64) -> ServerDeps:
    """A daemon server's dependencies over ``store``, with artifacts under ``folder`` and
    fresh metrics (and a fresh progress hub unless ``hub`` is given)."""
    metrics = MinerMetrics()
    hub = hub if hub is not None else ProgressHub(queue_size, metrics)
    return ServerDeps(store=store, artifacts=ArtifactStore(folder / "artifacts", store), hub=hub,
                      metrics=metrics, address=address, chain_id=31337,
                      sse_keepalive_s=sse_keepalive_s)
