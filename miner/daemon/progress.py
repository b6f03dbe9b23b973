"""Training progress: from the training subprocess to the daemon's HTTP subscribers.

**Protocol (subprocess → daemon): a JSON-lines file.** The training subprocess appends one
JSON object per line to ``<data_dir>/tasks/<task_id>/progress.jsonl``
(:func:`append_progress` does it with one ``write`` per line, so a reader never sees half a
line from a complete write). The daemon tails the file (:class:`ProgressTailer`). A file,
not a pipe, because it survives a daemon restart (the new daemon re-reads it and has the
snapshot back), never blocks training when the daemon is slow, and leaves the launcher's
stdout/stderr free for logs. Fields (all optional except ``phase``; unknown fields kept):

``phase`` (``fetching|training|searching|calibrating|exporting|signing|submitting|done|failed``),
``epoch``, ``step``, ``total_steps``, ``subnets`` (list of ``{"name", "loss", "accuracy"}``
for the sub-networks sampled at that step; ``"epe"`` in place of ``"accuracy"`` on a stereo
task), ``samples_per_s``, ``peers`` (list of
addresses), ``grad_bytes_sent``, ``grad_bytes_received``, ``time_s`` (unix time).

**Hub (daemon → subscribers).** :class:`ProgressHub` keeps the latest snapshot per task
(the last value of every field, plus ``seq``, ``eta_s`` and ``steps_per_s``) and fans every
update out to subscribers, each with a bounded queue: a slow subscriber loses its oldest
queued events (counted), never slows training or other subscribers. The ETA comes from the
step rate, smoothed with an exponential moving average.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miner.daemon.metrics import MinerMetrics
from node.monitor.sse import FINAL_PHASES

logger = logging.getLogger(__name__)

Event = dict[str, Any]
PHASES = ("fetching", "training", "searching", "calibrating", "exporting", "signing",
          "submitting", "done", "failed")
RATE_SMOOTHING = 0.3


def append_progress(path: Path, update: Event) -> None:
    """Append one update to a progress file (for the training subprocess)."""
    line = (json.dumps(update, separators=(",", ":"), allow_nan=False) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def eta_s(step: int, total_steps: int, steps_per_s: float) -> float | None:
    """Seconds left at ``steps_per_s``; None when the rate is unknown (pure)."""
    if steps_per_s <= 0 or total_steps <= 0:
        return None
    return max(total_steps - step, 0) / steps_per_s


def smoothed_rate(previous: float | None, step_delta: int, time_delta_s: float) -> float | None:
    """The step rate after one more observation (EMA; pure)."""
    if step_delta <= 0 or time_delta_s <= 0:
        return previous
    rate = step_delta / time_delta_s
    return rate if previous is None else RATE_SMOOTHING * rate + (1 - RATE_SMOOTHING) * previous


@dataclass
class _TaskState:
    snapshot: Event = field(default_factory=dict)
    seq: int = 0
    last_step: int | None = None
    last_time_s: float | None = None
    rate: float | None = None
    subscribers: set[Subscription] = field(default_factory=set)


class Subscription:
    """One subscriber's bounded queue; iterate it for ``(seq, event)`` until the task ends."""

    def __init__(self, hub: ProgressHub, task_id: int, maxsize: int) -> None:
        self._hub = hub
        self.task_id = task_id
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize)
        self.dropped = 0

    def _offer(self, event: Event | None) -> None:
        while True:
            try:
                self._queue.put_nowait(event)
                return
            except asyncio.QueueFull:
                self._queue.get_nowait()  # drop the oldest; the snapshot stays exact
                self.dropped += 1
                self._hub._count_drop()

    async def get(self) -> Event | None:
        """The next event, or None when the task ended."""
        return await self._queue.get()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while (event := await self.get()) is not None:
            yield event

    def close(self) -> None:
        self._hub._unsubscribe(self)


