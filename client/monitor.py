"""``manta task monitor``: the monitor page on this machine, fed by the whole group.

A small aiohttp server answers the monitor API (:mod:`node.monitor`) for one task by asking
the group: the members and their endpoints come from the chain (as ``task watch`` finds
them), and each route asks every member in parallel.

- the page and its assets: :class:`node.monitor.page.MonitorPage`, the code a miner uses;
- ``/tasks/{id}/history``: every member's own history, side by side (a member that does not
  answer is listed with its error);
- ``/tasks/{id}/events``: one stream merging the members' streams, each event tagged with
  its ``member``; a member's stream that breaks is retried with backoff, and once it is
  back a ``resync`` event tells the page to reload the history (the member may have
  restarted). A member's ``end`` is passed on (with its ``member``) only once its task
  reached a final phase (an ``end`` before that means its server stopped: it is retried);
  ``end`` without a member once every member's task has;
- ``/tasks/{id}/timeline``: read from the chain by this client itself;
- ``/tasks/{id}/manifest``: from the first member whose manifest hashes to the on-chain
  ``resultRoot`` (``404`` until a result is submitted);
- ``/rig``: each member's rig, named by the member's address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from client.errors import ClientError, NoMemberReachable
from client.serve import serve_app
from client.session import ClientConfig, Connection, connect
from client.transfer import Member, fetch_manifest, stream_events
from node.chain.errors import ChainError, ContractRevert
from node.monitor.page import MonitorPage
from node.monitor.sse import FINAL_PHASES, sse_frame
from node.monitor.timeline import TimelineReader

logger = logging.getLogger(__name__)

ZERO_ROOT = "0x" + "00" * 32
MEMBER_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class MonitorOptions:
    """How often the group is re-read (a keepalive goes out when nothing else did), and how
    a member's broken stream is retried."""

    members_refresh_s: float = 2.0
    retry_s: float = 1.0
    max_retry_s: float = 15.0


