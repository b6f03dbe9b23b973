"""The session handshake: signed X25519 offers, their checks, and the session keys (pure).

Wire layout (big-endian, fixed fields, then a length-prefixed scope, then the signature)::

    hello   = version u8 | mode u8 | initiator 20 | responder 20 | x25519 public 32
              | nonce 32 | timestamp_ms u64 | task_id u256 | scope_len u8 | scope | sig 65
    welcome = version u8 | mode u8 | responder 20 | initiator 20 | x25519 public 32
              | nonce 32 | timestamp_ms u64 | hello_digest 32 | sig 65

What is signed: ``digest = keccak256(domain || body)`` where ``body`` is everything before
``sig`` and ``domain`` is ``b"MANTA/transport/hello/v1\\n"`` or
``b"MANTA/transport/welcome/v1\\n"`` (so a hello can never pass as a welcome, nor as any
other MANTA signature). The 32-byte digest is signed with EIP-191 ``personal_sign``
(``"\\x19Ethereum Signed Message:\\n32" || digest``), so any Ethereum wallet can produce
it; the signer recovered from ``sig`` must be the address the message claims.

The welcome is bound to its hello by ``hello_digest`` (which covers the initiator's nonce,
key, addresses, task and scope). Session keys are HKDF-SHA256 over the X25519 shared secret,
salted with both nonces, with both addresses, both public keys, both nonces, the task id,
the scope and the mode in ``info``; the 80 output bytes are the initiator→responder key,
the responder→initiator key and the 16-byte session id.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from node.transport.errors import AuthError, StaleTimestamp, WrongRecipient

VERSION = 1
HELLO_DOMAIN = b"MANTA/transport/hello/v1\n"
WELCOME_DOMAIN = b"MANTA/transport/welcome/v1\n"
KEYS_LABEL = b"MANTA/transport/keys/v1\n"
MAX_SCOPE_BYTES = 64
SIGNATURE_BYTES = 65

_HELLO = struct.Struct(">BB20s20s32s32sQ32sB")
_WELCOME = struct.Struct(">BB20s20s32s32sQ32s")


class Mode(IntEnum):
    """How a session protects its frames (chosen by the initiator, signed in the hello)."""

    AEAD = 1  # AES-256-GCM: encrypted and authenticated
    AUTH = 2  # GMAC tag only: authenticated, payload in clear (faster)


@dataclass(frozen=True)
class Hello:
    """The initiator's signed offer (addresses are 20 raw bytes)."""

    mode: Mode
    initiator: bytes
    responder: bytes
    public_key: bytes
    nonce: bytes
    timestamp_ms: int
    task_id: int
    scope: str

    def body(self) -> bytes:
        scope = self.scope.encode("ascii")
        if len(scope) > MAX_SCOPE_BYTES:
            raise AuthError(f"scope longer than {MAX_SCOPE_BYTES} bytes")
        head = _HELLO.pack(
            VERSION,
            self.mode,
            self.initiator,
            self.responder,
            self.public_key,
            self.nonce,
            self.timestamp_ms,
            self.task_id.to_bytes(32, "big"),
            len(scope),
        )
        return head + scope

    def digest(self) -> bytes:
        return keccak(HELLO_DOMAIN + self.body())


@dataclass(frozen=True)
class Welcome:
    """The responder's signed answer, bound to one hello."""

    mode: Mode
    responder: bytes
    initiator: bytes
    public_key: bytes
    nonce: bytes
    timestamp_ms: int
    hello_digest: bytes

    def body(self) -> bytes:
        return _WELCOME.pack(
            VERSION,
            self.mode,
            self.responder,
            self.initiator,
            self.public_key,
            self.nonce,
            self.timestamp_ms,
            self.hello_digest,
        )

    def digest(self) -> bytes:
        return keccak(WELCOME_DOMAIN + self.body())


@dataclass(frozen=True)
class SessionKeys:
    """Per-direction keys and the public session id derived from one handshake."""

    session_id: bytes
    initiator_to_responder: bytes
    responder_to_initiator: bytes


def address_bytes(address: str) -> bytes:
    """20 raw bytes of a hex address (checksum not required)."""
    raw = bytes.fromhex(address.removeprefix("0x"))
    if len(raw) != 20:
        raise AuthError("an address is 20 bytes")
    return raw


def checksum(address: bytes) -> str:
    """EIP-55 text of 20 raw address bytes."""
    return to_checksum_address(address)


def sign_digest(account: LocalAccount, digest: bytes) -> bytes:
    """65-byte EIP-191 ``personal_sign`` signature of a 32-byte digest."""
    return bytes(account.sign_message(encode_defunct(primitive=digest)).signature)


def recover_signer(digest: bytes, signature: bytes) -> bytes:
    """The 20-byte address that signed ``digest``; :class:`AuthError` if it does not recover."""
    if len(signature) != SIGNATURE_BYTES:
        raise AuthError("signature is not 65 bytes")
    try:
        signer = Account.recover_message(encode_defunct(primitive=digest), signature=signature)
    except Exception as exc:  # eth-keys raises several types for malformed signatures
        raise AuthError("signature does not recover") from exc
    return address_bytes(signer)


