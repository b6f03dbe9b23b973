"""Sessions: their state, the server's table of them, and both sides of the handshake.

A :class:`Session` is what one handshake produced: the peer's address, the task and scope
it is bound to, our outgoing :class:`~node.transport.frames.FrameSealer`, the incoming
:class:`~node.transport.frames.FrameOpener`, and a lock that keeps one message at a time
per direction (frames of two messages must not interleave, or their sequence numbers would
be refused as reorders); a message takes it only after its HEAD frame verified
(:meth:`Session.receive`), so a sender without the key never holds it. :class:`Responder`
runs the server's side of the handshake; :class:`Initiator` the client's. Neither does
network I/O; the clock is passed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account.signers.local import LocalAccount

from node.errors import MantaError
from node.transport.config import TransportConfig
from node.transport.errors import NotAMember, ReplayError, TransportBusy, UnknownSession
from node.transport.frames import FrameOpener, FrameSealer
from node.transport.handshake import (
    Hello,
    Mode,
    SessionKeys,
    Welcome,
    address_bytes,
    checksum,
    decode_hello,
    decode_welcome,
    derive_keys,
    encode_hello,
    encode_welcome,
    new_ephemeral,
    sign_digest,
    verify_hello,
    verify_welcome,
)
from node.transport.replay import ReplayStore

logger = logging.getLogger(__name__)

Membership = Callable[[int, str], Awaitable[bool]]
"""``async (task_id, checksum_address) -> bool``: is this address in the task's group?"""
Clock = Callable[[], float]


@dataclass
class _Claim:
    """The message that holds (or waits for) a session: its HEAD's sequence number and the
    task reading it. ``preemptible`` is false while its handler runs."""

    seq: int
    task: asyncio.Task[object] | None
    preemptible: bool = True


@dataclass
class Session:
    """One authenticated channel with one peer, for one task and scope."""

    session_id: bytes
    peer: str
    task_id: int
    scope: str
    mode: Mode
    sealer: FrameSealer
    opener: FrameOpener
    expires_s: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _claim: _Claim | None = field(default=None, repr=False)

    @classmethod
    def from_keys(
        cls,
        keys: SessionKeys,
        hello: Hello,
        initiator: bool,
        config: TransportConfig,
        now_s: float,
    ) -> Session:
        out_key, in_key = (
            (keys.initiator_to_responder, keys.responder_to_initiator)
            if initiator
            else (keys.responder_to_initiator, keys.initiator_to_responder)
        )
        sid, task = keys.session_id, hello.task_id
        return cls(
            session_id=sid,
            peer=checksum(hello.responder if initiator else hello.initiator),
            task_id=task,
            scope=hello.scope,
            mode=hello.mode,
            sealer=FrameSealer(out_key, hello.mode, sid, task),
            opener=FrameOpener(in_key, hello.mode, sid, task, config.max_chunk_bytes),
            expires_s=now_s + config.session_ttl_s,
        )

    @contextlib.asynccontextmanager
    async def receive(self, seq: int) -> AsyncIterator[_Claim]:
        """Hold the session's incoming direction for the message whose verified HEAD frame
        has sequence number ``seq``, and commit that number.

        The sender sends one message at a time per session, so a newer HEAD means that the
        message being received (or waiting) is dead or a replay: it is cancelled
        (preempted) unless its handler is running, and the newer one goes next. A HEAD not
        newer than the current claim's is a replay, refused at once without waiting. The
        yielded claim's ``preempted`` count says how many claims this one cancelled (0/1).
        """
        current = self._claim
        if current is not None:
            if seq <= current.seq:
                raise ReplayError(f"frame {seq} while frame {current.seq} is being received")
            if current.preemptible and current.task is not None:
                current.task.cancel()
        claim = _Claim(seq, asyncio.current_task())
        self._claim = claim
        try:
            async with self.lock:
                self.opener.commit(seq)
                yield claim
        finally:
            if self._claim is claim:
                self._claim = None

    def preempts(self, seq: int) -> bool:
        """Whether a message with HEAD ``seq`` would cancel the current claim."""
        current = self._claim
        return current is not None and seq > current.seq and current.preemptible


