"""The miner's aiohttp server and its gradient-exchange route group.

One :class:`TransportServer` per miner. Its root application serves ``/metrics``
(Prometheus text of the registry passed in) and mounts the exchange routes under
``/manta/v1/transport/``:

- ``POST handshake``: body = a signed hello, answer = a signed welcome (small, bounded);
- ``POST sessions/{session_id}/messages``: body = one message as streamed sealed frames,
  answer = the handler's reply as streamed sealed frames (an empty message when the
  handler returns nothing).

Every refusal is a :class:`~node.transport.errors.TransportError` turned by one middleware
into an HTTP status with an ``X-Manta-Refusal: <reason>`` header, counted in
``manta_transport_refused_total{reason=…}`` and logged without payload or key material.
Other routes (artifacts, progress, the monitor) are mounted by their owners through
``subapps``; state lives in typed ``AppKey``s, the session sweeper in ``cleanup_ctx``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from eth_account.signers.local import LocalAccount

from node.transport.config import TransportConfig
from node.transport.errors import (
    FrameError,
    HandlerFailed,
    PeerTimeout,
    TransportError,
    TruncatedFrame,
    UnknownMessageType,
)
from node.transport.frames import MessageHead, Payload
from node.transport.metrics import MetricsRegistry, TransportMetrics
from node.transport.sessions import Clock, Membership, Responder, Session, SessionTable
from node.transport.stream import (
    Allocator,
    Buffer,
    as_parts,
    read_message,
    seal_message,
    wire_bytes,
)

logger = logging.getLogger(__name__)

PREFIX = "/manta/v1/transport/"
REFUSAL_HEADER = "X-Manta-Refusal"
MAX_HELLO_BYTES = 512


@dataclass(frozen=True)
class IncomingMessage:
    """A message that passed every check, as delivered to its handler.

    ``payload`` is the buffer the handler owns (it may keep or modify it): a fresh
    ``bytearray``, or the one the handler's allocator gave (see
    :meth:`TransportServer.register`).
    """

    peer: str
    task_id: int
    scope: str
    msg_type: str
    tag: str
    round_id: int
    payload: Buffer


Handler = Callable[[IncomingMessage], Awaitable[Payload | None]]
"""Handles one message; what it returns (bytes-like) is sealed and streamed back as the reply."""


@dataclass
class ExchangeState:
    """Everything the exchange routes share, held by the application (no singletons)."""

    responder: Responder
    sessions: SessionTable
    config: TransportConfig
    metrics: TransportMetrics
    clock: Clock
    handlers: dict[str, Handler] = field(default_factory=dict)
    allocators: dict[str, Allocator] = field(default_factory=dict)

    def payload_buffer(self, head: MessageHead) -> Buffer:
        """Where the payload of an accepted message is opened: the type's allocator's
        buffer, else a fresh ``bytearray``."""
        allocate = self.allocators.get(head.msg_type)
        return bytearray(head.total_bytes) if allocate is None else allocate(head.total_bytes)


EXCHANGE_KEY = web.AppKey("exchange", ExchangeState)
REGISTRY_KEY = web.AppKey("metrics_registry", MetricsRegistry)


def _refusal(exc: TransportError, metrics: TransportMetrics) -> web.Response:
    metrics.refused.inc(reason=exc.reason)
    logger.info("refused reason=%s error=%s", exc.reason, exc)
    return web.Response(status=exc.http_status, text=str(exc), headers={REFUSAL_HEADER: exc.reason})


@web.middleware
async def refusals(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn every :class:`TransportError` of a route into a counted, named HTTP refusal."""
    try:
        return await handler(request)
    except TransportError as exc:
        return _refusal(exc, request.app[EXCHANGE_KEY].metrics)


async def handshake(request: web.Request) -> web.Response:
    state = request.app[EXCHANGE_KEY]
    size = request.content_length
    if size is None or size > MAX_HELLO_BYTES:
        raise FrameError("a hello has a Content-Length of at most 512 bytes")
    timeout_s = state.config.handshake_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            data = await request.content.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise TruncatedFrame(got=len(exc.partial), expected=size) from None
    except TimeoutError:
        raise PeerTimeout(url=request.remote, what="hello", timeout_s=timeout_s) from None
    state.sessions.ensure_room(state.clock())  # refuse before the hello's nonce is spent
    welcome, session = await state.responder.accept(data)
    state.sessions.add(session, state.clock())
    state.metrics.handshakes.inc(role="responder")
    logger.info(
        "session opened peer=%s task=%d scope=%s mode=%s",
        session.peer,
        session.task_id,
        session.scope,
        session.mode.name,
    )
    return web.Response(body=welcome, content_type="application/octet-stream")


async def message(request: web.Request) -> web.StreamResponse:
    state = request.app[EXCHANGE_KEY]
    try:
        sid = bytes.fromhex(request.match_info["session_id"])
    except ValueError:
        raise FrameError("session id is not hex") from None
    session = state.sessions.get(sid, state.clock())

    def accept(head: MessageHead) -> None:
        if head.msg_type not in state.handlers:
            raise UnknownMessageType(msg_type=head.msg_type)

    async with session.lock:
        try:
            async with asyncio.timeout(state.config.message_timeout_s):
                head, round_id, payload = await read_message(
                    request.content,
                    session.opener,
                    state.config.max_message_bytes,
                    accept,
                    state.payload_buffer,
                )
        except TimeoutError:
            raise PeerTimeout(
                url=session.peer, what="message body", timeout_s=state.config.message_timeout_s
            ) from None
        state.metrics.messages_in.inc()
        state.metrics.bytes_in.inc(len(payload))
        incoming = IncomingMessage(
            session.peer, session.task_id, session.scope, head.msg_type, head.tag, round_id, payload
        )
        reply = await _dispatch(state.handlers[head.msg_type], incoming)
        return await _stream_reply(
            request, session, head.msg_type, round_id, reply, state.config.chunk_bytes
        )


