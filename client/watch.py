"""``manta task watch``: live progress from the group's SSE streams plus chain events.

One loop polls the chain (new logs of this task, and its effective state, which also
changes with time alone); one listener per group member follows its
``/tasks/{id}/events`` stream. Every observation is handed to ``on_update`` as a
:class:`~client.models.WatchUpdate`; the watch returns the final :class:`TaskInfo` once
the task is settled, cancelled or expired. Listeners are owned by the watch: they are
cancelled and awaited on every exit path. A member that is down is retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import aiohttp

from client.api import _task_info
from client.models import TaskInfo, WatchUpdate
from client.session import ClientConfig, Connection, connect
from client.transfer import Member, progress_snapshot, stream_events

logger = logging.getLogger(__name__)

UpdateFn = Callable[[WatchUpdate], None]


async def _follow_member(http: aiohttp.ClientSession, member: Member, task_id: int,
                         on_update: UpdateFn, retry_s: float) -> None:
    """Forward one member's progress events until its stream ends for good."""
    delay = retry_s
    while True:
        try:
            snapshot = await progress_snapshot(http, member, task_id)
            if snapshot:
                on_update(WatchUpdate(kind="progress", task_id=task_id, member=member.address,
                                      name="snapshot", data=snapshot))
            async for event in stream_events(http, member, task_id):
                on_update(WatchUpdate(kind="progress", task_id=task_id, member=member.address,
                                      name=event.event, data=event.json()))
                delay = retry_s
                if event.event == "end":
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a member's failure must not stop the watch
            logger.debug("progress stream failed member=%s reason=%s", member.address, exc)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


async def _new_events(conn: Connection, task_id: int, from_block: int,
                      on_update: UpdateFn) -> int:
    head = await conn.rpc.block_number()
    if head < from_block:
        return from_block
    logs = await conn.market.get_logs(from_block, head)
    for event in conn.market.decode_logs(logs):
        if getattr(event, "task_id", None) == task_id:
            fields = event.model_dump(mode="json", exclude={"block_hash", "log_index"})
            on_update(WatchUpdate(kind="event", task_id=task_id, name=type(event).__name__,
                                  data=fields))
    return head + 1


async def watch_task(config: ClientConfig, task_id: int, on_update: UpdateFn,
                     poll_s: float = 1.0, retry_s: float = 1.0) -> TaskInfo:
    """Report everything about ``task_id`` until it reaches a final state."""
    listeners: dict[str, asyncio.Task[None]] = {}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with connect(config) as conn, aiohttp.ClientSession(timeout=timeout) as http:
        try:
            next_block = conn.deployment.start_block
            last_state = ""
            while True:
                next_block = await _new_events(conn, task_id, next_block, on_update)
                info = await _task_info(conn, task_id)
                if info.state != last_state:
                    on_update(WatchUpdate(kind="state", task_id=task_id, name=info.state,
                                          info=info))
                    last_state = info.state
                for m in info.members:
                    if m.endpoint and m.address not in listeners:
                        member = Member(m.address, m.endpoint)
                        listeners[m.address] = asyncio.create_task(
                            _follow_member(http, member, task_id, on_update, retry_s))
                if info.is_final:
                    return info
                await asyncio.sleep(poll_s)
        finally:
            for task in listeners.values():
                task.cancel()
            for task in listeners.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
