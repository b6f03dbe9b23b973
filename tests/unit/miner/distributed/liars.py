"""Dishonest group members for the exchange tests: honest code, lying wire.

A :class:`Liar` wraps a member's channel and rewrites what it sends (results, declarations,
verdicts, parts) or pretends not to have received something. The frames it sends are
well-formed and, on a real transport, authenticated: they come from a member. Each lie is
a function of the frame the honest code produced, so the liar always lies consistently
(a forged result also gets a matching digest in its declaration).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from miner.distributed.channel import InMemoryChannel, InMemoryHub, Payload
from miner.distributed.exchange import ExchangeConfig, GradientExchange, RoundResult
from miner.distributed.frames import (
    DECLARE,
    NO_DIGEST,
    PART,
    RESULT,
    VERDICT,
    Declaration,
    FrameHead,
    Status,
    declare_frame,
    decode_frame,
    digest,
    part_frame,
    result_frame,
    verdict_frame,
)

Rewrite = Callable[[str, str, bytes], bytes | None]
"""``(recipient, tag, frame) -> frame to send instead`` (``None``: send nothing)."""


def _head(f) -> FrameHead:  # type: ignore[no-untyped-def]
    return FrameHead(f.codec_id, f.round_id, f.piece, f.n_elements, f.n_peers, f.n_group)


def forge_result(change: Callable[[np.ndarray], np.ndarray]) -> Rewrite:
    """An owner that replaces its result by ``change(result)`` and declares it consistently:
    the same forged bytes and digest to every receiver and to the verifier. (Its result
    frames go out before its declaration; at two peers, where no result frame goes out, it
    forges from zeros.)"""
    forged: dict[tuple[int, int], bytes] = {}

    def rewrite(to: str, tag: str, data: bytes) -> bytes | None:
        f = decode_frame(data, "liar")
        if f.kind not in (RESULT, DECLARE) or f.declaration is None:
            return data
        key = (f.round_id, f.piece)
        if key not in forged:
            honest = (
                np.frombuffer(bytes(f.payload), "<f4").copy()
                if f.kind == RESULT
                else np.zeros(f.n_elements, np.float32)
            )
            forged[key] = np.ascontiguousarray(change(honest), "<f4").tobytes()
        decl = replace(f.declaration, result=digest(forged[key]))
        if f.kind == DECLARE:
            return b"".join(declare_frame(_head(f), decl))
        return b"".join(result_frame(_head(f), decl, forged[key]))

    return rewrite


def forge_declaration(change: Callable[[Declaration], Declaration]) -> Rewrite:
    """An owner that misstates who contributed (its result left as computed)."""

    def rewrite(to: str, tag: str, data: bytes) -> bytes | None:
        f = decode_frame(data, "liar")
        if f.kind not in (RESULT, DECLARE) or f.declaration is None:
            return data
        decl = change(f.declaration)
        if f.kind == DECLARE:
            return b"".join(declare_frame(_head(f), decl))
        return b"".join(result_frame(_head(f), decl, bytes(f.payload)))

    return rewrite


def clear_part(victim: int) -> Callable[[Declaration], Declaration]:
    parts = lambda d: tuple(NO_DIGEST if i == victim else x for i, x in enumerate(d.parts))  # noqa: E731
    return lambda d: replace(d, parts=parts(d))


def mark_rejected(victim: int) -> Callable[[Declaration], Declaration]:
    return lambda d: replace(d, rejected=tuple(i == victim or r for i, r in enumerate(d.rejected)))


def false_verdicts(status: Status = Status.WRONG_RESULT) -> Rewrite:
    """A verifier that condemns every piece it verifies."""

    def rewrite(to: str, tag: str, data: bytes) -> bytes | None:
        f = decode_frame(data, "liar")
        if f.kind != VERDICT or f.verdict is None:
            return data
        return b"".join(verdict_frame(_head(f), replace(f.verdict, status=status)))

    return rewrite


def equivocate(victims: Sequence[str], change: Callable[[np.ndarray], np.ndarray]) -> Rewrite:
    """An owner that sends ``victims`` a forged result (with a matching declaration) and
    everyone else, the verifier included, the honest one."""
    forged = forge_result(change)

    def rewrite(to: str, tag: str, data: bytes) -> bytes | None:
        return forged(to, tag, data) if to in victims else data

    return rewrite


def two_faced_parts(
    change: Callable[[np.ndarray], np.ndarray], only_to: str | None = None
) -> Rewrite:
    """A sender whose part of a piece differs between the piece's two reducers: the second
    copy it sends of each part goes through ``change`` (with ``only_to``: every copy to that
    member)."""
    sent: set[tuple[int, int]] = set()

    def rewrite(to: str, tag: str, data: bytes) -> bytes | None:
        f = decode_frame(data, "liar")
        if f.kind != PART:
            return data
        first = (f.round_id, f.piece) not in sent
        sent.add((f.round_id, f.piece))
        if (only_to is None and first) or (only_to is not None and to != only_to):
            return data
        values = change(np.frombuffer(bytes(f.payload), "<f4").copy())
        return b"".join(part_frame(_head(f), np.ascontiguousarray(values, "<f4").tobytes()))

    return rewrite


@dataclass
class Liar:
    """A member's channel that rewrites what it sends and may ignore some of what comes in
    (``deaf_to``: senders whose parts it pretends never arrived)."""

    inner: InMemoryChannel
    rewrite: Rewrite | None = None
    deaf_to: set[str] = field(default_factory=set)

    @property
    def me(self) -> str:
        return self.inner.me

    async def send(self, peer: str, round_id: int, tag: str, frame: Sequence[Payload]) -> None:
        data = b"".join(bytes(p) for p in frame)
        out = data if self.rewrite is None else self.rewrite(peer, tag, data)
        if out is not None:
            await self.inner.send(peer, round_id, tag, [out])

    async def recv(self, peer: str, round_id: int, tag: str) -> Payload:
        if peer in self.deaf_to and tag.startswith("part."):
            await asyncio.Event().wait()  # never: the caller's deadline ends the wait
        return await self.inner.recv(peer, round_id, tag)

    def release(self, round_id: int) -> None:
        self.inner.release(round_id)


def group_with_liar(
    peers: Sequence[str], config: ExchangeConfig, liar: str, lie: Liar | None = None
) -> tuple[InMemoryHub, dict[str, GradientExchange]]:
    """Exchanges for ``peers`` on one hub; ``liar``'s channel is wrapped by ``lie``."""
    hub = InMemoryHub()
    out = {}
    for name in peers:
        channel = hub.channel(name)
        if name == liar and lie is not None:
            lie.inner = channel
            out[name] = GradientExchange(lie, peers, config)
        else:
            out[name] = GradientExchange(channel, peers, config)
    return hub, out


async def play(
    group: dict[str, GradientExchange],
    round_id: int,
    values: dict[str, np.ndarray],
    masks: dict[str, np.ndarray] | None = None,
    skip: frozenset[str] = frozenset(),
) -> dict[str, RoundResult]:
    """One round for every exchange but those in ``skip`` (a caught liar sits it out)."""
    live = {n: ex for n, ex in group.items() if n not in skip}
    results = await asyncio.gather(
        *(ex.allreduce(round_id, values[n], masks) for n, ex in live.items())
    )
    return dict(zip(live, results, strict=True))
