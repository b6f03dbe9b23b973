"""The gradient-exchange route group of the miner's server, and the state it shares.

- ``POST handshake``: body = a signed hello, answer = a signed welcome (small, bounded);
- ``POST sessions/{session_id}/messages``: body = one message as streamed sealed frames,
  answer = the handler's reply as streamed sealed frames (an empty message when the
  handler returns nothing).

Every refusal is a :class:`~node.transport.errors.TransportError` turned by one middleware
into an HTTP status with an ``X-Manta-Refusal: <reason>`` header, counted in
``manta_transport_refused_total{reason=…}`` and logged without payload or key material.

A message costs the server nothing until it proves where it comes from: its HEAD frame is
read (within ``read_timeout_s``) and verified against the session key before the session's
lock is taken, a buffer allocated, or a handler's budget consulted; then, in order, the
handler's ``admit`` check (round window, mailbox budget…), the sender's in-flight byte
budget, the session (a newer message of the same session preempts an older one still being
received: see :meth:`~node.transport.sessions.Session.receive`), and the body, each read
within ``read_timeout_s`` and all within ``message_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from aiohttp import web

from node.transport.config import TransportConfig
from node.transport.errors import (
    FrameError,
    HandlerFailed,
    PeerBudgetExceeded,
    PeerDisconnected,
    PeerTimeout,
    TransportError,
    TruncatedFrame,
    UnknownMessageType,
)
from node.transport.frames import MessageHead, Payload
from node.transport.guard import ConnectionGuard
from node.transport.metrics import MetricsRegistry, TransportMetrics
from node.transport.sessions import Clock, Responder, Session, SessionTable
from node.transport.stream import (
    Allocator,
    Buffer,
    PacedReader,
    as_parts,
    read_body,
    read_head,
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


@dataclass(frozen=True)
class Admission:
    """What is known of a message once its HEAD frame verified, before its payload is read
    or allocated: who sends how much of what, for which round."""

    peer: str
    task_id: int
    scope: str
    msg_type: str
    tag: str
    round_id: int
    total_bytes: int


Admit = Callable[[Admission], None]
"""Raises a :class:`~node.transport.errors.TransportError` to refuse a message from its head
(e.g. :class:`~node.transport.errors.RoundOutOfWindow`,
:class:`~node.transport.errors.PeerBudgetExceeded`); it is counted under that reason."""


@dataclass
class ExchangeState:
    """Everything the exchange routes share, held by the application (no singletons)."""

    responder: Responder
    sessions: SessionTable
    config: TransportConfig
    metrics: TransportMetrics
    clock: Clock
    guard: ConnectionGuard
    handlers: dict[str, Handler] = field(default_factory=dict)
    allocators: dict[str, Allocator] = field(default_factory=dict)
    admitters: dict[str, Admit] = field(default_factory=dict)
    inflight: dict[str, int] = field(default_factory=dict)

    def payload_buffer(self, head: MessageHead) -> Buffer:
        """Where the payload of an accepted message is opened: the type's allocator's
        buffer, else a fresh ``bytearray``."""
        allocate = self.allocators.get(head.msg_type)
        return bytearray(head.total_bytes) if allocate is None else allocate(head.total_bytes)

    def admit(self, admission: Admission) -> None:
        """The checks a verified head passes before anything is held for its message."""
        if admission.msg_type not in self.handlers:
            raise UnknownMessageType(msg_type=admission.msg_type)
        check = self.admitters.get(admission.msg_type)
        if check is not None:
            check(admission)

    @contextlib.contextmanager
    def reserve(self, peer: str, nbytes: int) -> Iterator[None]:
        """Count ``nbytes`` against ``peer``'s in-flight budget while a message is read."""
        held, limit = self.inflight.get(peer, 0), self.config.peer_inflight_bytes
        if held + nbytes > limit:
            raise PeerBudgetExceeded(
                f"{held} + {nbytes} bytes over {limit}", peer=peer, budget="in-flight"
            )
        self.inflight[peer] = held + nbytes
        try:
            yield
        finally:
            left = self.inflight.get(peer, nbytes) - nbytes
            if left > 0:
                self.inflight[peer] = left
            else:
                self.inflight.pop(peer, None)


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
    except ConnectionError:
        raise PeerDisconnected(what="a hello") from None
    except TimeoutError:
        raise PeerTimeout(url=request.remote, what="hello", timeout_s=timeout_s) from None
    welcome, session = await state.responder.accept(data)
    evicted = state.sessions.add(session, state.clock())
    if evicted:
        state.metrics.sessions_evicted.inc(evicted)
    state.metrics.handshakes.inc(role="responder")
    logger.info(
        "session opened peer=%s task=%d scope=%s mode=%s evicted=%d",
        session.peer,
        session.task_id,
        session.scope,
        session.mode.name,
        evicted,
    )
    return web.Response(body=welcome, content_type="application/octet-stream")


async def message(request: web.Request) -> web.StreamResponse:
    state = request.app[EXCHANGE_KEY]
    config = state.config
    try:
        sid = bytes.fromhex(request.match_info["session_id"])
    except ValueError:
        raise FrameError("session id is not hex") from None
    session = state.sessions.get(sid, state.clock())
    reader = PacedReader(request.content, config.read_timeout_s)
    try:
        async with asyncio.timeout(config.read_timeout_s):
            header, head = await read_head(reader, session.opener, config.max_message_bytes)
    except TimeoutError:
        raise PeerTimeout(
            url=session.peer, what="message head", timeout_s=config.read_timeout_s
        ) from None
    state.guard.trust(request.protocol)  # from here on, a member's message
    state.admit(
        Admission(
            session.peer,
            session.task_id,
            session.scope,
            head.msg_type,
            head.tag,
            header.round_id,
            head.total_bytes,
        )
    )
    with state.reserve(session.peer, head.total_bytes):
        if session.preempts(header.seq):
            state.metrics.refused.inc(reason="preempted")
        async with session.receive(header.seq) as claim:
            payload = state.payload_buffer(head)
            await _read_payload(reader, session, head, header.round_id, payload, config)
            state.metrics.messages_in.inc()
            state.metrics.bytes_in.inc(len(payload))
            incoming = IncomingMessage(
                session.peer,
                session.task_id,
                session.scope,
                head.msg_type,
                head.tag,
                header.round_id,
                payload,
            )
            claim.preemptible = False
            reply = await _dispatch(state.handlers[head.msg_type], incoming)
            claim.preemptible = True
            return await _stream_reply(
                request, session, head.msg_type, header.round_id, reply, config.chunk_bytes
            )


async def _read_payload(
    reader: PacedReader,
    session: Session,
    head: MessageHead,
    round_id: int,
    payload: Buffer,
    config: TransportConfig,
) -> None:
    """The message's chunks into ``payload``, each read within ``read_timeout_s`` and all
    within ``message_timeout_s``."""
    whole = asyncio.timeout(config.message_timeout_s)
    try:
        async with whole:
            await read_body(reader, session.opener, head, round_id, payload)
    except TimeoutError:
        what, timeout_s = (
            ("message body", config.message_timeout_s)
            if whole.expired()
            else ("a frame", config.read_timeout_s)
        )
        raise PeerTimeout(url=session.peer, what=what, timeout_s=timeout_s) from None


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