class GroupMonitor:
    """The monitor API of one task, answered by asking the group (see the module docstring)."""

    def __init__(self, conn: Connection, http: aiohttp.ClientSession, task_id: int,
                 options: MonitorOptions | None = None, page: MonitorPage | None = None) -> None:
        self._conn = conn
        self._http = http
        self.task_id = task_id
        self._options = options or MonitorOptions()
        self._page = page or MonitorPage()
        self._timelines = TimelineReader(conn.market, conn.rpc, conn.deployment.start_block)
        self._endpoints: dict[str, str] = {}
        self._manifest: tuple[bytes, str] | None = None
        self._streams: set[asyncio.Queue[bytes]] = set()  # one per open page
        self._group: tuple[float, list[str]] = (float("-inf"), [])  # (read at, members)
        self._closing = False

    def app(self) -> web.Application:
        """The monitor's application: its routes, and open streams ended on shutdown (so a
        stop is not held up by a page left open)."""
        app = web.Application()
        app.add_routes(self.routes())
        app.on_shutdown.append(self._end_streams)
        return app

    async def _end_streams(self, app: web.Application) -> None:
        self._closing = True
        for queue in self._streams:
            queue.put_nowait(b"")  # wakes the stream's loop, which then returns

    def routes(self) -> list[web.RouteDef]:
        return [*self._page.routes(),
                web.get("/tasks", self.tasks),
                web.get("/tasks/{task_id}/history", self.history),
                web.get("/tasks/{task_id}/events", self.events),
                web.get("/tasks/{task_id}/timeline", self.timeline),
                web.get("/tasks/{task_id}/manifest", self.manifest),
                web.get("/rig", self.rig)]

    # ---- the group -------------------------------------------------------------------------

    async def members(self) -> list[Member]:
        """The group in slot order, with the endpoints they registered on chain."""
        loop = asyncio.get_running_loop()
        try:
            read_at, addresses = self._group
            if loop.time() - read_at >= self._options.members_refresh_s:
                # read once per refresh interval, whatever the number of open pages
                addresses = await self._conn.market.members_of(self.task_id)
                self._group = (loop.time(), addresses)
            for address in addresses:
                if not self._endpoints.get(address):
                    self._endpoints[address] = await self._conn.market.endpoint_of(address)
        except ChainError as exc:
            raise web.HTTPServiceUnavailable(text=f"chain not reachable: {exc}") from None
        return [Member(a, self._endpoints[a]) for a in addresses]

    async def _get_json(self, member: Member, path: str) -> Any:
        if not member.endpoint:
            raise ClientError(f"{member.address} registered no endpoint")
        timeout = aiohttp.ClientTimeout(total=MEMBER_TIMEOUT_S)
        async with self._http.get(member.endpoint.rstrip("/") + path, timeout=timeout) as reply:
            if reply.status != 200:
                raise ClientError(f"HTTP {reply.status} from {member.endpoint}{path}")
            return await reply.json()

    def _check_task(self, request: web.Request) -> None:
        if request.match_info["task_id"] != str(self.task_id):
            raise web.HTTPNotFound(text=f"this monitor follows task {self.task_id} only")

    # ---- routes ----------------------------------------------------------------------------

    async def tasks(self, request: web.Request) -> web.Response:
        state = await self._conn.market.state_of(self.task_id)
        return web.json_response({"tasks": [
            {"task_id": self.task_id, "phase": state.name.lower(), "role": "client"}]})

    async def history(self, request: web.Request) -> web.Response:
        self._check_task(request)
        members = await self.members()

        async def one(slot: int, member: Member) -> dict[str, Any]:
            entry: dict[str, Any] = {"address": member.address, "slot": slot, "phase": None,
                                     "updates": [], "snapshot": None, "error": None}
            try:
                body = await self._get_json(member, f"/tasks/{self.task_id}/history")
                own = body["members"][0]
                entry.update(phase=own.get("phase"), updates=own.get("updates", []),
                             snapshot=own.get("snapshot"))
            except (ClientError, aiohttp.ClientError, TimeoutError, ValueError, KeyError,
                    IndexError, TypeError) as exc:
                entry["error"] = str(exc) or type(exc).__name__
            return entry

        entries = await asyncio.gather(*(one(i, m) for i, m in enumerate(members)))
        return web.json_response({"task_id": self.task_id, "members": list(entries)})

    async def timeline(self, request: web.Request) -> web.Response:
        self._check_task(request)
        try:
            timeline = await self._timelines.read(self.task_id)
        except ChainError as exc:
            raise web.HTTPServiceUnavailable(text=f"chain not reachable: {exc}") from None
        return web.json_response(text=timeline.model_dump_json())

    async def manifest(self, request: web.Request) -> web.Response:
        self._check_task(request)
        if self._manifest is None:
            view = await self._conn.market.get_task(self.task_id)
            root = "0x" + view.result_root.hex()
            if root == ZERO_ROOT:
                raise web.HTTPNotFound(text=f"task {self.task_id} has no result yet")
            try:
                fetched = await fetch_manifest(self._http, await self.members(), self.task_id,
                                               root)
            except NoMemberReachable as exc:
                raise web.HTTPNotFound(text=str(exc)) from None
            self._manifest = (fetched.raw, root)
        raw, root = self._manifest
        return web.Response(body=raw, content_type="application/json",
                            headers={"X-Manta-Result-Root": root})

    async def rig(self, request: web.Request) -> web.Response:
        async def one(member: Member) -> list[dict[str, Any]]:
            try:
                hosts = (await self._get_json(member, "/rig"))["hosts"]
                return [{**h, "name": member.address} for h in hosts if isinstance(h, dict)]
            except (ClientError, aiohttp.ClientError, TimeoutError, ValueError, KeyError,
                    TypeError) as exc:
                return [{"name": member.address, "error": str(exc) or type(exc).__name__}]

        found = await asyncio.gather(*(one(m) for m in await self.members()))
        return web.json_response({"hosts": [h for hosts in found for h in hosts]})

    # ---- the merged live stream ------------------------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        self._check_task(request)
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        followers: dict[str, asyncio.Task[None]] = {}
        ended: set[str] = set()
        self._streams.add(queue)
        try:
            await response.write(b"retry: 3000\n\n")
            while not self._closing:
                with contextlib.suppress(web.HTTPServiceUnavailable):
                    for member in await self.members():
                        if member.address not in followers:
                            followers[member.address] = asyncio.create_task(
                                self._follow(member, queue.put_nowait, ended))
                if not await self._drain(response, queue):
                    await response.write(b": keepalive\n\n")
                if followers and ended >= set(followers) and queue.empty():
                    await response.write(sse_frame("end", {"task_id": self.task_id}))
                    break
            await response.write_eof()
        except ConnectionResetError:
            logger.debug("monitor client left task=%d", self.task_id)
        finally:
            self._streams.discard(queue)
            for task in followers.values():
                task.cancel()
            for task in followers.values():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return response

    async def _drain(self, response: web.StreamResponse, queue: asyncio.Queue[bytes]) -> bool:
        """Forward queued frames for one membership-refresh interval; False if none came."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._options.members_refresh_s
        wrote = False
        while (left := deadline - loop.time()) > 0:
            try:
                frame = await asyncio.wait_for(queue.get(), left)
            except TimeoutError:
                break
            if not frame:  # the server is shutting down
                break
            await response.write(frame)
            wrote = True
        return wrote

    async def _follow(self, member: Member, emit: Callable[[bytes], None],
                      ended: set[str]) -> None:
        """Forward one member's stream until it ends; retried with backoff when it breaks."""
        delay, connected_before, phase = self._options.retry_s, False, None
        while True:
            try:
                first = True
                async for event in stream_events(self._http, member, self.task_id):
                    if first and connected_before:
                        emit(sse_frame("resync", {"member": member.address}))
                    first, connected_before, delay = False, True, self._options.retry_s
                    data = event.json()
                    phase = data.get("phase", phase)
                    if event.event == "end" and phase in FINAL_PHASES:
                        emit(sse_frame("end", {**data, "member": member.address}))
                        ended.add(member.address)
                        return
                    if event.event != "end":  # an end before a final phase: its server stopped
                        emit(sse_frame(event.event, {**data, "member": member.address}))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one member's failure must not end the others' stream
                logger.debug("member stream failed member=%s reason=%s", member.address, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._options.max_retry_s)


async def serve_monitor(config: ClientConfig, task_id: int, host: str, port: int,
                        stop: asyncio.Event, on_ready: Callable[[str], None],
                        options: MonitorOptions | None = None) -> None:
    """Serve the monitor of ``task_id`` on ``host:port`` (0 = a free port) until ``stop``."""
    async with connect(config) as conn, aiohttp.ClientSession() as http:
        try:
            await conn.market.get_task(task_id)
        except ContractRevert as exc:
            raise ClientError(f"task {task_id} cannot be monitored: {exc}") from None
        app = GroupMonitor(conn, http, task_id, options).app()

        def ready(bound: int) -> None:
            url = f"http://{host}:{bound}/?task={task_id}"
            logger.info("monitor serving task=%d url=%s", task_id, url)
            on_ready(url)

        await serve_app(app, host, port, stop, ready)
