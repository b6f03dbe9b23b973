"""The miner's aiohttp server: the exchange routes, ``/metrics``, and mounted sub-apps.

One :class:`TransportServer` per miner. Its root application serves ``/metrics``
(Prometheus text of the registry passed in) and mounts the exchange routes
(:mod:`node.transport.routes`) under ``/manta/v1/transport/``. Other routes (artifacts,
progress, the monitor) are mounted by their owners through ``subapps``; state lives in
typed ``AppKey``s, the session sweeper in ``cleanup_ctx``. Connections are capped and idle
ones closed (:mod:`node.transport.guard`; aiohttp's keep-alive timeout).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from aiohttp import web
from eth_account.signers.local import LocalAccount

from node.transport.config import TransportConfig
from node.transport.frames import MessageHead
from node.transport.guard import ConnectionGuard
from node.transport.metrics import MetricsRegistry, TransportMetrics
from node.transport.routes import (
    MAX_HELLO_BYTES,
    PREFIX,
    REFUSAL_HEADER,
    REGISTRY_KEY,
    Admission,
    Admit,
    ExchangeState,
    Handler,
    IncomingMessage,
    exchange_app,
    metrics_route,
)
from node.transport.sessions import Clock, Membership, Responder, SessionTable
from node.transport.stream import Allocator

__all__ = [
    "MAX_HELLO_BYTES",
    "PREFIX",
    "REFUSAL_HEADER",
    "Admission",
    "Admit",
    "Handler",
    "IncomingMessage",
    "TransportServer",
]

logger = logging.getLogger(__name__)


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
        metrics = TransportMetrics.create(registry)
        state = ExchangeState(
            responder=Responder(account, membership, config, clock),
            sessions=SessionTable(config.max_sessions, config.max_sessions_per_peer),
            config=config,
            metrics=metrics,
            clock=clock,
            guard=ConnectionGuard(config.max_connections, metrics),
        )
        root = web.Application(middlewares=[state.guard.middleware()])
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
            keepalive_timeout=config.keepalive_timeout_s,
        )
        await runner.setup()
        assert runner.server is not None
        state.guard.attach(runner.server)
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
        self,
        msg_type: str,
        handler: Handler,
        *,
        allocate: Allocator | None = None,
        admit: Admit | None = None,
    ) -> None:
        """Deliver messages of ``msg_type`` to ``handler`` (replaces an earlier one).

        ``admit(admission)``, if given, sees each message's verified head (sender, round,
        tag, size) before anything is held for it, and raises a ``TransportError`` to refuse
        it (counted under its reason). ``allocate(nbytes)``, if given, supplies the payload
        buffer of each admitted message (a writable buffer of exactly ``nbytes``, e.g. one
        recycled from an earlier message: a fresh large buffer costs a page fault per 4 KiB).
        The buffer reaches the handler only if every chunk verified.
        """
        MessageHead(msg_type, "", 0).encode()  # validates the name
        self._state.handlers[msg_type] = handler
        self._state.allocators.pop(msg_type, None)
        self._state.admitters.pop(msg_type, None)
        if allocate is not None:
            self._state.allocators[msg_type] = allocate
        if admit is not None:
            self._state.admitters[msg_type] = admit

    def unregister(self, msg_type: str) -> None:
        self._state.handlers.pop(msg_type, None)
        self._state.allocators.pop(msg_type, None)
        self._state.admitters.pop(msg_type, None)

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

    @property
    def connection_count(self) -> int:
        return len(self._state.guard.conns)

    def sessions_of(self, peer: str) -> int:
        """How many sessions ``peer`` (checksum address) holds here."""
        return self._state.sessions.count(peer)

    async def shutdown(self) -> None:
        """Stop listening, finish in-flight requests, cancel the sweeper."""
        await self._runner.cleanup()
