"""The miner's side of the task monitor (:mod:`node.monitor`): the page, and the data it reads.

Routes added to the miner's app (:meth:`MinerMonitor.routes`); the live stream and the
manifest are the server's own ``/tasks/{id}/events`` and ``/tasks/{id}/manifest``.

``GET /`` and ``GET /static/…``
    the page (:class:`node.monitor.page.MonitorPage`).
``GET /tasks``
    ``{"tasks": [{"task_id", "phase", "role", "updated_at"}]}``: the tasks this daemon
    decided to take (``seen`` and ``refused`` ones are left out).
``GET /tasks/{task_id}/history?max_points=N``
    every progress update of the task so far, read from its progress file (so the curves
    survive a page reload and a daemon restart), as one member: this miner. Training steps
    beyond ``max_points`` (default 4000) are thinned evenly; phase changes and the last step
    are always kept. ``200`` with no updates for a task without a progress file yet.
``GET /tasks/{task_id}/timeline``
    the task on chain (:class:`node.monitor.timeline.Timeline`); ``404`` for a task the
    contract does not know, ``503`` when the chain does not answer.
``GET /rig``
    this rig's CPU, memory, load and GPUs (:mod:`miner.daemon.rig`), named by the miner's
    address (never its hostname: the page is public).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from miner.daemon.progress import parse_progress_lines
from miner.daemon.rig import RigSampler
from miner.daemon.server import DEPS, task_id_param
from miner.daemon.store import TaskPhase
from node.chain.errors import ChainError, ContractRevert
from node.monitor.page import MonitorPage
from node.monitor.timeline import TimelineSource

logger = logging.getLogger(__name__)

DEFAULT_MAX_POINTS = 4000
MAX_POINTS_RANGE = (10, 50_000)
HIDDEN_PHASES = (TaskPhase.SEEN, TaskPhase.REFUSED)


def parse_progress(raw: bytes) -> list[dict[str, Any]]:
    """The updates in a progress file's bytes, in order; broken lines are skipped and a
    trailing partial line (being written) is left out (pure)."""
    return parse_progress_lines(raw)[0]


def thin_updates(updates: list[dict[str, Any]], max_points: int) -> list[dict[str, Any]]:
    """At most about ``max_points`` training steps, evenly spaced; every update without a
    step (phase changes, search progress) and the last step are kept (pure)."""
    steps = [i for i, u in enumerate(updates) if "subnets" in u]
    if len(steps) <= max_points:
        return updates
    stride = -(-len(steps) // max_points)
    keep = set(steps[::stride]) | {steps[-1]}
    return [u for i, u in enumerate(updates) if i in keep or "subnets" not in u]


def _max_points(request: web.Request) -> int:
    raw = request.query.get("max_points", str(DEFAULT_MAX_POINTS))
    low, high = MAX_POINTS_RANGE
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise web.HTTPBadRequest(text=f"max_points must be an integer in [{low}, {high}]")
    return int(raw)


class MinerMonitor:
    """The monitor routes of one miner (see the module docstring)."""

    def __init__(self, progress_file: Callable[[int], Path], timelines: TimelineSource | None,
                 rig: RigSampler | None = None, page: MonitorPage | None = None) -> None:
        self._progress_file = progress_file
        self._timelines = timelines
        self._rig = rig or RigSampler()
        self._page = page or MonitorPage()

    def routes(self) -> list[web.RouteDef]:
        return [*self._page.routes(),
                web.get("/tasks", self.tasks),
                web.get("/tasks/{task_id}/history", self.history),
                web.get("/tasks/{task_id}/timeline", self.timeline),
                web.get("/rig", self.rig)]

    async def tasks(self, request: web.Request) -> web.Response:
        store = request.config_dict[DEPS].store
        records = await asyncio.to_thread(store.tasks)
        return web.json_response({"tasks": [
            {"task_id": r.task_id, "phase": r.phase.value, "role": r.role,
             "updated_at": r.updated_at}
            for r in records if r.phase not in HIDDEN_PHASES]})

    async def history(self, request: web.Request) -> web.Response:
        deps = request.config_dict[DEPS]
        task_id, max_points = task_id_param(request), _max_points(request)
        path = self._progress_file(task_id)

        def read() -> bytes:
            try:
                return path.read_bytes()
            except FileNotFoundError:
                return b""

        updates = thin_updates(parse_progress(await asyncio.to_thread(read)), max_points)
        record = await asyncio.to_thread(deps.store.task, task_id)
        member = {"address": deps.address, "slot": record.slot if record else None,
                  "phase": record.phase.value if record else None, "updates": updates,
                  "snapshot": deps.hub.snapshot(task_id), "error": None}
        return web.json_response({"task_id": task_id, "members": [member]})

    async def timeline(self, request: web.Request) -> web.Response:
        task_id = task_id_param(request)
        if self._timelines is None:
            raise web.HTTPServiceUnavailable(text="this server has no chain connection")
        try:
            timeline = await self._timelines.read(task_id)
        except ContractRevert as exc:
            raise web.HTTPNotFound(text=f"task {task_id}: {exc}") from None
        except ChainError as exc:
            logger.warning("timeline not read task=%d error=%s", task_id, exc)
            raise web.HTTPServiceUnavailable(text=f"chain not reachable: {exc}") from None
        return web.json_response(text=timeline.model_dump_json())

    async def rig(self, request: web.Request) -> web.Response:
        address = request.config_dict[DEPS].address
        reading = await self._rig.sample()
        # named by the miner's address, never its hostname: the page is public
        return web.json_response({"hosts": [{**reading, "name": address}]})