@dataclass
class SessionTable:
    """The server's sessions by id, bounded in number, per peer, and in lifetime.

    A peer at ``per_peer`` sessions that opens another loses its own oldest one; a full table
    makes room by evicting the oldest session of the peer holding the most. Nobody is ever
    refused for lack of room, so a member opening sessions in a loop only churns its own.
    """

    capacity: int
    per_peer: int = 8
    sessions: dict[bytes, Session] = field(default_factory=dict)
    _by_peer: dict[str, dict[bytes, None]] = field(default_factory=dict)

    def add(self, session: Session, now_s: float) -> int:
        """Insert ``session``; the number of sessions evicted to make room."""
        evicted = 0
        while self.count(session.peer) >= self.per_peer:
            self._evict_oldest(session.peer)
            evicted += 1
        if len(self.sessions) >= self.capacity:
            self.sweep(now_s)
        while len(self.sessions) >= self.capacity and self._by_peer:
            self._evict_oldest(max(self._by_peer, key=self.count))
            evicted += 1
        self.sessions[session.session_id] = session
        self._by_peer.setdefault(session.peer, {})[session.session_id] = None
        return evicted

    def _evict_oldest(self, peer: str) -> None:
        mine = self._by_peer[peer]
        sid = next(iter(mine))
        del mine[sid]
        if not mine:
            del self._by_peer[peer]
        self.sessions.pop(sid, None)

    def get(self, session_id: bytes, now_s: float) -> Session:
        session = self.sessions.get(session_id)
        if session is None or session.expires_s <= now_s:
            if session is not None:
                self._drop(session_id)
            raise UnknownSession(session=session_id.hex()[:8])
        return session

    def count(self, peer: str) -> int:
        """How many sessions ``peer`` holds."""
        return len(self._by_peer.get(peer, ()))

    def clear(self) -> None:
        self.sessions.clear()
        self._by_peer.clear()

    def sweep(self, now_s: float) -> int:
        """Drop expired sessions; how many were dropped."""
        dead = [sid for sid, s in self.sessions.items() if s.expires_s <= now_s]
        for sid in dead:
            self._drop(sid)
        return len(dead)

    def _drop(self, session_id: bytes) -> None:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return
        mine = self._by_peer.get(session.peer)
        if mine is not None:
            mine.pop(session_id, None)
            if not mine:
                del self._by_peer[session.peer]


@dataclass
class Responder:
    """The server's side of the handshake: check a hello, answer with a welcome."""

    account: LocalAccount
    membership: Membership
    config: TransportConfig
    clock: Clock
    replay: ReplayStore = field(init=False)

    def __post_init__(self) -> None:
        # a timestamp up to one window in the future stays acceptable for two windows
        self.replay = ReplayStore(2 * self.config.handshake_window_s, self.config.max_replay_nonces)
        self._me = address_bytes(self.account.address)

    async def accept(self, data: bytes) -> tuple[bytes, Session]:
        """The signed welcome for a valid hello, and the session it opens.

        Every check runs before anything is remembered: a refused hello leaves no nonce,
        no session behind.
        """
        hello, signature = decode_hello(data)
        window_s = self.config.handshake_window_s
        verify_hello(hello, signature, me=self._me, now_s=self.clock(), window_s=window_s)
        self.replay.check(hello.nonce, self.clock())
        peer = checksum(hello.initiator)
        try:
            member = await self.membership(hello.task_id, peer)
        except MantaError as exc:
            raise TransportBusy("membership check unavailable") from exc
        if not member:
            raise NotAMember(address=peer, task_id=hello.task_id)
        now_s = self.clock()
        self.replay.add(hello.nonce, now_s)  # re-checks: no await since the first check
        private, public = new_ephemeral()
        welcome = Welcome(
            hello.mode,
            self._me,
            hello.initiator,
            public,
            secrets.token_bytes(32),
            int(now_s * 1000),
            hello.digest(),
        )
        keys = derive_keys(private, hello, welcome)
        answer = encode_welcome(welcome, sign_digest(self.account, welcome.digest()))
        return answer, Session.from_keys(keys, hello, False, self.config, now_s)


@dataclass
class Initiator:
    """The client's side of one handshake: a signed hello, then the session from the welcome."""

    hello: Hello
    private: X25519PrivateKey
    encoded: bytes

    @classmethod
    def start(
        cls,
        account: LocalAccount,
        peer_address: str,
        task_id: int,
        scope: str,
        mode: Mode,
        now_s: float,
    ) -> Initiator:
        private, public = new_ephemeral()
        hello = Hello(
            mode,
            address_bytes(account.address),
            address_bytes(peer_address),
            public,
            secrets.token_bytes(32),
            int(now_s * 1000),
            task_id,
            scope,
        )
        return cls(hello, private, encode_hello(hello, sign_digest(account, hello.digest())))

    def finish(self, data: bytes, config: TransportConfig, now_s: float) -> Session:
        """Check the welcome against our hello and derive the session."""
        welcome, signature = decode_welcome(data)
        verify_welcome(
            welcome,
            signature,
            hello=self.hello,
            now_s=now_s,
            window_s=config.handshake_window_s,
        )
        keys = derive_keys(self.private, self.hello, welcome)
        return Session.from_keys(keys, self.hello, True, config, now_s)