class ProgressHub:
    """Latest snapshot per task and live fan-out (see the module docstring)."""

    def __init__(self, queue_size: int = 256, metrics: MinerMetrics | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._tasks: dict[int, _TaskState] = {}
        self._queue_size = queue_size
        self._metrics = metrics
        self._clock = clock

    def publish(self, task_id: int, update: Event) -> Event:
        """Merge ``update`` into the task's snapshot and send it to every subscriber."""
        state = self._tasks.setdefault(task_id, _TaskState())
        now = float(update.get("time_s") or self._clock())
        step = update.get("step")
        if isinstance(step, int):
            if state.last_step is not None and state.last_time_s is not None:
                state.rate = smoothed_rate(state.rate, step - state.last_step,
                                           now - state.last_time_s)
            state.last_step, state.last_time_s = step, now
        state.seq += 1
        snapshot = {**state.snapshot, **update, "task_id": task_id, "seq": state.seq,
                    "time_s": now}
        total = snapshot.get("total_steps")
        if state.rate is not None and isinstance(total, int) and isinstance(step, int):
            snapshot["steps_per_s"] = state.rate
            snapshot["eta_s"] = eta_s(step, total, state.rate)
        state.snapshot = snapshot
        self._update_metrics(task_id, snapshot)
        event = {**update, "task_id": task_id, "seq": state.seq, "time_s": now,
                 "eta_s": snapshot.get("eta_s")}
        for subscriber in list(state.subscribers):
            subscriber._offer(event)
        if update.get("phase") in FINAL_PHASES:
            self.end(task_id)
        return snapshot

    def _update_metrics(self, task_id: int, snapshot: Event) -> None:
        if self._metrics is None:
            return
        task = str(task_id)
        if isinstance(snapshot.get("step"), int):
            self._metrics.step.set(snapshot["step"], task=task)
        if isinstance(snapshot.get("samples_per_s"), int | float):
            self._metrics.throughput.set(snapshot["samples_per_s"], task=task)
        if isinstance(snapshot.get("eta_s"), int | float):
            self._metrics.eta.set(snapshot["eta_s"], task=task)
        for key, direction in (("grad_bytes_sent", "sent"), ("grad_bytes_received", "received")):
            if isinstance(snapshot.get(key), int):
                self._metrics.grad_bytes.set(snapshot[key], task=task, direction=direction)

    def snapshot(self, task_id: int) -> Event | None:
        state = self._tasks.get(task_id)
        return dict(state.snapshot) if state is not None and state.snapshot else None

    def tasks(self) -> list[int]:
        return sorted(self._tasks)

    def subscribe(self, task_id: int) -> Subscription:
        """A new subscriber to ``task_id``'s updates (close it when done)."""
        subscription = Subscription(self, task_id, self._queue_size)
        self._tasks.setdefault(task_id, _TaskState()).subscribers.add(subscription)
        if self._metrics is not None:
            self._metrics.sse_clients.inc()
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        state = self._tasks.get(subscription.task_id)
        if state is not None and subscription in state.subscribers:
            state.subscribers.discard(subscription)
            if self._metrics is not None:
                self._metrics.sse_clients.inc(-1)

    def _count_drop(self) -> None:
        if self._metrics is not None:
            self._metrics.sse_dropped.inc()

    def end(self, task_id: int) -> None:
        """Tell every subscriber of ``task_id`` that no more updates will come."""
        state = self._tasks.get(task_id)
        if state is None:
            return
        for subscriber in list(state.subscribers):
            subscriber._offer(None)


def parse_progress_lines(data: bytes) -> tuple[list[dict[str, Any]], bytes, int]:
    """The updates in ``data`` (progress-file bytes), the trailing partial line still being
    written, and how many complete lines were not JSON objects (pure)."""
    *lines, partial = data.split(b"\n")
    updates: list[dict[str, Any]] = []
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            update = json.loads(line)
        except ValueError:
            update = None
        if isinstance(update, dict):
            updates.append(update)
        else:
            bad += 1
    return updates, partial, bad


class ProgressTailer:
    """Follows one task's progress file and publishes each complete line to the hub."""

    def __init__(self, path: Path, task_id: int, hub: ProgressHub,
                 poll_interval_s: float = 0.2) -> None:
        self.path = path
        self.task_id = task_id
        self._hub = hub
        self._poll_s = poll_interval_s
        self._offset = 0
        self._partial = b""
        self.bad_lines = 0

    def _read_new(self) -> bytes:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return b""
        self._offset += len(data)
        return data

    async def poll_once(self) -> int:
        """Publish the complete lines written since the last poll; returns how many."""
        data = self._partial + await asyncio.to_thread(self._read_new)
        updates, self._partial, bad = parse_progress_lines(data)
        if bad:
            self.bad_lines += bad
            logger.warning("bad progress lines task=%d count=%d", self.task_id, bad)
        for update in updates:
            self._hub.publish(self.task_id, update)
        return len(updates)

    async def run(self) -> None:
        """Poll until cancelled, or until the task reports a final phase."""
        while True:
            await self.poll_once()
            snapshot = self._hub.snapshot(self.task_id)
            if snapshot is not None and snapshot.get("phase") in FINAL_PHASES:
                return
            await asyncio.sleep(self._poll_s)


@contextlib.asynccontextmanager
async def tailing(tailer: ProgressTailer) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``tailer`` in a task owned by this context (cancelled and awaited on exit)."""
    task = asyncio.create_task(tailer.run(), name=f"progress-tail-{tailer.task_id}")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
