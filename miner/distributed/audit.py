"""Never trust a reducer: verified pieces, local checks, disputes and evidence (pure).

**Two reducers per piece.** In a round of ``n >= 2`` peers the owner ``o`` of a piece has a
verifier ``v = (o + s) mod n`` with ``s = 1 + (round mod (n - 1))``: another peer every
round, a different one in consecutive rounds (:func:`verifier_of`). Every peer sends its part
of the piece to both. The owner aggregates what it received and publishes a
:class:`~miner.distributed.frames.Declaration` (the digest of each part it used, which it
rejected as non-finite, the digest of its result): with the result to every other peer, alone
to the verifier. The verifier checks the declaration against the parts it received itself
(:func:`judge`: its own part must be in it, every declared part must be one it holds with
that digest and that flag), recomputes the aggregate over exactly the declared parts, and
publishes a :class:`~miner.distributed.frames.Verdict` with the digest of what it computed.
Aggregation is deterministic (:mod:`miner.distributed.robust`), so an honest owner and an
honest verifier agree bit for bit. A peer applies a piece only when the verdict is ``OK``
and names the declaration and the result that peer holds (:func:`settle`); otherwise the
piece gets no update this round, on every peer that saw the same messages. At two peers
both reduce every piece (each sends the other its whole buffer: the same bytes as a
reduce-scatter and an all-gather) and no result travels at all.

**Local checks** come on top: a result that is not finite, or whose RMS exceeds
``result_bound * n`` times this peer's own RMS (:func:`result_fault`), is not applied
whatever the verdict says (an honest aggregate of parts bounded by the robust rule cannot
get there unless honest gradients differ by that factor). A confirmed non-finite result is a
dispute (owner and verifier would both have lied); one beyond this peer's yardstick is
only evidence, since honest gradients may differ that much.

**Contributors are derived, not declared.** A peer is credited for a piece when the owner's
declaration or the verifier's ``held`` bitmap has its part (one liar can add, not remove);
it is dropped as absent only when neither has it; a reducer whose message did not come is
dropped by whoever missed it.

**Attribution.** A failed verdict is a :class:`Dispute` between the parties it implicates
(owner and verifier; and the sender of a part named as bad or missing). An outsider cannot
tell which of two disputing parties lied, but an honest peer disputes only when paired with
the liar, while the liar, paired with a new partner each round, disputes with several: a
peer whose recent disputes share no other party is caught (:class:`DisputeLedger`). A pair
that keeps disputing with each other alone is caught together after ``pair_strikes`` rounds:
the bound BTARD-SGD accepts (Gorbunov et al., 2021), a dishonest member can take at most one
honest member out with it. Caught peers are dropped for the task and their disputes no
longer count against anyone. Everything a peer saw is kept as :class:`Evidence` (hashes
and sizes, never payloads) for the daemon, which can refuse to sign a manifest paying a
member it caught.

The rule assumes at most one dishonest member per group (two colluding members can frame
an honest one, and an owner that sends different results to different peers splits the
ones it lied to from the rest for that round).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from miner.distributed.frames import NO_DIGEST, NO_SUSPECT, Declaration, Status, Verdict
from miner.distributed.robust import rms


def verifier_of(owner: int, round_id: int, n: int) -> int | None:
    """The round index of the peer that verifies ``owner``'s pieces in ``round_id`` (``None``
    when alone)."""
    if n < 2:
        return None
    return (owner + 1 + round_id % (n - 1)) % n


def judge(
    declaration: Declaration,
    held: Sequence[bytes | None],
    nonfinite: Sequence[bool],
    me: int,
) -> tuple[Status, int]:
    """The verifier's checks of a declaration before it recomputes: ``(status, suspect)``.

    ``held[i]`` is the digest of the part peer ``i`` sent me (``None``: none came; my own at
    ``me``), ``nonfinite[i]`` whether it has a NaN or an infinity. ``OK`` means: recompute.
    A part whose digest differs (``BAD_PART``) implicates its sender too (it may have sent
    the owner something else); a wrong rejected flag on the part I hold with that very
    digest (``WRONG_FLAG``) can only be the owner's doing, or mine.
    """
    if declaration.parts[me] == NO_DIGEST:
        return Status.OMITTED, me
    for i, declared in enumerate(declaration.parts):
        if declared == NO_DIGEST:
            if declaration.rejected[i]:
                return Status.BAD_PART, i
            continue
        if held[i] is None:
            return Status.UNVERIFIABLE, i
        if held[i] != declared:
            return Status.BAD_PART, i
        if nonfinite[i] != declaration.rejected[i]:  # the digest binds the content: a lie
            return Status.WRONG_FLAG, i
    return Status.OK, NO_SUSPECT


def result_fault(
    values: np.ndarray, used: np.ndarray | None, own_rms: float, n: int, result_bound: float
) -> str | None:
    """Why a result ``[L]`` may not be applied whatever its verdict: ``"non_finite_result"``,
    ``"out_of_bound_result"`` (RMS over ``used`` elements above ``result_bound * n *
    own_rms``), or ``None``. ``own_rms`` is this peer's own RMS (0: nothing to compare)."""
    kept = values if used is None else values[used]
    if not np.isfinite(kept).all():
        return "non_finite_result"
    if own_rms <= 0 or kept.size == 0:
        return None
    return "out_of_bound_result" if rms(kept) > result_bound * n * own_rms else None


