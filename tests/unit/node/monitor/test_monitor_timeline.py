"""The monitor's timeline from a task's chain view and events (pure): stages reached, their
times and deadlines, the group from the claims, failure ends, other tasks' events ignored."""

from __future__ import annotations

from typing import Any

from node.chain.models import (
    ChainEvent,
    DisputeResolved,
    MemberCheckedIn,
    ResultSubmitted,
    TaskCancelled,
    TaskClaimed,
    TaskDisputed,
    TaskExpired,
    TaskPosted,
    TaskSettled,
    TaskStarted,
    TaskState,
    TaskView,
)
from node.monitor.timeline import build_timeline

CLIENT, MINER_A, MINER_B = ("0x" + "1" * 40, "0x" + "2" * 40, "0x" + "3" * 40)
ZERO = "0x" + "0" * 40
T0 = 1_700_000_000
TASK = 4


def view(state: TaskState, **changes: Any) -> TaskView:
    fields: dict[str, Any] = dict(
        client=CLIENT, token=ZERO, reward_wei=10**17, bond_wei=10**15, arbiter=MINER_B,
        slots=2, claimed=0, state=state, claim_deadline=T0 + 600, work_deadline=0,
        settle_deadline=0, work_window_s=3600, review_window_s=600, arbitration_window_s=60,
        spec_hash=b"\x11" * 32, result_root=b"\x00" * 32)
    fields.update(changes)
    return TaskView(**fields)


def where(block: int, index: int = 0) -> dict[str, Any]:
    return dict(block_number=block, block_hash=b"\x22" * 32, tx_hash=bytes([block]) * 32,
                log_index=index)


def posted(task_id: int = TASK) -> TaskPosted:
    return TaskPosted(
        **where(1), task_id=task_id, client=CLIENT, token=ZERO, reward_wei=10**17,
        bond_wei=10**15, slots=2, claim_deadline=T0 + 600, work_window_s=3600,
        review_window_s=600, arbitration_window_s=60, arbiter=MINER_B,
        spec_hash=b"\x11" * 32, validation_hash=b"\x12" * 32, spec_uri="file:///spec.json")


def claims() -> list[ChainEvent]:
    return [TaskClaimed(**where(3), task_id=TASK, miner=MINER_B, slot=1),
            TaskClaimed(**where(2), task_id=TASK, miner=MINER_A, slot=0),
            TaskStarted(**where(3, 1), task_id=TASK, work_deadline=T0 + 3900)]


def submitted() -> ResultSubmitted:
    return ResultSubmitted(**where(5), task_id=TASK, submitter=MINER_A,
                           result_root=b"\x33" * 32, signed_slots=3, review_deadline=T0 + 1500,
                           result_uri="")


TIMES = {n: T0 + 10 * n for n in range(1, 9)}


def stages(timeline: Any) -> dict[str, tuple[bool, int | None, int | None]]:
    return {s.key: (s.done, s.time_s, s.deadline_s) for s in timeline.stages}


def test_open_task_waits_for_claims_by_the_claim_deadline() -> None:
    timeline = build_timeline(TASK, view(TaskState.OPEN), [posted()], TIMES, T0 + 15)
    assert timeline.current == "posted" and timeline.state == "OPEN"
    got = stages(timeline)
    assert list(got) == ["posted", "claimed", "running", "submitted", "settled"]
    assert got["posted"] == (True, T0 + 10, None)
    assert got["claimed"] == (False, None, T0 + 600)
    assert timeline.events[0].detail["spec_uri"] == "file:///spec.json"
    assert timeline.members == ()


def test_running_task_lists_the_group_in_slot_order_and_the_work_deadline() -> None:
    running = view(TaskState.RUNNING, claimed=2, work_deadline=T0 + 3900)
    timeline = build_timeline(TASK, running, [posted(), *claims()], TIMES, T0 + 40)
    assert timeline.current == "running"
    assert [(m.slot, m.address) for m in timeline.members] == [(0, MINER_A), (1, MINER_B)]
    got = stages(timeline)
    assert got["claimed"] == (True, T0 + 20, T0 + 600)  # the first claim
    assert got["running"][:2] == (True, T0 + 30)
    assert got["submitted"] == (False, None, T0 + 3900)
    assert [s.label for s in timeline.stages][1] == "claimed 2/2"
    assert [e.name for e in timeline.events] == ["posted", "claimed", "claimed", "started"]


