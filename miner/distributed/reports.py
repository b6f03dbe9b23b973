"""What each all-reduce round records, and the tally reward shares are computed from.

Every survivor of a round that saw the same messages writes the same :class:`RoundReport`
(derived from both reducers' declarations and verdicts), so the group agrees on who did the
work without another message. :func:`participation` sums the reports of a run per peer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class RoundReport:
    """Who took part in one round.

    ``contributed``: peers averaged into every shard that completed; ``dropped``: peers
    that missed a deadline somewhere (a part too late, or their own shard's result never
    came); ``rejected``: peers whose part was refused as non-finite; ``missing_shards``:
    shards that got no update this round; ``admitted``: members that rejoin from the next
    round (the round coordinator's decision, :mod:`miner.distributed.exchange`); ``caught``:
    members caught lying this round (dropped for the task; the evidence is on the exchange).
    Each peer derives all of it from what both reducers of each piece said
    (:mod:`miner.distributed.audit`), never from one reducer's word.
    """

    round_id: int
    peers: tuple[str, ...]
    contributed: tuple[str, ...]
    dropped: tuple[str, ...]
    rejected: tuple[str, ...]
    missing_shards: tuple[int, ...]
    duration_s: float
    bytes_sent: int
    admitted: tuple[str, ...] = ()
    caught: tuple[str, ...] = ()


@dataclass(frozen=True)
class Participation:
    """One peer's tally over a run: rounds it was in, contributed to, was dropped from or
    rejected in."""

    rounds: int = 0
    contributed: int = 0
    dropped: int = 0
    rejected: int = 0

    @property
    def share(self) -> float:
        """Fraction of its rounds in which the peer contributed."""
        return self.contributed / self.rounds if self.rounds else 0.0


def participation(reports: Iterable[RoundReport]) -> dict[str, Participation]:
    """Per-peer tally of ``reports`` (e.g. one miner's ``GradientExchange.reports``)."""
    tally: dict[str, list[int]] = {}
    for report in reports:
        for peer in report.peers:
            row = tally.setdefault(peer, [0, 0, 0, 0])
            row[0] += 1
            row[1] += peer in report.contributed
            row[2] += peer in report.dropped
            row[3] += peer in report.rejected
    return {peer: Participation(*row) for peer, row in sorted(tally.items())}
