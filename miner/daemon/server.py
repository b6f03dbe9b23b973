"""The miner's HTTP server (aiohttp): artifacts, manifests, progress, live events, metrics.

HTTP API (all paths relative to the miner's endpoint, as registered on chain)
-----------------------------------------------------------------------------

``GET /healthz``
    ``200`` ``{"status": "ok", "address": "0x…" | null, "chain_id": int | null,
    "tasks_active": int}``.

``GET|HEAD /artifacts/{sha256}``
    The file whose sha256 is ``{sha256}`` (64 hex digits, ``0x`` optional), streamed from
    disk as ``application/octet-stream`` with ``X-Content-SHA256: <hex>``,
    ``Accept-Ranges: bytes``, an ``ETag``/``Last-Modified`` (usable with ``If-Range``) and
    ``Cache-Control: public, max-age=31536000, immutable`` (content-addressed).
    ``Range: bytes=a-b`` (also ``a-`` and ``-n``) → ``206`` with ``Content-Range``; an
    unsatisfiable range → ``416``. ``400`` for a malformed digest, ``404`` if unknown.
    Files were hash-checked when stored; a downloader must still check the digest.

``GET /tasks/{task_id}/manifest``
    The canonical ResultManifest bytes (``application/json``) with header
    ``X-Manta-Result-Root: 0x…`` (keccak256 of exactly these bytes). ``404`` until the
    manifest exists.

``GET /tasks/{task_id}/signature?result_root=0x…``
    ``200`` ``{"signer": "0x…", "signature": "0x…"}``: this miner's EIP-712 signature of
    ``Result(task_id, result_root, shares)`` once it has checked and signed that manifest;
    ``404`` before. The leader collects these and checks each one by recovering its signer.

``GET /tasks/{task_id}/progress``
    ``200`` JSON snapshot: the last value of every progress field (see
    :mod:`miner.daemon.progress`: ``phase``, ``epoch``, ``step``, ``total_steps``,
    ``subnets`` [{``name``, ``loss``, ``accuracy``}], ``samples_per_s``, ``peers``,
    ``grad_bytes_sent``, ``grad_bytes_received``, ``time_s``) plus ``task_id``, ``seq``,
    ``steps_per_s``, ``eta_s`` and ``daemon_phase`` (the task as the daemon sees it:
    ``claimed``, ``training``, ``submitted``…). ``404`` if the daemon knows nothing of it.

``GET /tasks/{task_id}/events``
    Server-Sent Events (``text/event-stream``). First ``event: snapshot`` (the JSON above,
    if any), then one ``event: progress`` per update in order, each with ``id: <seq>``
    and ``data: <one JSON line>`` holding the fields that changed plus ``task_id``,
    ``seq``, ``time_s``, ``eta_s``. A comment line ``: keepalive`` every
    ``http.sse_keepalive_s``. When the task reaches ``done``/``failed`` (or the server
    stops), ``event: end`` and the stream closes. A slow client loses its oldest queued
    events (``seq`` shows the gap), never the snapshot.

``GET /metrics``
    Prometheus text exposition 0.0.4; names ``manta_miner_<what>_<unit>``.

Extension hook: :func:`create_app` takes ``subapps`` (prefix → application, e.g. the
transport's gradient exchange under ``/exchange``), extra ``routes`` (e.g. the monitor page
and its data, :mod:`miner.daemon.monitor`) and extra ``cleanup_ctx`` generators
(background tasks owned by the app). On shutdown every live stream gets its ``end`` first,
so an open page never holds a stopping daemon up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web

from miner.daemon.artifacts import ArtifactStore, normalize_sha256
from miner.daemon.errors import ArtifactError
from miner.daemon.metrics import CONTENT_TYPE, MinerMetrics
from miner.daemon.progress import ProgressHub
from miner.daemon.store import StateStore
from node.monitor.sse import FINAL_PHASES, sse_frame

logger = logging.getLogger(__name__)

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ServerDeps:
    """What the handlers use; made by the daemon (or a test) and stored under :data:`DEPS`."""

    store: StateStore
    artifacts: ArtifactStore
    hub: ProgressHub
    metrics: MinerMetrics
    address: str | None = None
    chain_id: int | None = None
    sse_keepalive_s: float = 15.0


DEPS = web.AppKey("deps", ServerDeps)


def task_id_param(request: web.Request) -> int:
    """The ``{task_id}`` of the route (400 unless a positive integer)."""
    raw = request.match_info["task_id"]
    if not raw.isdigit() or int(raw) < 1:
        raise web.HTTPBadRequest(text=f"bad task id {raw!r}")
    return int(raw)


async def healthz(request: web.Request) -> web.Response:
    deps = request.config_dict[DEPS]
    active = await asyncio.to_thread(deps.store.active_count)
    return web.json_response({"status": "ok", "address": deps.address,
                              "chain_id": deps.chain_id, "tasks_active": active})


async def artifact(request: web.Request) -> web.StreamResponse:
    deps = request.config_dict[DEPS]
    try:
        key = normalize_sha256(request.match_info["sha256"])
    except ArtifactError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    path = await asyncio.to_thread(deps.artifacts.path_of, key)
    if path is None:
        raise web.HTTPNotFound(text=f"no artifact {key}")
    return web.FileResponse(path, headers={
        "Content-Type": "application/octet-stream", "X-Content-SHA256": key,
        "Cache-Control": "public, max-age=31536000, immutable",
    })


async def _count_artifact_bytes(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: by now a file response knows the length of its range."""
    resource = request.match_info.route.resource
    if resource is None or resource.canonical != "/artifacts/{sha256}":
        return
    if request.method == "GET" and response.status in (200, 206) and response.content_length:
        request.config_dict[DEPS].metrics.artifact_bytes.inc(response.content_length)