def test_settled_task_and_events_of_other_tasks() -> None:
    others = [posted(task_id=TASK + 1), TaskSettled(**where(6, 1), task_id=TASK + 1,
                                                    miners_paid=False)]
    events = [posted(), *claims(), submitted(), TaskSettled(**where(7), task_id=TASK,
                                                            miners_paid=True), *others]
    timeline = build_timeline(TASK, view(TaskState.SETTLED, claimed=2), events, TIMES, T0 + 80)
    assert timeline.current == "settled"
    got = stages(timeline)
    assert got["submitted"][:2] == (True, T0 + 50)
    assert got["settled"] == (True, T0 + 70, T0 + 1500)  # the review deadline it had
    assert all(s.done and not s.failed for s in timeline.stages)
    assert len(timeline.events) == 6


def test_a_dispute_adds_its_stage_and_a_lost_one_is_marked() -> None:
    events = [posted(), *claims(), submitted(),
              TaskDisputed(**where(6), task_id=TASK, reason_hash=b"\x44" * 32,
                           arbitration_deadline=T0 + 1600)]
    disputed = build_timeline(TASK, view(TaskState.DISPUTED, claimed=2, settle_deadline=T0 + 1600),
                              events, TIMES, T0 + 65)
    assert [s.key for s in disputed.stages][-2:] == ["disputed", "settled"]
    assert disputed.current == "disputed" and stages(disputed)["settled"][2] == T0 + 1600
    events += [DisputeResolved(**where(7), task_id=TASK, arbiter=MINER_B, miners_won=False),
               TaskSettled(**where(7, 1), task_id=TASK, miners_paid=False)]
    lost = build_timeline(TASK, view(TaskState.SETTLED, claimed=2), events, TIMES, T0 + 80)
    end = lost.stages[-1]
    assert (end.key, end.done, end.failed) == ("settled", True, True)
    assert "lost" in end.label


def test_cancelled_and_expired_tasks_end_early() -> None:
    cancelled = build_timeline(TASK, view(TaskState.CANCELLED),
                               [posted(), TaskCancelled(**where(2), task_id=TASK)], TIMES, T0 + 30)
    assert [(s.key, s.failed) for s in cancelled.stages] == [("posted", False),
                                                              ("cancelled", True)]
    assert cancelled.current == "cancelled" and cancelled.stages[-1].time_s == T0 + 20
    # expired by time alone: no event yet, the effective state says so
    expired = build_timeline(TASK, view(TaskState.EXPIRED, claimed=2),
                             [posted(), *claims()], TIMES, T0 + 9999)
    assert [s.key for s in expired.stages] == ["posted", "claimed", "running", "expired"]
    assert expired.stages[-1].time_s is None
    slashed = build_timeline(TASK, view(TaskState.EXPIRED, claimed=2), [
        posted(), *claims(), MemberCheckedIn(**where(7), task_id=TASK, miner=MINER_B, slot=1,
                                             evidence=b"\x44" * 32),
        TaskExpired(**where(8), task_id=TASK, burned_wei=10**15)],
        TIMES, T0 + 9999)
    assert slashed.stages[-1].time_s == T0 + 80
    # the survivor's check-in is in the event log, with who checked in
    checked = [e for e in slashed.events if e.name == "checked_in"]
    assert [(e.detail["miner"], e.detail["slot"]) for e in checked] == [(MINER_B, 1)]
    assert checked[0].detail["evidence"] == "0x" + "44" * 32  # what the check-in committed to


def test_the_timeline_is_json_for_the_page() -> None:
    timeline = build_timeline(TASK, view(TaskState.OPEN), [posted()], TIMES, T0)
    data = timeline.model_dump(mode="json")
    assert data["events"][0]["tx_hash"] == "0x" + "01" * 32
    assert data["events"][0]["detail"]["client"] == CLIENT
