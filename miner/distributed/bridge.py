"""Run the async gradient exchange from synchronous training code.

Training is a torch loop that must not block on the network in the event loop's thread,
and the exchange is asyncio. :class:`AsyncBridge` owns an event loop in a background thread;
the rig leader submits coroutines to it and waits for their results. :class:`BridgedExchange`
is the synchronous face of a :class:`GradientExchange` that
:class:`miner.distributed.averager.GradientAverager` calls once per step.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

import numpy as np

from miner.distributed.exchange import GradientExchange, RoundResult

T = TypeVar("T")


class AsyncBridge:
    """An event loop running in its own thread until :meth:`close`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="manta-exchange", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the bridge's loop and return its result here."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self, cleanup: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        """Await ``cleanup`` (e.g. a channel's shutdown) on the loop, then stop the thread."""
        if cleanup is not None:
            self.run(cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class BridgedExchange:
    """A :class:`GradientExchange` called from the training thread."""

    def __init__(self, exchange: GradientExchange, bridge: AsyncBridge) -> None:
        self.exchange = exchange
        self.bridge = bridge

    @property
    def me(self) -> str:
        return self.exchange.me

    @property
    def peers(self) -> tuple[str, ...]:
        return self.exchange.alive

    def allreduce(
        self, round_id: int, values: np.ndarray, masks: Mapping[str, np.ndarray] | None = None
    ) -> RoundResult:
        return self.bridge.run(self.exchange.allreduce(round_id, values, masks))
