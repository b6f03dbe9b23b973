"""The verification rules on their own: verifier choice, the verifier's checks, how a peer
settles a piece, local result checks, and who the dispute ledger catches."""

from __future__ import annotations

import numpy as np
import pytest

from miner.distributed.audit import (
    DisputeLedger,
    PieceRecord,
    judge,
    result_fault,
    settle,
    verifier_of,
)
from miner.distributed.frames import NO_DIGEST, NO_SUSPECT, Declaration, Status, Verdict, digest

D = [digest(bytes([i])) for i in range(4)]


def _decl(parts: list[bytes], rejected: list[bool] | None = None) -> Declaration:
    return Declaration(
        tuple(parts), tuple(rejected or [False] * len(parts)), (False,) * 4, digest(b"r")
    )


@pytest.mark.parametrize("n", [2, 3, 4, 7])
def test_verifier_is_another_peer_and_changes_every_round(n: int) -> None:
    for owner in range(n):
        seen = [verifier_of(owner, r, n) for r in range(n - 1)]
        assert owner not in seen and None not in seen
        assert len(set(seen)) == n - 1  # every other peer in turn
        for r in range(2 * n):
            assert verifier_of(owner, r, n) != verifier_of(owner, r + 1, n) or n == 2
    # in one round, each peer verifies exactly one shard
    for r in range(n):
        assert sorted(verifier_of(o, r, n) for o in range(n)) == list(range(n))  # type: ignore[type-var]
    assert verifier_of(0, 5, 1) is None


def test_judge_checks_the_declaration_against_what_the_verifier_holds() -> None:
    held = [D[0], D[1], D[2], None]
    finite = [False] * 4
    assert judge(_decl([D[0], D[1], D[2], NO_DIGEST]), held, finite, 1) == (
        Status.OK,
        NO_SUSPECT,
    )
    assert judge(_decl([D[0], NO_DIGEST, D[2], NO_DIGEST]), held, finite, 1)[0] is Status.OMITTED
    assert judge(_decl([D[0], D[1], D[3], NO_DIGEST]), held, finite, 1) == (Status.BAD_PART, 2)
    assert judge(_decl([D[0], D[1], D[2], D[3]]), held, finite, 1) == (Status.UNVERIFIABLE, 3)
    flagged = _decl([D[0], D[1], D[2], NO_DIGEST], [True, False, False, False])
    assert judge(flagged, held, finite, 1) == (Status.WRONG_FLAG, 0)
    assert judge(flagged, held, [True, False, False, False], 1)[0] is Status.OK
    ghost = _decl([D[0], D[1], D[2], NO_DIGEST], [False, False, False, True])
    assert judge(ghost, held, finite, 1) == (Status.BAD_PART, 3)  # a flag on no part


def _record(decl: Declaration | None, verdict: Verdict | None, **kw) -> PieceRecord:  # type: ignore[no-untyped-def]
    ddig = None if decl is None else decl.digest(1, 0)
    rdig = kw.pop("result_digest", None if decl is None else decl.result)
    return PieceRecord(0, 1, decl, ddig, rdig, verdict, **kw)


def test_settle_applies_only_what_the_verifier_confirmed() -> None:
    decl = _decl([D[0], D[1], NO_DIGEST, D[3]], [False, False, False, True])
    ok = Verdict(Status.OK, decl.digest(1, 0), decl.result, (True, True, True, False))
    s = settle(_record(decl, ok), me=2, n=4)
    assert s.applied and s.averaged == {0, 1}
    assert s.credited == {0, 1, 2}  # 2's part reached the verifier only: still credited
    assert s.rejected == {3} and not s.absent and s.dispute is None
    # the owner sent me another declaration or another result than the verifier checked
    for other in (_record(decl, ok, result_digest=digest(b"x")), _record(_decl(list(D)), ok)):
        s = settle(other, me=2, n=4)
        assert not s.applied and s.dispute == {0, 1}
    # a local check failed: not applied; a dispute only where it proves something
    s = settle(_record(decl, ok, fault="non_finite_result"), me=2, n=4)
    assert not s.applied and s.dispute == {0, 1}
    s = settle(_record(decl, ok, fault="out_of_bound_result"), me=2, n=4)
    assert not s.applied and s.dispute is None
    # a failed verdict implicates the owner, the verifier and a named sender
    bad = Verdict(Status.BAD_PART, decl.digest(1, 0), NO_DIGEST, (True,) * 4, 3)
    assert settle(_record(decl, bad), me=2, n=4).dispute == {0, 1, 3}


def test_settle_derives_absence_from_both_reducers_and_silence_from_what_i_missed() -> None:
    decl = _decl([D[0], D[1], NO_DIGEST, NO_DIGEST])
    ok = Verdict(Status.OK, decl.digest(1, 0), decl.result, (True, True, False, True))
    assert settle(_record(decl, ok), me=3, n=4).absent == {2}  # neither reducer has 2's part
    assert settle(_record(decl, None), me=3, n=4).silent == {1}  # no verdict came
    assert settle(_record(None, ok), me=3, n=4).silent == {0}  # no result came
    unverified = PieceRecord(0, None, decl, decl.digest(1, 0), decl.result, None)
    s = settle(unverified, me=3, n=4)
    assert s.applied and s.absent == {2, 3}  # a trusted owner's word
    faulty = PieceRecord(0, None, decl, None, None, None, "out_of_bound_result")
    assert settle(faulty, me=3, n=4).convicted == {0}


def test_result_fault_is_non_finite_or_far_beyond_my_own_size() -> None:
    x = np.ones(100, np.float32)
    assert result_fault(x, None, 1.0, 2, 16.0) is None
    assert result_fault(x * 31, None, 1.0, 2, 16.0) is None
    assert result_fault(x * 33, None, 1.0, 2, 16.0) == "out_of_bound_result"
    assert result_fault(x * np.nan, None, 1.0, 2, 16.0) == "non_finite_result"
    assert result_fault(x * 1e30, None, 0.0, 2, 16.0) is None  # nothing of mine to compare
    used = np.zeros(100, bool)
    assert result_fault(np.where(used, x, np.nan), used, 1.0, 2, 16.0) is None


def test_ledger_catches_the_peer_every_dispute_shares() -> None:
    ledger = DisputeLedger()
    ledger.add(1, ["L", "a"])
    assert ledger.caught(1, exempt="b") == set()  # one dispute: either of two
    ledger.add(2, ["b", "L"])
    assert ledger.caught(2, exempt="b") == {"L"}  # b knows it is honest, and a is cleared
    assert ledger.caught(2, exempt="c") == {"L"}


def test_ledger_pair_rule_and_window_and_explained_disputes() -> None:
    ledger = DisputeLedger(window_rounds=4, pair_strikes=3)
    for r in (1, 2):
        ledger.add(r, ["a", "b"])
    assert ledger.caught(2, exempt="c") == set()
    ledger.add(3, ["a", "b"])
    assert ledger.caught(3, exempt="c") == {"a", "b"}
    assert ledger.caught(3, exempt="a") == {"b"}  # never myself
    assert ledger.caught(20, exempt="c") == set()  # out of the window
    ledger = DisputeLedger()
    ledger.add(1, ["a", "L"])
    ledger.add(2, ["a", "c"])  # an unrelated fault
    # once L is caught for its own disputes, a's dispute with it no longer counts against a
    assert ledger.caught(2, exempt="z", already={"L"}) == set()
