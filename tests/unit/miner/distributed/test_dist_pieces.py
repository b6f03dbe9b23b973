"""Cutting a round's buffer into shards and pieces."""

from __future__ import annotations

import itertools

import pytest

from miner.distributed.frames import shard_bounds
from miner.distributed.pieces import plan_pieces


@pytest.mark.parametrize(
    ("size", "n", "piece"), [(1000, 4, 97), (10, 3, 100), (3, 4, 1), (0, 2, 5)]
)
def test_pieces_tile_each_shard_in_order(size: int, n: int, piece: int) -> None:
    pieces = plan_pieces(size, n, piece)
    assert [p.pid for p in pieces] == list(range(len(pieces)))
    for owner, (lo, hi) in enumerate(shard_bounds(size, n)):
        mine = [p for p in pieces if p.owner == owner]
        assert mine and mine[0].lo == lo and mine[-1].hi == hi
        assert all(a.hi == b.lo for a, b in itertools.pairwise(mine))
        assert all(p.size <= piece for p in mine)
