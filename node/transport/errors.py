# ruff: noqa: N818 (the names read as facts: StaleTimestamp, WrongRecipient, TamperedFrame)
"""The transport's error subtree (everything under :class:`TransportError`).

Every check that refuses input raises one of these. Each class carries ``reason``, a short
snake_case label that names the check: it is the ``reason`` label of the
``manta_transport_refused_total`` counter and the ``X-Manta-Refusal`` header of an HTTP
refusal, so a refusal reads the same in logs, metrics and on the wire. Messages name peers
by address and never carry keys, signatures or payload bytes.

- :class:`AuthError` and its children refuse a handshake or a session (HTTP 401/403);
- :class:`FrameError` and its children refuse a frame or a message (HTTP 400/413);
- :class:`PeerBudgetExceeded` and :class:`RoundOutOfWindow` refuse what a member may send but
  not that much of, or not that far ahead (HTTP 429/409);
- :class:`PeerUnreachable`, :class:`PeerTimeout`, :class:`PeerRefused` are what a sender sees.

Refusals that never reach a route are counted under reasons of their own (no class):
``connection_cap`` (a connection refused at the cap), ``preempted`` (a message abandoned for
a newer one on its session).
"""

from __future__ import annotations

from typing import ClassVar

from node.errors import MantaError


class TransportError(MantaError):
    """Root of every error raised by ``node.transport``."""

    reason: ClassVar[str] = "transport_error"
    http_status: ClassVar[int] = 400


class AuthError(TransportError):
    """A handshake or session that does not prove who it claims to be."""

    template: ClassVar[str] = "authentication failed: {detail}"
    reason: ClassVar[str] = "bad_signature"
    http_status: ClassVar[int] = 401


class ReplayError(AuthError):
    """A handshake nonce already seen, or a frame whose sequence number did not increase."""

    template: ClassVar[str] = "replay refused: {detail}"
    reason: ClassVar[str] = "replay"


class StaleTimestamp(AuthError):
    """A handshake signed too long ago (or too far in the future) for the replay window."""

    template: ClassVar[str] = (
        "handshake timestamp {timestamp_ms} ms is {skew_s:.1f} s away from now "
        "(window {window_s} s)"
    )
    reason: ClassVar[str] = "stale_timestamp"


class WrongRecipient(AuthError):
    """A handshake addressed to another peer."""

    template: ClassVar[str] = "handshake is addressed to {recipient}, not to {me}"
    reason: ClassVar[str] = "wrong_recipient"


class NotAMember(AuthError):
    """A peer that proved its address but is not in the task's group."""

    template: ClassVar[str] = "{address} is not a member of task {task_id}"
    reason: ClassVar[str] = "not_a_member"
    http_status: ClassVar[int] = 403


UnknownPeer = NotAMember


class UnknownSession(AuthError):
    """A message for a session this server does not hold (never opened, expired, evicted)."""

    template: ClassVar[str] = "no session {session}"
    reason: ClassVar[str] = "unknown_session"


class TransportBusy(TransportError):
    """A table (sessions, replay nonces) is full; the peer should retry later."""

    template: ClassVar[str] = "transport busy: {detail}"
    reason: ClassVar[str] = "busy"
    http_status: ClassVar[int] = 503


class PeerBudgetExceeded(TransportError):
    """A member that holds more than its share of a bounded resource (bytes in flight or
    parked in a mailbox, messages queued); it may retry once what it holds is released."""

    template: ClassVar[str] = "peer {peer} is over its {budget} budget: {detail}"
    reason: ClassVar[str] = "peer_budget"
    http_status: ClassVar[int] = 429


class RoundOutOfWindow(TransportError):
    """A message for a round this receiver will not hold: already finished, or too far ahead
    of the round it is in (nothing is parked for the future beyond the window)."""

    template: ClassVar[str] = "round {round_id} from {peer} is outside the window {window}"
    reason: ClassVar[str] = "round_window"
    http_status: ClassVar[int] = 409


class FrameError(TransportError):
    """A frame or message that does not parse (wrong version, kind, flags or layout)."""

    template: ClassVar[str] = "bad frame: {detail}"
    reason: ClassVar[str] = "bad_frame"


class TamperedFrame(FrameError):
    """A frame whose authentication tag does not verify (header or body changed)."""

    template: ClassVar[str] = "frame {seq} failed authentication"
    reason: ClassVar[str] = "tampered_frame"


class TruncatedFrame(FrameError):
    """A body that ended before the frame or message it announced was complete."""

    template: ClassVar[str] = "body ended after {got} of {expected} bytes"
    reason: ClassVar[str] = "truncated"


class PeerDisconnected(FrameError):
    """The sender's connection closed while its message was being read (counted like any
    other refusal: a body dropped half-way costs the receiver as much as a malformed one)."""

    template: ClassVar[str] = "connection dropped while reading {what}"
    reason: ClassVar[str] = "disconnected"


class MessageTooLarge(FrameError):
    """A message or chunk over the configured limit; refused before anything is allocated."""

    template: ClassVar[str] = "{what} of {size} bytes exceeds the limit of {limit} bytes"
    reason: ClassVar[str] = "too_large"
    http_status: ClassVar[int] = 413


class UnknownMessageType(FrameError):
    """A message type no handler is registered for."""

    template: ClassVar[str] = "no handler for message type {msg_type!r}"
    reason: ClassVar[str] = "unknown_type"
    http_status: ClassVar[int] = 404


class HandlerFailed(TransportError):
    """A registered handler raised while handling a message (the peer gets HTTP 500)."""

    template: ClassVar[str] = "handler for {msg_type!r} failed"
    reason: ClassVar[str] = "handler_failed"
    http_status: ClassVar[int] = 500


class PeerUnreachable(TransportError):
    """No connection could be made to a peer (refused, reset, DNS)."""

    template: ClassVar[str] = "peer {url} unreachable: {detail}"
    reason: ClassVar[str] = "unreachable"


class PeerTimeout(TransportError):
    """A peer did not answer within the call's timeout."""

    template: ClassVar[str] = "peer {url} did not answer {what} within {timeout_s} s"
    reason: ClassVar[str] = "timeout"
    http_status: ClassVar[int] = 408


class PeerRefused(TransportError):
    """A peer refused what we sent; ``refusal`` is its reason label (e.g. ``replay``)."""

    template: ClassVar[str] = "peer {url} refused {what}: {refusal} (HTTP {status})"
    reason: ClassVar[str] = "refused"
    refusal: str
    status: int


REFUSALS: tuple[type[TransportError], ...] = (
    AuthError,
    ReplayError,
    StaleTimestamp,
    WrongRecipient,
    NotAMember,
    UnknownSession,
    TransportBusy,
    PeerBudgetExceeded,
    RoundOutOfWindow,
    FrameError,
    TamperedFrame,
    TruncatedFrame,
    PeerDisconnected,
    MessageTooLarge,
    UnknownMessageType,
    HandlerFailed,
    PeerTimeout,
)
"""Every error a server may answer with, for code that maps a ``reason`` back to a class."""