async def _dispatch(handler: Handler, incoming: IncomingMessage) -> Payload:
    try:
        reply = await handler(incoming)
    except TransportError:
        raise
    except Exception as exc:  # a handler is code we do not own: the boundary of one request
        logger.exception("handler failed msg_type=%s peer=%s", incoming.msg_type, incoming.peer)
        raise HandlerFailed(msg_type=incoming.msg_type) from exc
    return b"" if reply is None else reply


async def _stream_reply(
    request: web.Request,
    session: Session,
    msg_type: str,
    round_id: int,
    reply: Payload,
    chunk_bytes: int,
) -> web.StreamResponse:
    parts = as_parts(reply)
    head = MessageHead(msg_type, "reply", sum(p.nbytes for p in parts))
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = wire_bytes(head, parts, chunk_bytes)
    await response.prepare(request)
    for pieces in seal_message(session.sealer, head, round_id, parts, chunk_bytes):
        for piece in pieces:
            await response.write(piece)
    await response.write_eof()
    return response


async def metrics_route(request: web.Request) -> web.Response:
    text = request.app[REGISTRY_KEY].exposition()
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def _sweeper(app: web.Application) -> AsyncIterator[None]:
    """Drop expired sessions every ``sweep_interval_s`` while the app runs."""
    state = app[EXCHANGE_KEY]

    async def sweep() -> None:
        while True:
            await asyncio.sleep(state.config.sweep_interval_s)
            dropped = state.sessions.sweep(state.clock())
            state.responder.replay.prune(state.clock())
            if dropped:
                logger.debug("sessions expired count=%d", dropped)

    task = asyncio.create_task(sweep())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def exchange_app(state: ExchangeState) -> web.Application:
    """The gradient-exchange route group (mounted at :data:`PREFIX`)."""
    app = web.Application(middlewares=[refusals])
    app[EXCHANGE_KEY] = state
    app.add_routes(
        [
            web.post("/handshake", handshake),
            web.post("/sessions/{session_id}/messages", message),
        ]
    )
    app.cleanup_ctx.append(_sweeper)
    return app


class TransportServer:
    """One miner's HTTP server: the exchange routes, ``/metrics``, and mounted sub-apps.

    Make it with ``await TransportServer.create(...)`` (it is listening when that returns),
    register handlers with :meth:`register` (before or after start), stop it with
    ``await server.shutdown()``.
    """

    def __init__(self, runner: web.AppRunner, site: web.TCPSite, state: ExchangeState) -> None:
        self._runner, self._site, self._state = runner, site, state

    @classmethod
    async def create(
        cls,
        account: LocalAccount,
        membership: Membership,
        *,
        config: TransportConfig | None = None,
        registry: MetricsRegistry | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        subapps: Mapping[str, web.Application] | None = None,
        clock: Clock = time.time,
    ) -> TransportServer:
        """Build the app and start listening (``port=0`` picks a free port)."""
        config = config or TransportConfig()
        registry = registry if registry is not None else MetricsRegistry()
        state = ExchangeState(
            responder=Responder(account, membership, config, clock),
            sessions=SessionTable(config.max_sessions),
            config=config,
            metrics=TransportMetrics.create(registry),
            clock=clock,
        )
        root = web.Application()
        root[REGISTRY_KEY] = registry
        root.router.add_get("/metrics", metrics_route)
        root.add_subapp(PREFIX, exchange_app(state))
        for prefix, sub in (subapps or {}).items():
            root.add_subapp(prefix, sub)
        runner = web.AppRunner(
            root,
            access_log=None,
            read_bufsize=2 * config.max_chunk_bytes,
            shutdown_timeout=config.shutdown_timeout_s,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        server = cls(runner, site, state)
        logger.info("transport listening url=%s address=%s", server.url, account.address)
        return server

    def register(
        self, msg_type: str, handler: Handler, *, allocate: Allocator | None = None
    ) -> None:
        """Deliver messages of ``msg_type`` to ``handler`` (replaces an earlier one).

        ``allocate(nbytes)``, if given, supplies the payload buffer of each accepted message
        (a writable buffer of exactly ``nbytes``, e.g. one recycled from an earlier message:
        a fresh large buffer costs a page fault per 4 KiB). It is called only after the head
        passed its checks, and the buffer reaches the handler only if every chunk verified.
        """
        MessageHead(msg_type, "", 0).encode()  # validates the name
        self._state.handlers[msg_type] = handler
        if allocate is None:
            self._state.allocators.pop(msg_type, None)
        else:
            self._state.allocators[msg_type] = allocate

    def unregister(self, msg_type: str) -> None:
        self._state.handlers.pop(msg_type, None)
        self._state.allocators.pop(msg_type, None)

    @property
    def port(self) -> int:
        return int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        """Base URL peers connect to (``http://host:port``)."""
        host = str(self._runner.addresses[0][0])
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    @property
    def address(self) -> str:
        return str(self._state.responder.account.address)

    @property
    def metrics(self) -> TransportMetrics:
        return self._state.metrics

    @property
    def session_count(self) -> int:
        return len(self._state.sessions.sessions)

    async def shutdown(self) -> None:
        """Stop listening, finish in-flight requests, cancel the sweeper."""
        await self._runner.cleanup()
