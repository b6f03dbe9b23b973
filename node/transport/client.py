"""The sending side: one authenticated session to one peer's server.

``client = await PeerClient.create(account, url, peer_address, task_id)`` handshakes (the
peer must prove ``peer_address``), then ``reply = await client.send(msg_type, payload)``
streams a message and returns the peer's reply. Messages on one client go one at a time
(frames of one direction are strictly ordered); open several clients to one peer for
parallel streams. The HTTP connection is kept alive between messages.

Failures are named: :class:`~node.transport.errors.PeerUnreachable` (nothing listens, the
connection broke), :class:`~node.transport.errors.PeerTimeout`,
:class:`~node.transport.errors.PeerRefused` (the peer's refusal reason is ``refusal``), or
the frame errors of a reply that fails its checks. A session the peer no longer holds
(expired, peer restarted) is re-opened once, transparently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence

import aiohttp
from eth_account.signers.local import LocalAccount

from node.transport.config import TransportConfig
from node.transport.errors import (
    AuthError,
    MessageTooLarge,
    PeerRefused,
    PeerTimeout,
    PeerUnreachable,
    TransportError,
    TruncatedFrame,
)
from node.transport.frames import MessageHead, Payload
from node.transport.handshake import Mode
from node.transport.metrics import MetricsRegistry, TransportMetrics
from node.transport.server import MAX_HELLO_BYTES, PREFIX, REFUSAL_HEADER
from node.transport.sessions import Clock, Initiator, Session
from node.transport.stream import (
    Buffer,
    as_parts,
    read_message,
    seal_message,
    stream_frames,
    wire_bytes,
)

logger = logging.getLogger(__name__)


class PeerClient:
    """An open session to one peer, for one task and scope."""

    def __init__(
        self,
        account: LocalAccount,
        url: str,
        peer_address: str,
        task_id: int,
        scope: str,
        mode: Mode,
        config: TransportConfig,
        metrics: TransportMetrics,
        http: aiohttp.ClientSession,
        owns_http: bool,
        clock: Clock,
    ) -> None:
        self._account, self.url, self.peer_address = account, url.rstrip("/"), peer_address
        self.task_id, self.scope, self.mode = task_id, scope, mode
        self._config, self._metrics, self._clock = config, metrics, clock
        self._http, self._owns_http = http, owns_http
        self._session: Session | None = None
        self._renewing = asyncio.Lock()

    @classmethod
    async def create(
        cls,
        account: LocalAccount,
        url: str,
        peer_address: str,
        task_id: int,
        *,
        scope: str = "gradients",
        mode: Mode = Mode.AEAD,
        config: TransportConfig | None = None,
        registry: MetricsRegistry | None = None,
        http: aiohttp.ClientSession | None = None,
        clock: Clock = time.time,
    ) -> PeerClient:
        """Open a session to the server at ``url`` run by ``peer_address``.

        ``http`` may be shared between clients (it is then not closed by :meth:`shutdown`).
        """
        config = config or TransportConfig()
        metrics = TransportMetrics.create(registry if registry is not None else MetricsRegistry())
        owns = http is None
        if http is None:
            http = aiohttp.ClientSession(read_bufsize=2 * config.max_chunk_bytes)
        client = cls(
            account, url, peer_address, task_id, scope, mode, config, metrics, http, owns, clock
        )
        try:
            await client.handshake()
        except BaseException:
            await client.shutdown()
            raise
        return client

    @property
    def session(self) -> Session | None:
        return self._session

    def _timeout(self, total_s: float) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=total_s,
            sock_connect=self._config.connect_timeout_s,
            sock_read=self._config.read_timeout_s,
        )

    @contextlib.contextmanager
    def _network_errors(self, what: str, timeout_s: float) -> Iterator[None]:
        """Name the failures of one network call."""
        try:
            yield
        except TimeoutError:
            raise PeerTimeout(url=self.url, what=what, timeout_s=timeout_s) from None
        except aiohttp.ClientError as exc:
            raise PeerUnreachable(type(exc).__name__, url=self.url) from None

    async def handshake(self) -> None:
        """(Re)open the session: a fresh X25519 key, nonce and timestamp, signed."""
        initiator = Initiator.start(
            self._account, self.peer_address, self.task_id, self.scope, self.mode, self._clock()
        )
        total_s = self._config.handshake_timeout_s
        url = self.url + PREFIX + "handshake"
        with self._network_errors("handshake", total_s):
            async with self._http.post(
                url, data=initiator.encoded, timeout=self._timeout(total_s)
            ) as response:
                self._check_status(response, "handshake")
                data = await _read_welcome(response)
        try:
            self._session = initiator.finish(data, self._config, self._clock())
        except TransportError as exc:
            self._metrics.refused.inc(reason=exc.reason)
            raise
        self._metrics.handshakes.inc(role="initiator")
        logger.info(
            "session opened peer=%s task=%d scope=%s mode=%s",
            self.peer_address,
            self.task_id,
            self.scope,
            self.mode.name,
        )

    def _check_status(self, response: aiohttp.ClientResponse, what: str) -> None:
        if response.status != 200:
            raise PeerRefused(
                url=self.url,
                what=what,
                status=response.status,
                refusal=response.headers.get(REFUSAL_HEADER, "unknown"),
            )

    async def send(
        self,
        msg_type: str,
        payload: Payload | Sequence[Payload],
        *,
        round_id: int = 0,
        tag: str = "",
        timeout_s: float | None = None,
    ) -> Buffer:
        """Stream one message to the peer's ``msg_type`` handler; the peer's reply.

        ``payload`` is one buffer or several sent back to back (never joined here).
        """
        parts = as_parts(payload)
        head = MessageHead(msg_type, tag, sum(p.nbytes for p in parts))
        head.encode()  # validates names before anything is sent
        if head.total_bytes > self._config.max_message_bytes:
            raise MessageTooLarge(
                what="message", size=head.total_bytes, limit=self._config.max_message_bytes
            )
        session = self._session
        if session is None or session.expires_s <= self._clock() + 1.0:
            session = await self._renew(session)
        try:
            return await self._send_once(session, head, round_id, parts, timeout_s)
        except PeerRefused as exc:
            if exc.refusal != "unknown_session":
                raise
        session = await self._renew(session)
        return await self._send_once(session, head, round_id, parts, timeout_s)

    async def _renew(self, stale: Session | None) -> Session:
        """Handshake again unless a concurrent send already replaced ``stale``."""
        async with self._renewing:
            if self._session is stale:
                await self.handshake()
            assert self._session is not None
            return self._session

    async def _send_once(
        self,
        session: Session,
        head: MessageHead,
        round_id: int,
        parts: list[memoryview],
        timeout_s: float | None,
    ) -> Buffer:
        total_s = timeout_s if timeout_s is not None else self._config.message_timeout_s
        url = f"{self.url}{PREFIX}sessions/{session.session_id.hex()}/messages"
        async with session.lock:
            chunk_bytes = self._config.chunk_bytes
            frames = seal_message(session.sealer, head, round_id, parts, chunk_bytes)
            size = wire_bytes(head, parts, chunk_bytes)
            try:
                with self._network_errors(head.msg_type, total_s):
                    async with self._http.post(
                        url,
                        data=stream_frames(frames),
                        headers={"Content-Length": str(size)},
                        timeout=self._timeout(total_s),
                    ) as response:
                        self._check_status(response, head.msg_type)
                        _, _, reply = await read_message(
                            response.content, session.opener, self._config.max_message_bytes
                        )
            except (PeerRefused, PeerTimeout, PeerUnreachable):
                raise
            except TransportError as exc:  # the reply failed a check
                self._metrics.refused.inc(reason=exc.reason)
                raise
        self._metrics.messages_out.inc()
        self._metrics.bytes_out.inc(head.total_bytes)
        return reply

    async def shutdown(self) -> None:
        """Forget the session and close the HTTP session if this client made it."""
        self._session = None
        if self._owns_http and not self._http.closed:
            await self._http.close()


async def _read_welcome(response: aiohttp.ClientResponse) -> bytes:
    """The welcome's bytes, bounded by :data:`MAX_HELLO_BYTES`."""
    size = response.content_length
    if size is None or size > MAX_HELLO_BYTES:
        raise AuthError("malformed welcome")
    try:
        return await response.content.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise TruncatedFrame(got=len(exc.partial), expected=size) from None
