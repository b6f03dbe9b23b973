"""The transport's limits and timeouts, one frozen model built at the entry point.

It is a pydantic model so that process settings can nest it (``[transport]`` in the TOML
file, ``MANTA_TRANSPORT__MAX_MESSAGE_BYTES``); nothing here reads the environment.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

KIB = 1024
MIB = 1024 * KIB


class TransportConfig(BaseModel):
    """Bounds every peer is held to, and the timeouts of every network call.

    ``chunk_bytes`` is what this side sends; ``max_chunk_bytes`` and ``max_message_bytes``
    are what it accepts (a sender is also refused locally before sending a message over
    ``max_message_bytes``).

    Budgets, so that no one peer (member or stranger) can take what the others need:

    - ``max_sessions_per_peer``: a member opening more evicts its own oldest session, never
      anyone else's (an honest channel holds two or three per peer);
    - ``peer_inflight_bytes``: payload bytes one member may have being received at once
      (each message's buffer is reserved against it before it is allocated);
    - ``max_connections``: open connections; at the cap the oldest connection no member is
      using is closed for the new one, and only when every connection carries a member's
      message is a new one refused;
    - ``keepalive_timeout_s``: an idle connection (also one that never sent a request, or
      trickles its request headers) is closed after this long;
    - ``read_timeout_s``: every read of a message, on both sides, must make progress within
      this long; the whole body within ``message_timeout_s``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_message_bytes: int = Field(default=512 * MIB, gt=0)
    max_chunk_bytes: int = Field(default=4 * MIB, gt=0, le=2**32 - 1)
    chunk_bytes: int = Field(default=1 * MIB, gt=0)
    handshake_window_s: float = Field(default=60.0, gt=0)
    session_ttl_s: float = Field(default=3600.0, gt=0)
    max_sessions: int = Field(default=4096, gt=0)
    max_sessions_per_peer: int = Field(default=8, gt=0)
    peer_inflight_bytes: int = Field(default=1024 * MIB, gt=0)
    max_connections: int = Field(default=1024, gt=0)
    keepalive_timeout_s: float = Field(default=30.0, gt=0)
    max_replay_nonces: int = Field(default=200_000, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    handshake_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=30.0, gt=0)
    message_timeout_s: float = Field(default=300.0, gt=0)
    sweep_interval_s: float = Field(default=30.0, gt=0)
    shutdown_timeout_s: float = Field(default=5.0, ge=0)

    @model_validator(mode="after")
    def _chunk_fits(self) -> Self:
        if self.chunk_bytes > self.max_chunk_bytes:
            raise ValueError("chunk_bytes must not exceed max_chunk_bytes")
        return self
