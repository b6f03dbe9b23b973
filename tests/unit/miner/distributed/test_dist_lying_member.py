"""A dishonest group member, played for real over the in-memory hub: what it sends is
refused or harmless, it is caught, the evidence names it, and no honest member loses its
place or its share.

Every round the honest members' results are compared with a reference round run by an
all-honest group on the same values: whatever an honest member applied must be exactly the
honest aggregate (a piece that could not be verified is simply not applied), and honest
replicas agree bit for bit.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from miner.distributed.channel import InMemoryHub
from miner.distributed.exchange import ExchangeConfig, GradientExchange, RoundResult
from miner.distributed.frames import Status
from tests.unit.miner.distributed.liars import (
    Liar,
    clear_part,
    equivocate,
    false_verdicts,
    forge_declaration,
    forge_result,
    group_with_liar,
    mark_rejected,
    play,
    two_faced_parts,
)

FOUR = ["0xa", "0xb", "0xc", "0xd"]
TWO = ["0xa", "0xb"]
CONFIG = ExchangeConfig(round_timeout_s=1.0, piece_elems=200)
SIZE = 1000
ROUNDS = 4

pytestmark = pytest.mark.timeout(60)


def _values(peers: list[str], round_id: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(round_id)
    base = rng.normal(size=SIZE)
    return {p: (base + 0.3 * rng.normal(size=SIZE)).astype(np.float32) for p in peers}


async def _reference(
    peers: tuple[str, ...], round_id: int, values: dict[str, np.ndarray]
) -> RoundResult:
    """The same round in an all-honest group of ``peers``."""
    hub = InMemoryHub()
    group = {p: GradientExchange(hub.channel(p), peers, CONFIG) for p in peers}
    return (await play(group, round_id, values))[peers[0]]


def _assert_harmless(
    results: dict[str, RoundResult], honest: list[str], reference: RoundResult, same: bool = True
) -> None:
    first = results[honest[0]]
    for name in honest:
        r = results[name]
        assert np.isfinite(r.mean).all()
        applied = np.asarray(r.counts) > 0
        np.testing.assert_array_equal(r.mean[applied], reference.mean[applied])
        assert not r.mean[~applied].any()
        if same:
            np.testing.assert_array_equal(r.mean, first.mean)
        assert not set(r.report.dropped) & set(honest), r.report
        assert not set(r.report.caught) & set(honest)


async def _run(
    peers: list[str], liar: str, lie: Liar, rounds: int = ROUNDS, same: bool = True
) -> dict[str, GradientExchange]:
    """``rounds`` rounds with ``liar`` lying; each checked against the honest reference."""
    _, group = group_with_liar(peers, CONFIG, liar, lie)
    honest = [p for p in peers if p != liar]
    for round_id in range(1, rounds + 1):
        values = _values(peers, round_id)
        alive = group[honest[0]].alive
        reference = await _reference(alive, round_id, values)
        caught = frozenset({liar}) if liar in group[honest[0]].caught else frozenset()
        results = await play(group, round_id, values, skip=caught)
        _assert_harmless(results, honest, reference, same)
    return group


def _caught_by_all(group: dict[str, GradientExchange], liar: str) -> None:
    for name, ex in group.items():
        if name != liar:
            assert ex.caught == {liar}, (name, ex.caught)
            assert liar not in ex.alive
            assert any(e.accused == liar and e.kind == "caught" for e in ex.evidence)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda x: np.full_like(x, np.nan), id="nan"),
        pytest.param(lambda x: np.full_like(x, 1e30), id="1e30"),
        pytest.param(lambda x: -x, id="sign_flip"),
        pytest.param(lambda x: x + 1e-3, id="tiny_bias"),
    ],
)
@pytest.mark.parametrize("peers", [FOUR, TWO], ids=["4peers", "2peers"])
async def test_reducer_that_returns_any_other_values_is_caught_and_never_applied(
    peers: list[str], change
) -> None:
    liar = peers[-1]
    group = await _run(peers, liar, Liar(None, forge_result(change)))  # type: ignore[arg-type]
    _caught_by_all(group, liar)
    for name in peers[:-1]:
        kinds = {e.kind for e in group[name].evidence if e.accused == liar}
        assert kinds & {"wrong_result", "non_finite_result", "out_of_bound_result", "caught"}


@pytest.mark.parametrize("peers", [FOUR, TWO], ids=["4peers", "2peers"])
async def test_reducer_that_clears_a_contributor_bit_is_caught_and_the_victim_keeps_its_share(
    peers: list[str],
) -> None:
    liar, victim = peers[-1], peers[0]
    lie = Liar(None, forge_declaration(clear_part(0)))  # type: ignore[arg-type]
    group = await _run(peers, liar, lie)
    _caught_by_all(group, liar)
    for ex in group.values():
        if ex.me != liar:
            assert all(victim in r.contributed for r in ex.reports)
    if len(peers) > 2:  # only the victim can tell its own part was left out
        assert any(e.kind == "omitted_my_part" for e in group[victim].evidence)


async def test_reducer_that_marks_an_honest_part_rejected_is_caught_not_the_victim() -> None:
    liar, victim = "0xd", "0xa"
    group = await _run(FOUR, liar, Liar(None, forge_declaration(mark_rejected(0))))  # type: ignore[arg-type]
    _caught_by_all(group, liar)
    assert any(e.kind == "rejected_my_finite_part" for e in group[victim].evidence)
    for ex in group.values():
        if ex.me != liar:
            assert all(victim not in r.rejected for r in ex.reports)


async def test_reducer_that_silently_leaves_out_a_part_costs_the_victim_nothing() -> None:
    """An owner that acts as if one honest part never came: indistinguishable from a late
    part, so nobody is caught, but the victim stays credited (the verifier holds its part),
    is never dropped, and keeps the evidence."""
    liar, victim = "0xd", "0xa"
    _, group = group_with_liar(FOUR, CONFIG, liar, Liar(None, None, {victim}))  # type: ignore[arg-type]
    for round_id in range(1, 3):
        results = await play(group, round_id, _values(FOUR, round_id))
        for name in FOUR[:3]:
            report = results[name].report
            assert victim in report.contributed and not report.dropped
            assert np.isfinite(results[name].mean).all()
    assert any(e.kind == "omitted_my_part" and e.accused == liar for e in group[victim].evidence)


async def test_verifier_that_condemns_every_piece_is_caught_and_owners_are_not() -> None:
    liar = "0xd"
    group = await _run(FOUR, liar, Liar(None, false_verdicts()))  # type: ignore[arg-type]
    _caught_by_all(group, liar)


@pytest.mark.parametrize("status", [Status.OMITTED, Status.BAD_PART])
async def test_verifier_that_frames_owners_is_caught(status: Status) -> None:
    group = await _run(FOUR, "0xb", Liar(None, false_verdicts(status)))  # type: ignore[arg-type]
    _caught_by_all(group, "0xb")


async def test_sender_that_shows_each_reducer_another_part_is_caught() -> None:
    liar = "0xc"
    group = await _run(FOUR, liar, Liar(None, two_faced_parts(lambda x: x * 3)))  # type: ignore[arg-type]
    _caught_by_all(group, liar)


async def test_sender_that_always_shows_one_member_another_part_takes_at_most_it_along() -> None:
    """Nobody outside can tell whether the sender or that member lies: after
    ``pair_strikes`` rounds both go (the BTARD-SGD bound: one honest member at most per
    dishonest one), and nothing is poisoned meanwhile."""
    liar, victim = "0xc", "0xa"
    lie = Liar(None, two_faced_parts(lambda x: x * 3, only_to=victim))  # type: ignore[arg-type]
    _, group = group_with_liar(FOUR, CONFIG, liar, lie)
    for round_id in range(1, 6):
        values = _values(FOUR, round_id)
        skip = frozenset(p for p in FOUR if p in group["0xb"].caught)
        results = await play(group, round_id, values, skip=skip)
        for name in ("0xb", "0xd"):
            assert np.isfinite(results[name].mean).all()
    for name in ("0xb", "0xd"):
        assert liar in group[name].caught and group[name].caught <= {liar, victim}


async def test_owner_that_sends_one_member_another_result_poisons_nobody() -> None:
    """Equivocation: the victim gets a forged result with a matching declaration, everyone
    else the honest one. The verdict names what the verifier checked, so the victim applies
    nothing of it; the others apply the honest result."""
    liar, victim = "0xd", "0xa"
    lie = Liar(None, equivocate([victim], lambda x: np.full_like(x, 1e30)))  # type: ignore[arg-type]
    _, group = group_with_liar(FOUR, CONFIG, liar, lie)
    values = _values(FOUR, 1)
    reference = await _reference(tuple(FOUR), 1, values)
    results = await play(group, 1, values)
    _assert_harmless(results, FOUR[:3], reference, same=False)
    assert any(e.accused == liar for e in group[victim].evidence)


@pytest.mark.parametrize(
    ("attack", "bound"),
    [("1e30", 2.5), ("-1e30", 2.5), ("sign_flip_x4", 2.5), ("nan", 1.0)],
)
async def test_two_peers_bound_every_part_by_their_own(attack: str, bound: float) -> None:
    """At two peers (the demo's and the benchmarks' group) a part is scaled to at most
    ``bound_factor`` (4) times the smaller part's RMS: the mean moves by at most 2.5 honest
    sizes, never to 5e29; a NaN part is rejected."""
    _, group = group_with_liar(TWO, CONFIG, "0xb")
    rng = np.random.default_rng(7)
    honest = rng.normal(size=SIZE).astype(np.float32)
    evil = {
        "1e30": np.full(SIZE, 1e30, np.float32),
        "-1e30": np.full(SIZE, -1e30, np.float32),
        "sign_flip_x4": -4 * honest,
        "nan": np.full(SIZE, np.nan, np.float32),
    }[attack]
    results = await play(group, 1, {"0xa": honest, "0xb": evil})
    mean = results["0xa"].mean
    assert np.isfinite(mean).all()
    rms = float(np.sqrt(np.mean(np.square(honest, dtype=np.float64))))
    assert np.sqrt(np.mean(np.square(mean, dtype=np.float64))) <= bound * rms * 1.001
    np.testing.assert_array_equal(results["0xa"].mean, results["0xb"].mean)  # both agree
    if attack == "nan":
        assert results["0xa"].report.rejected == ("0xb",)
        np.testing.assert_array_equal(mean, honest)


async def test_honest_two_peer_rounds_stay_exact_with_the_bound() -> None:
    _, group = group_with_liar(TWO, replace(CONFIG, piece_elems=1 << 20), "0xb")
    values = _values(TWO, 3)
    results = await play(group, 3, values)
    want = (values["0xa"] + values["0xb"]) * np.float32(0.5)
    for r in results.values():
        np.testing.assert_array_equal(r.mean, want)
        assert r.report.contributed == tuple(TWO) and not r.report.caught
