"""Sealed frames: the per-direction AES-256-GCM protection of everything after the handshake.

A frame on the wire is ``header (24 bytes) || body (length bytes) || tag (16 bytes)``::

    header = version u8 | kind u8 | flags u16 (0) | length u32 | seq u64 | round_id u64

``seq`` counts the frames of one direction from 1; the 12-byte GCM nonce is
``4 zero bytes || seq``, so a key never sees a nonce twice, and a receiver refuses any frame
whose ``seq`` is not above the last one it accepted (a replay or a reorder). The associated
data is ``session_id (16) || task_id (32) || header``.

- :attr:`~node.transport.handshake.Mode.AEAD`: body = AES-256-GCM ciphertext of the data.
- :attr:`~node.transport.handshake.Mode.AUTH`: body = the data in clear; the tag is GMAC:
  the GCM tag of the 72 associated bytes taken as plaintext with the data as associated
  data (no copy of the data is made to join it with the header); the receiver recomputes
  it and compares in constant time. Same key, nonce and sequence rules as AEAD.

Nothing here does I/O. A refused frame changes no state: the opener advances its sequence
only after the tag verified.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass
from enum import IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from node.transport.errors import (
    FrameError,
    MessageTooLarge,
    ReplayError,
    TamperedFrame,
    TruncatedFrame,
)
from node.transport.handshake import Mode

FRAME_VERSION = 1
HEADER = struct.Struct(">BBHIQQ")
HEADER_BYTES = HEADER.size
TAG_BYTES = 16
Payload = bytes | bytearray | memoryview


class Kind(IntEnum):
    """What a frame carries."""

    HEAD = 1  # a message's metadata (type, tag, total size)
    CHUNK = 2  # a slice of a message's payload


@dataclass(frozen=True)
class FrameHeader:
    """A parsed header; ``raw`` is the 24 bytes it was parsed from (they are authenticated)."""

    kind: Kind
    length: int
    seq: int
    round_id: int
    raw: bytes


def _nonce(seq: int) -> bytes:
    return b"\0\0\0\0" + seq.to_bytes(8, "big")


def _scope(session_id: bytes, task_id: int) -> bytes:
    return session_id + task_id.to_bytes(32, "big")


class FrameSealer:
    """Seals the outgoing frames of one direction of one session."""

    def __init__(self, key: bytes, mode: Mode, session_id: bytes, task_id: int) -> None:
        self._aead = AESGCM(key)
        self._mode = mode
        self._scope = _scope(session_id, task_id)
        self.seq = 0

    def seal(self, kind: Kind, round_id: int, data: Payload) -> bytearray:
        """One wire frame in one fresh buffer carrying ``data``; advances the sequence."""
        return bytearray(b"".join(self.seal_pieces(kind, round_id, data)))

    def seal_pieces(self, kind: Kind, round_id: int, data: Payload) -> list[Payload]:
        """One wire frame as consecutive pieces; advances the sequence.

        AEAD: one fresh buffer (header + ciphertext + tag, encrypted in place). AUTH:
        ``[header, data, tag]`` where ``data`` is the caller's own view, not a copy, so the
        caller must not change it until the pieces are written.
        """
        size = len(data) if not isinstance(data, memoryview) else data.nbytes
        if size >= 2**32:
            raise MessageTooLarge(what="frame", size=size, limit=2**32 - 1)
        self.seq += 1
        header = HEADER.pack(FRAME_VERSION, kind, 0, size, self.seq, round_id)
        nonce, aad = _nonce(self.seq), self._scope + header
        if self._mode is Mode.AUTH:
            return [header, data, self._aead.encrypt(nonce, aad, data)[-TAG_BYTES:]]
        frame = bytearray(HEADER_BYTES + size + TAG_BYTES)
        frame[:HEADER_BYTES] = header
        self._aead.encrypt_into(nonce, data, aad, memoryview(frame)[HEADER_BYTES:])
        return [frame]


class FrameOpener:
    """Checks and opens the incoming frames of one direction of one session."""

    def __init__(
        self, key: bytes, mode: Mode, session_id: bytes, task_id: int, max_chunk_bytes: int
    ) -> None:
        self._key = key
        self._mode = mode
        self._scope = _scope(session_id, task_id)
        self._max_chunk_bytes = max_chunk_bytes
        self.last_seq = 0

    def parse_header(self, raw: bytes) -> FrameHeader:
        """Layout, size and sequence checks, made before the body is read."""
        if len(raw) != HEADER_BYTES:
            raise FrameError("short header")
        version, kind, flags, length, seq, round_id = HEADER.unpack(raw)
        if version != FRAME_VERSION or flags != 0 or kind not in (Kind.HEAD, Kind.CHUNK):
            raise FrameError(f"version {version}, kind {kind}, flags {flags}")
        if length > self._max_chunk_bytes:
            raise MessageTooLarge(what="frame", size=length, limit=self._max_chunk_bytes)
        if seq <= self.last_seq:
            raise ReplayError(f"frame {seq} after frame {self.last_seq}")
        return FrameHeader(Kind(kind), length, seq, round_id, bytes(raw))

    def begin(self, header: FrameHeader, out: memoryview) -> FrameOpening:
        """Start opening a frame whose body arrives in pieces, written straight into ``out``.

        ``out`` holds exactly ``header.length`` bytes. Data written before the tag verified
        is unauthenticated: a caller discards ``out`` if :meth:`FrameOpening.finish` raises.
        """
        if header.seq <= self.last_seq:
            raise ReplayError(f"frame {header.seq} after frame {self.last_seq}")
        if out.nbytes != header.length:
            raise FrameError("output buffer does not match the frame length")
        return FrameOpening(self, header, out)

    def open_into(
        self, header: FrameHeader, body: bytes, out: memoryview, *, commit: bool = True
    ) -> None:
        """Verify ``body`` (``length`` bytes + tag) and write its data into ``out``.

        On failure the sequence does not move (``out`` may hold garbage, which the caller
        discards with the message). ``commit=False`` verifies without moving the sequence
        either, and the caller commits later with :meth:`commit` (a server verifies a
        message's HEAD frame before it takes the session's lock, and commits under it).
        """
        if len(body) != header.length + TAG_BYTES:
            raise TruncatedFrame(got=len(body), expected=header.length + TAG_BYTES)
        opening = self.begin(header, out)
        view = memoryview(body)
        opening.update(view[: header.length])
        opening.finish(view[header.length :], commit=commit)

    def commit(self, seq: int) -> None:
        """Accept frame ``seq`` as the last one (verified earlier); :class:`ReplayError` if a
        frame at or after it was accepted meanwhile."""
        if seq <= self.last_seq:
            raise ReplayError(f"frame {seq} after frame {self.last_seq}")
        self.last_seq = seq


class FrameOpening:
    """One frame being opened incrementally (see :meth:`FrameOpener.begin`)."""

    def __init__(self, opener: FrameOpener, header: FrameHeader, out: memoryview) -> None:
        self._opener, self._header, self._out, self._pos = opener, header, out, 0
        gcm = Cipher(algorithms.AES(opener._key), modes.GCM(_nonce(header.seq)))
        aad = opener._scope + header.raw
        if opener._mode is Mode.AEAD:
            self._decryptor = gcm.decryptor()
            self._decryptor.authenticate_additional_data(aad)
        else:  # the data is the associated data; the 72 scope+header bytes the plaintext
            self._encryptor, self._plain = gcm.encryptor(), aad

    def update(self, block: Payload) -> None:
        """The next piece of the body's data (not the tag), in order."""
        size = len(block) if not isinstance(block, memoryview) else block.nbytes
        if self._pos + size > self._header.length:
            raise FrameError("frame data overruns its length")
        target = self._out[self._pos : self._pos + size]
        if self._opener._mode is Mode.AEAD:
            self._decryptor.update_into(block, target)
        else:
            self._encryptor.authenticate_additional_data(block)
            target[:] = block
        self._pos += size

    def finish(self, tag: Payload, *, commit: bool = True) -> None:
        """Verify the tag; only then does the opener's sequence advance (unless ``commit`` is
        false: see :meth:`FrameOpener.open_into`)."""
        if self._pos != self._header.length:
            raise TruncatedFrame(got=self._pos, expected=self._header.length)
        seq = self._header.seq
        if self._opener._mode is Mode.AEAD:
            try:
                self._decryptor.finalize_with_tag(bytes(tag))
            except (InvalidTag, ValueError):
                raise TamperedFrame(seq=seq) from None
        else:
            self._encryptor.update(self._plain)
            self._encryptor.finalize()
            if not hmac.compare_digest(self._encryptor.tag, bytes(tag)):
                raise TamperedFrame(seq=seq)
        if commit:
            self._opener.commit(seq)
        elif seq <= self._opener.last_seq:
            raise ReplayError(f"frame {seq} after frame {self._opener.last_seq}")


