"""A TTL store of handshake nonces: a nonce is accepted once within its lifetime.

A handshake carries a timestamp that must lie within ``window_s`` of now, so a nonce only
has to be remembered for as long as its handshake could still be accepted; after that the
timestamp check refuses it. The clock is passed in (``now_s``), which keeps the store pure.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from node.transport.errors import ReplayError, TransportBusy


@dataclass
class ReplayStore:
    """Seen nonces with their expiry, oldest first; bounded by ``capacity``."""

    ttl_s: float
    capacity: int
    _expiry_s: OrderedDict[bytes, float] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._expiry_s)

    def check(self, nonce: bytes, now_s: float) -> None:
        """Raise :class:`ReplayError` if ``nonce`` is still remembered; changes nothing else."""
        self.prune(now_s)
        if nonce in self._expiry_s:
            raise ReplayError("handshake nonce already used")

    def add(self, nonce: bytes, now_s: float) -> None:
        """Remember ``nonce`` until ``now_s + ttl_s`` (check first; this refuses a repeat too)."""
        self.check(nonce, now_s)
        if len(self._expiry_s) >= self.capacity:
            raise TransportBusy("replay store full")
        self._expiry_s[nonce] = now_s + self.ttl_s

    def prune(self, now_s: float) -> None:
        """Forget nonces whose lifetime has ended (expiries are in insertion order)."""
        while self._expiry_s:
            nonce, expiry_s = next(iter(self._expiry_s.items()))
            if expiry_s > now_s:
                break
            del self._expiry_s[nonce]