def encode_hello(hello: Hello, signature: bytes) -> bytes:
    return hello.body() + signature


def decode_hello(data: bytes) -> tuple[Hello, bytes]:
    """Parse a signed hello; :class:`AuthError` on any layout problem."""
    if len(data) < _HELLO.size + SIGNATURE_BYTES:
        raise AuthError("hello too short")
    version, mode, initiator, responder, public, nonce, ts_ms, task, scope_len = _HELLO.unpack_from(
        data
    )
    end = _HELLO.size + scope_len
    if version != VERSION or len(data) != end + SIGNATURE_BYTES or scope_len > MAX_SCOPE_BYTES:
        raise AuthError("malformed hello")
    try:
        scope = data[_HELLO.size : end].decode("ascii")
        hello = Hello(
            Mode(mode),
            initiator,
            responder,
            public,
            nonce,
            ts_ms,
            int.from_bytes(task, "big"),
            scope,
        )
    except ValueError as exc:
        raise AuthError("malformed hello") from exc
    return hello, data[end:]


def encode_welcome(welcome: Welcome, signature: bytes) -> bytes:
    return welcome.body() + signature


def decode_welcome(data: bytes) -> tuple[Welcome, bytes]:
    """Parse a signed welcome; :class:`AuthError` on any layout problem."""
    if len(data) != _WELCOME.size + SIGNATURE_BYTES:
        raise AuthError("malformed welcome")
    version, mode, responder, initiator, public, nonce, ts_ms, hello_digest = _WELCOME.unpack_from(
        data
    )
    if version != VERSION:
        raise AuthError("unsupported welcome version")
    try:
        welcome = Welcome(Mode(mode), responder, initiator, public, nonce, ts_ms, hello_digest)
    except ValueError as exc:
        raise AuthError("malformed welcome") from exc
    return welcome, data[_WELCOME.size :]


def check_timestamp(timestamp_ms: int, now_s: float, window_s: float) -> None:
    """:class:`StaleTimestamp` unless ``timestamp_ms`` lies within ``window_s`` of now."""
    skew_s = abs(now_s - timestamp_ms / 1000.0)
    if skew_s > window_s:
        raise StaleTimestamp(timestamp_ms=timestamp_ms, skew_s=skew_s, window_s=window_s)


def verify_hello(
    hello: Hello, signature: bytes, *, me: bytes, now_s: float, window_s: float
) -> None:
    """The responder's checks: recipient, freshness, signature (replay and membership apart)."""
    if hello.responder != me:
        raise WrongRecipient(recipient=checksum(hello.responder), me=checksum(me))
    check_timestamp(hello.timestamp_ms, now_s, window_s)
    if recover_signer(hello.digest(), signature) != hello.initiator:
        raise AuthError("hello signature does not match the initiator")


def verify_welcome(
    welcome: Welcome, signature: bytes, *, hello: Hello, now_s: float, window_s: float
) -> None:
    """The initiator's checks: bound to our hello, from the peer we asked, fresh, signed."""
    if welcome.hello_digest != hello.digest() or welcome.mode != hello.mode:
        raise AuthError("welcome answers another hello")
    if welcome.initiator != hello.initiator:
        raise WrongRecipient(recipient=checksum(welcome.initiator), me=checksum(hello.initiator))
    if welcome.responder != hello.responder:
        raise AuthError("welcome comes from another address than the one asked")
    check_timestamp(welcome.timestamp_ms, now_s, window_s)
    if recover_signer(welcome.digest(), signature) != welcome.responder:
        raise AuthError("welcome signature does not match the responder")


def new_ephemeral() -> tuple[X25519PrivateKey, bytes]:
    """A fresh X25519 key pair (private key, 32-byte raw public key)."""
    private = X25519PrivateKey.generate()
    return private, private.public_key().public_bytes_raw()


def derive_keys(private: X25519PrivateKey, hello: Hello, welcome: Welcome) -> SessionKeys:
    """Both sides' session keys; ``private`` is our ephemeral key, the peer's public is in the
    other message."""
    ours = private.public_key().public_bytes_raw()
    theirs = welcome.public_key if ours == hello.public_key else hello.public_key
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(theirs))
    except (ValueError, InvalidKey) as exc:  # all-zero shared secret: a low-order point
        raise AuthError("unusable X25519 public key") from exc
    info = b"".join(
        (
            KEYS_LABEL,
            hello.initiator,
            hello.responder,
            hello.public_key,
            welcome.public_key,
            hello.nonce,
            welcome.nonce,
            hello.task_id.to_bytes(32, "big"),
            hello.scope.encode("ascii"),
            bytes([hello.mode]),
        )
    )
    okm = HKDF(hashes.SHA256(), 80, salt=hello.nonce + welcome.nonce, info=info).derive(shared)
    return SessionKeys(
        session_id=okm[64:], initiator_to_responder=okm[:32], responder_to_initiator=okm[32:64]
    )