MAX_HEAD_BYTES = 1 + 64 + 1 + 255 + 8
"""The longest encoded :class:`MessageHead`: a HEAD frame announcing more is refused from its
header, before its body is read."""


@dataclass(frozen=True)
class MessageHead:
    """What the HEAD frame of a message says: handler type, free tag, payload size."""

    msg_type: str
    tag: str
    total_bytes: int

    def encode(self) -> bytes:
        kind, tag = self.msg_type.encode("ascii"), self.tag.encode("utf-8")
        if not 0 < len(kind) <= 64 or len(tag) > 255:
            raise FrameError("message type must be 1-64 ASCII bytes and tag at most 255 bytes")
        return bytes([len(kind)]) + kind + bytes([len(tag)]) + tag + self.total_bytes.to_bytes(8)

    @classmethod
    def decode(cls, data: Payload) -> MessageHead:
        raw = bytes(data)
        try:
            kind_end = 1 + raw[0]
            tag_end = kind_end + 1 + raw[kind_end]
            if len(raw) != tag_end + 8:
                raise FrameError("message head has a wrong length")
            return cls(
                raw[1:kind_end].decode("ascii"),
                raw[kind_end + 1 : tag_end].decode("utf-8"),
                int.from_bytes(raw[tag_end:], "big"),
            )
        except (IndexError, UnicodeDecodeError) as exc:
            raise FrameError("malformed message head") from exc