async def manifest(request: web.Request) -> web.Response:
    deps = request.config_dict[DEPS]
    task_id = task_id_param(request)
    body = await asyncio.to_thread(deps.store.manifest, task_id)
    record = await asyncio.to_thread(deps.store.task, task_id)
    if body is None or record is None or record.result_root is None:
        raise web.HTTPNotFound(text=f"no manifest for task {task_id} yet")
    return web.Response(body=body, content_type="application/json",
                        headers={"X-Manta-Result-Root": record.result_root})


async def signature(request: web.Request) -> web.Response:
    deps = request.config_dict[DEPS]
    task_id = task_id_param(request)
    root = request.query.get("result_root", "")
    if deps.address is None or not root:
        raise web.HTTPNotFound(text="no signature")
    signed = await asyncio.to_thread(deps.store.signatures, task_id, root)
    mine = {k.lower(): v for k, v in signed.items()}.get(deps.address.lower())
    if mine is None:
        raise web.HTTPNotFound(text=f"task {task_id}: {root} not signed by this miner")
    return web.json_response({"signer": deps.address, "signature": "0x" + mine.hex()})


async def progress(request: web.Request) -> web.Response:
    deps = request.config_dict[DEPS]
    task_id = task_id_param(request)
    snapshot = deps.hub.snapshot(task_id)
    record = await asyncio.to_thread(deps.store.task, task_id)
    if snapshot is None and record is None:
        raise web.HTTPNotFound(text=f"unknown task {task_id}")
    body = dict(snapshot or {"task_id": task_id})
    body["daemon_phase"] = record.phase.value if record is not None else None
    return web.json_response(body)


async def events(request: web.Request) -> web.StreamResponse:
    deps = request.config_dict[DEPS]
    task_id = task_id_param(request)
    subscription = deps.hub.subscribe(task_id)  # before the snapshot: no update falls between
    try:
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        })
        await response.prepare(request)
        await response.write(b"retry: 3000\n\n")
        snapshot = deps.hub.snapshot(task_id)
        last_seq = 0
        if snapshot is not None:
            last_seq = int(snapshot.get("seq", 0))
            await response.write(sse_frame("snapshot", snapshot, last_seq))
            if snapshot.get("phase") in FINAL_PHASES:
                await response.write(sse_frame("end", {"task_id": task_id}))
                await response.write_eof()
                return response
        while True:
            try:
                event = await asyncio.wait_for(subscription.get(), deps.sse_keepalive_s)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if event is None:
                await response.write(sse_frame("end", {"task_id": task_id}))
                break
            if int(event.get("seq", 0)) <= last_seq:
                continue  # already contained in the snapshot
            await response.write(sse_frame("progress", event, event.get("seq")))
        await response.write_eof()
        return response
    except (ConnectionResetError, asyncio.CancelledError):
        logger.debug("sse client left task=%d", task_id)
        raise
    finally:
        subscription.close()


async def metrics(request: web.Request) -> web.Response:
    deps = request.config_dict[DEPS]
    return web.Response(body=deps.metrics.registry.render().encode(),
                        headers={"Content-Type": CONTENT_TYPE})


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request by route and status."""
    deps = request.config_dict[DEPS]
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        deps.metrics.http_requests.inc(route=name, status=str(exc.status))
        raise
    deps.metrics.http_requests.inc(route=name, status=str(response.status))
    return response


async def _end_streams(app: web.Application) -> None:
    """``on_shutdown`` (before aiohttp waits for the handlers to finish): end every live
    stream, so SSE handlers return and a stop is not held up by an open page."""
    hub = app[DEPS].hub
    for task_id in hub.tasks():
        hub.end(task_id)


def create_app(
    deps: ServerDeps,
    *,
    subapps: Mapping[str, web.Application] | None = None,
    routes: Sequence[web.AbstractRouteDef] = (),
    cleanup_ctx: Sequence[CleanupCtx] = (),
) -> web.Application:
    """The miner's application; see the module docstring for the API and the hooks."""
    app = web.Application(middlewares=[count_requests])
    app[DEPS] = deps
    app.add_routes([
        web.get("/healthz", healthz),
        web.get("/artifacts/{sha256}", artifact),
        web.get("/tasks/{task_id}/manifest", manifest),
        web.get("/tasks/{task_id}/signature", signature),
        web.get("/tasks/{task_id}/progress", progress),
        web.get("/tasks/{task_id}/events", events),
        web.get("/metrics", metrics),
    ])
    app.add_routes(list(routes))
    app.on_response_prepare.append(_count_artifact_bytes)
    app.on_shutdown.append(_end_streams)
    app.cleanup_ctx.extend(cleanup_ctx)
    for prefix, subapp in (subapps or {}).items():
        app.add_subapp(prefix, subapp)
    return app
