"""The server's connection cap: who may hold one of its sockets, and who is closed for whom.

A connection costs the server a file descriptor and a little memory whether or not anything
useful comes over it, so a stranger can exhaust a server by opening connections and sending
nothing (or a byte a second). aiohttp closes a connection idle for ``keepalive_timeout_s``
(also one that never finished a request's headers); this guard bounds how many exist at
once. At ``max_connections`` a new connection is let in by closing the oldest one that no
member is using: idle first, then any not carrying an authenticated message (a handshake in
progress, a request whose HEAD frame has not verified), oldest first. Connections carrying a
member's verified message are never closed for a newcomer; only when every connection does
is the newcomer refused (counted as ``connection_cap``).

:func:`choose_victim` is the pure rule; :class:`ConnectionGuard` keeps the books from the
server's connection callbacks and the request middleware (it wraps ``connection_made`` /
``connection_lost`` of one ``aiohttp.web.Server`` instance: aiohttp offers no other hook).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from node.transport.metrics import TransportMetrics

logger = logging.getLogger(__name__)


class Closable(Protocol):
    """What the guard needs of a connection's protocol object (aiohttp's RequestHandler)."""

    def force_close(self) -> None: ...


@dataclass
class ConnectionState:
    """What the guard knows of one connection; ``order`` increases with opening time."""

    order: int
    busy: int = 0  # requests in progress
    trusted: bool = False  # its current request carries a verified message or handshake


def choose_victim(conns: Iterable[tuple[object, ConnectionState]]) -> object | None:
    """The connection to close for a newcomer: idle ones first, then those not carrying a
    verified message, oldest first; ``None`` when every one carries a member's message."""
    candidates = [
        (state.busy > 0, state.order, key)
        for key, state in conns
        if not (state.busy > 0 and state.trusted)
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda c: (c[0], c[1]))[2]


@dataclass
class ConnectionGuard:
    """Counts and caps the connections of one aiohttp server (see the module docstring)."""

    max_connections: int
    metrics: TransportMetrics
    conns: dict[Closable, ConnectionState] = field(default_factory=dict)
    _orders: itertools.count[int] = field(default_factory=itertools.count)

    def attach(self, server: web.Server) -> None:
        """Wrap ``server``'s connection callbacks (called by each RequestHandler)."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: Any) -> None:
            made(handler, transport)
            if not self.admit(handler):
                transport.abort()

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            self.conns.pop(handler, None)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    def admit(self, handler: Closable) -> bool:
        """Let ``handler``'s connection in, closing another if at the cap; False: refused."""
        if len(self.conns) >= self.max_connections:
            victim = choose_victim(self.conns.items())
            if victim is None:
                self.metrics.connections.inc(event="refused")
                self.metrics.refused.inc(reason="connection_cap")
                logger.info("connection refused reason=connection_cap open=%d", len(self.conns))
                return False
            state = self.conns.pop(victim)  # type: ignore[call-overload]
            victim.force_close()  # type: ignore[attr-defined]
            self.metrics.connections.inc(event="evicted")
            logger.debug("connection evicted busy=%d trusted=%s", state.busy, state.trusted)
        self.conns[handler] = ConnectionState(next(self._orders))
        self.metrics.connections.inc(event="opened")
        return True

    def trust(self, handler: object) -> None:
        """The request in progress on ``handler`` carries a verified message or handshake."""
        state = self.conns.get(handler)  # type: ignore[call-overload]
        if state is not None:
            state.trusted = True

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        """A root middleware marking each connection busy while it carries a request."""

        @web.middleware
        async def track(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            state = self.conns.get(request.protocol)
            if state is None:
                return await handler(request)
            state.busy += 1
            try:
                return await handler(request)
            finally:
                state.busy -= 1
                if not state.busy:
                    state.trusted = False

        return track
