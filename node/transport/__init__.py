"""Authenticated, streamed messages between miners over aiohttp (DESIGN §5).

Modules:
- ``errors``     the :class:`~node.transport.errors.TransportError` subtree; each refusal
                 has a ``reason`` label (metrics, ``X-Manta-Refusal`` header)
- ``config``     :class:`TransportConfig`: size limits, replay window, session TTL, timeouts
- ``metrics``    :class:`MetricsRegistry` (labelled counters, Prometheus text) and the
                 transport's counters ``manta_transport_*_total``
- ``replay``     the TTL store of handshake nonces
- ``handshake``  pure: hello/welcome layout, EIP-191 signatures, checks, HKDF session keys
- ``frames``     pure: sealed frames (AES-256-GCM, or GMAC-only), sequence checks
- ``stream``     a message as a stream of frames: sender generator, incremental reader
- ``sessions``   session state, the server's session table (per-peer caps), both sides of
                 the handshake
- ``guard``      the server's connection cap (closes idle or unauthenticated connections
                 for newcomers, never a member's message)
- ``routes``     the exchange routes (handshake, messages), their shared state, refusals
- ``server``     :class:`TransportServer`: the miner's aiohttp app, exchange routes, /metrics
- ``client``     :class:`PeerClient`: one session to one peer; send and get the reply
- ``limits``     :func:`raise_fd_limit`: the daemon raises its file-descriptor soft limit

Protocol, once per session: the initiator POSTs a hello {its address, the responder's
address, a fresh X25519 public key, a 32-byte nonce, a timestamp, the task id and scope,
the mode}, signed with its Ethereum key (EIP-191 over a domain-separated keccak digest; see
:mod:`node.transport.handshake`). The responder checks recipient, timestamp window, the
signature, the nonce (TTL replay store) and membership
(``async (task_id, address) -> bool``), then answers with its own signed X25519 key bound to
the hello. Keys per direction come from HKDF-SHA256. Then each message is one HTTP POST whose
body streams sealed frames (HEAD + chunks of ``chunk_bytes``) and whose answer streams the
handler's sealed reply. See :mod:`node.transport.frames` for the frame layout.

API::

    registry = MetricsRegistry()
    server = await TransportServer.create(account, membership, config=cfg, registry=registry,
                                          host="0.0.0.0", port=8470)

    async def on_chunk(msg: IncomingMessage) -> bytes | None:
        # msg.peer (checksum address), msg.task_id, msg.scope, msg.msg_type, msg.tag,
        # msg.round_id, msg.payload (a buffer the handler owns: a fresh bytearray, or
        # the one its allocator gave)
        ...
        return None  # or a bytes-like reply, streamed back sealed

    server.register("reduce-scatter", on_chunk)
    # or, recycling receive buffers (a fresh 100 MiB buffer costs ~25k page faults):
    server.register("reduce-scatter", on_chunk, allocate=lambda nbytes: pool.take(nbytes))

    client = await PeerClient.create(account, peer_url, peer_address, task_id,
                                     mode=Mode.AUTH, config=cfg, registry=registry)
    reply = await client.send("reduce-scatter", [header, memoryview(grads)], round_id=7,
                              tag="rs-3")
    await client.shutdown(); await server.shutdown()

Rules of use:

- A client sends one message at a time per session (concurrent ``send`` calls queue);
  open several clients to one peer for parallel streams. Connections are kept alive.
- A handler runs while its session's lock is held and its reply is the HTTP answer: keep
  it short (put the payload in a mailbox and return); a long wait stalls that session.
- ``register(..., admit=check)`` sees each message's verified head (sender, round, tag, size)
  before anything is allocated for it, and refuses by raising (e.g.
  :class:`RoundOutOfWindow`, :class:`PeerBudgetExceeded`): that is where per-peer budgets
  of the layer above live.
- Do not modify a buffer passed to ``send`` before ``send`` returns (``Mode.AUTH`` streams
  it without copying).
- ``Mode.AEAD`` (AES-256-GCM) encrypts and authenticates; ``Mode.AUTH`` authenticates only
  (GMAC; payload readable on the wire). With AES-NI both run at several GB/s per core.
- Limits (``TransportConfig``): ``max_message_bytes``, ``max_chunk_bytes``, ``chunk_bytes``,
  the handshake window, session TTL (then the client re-handshakes, which re-checks
  membership), connect/read/message timeouts, sessions per peer, in-flight bytes per peer,
  the connection cap and the keep-alive timeout.

Nothing here imports torch.
"""

from node.transport.client import PeerClient
from node.transport.config import TransportConfig
from node.transport.errors import (
    AuthError,
    FrameError,
    HandlerFailed,
    MessageTooLarge,
    NotAMember,
    PeerBudgetExceeded,
    PeerDisconnected,
    PeerRefused,
    PeerTimeout,
    PeerUnreachable,
    ReplayError,
    RoundOutOfWindow,
    StaleTimestamp,
    TamperedFrame,
    TransportBusy,
    TransportError,
    TruncatedFrame,
    UnknownMessageType,
    UnknownPeer,
    UnknownSession,
    WrongRecipient,
)
from node.transport.handshake import Mode
from node.transport.limits import FdLimit, raise_fd_limit
from node.transport.metrics import MetricsRegistry, TransportMetrics
from node.transport.server import Admission, Admit, Handler, IncomingMessage, TransportServer
from node.transport.sessions import Membership
from node.transport.stream import Allocator, Buffer

__all__ = [
    "Admission",
    "Admit",
    "Allocator",
    "AuthError",
    "Buffer",
    "FdLimit",
    "FrameError",
    "Handler",
    "HandlerFailed",
    "IncomingMessage",
    "Membership",
    "MessageTooLarge",
    "MetricsRegistry",
    "Mode",
    "NotAMember",
    "PeerBudgetExceeded",
    "PeerClient",
    "PeerDisconnected",
    "PeerRefused",
    "PeerTimeout",
    "PeerUnreachable",
    "ReplayError",
    "RoundOutOfWindow",
    "StaleTimestamp",
    "TamperedFrame",
    "TransportBusy",
    "TransportConfig",
    "TransportError",
    "TransportMetrics",
    "TransportServer",
    "TruncatedFrame",
    "UnknownMessageType",
    "UnknownPeer",
    "UnknownSession",
    "WrongRecipient",
    "raise_fd_limit",
]