def parties(status: Status, owner: int, verifier: int, suspect: int) -> frozenset[int]:
    """Who a failed verdict implicates (round indices): the owner and the verifier, and the
    sender of a part that differs between them or never reached the verifier."""
    named = {owner, verifier}
    if status in (Status.BAD_PART, Status.UNVERIFIABLE) and suspect != NO_SUSPECT:
        named.add(suspect)
    return frozenset(named)


@dataclass(frozen=True)
class PieceRecord:
    """What one peer holds of one piece at the end of a round (the input of :func:`settle`).

    ``declaration`` is the owner's (mine, or from its result or declare frame);
    ``declaration_digest`` and ``result_digest`` are computed here from what I hold (the
    result payload I received, or the one I computed); ``verdict`` is the verifier's (mine
    when I verify); ``fault`` is a local check the result failed (:func:`result_fault`,
    or a declaration whose result digest is not the payload's).
    """

    owner: int
    verifier: int | None
    declaration: Declaration | None
    declaration_digest: bytes | None
    result_digest: bytes | None
    verdict: Verdict | None
    fault: str | None = None


@dataclass(frozen=True)
class Settlement:
    """What one piece counts for on this peer: applied or not, whose parts are in it
    (``averaged``), who delivered one (``credited``), whose were rejected as non-finite,
    who neither reducer received (``absent``), which reducers never sent me what I was owed
    (``silent``), the parties of a dispute, and a reducer proven wrong to me alone."""

    applied: bool
    averaged: frozenset[int] = frozenset()
    credited: frozenset[int] = frozenset()
    rejected: frozenset[int] = frozenset()
    absent: frozenset[int] = frozenset()
    silent: frozenset[int] = frozenset()
    dispute: frozenset[int] | None = None
    convicted: frozenset[int] = frozenset()


def settle(record: PieceRecord, me: int, n: int) -> Settlement:
    """Decide one piece for peer ``me`` of ``n`` (see the module docstring)."""
    o, v, decl, verdict = record.owner, record.verifier, record.declaration, record.verdict
    silent = set()
    if decl is None and me != o:
        silent.add(o)
    if v is not None and v != me and verdict is None:
        silent.add(v)
    if decl is None:
        return Settlement(False, silent=frozenset(silent))
    rejected = frozenset(i for i in decl.delivered if decl.rejected[i])
    if v is None:  # nobody verifies (alone, or a trusted group): the owner's word
        ok = record.fault is None
        return Settlement(
            ok,
            decl.averaged if ok else frozenset(),
            decl.averaged,
            rejected,
            frozenset(range(n)) - decl.delivered - {o},
            frozenset(silent),
            convicted=frozenset() if ok else frozenset({o}),
        )
    if verdict is None:
        return Settlement(False, credited=decl.averaged, silent=frozenset(silent))
    delivered = decl.delivered | {i for i, held in enumerate(verdict.held) if held}
    agree = (verdict.declaration, verdict.result) == (
        record.declaration_digest,
        record.result_digest,
    )
    dispute = None
    if verdict.status is not Status.OK:
        dispute = parties(verdict.status, o, v, verdict.suspect)
    elif not agree or record.fault not in (None, "out_of_bound_result"):
        dispute = frozenset({o, v})
    # a confirmed result beyond my own bound is not applied, but it is no proof of a lie
    # (honest gradients may differ that much): no dispute from my yardstick alone
    applied = dispute is None and record.fault is None
    return Settlement(
        applied,
        decl.averaged if applied else frozenset(),
        frozenset(delivered) - rejected,
        rejected,
        frozenset(range(n)) - delivered - {o, v},
        frozenset(silent),
        dispute,
    )


@dataclass(frozen=True)
class Evidence:
    """One thing a peer saw a member do wrong, for the daemon (hashes and sizes only).

    ``kind`` names the check (``wrong_result``, ``bad_part``, ``omitted``,
    ``non_finite_result``, ``out_of_bound_result``, ``result_not_verified``,
    ``altered_my_part``, ``rejected_my_finite_part``, ``non_finite_part``, ``caught``…);
    ``expected`` and ``received`` are hex digests or ``name=value`` sizes.
    """

    round_id: int
    piece: int
    accused: str
    kind: str
    witness: str
    expected: str = ""
    received: str = ""


@dataclass
class DisputeLedger:
    """Disputes of the last ``window_rounds`` rounds and the peers they catch."""

    window_rounds: int = 8
    pair_strikes: int = 3
    events: list[tuple[int, frozenset[str]]] = field(default_factory=list)

    def add(self, round_id: int, named: Iterable[str]) -> None:
        self.events.append((round_id, frozenset(named)))

    def caught(self, round_id: int, exempt: str, already: Iterable[str] = ()) -> set[str]:
        """Peers the disputes up to ``round_id`` catch, besides ``already`` (never
        ``exempt``: a peer knows it is honest). Disputes that involve a caught peer are
        explained by it and stop counting against its partners."""
        self.events = [(r, p) for r, p in self.events if r > round_id - self.window_rounds]
        out: set[str] = set()
        known = set(already)
        while True:
            live = [(r, p) for r, p in self.events if not p & known]
            found = _catch(live, self.pair_strikes) - known - {exempt}
            if not found:
                return out
            out |= found
            known |= found


def _catch(events: list[tuple[int, frozenset[str]]], pair_strikes: int) -> set[str]:
    found: set[str] = set()
    for peer in set().union(*(p for _, p in events)) if events else set():
        mine = [p for _, p in events if peer in p]
        common = frozenset.intersection(*mine)
        if common == {peer} and len(mine) >= 2:
            found.add(peer)
        elif len(common) == 2 and len({r for r, p in events if peer in p}) >= pair_strikes:
            found |= common
    return found
