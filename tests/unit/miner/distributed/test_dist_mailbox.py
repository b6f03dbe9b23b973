"""The mailbox's budgets per sender: bytes parked, rounds ahead, nothing for finished rounds."""

from __future__ import annotations

import pytest

from miner.distributed.channel import SLOT_COST_BYTES, Mailbox
from node.transport import PeerBudgetExceeded, RoundOutOfWindow


async def test_a_sender_over_its_bytes_is_refused_and_freed_on_release() -> None:
    box = Mailbox(peer_bytes=10_000, rounds_ahead=2)
    box.put(("x", 1, "a"), b"1" * 6000)
    with pytest.raises(PeerBudgetExceeded):
        box.put(("x", 1, "b"), b"1" * 6000)
    box.put(("y", 1, "a"), b"1" * 6000)  # another sender's budget is its own
    box.put(("x", 1, "a"), b"2" * 6000)  # a duplicate is ignored, not charged
    assert box.held == {"x": 6000, "y": 6000}
    assert bytes(await box.get(("x", 1, "a"))) == b"1" * 6000
    box.release(1)
    assert box.held == {}
    box.put(("x", 2, "b"), b"1" * 6000)


async def test_tiny_messages_cost_a_slot_each() -> None:
    box = Mailbox(peer_bytes=4 * SLOT_COST_BYTES)
    for i in range(4):
        box.put(("x", 1, f"t{i}"), b"")
    with pytest.raises(PeerBudgetExceeded):
        box.put(("x", 1, "t4"), b"")


async def test_rounds_outside_the_window_are_refused_or_dropped() -> None:
    box = Mailbox(rounds_ahead=2)
    box.put(("x", 10**9, "far"), b"ok")  # no round released yet: no window to hold to
    box.release(5)
    with pytest.raises(RoundOutOfWindow):
        box.admit("x", 8, 1)
    with pytest.raises(RoundOutOfWindow):
        box.admit("x", 5, 1)
    box.admit("x", 7, 1)
    box.put(("x", 4, "late"), b"late")  # late for a released round: dropped, not parked
    assert ("x", 4, "late") not in box.slots
    with pytest.raises(RoundOutOfWindow):
        box.put(("x", 9, "far"), b"far")
