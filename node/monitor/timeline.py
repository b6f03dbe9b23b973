"""A task's life on chain, as the monitor page shows it: stages, events and deadlines.

:func:`build_timeline` is pure: from the contract's view of the task (state and deadlines,
which also move with time alone), the task's events and their blocks' timestamps, it lays
out the stages ``posted → claimed → running → submitted → (disputed →) settled`` (or a
``cancelled`` / ``expired`` end), each with the time it was reached and the deadline it has
to be reached by. :class:`TimelineReader` does the I/O: the view, the task's logs (one
``eth_getLogs`` filtered on the task id, the first indexed argument of every task event,
read incrementally) and block timestamps (cached: a mined block's time never changes); a
timeline read less than a second ago is answered again.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from node.chain.market import TaskMarket
from node.chain.models import (
    Burned,
    ChainEvent,
    DisputeResolved,
    MemberCheckedIn,
    ResultEndorsed,
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
from node.chain.rpc import RpcPool

#: Blocks read again on every refresh, so an event seen late (a slow node) is not missed.
RESCAN_BLOCKS = 12
MAX_CACHED_BLOCKS = 4096

_NAMES: Mapping[type[ChainEvent], str] = {
    TaskPosted: "posted", TaskClaimed: "claimed", TaskStarted: "started",
    ResultSubmitted: "submitted", TaskDisputed: "disputed", DisputeResolved: "resolved",
    TaskSettled: "settled", TaskCancelled: "cancelled", TaskExpired: "expired",
    MemberCheckedIn: "checked_in", ResultEndorsed: "endorsed", Burned: "burned",
}
_DETAILS: Mapping[type[ChainEvent], tuple[str, ...]] = {
    TaskPosted: ("client", "reward_wei", "bond_wei", "slots", "claim_deadline", "spec_uri"),
    TaskClaimed: ("miner", "slot"), TaskStarted: ("work_deadline",),
    ResultSubmitted: ("submitter", "result_root", "signed_slots", "review_deadline",
                      "result_uri"),
    TaskDisputed: ("arbitration_deadline",), DisputeResolved: ("miners_won",),
    TaskSettled: ("miners_paid",), TaskExpired: ("burned_wei",), TaskCancelled: (),
    MemberCheckedIn: ("miner", "slot", "evidence"), ResultEndorsed: ("miner", "slot"),
    Burned: ("token", "amount_wei"),
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class TimelineEvent(_Frozen):
    name: str
    block_number: int
    time_s: int | None
    tx_hash: str
    detail: dict[str, Any]


class Stage(_Frozen):
    """One step of the lifecycle: reached at ``time_s`` (if known), due by ``deadline_s``."""

    key: str
    label: str
    done: bool
    time_s: int | None = None
    deadline_s: int | None = None
    failed: bool = False


class Member(_Frozen):
    slot: int
    address: str


class Timeline(_Frozen):
    task_id: int
    state: str
    chain_time_s: int
    slots: int
    claimed: int
    reward_wei: int
    bond_wei: int
    token: str
    current: str
    stages: tuple[Stage, ...]
    events: tuple[TimelineEvent, ...]
    members: tuple[Member, ...]


def _event(event: ChainEvent, block_times: Mapping[int, int]) -> TimelineEvent:
    data = event.model_dump(mode="json")
    return TimelineEvent(
        name=_NAMES[type(event)], block_number=event.block_number,
        time_s=block_times.get(event.block_number), tx_hash=data["tx_hash"],
        detail={k: data[k] for k in _DETAILS[type(event)]})


def _first(events: Sequence[TimelineEvent], name: str) -> TimelineEvent | None:
    return next((e for e in events if e.name == name), None)


def _stages(view: TaskView, events: Sequence[TimelineEvent]) -> list[Stage]:
    state = view.state
    posted, claimed = _first(events, "posted"), _first(events, "claimed")
    started, submitted = _first(events, "started"), _first(events, "submitted")
    n_claims = sum(e.name == "claimed" for e in events)
    review_deadline = submitted.detail["review_deadline"] if submitted else None
    work_deadline = view.work_deadline or (started.detail["work_deadline"] if started else None)
    reached = {
        "running": state in (TaskState.RUNNING, TaskState.SUBMITTED, TaskState.DISPUTED,
                             TaskState.SETTLED) or started is not None,
        "submitted": submitted is not None or state in (TaskState.SUBMITTED,
                                                         TaskState.DISPUTED),
    }
    stages = [
        Stage(key="posted", label="posted", done=True, time_s=posted.time_s if posted else None),
        Stage(key="claimed", label=f"claimed {n_claims}/{view.slots}", done=n_claims > 0,
              time_s=claimed.time_s if claimed else None, deadline_s=view.claim_deadline),
        Stage(key="running", label="running", done=reached["running"],
              time_s=started.time_s if started else None, deadline_s=view.claim_deadline),
        Stage(key="submitted", label="submitted", done=reached["submitted"],
              time_s=submitted.time_s if submitted else None, deadline_s=work_deadline),
    ]
    disputed = _first(events, "disputed")
    if disputed is not None or state is TaskState.DISPUTED:
        stages.append(Stage(key="disputed", label="disputed", done=True,
                            time_s=disputed.time_s if disputed else None,
                            deadline_s=review_deadline))
        review_deadline = disputed.detail["arbitration_deadline"] if disputed else None
    end = {TaskState.CANCELLED: "cancelled", TaskState.EXPIRED: "expired"}.get(state)
    if end is not None:
        event = _first(events, end)
        stages = [s for s in stages if s.done]
        stages.append(Stage(key=end, label=end, done=True, failed=True,
                            time_s=event.time_s if event else None))
        return stages
    settled = _first(events, "settled")
    paid = settled.detail["miners_paid"] if settled else True
    stages.append(Stage(key="settled", label="settled" if paid else "settled (miners lost)",
                        done=state is TaskState.SETTLED,
                        time_s=settled.time_s if settled else None,
                        deadline_s=view.settle_deadline or review_deadline, failed=not paid))
    return stages


def build_timeline(task_id: int, view: TaskView, events: Sequence[ChainEvent],
                   block_times: Mapping[int, int], now_s: int) -> Timeline:
    """The timeline of ``task_id`` from its chain view and events (pure)."""
    ours = sorted((e for e in events if type(e) in _NAMES and getattr(e, "task_id", None)
                   == task_id), key=lambda e: (e.block_number, e.log_index))
    rows = [_event(e, block_times) for e in ours]
    stages = _stages(view, rows)
    members = sorted({(e.slot, e.miner) for e in ours if isinstance(e, TaskClaimed)})
    current = [s.key for s in stages if s.done][-1]
    return Timeline(
        task_id=task_id, state=view.state.name, chain_time_s=now_s, slots=view.slots,
        claimed=view.claimed, reward_wei=view.reward_wei, bond_wei=view.bond_wei,
        token=view.token, current=current, stages=tuple(stages), events=tuple(rows),
        members=tuple(Member(slot=s, address=a) for s, a in members))


class TimelineSource(Protocol):
    """Anything that reads timelines (:class:`TimelineReader`, or a stand-in in tests)."""

    async def read(self, task_id: int) -> Timeline: ...


class TimelineReader:
    """Reads timelines from the chain, remembering events and block times between calls."""

    def __init__(self, market: TaskMarket, rpc: RpcPool, from_block: int = 0,
                 max_range_blocks: int = 10_000, min_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._market = market
        self._rpc = rpc
        self._from_block = from_block
        self._max_range = max_range_blocks
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._recent: dict[int, tuple[float, Timeline]] = {}
        self._events: dict[int, dict[tuple[bytes, int], ChainEvent]] = {}
        self._scanned_to: dict[int, int] = {}
        self._block_times: OrderedDict[int, int] = OrderedDict()
        self._locks: dict[int, asyncio.Lock] = {}  # one read per task at a time

    async def _block_time(self, number: int) -> int:
        if number in self._block_times:
            self._block_times.move_to_end(number)
            return self._block_times[number]
        block = await self._rpc.get_block(number)
        self._block_times[number] = int(block["timestamp"])
        while len(self._block_times) > MAX_CACHED_BLOCKS:
            self._block_times.popitem(last=False)
        return self._block_times[number]

    async def _scan(self, task_id: int, head: int) -> list[ChainEvent]:
        seen = self._events.setdefault(task_id, {})
        start = max(self._from_block, self._scanned_to.get(task_id, -1) - RESCAN_BLOCKS + 1)
        topic = "0x" + task_id.to_bytes(32, "big").hex()
        for low in range(start, head + 1, self._max_range):
            high = min(low + self._max_range - 1, head)
            logs = await self._market.get_logs(low, high, [None, topic])
            for event in self._market.decode_logs(logs):
                seen[(event.tx_hash, event.log_index)] = event
        self._scanned_to[task_id] = head
        return list(seen.values())

    async def read(self, task_id: int) -> Timeline:
        """The task's timeline now, or as read less than ``min_interval_s`` ago (several
        pages polling cost one read); raises the chain's errors, e.g. an unknown task."""
        async with self._locks.setdefault(task_id, asyncio.Lock()):
            # requests arriving together wait for the first one's read and share it
            recent = self._recent.get(task_id)
            if recent is not None and self._clock() - recent[0] < self._min_interval_s:
                return recent[1]
            view = await self._market.get_task(task_id)
            latest = await self._rpc.get_block("latest")
            head, now_s = int(latest["number"]), int(latest["timestamp"])
            events = await self._scan(task_id, head)
            numbers = sorted({e.block_number for e in events})
            times = dict(zip(numbers, await asyncio.gather(*map(self._block_time, numbers)),
                             strict=True))
            timeline = build_timeline(task_id, view, events, times, now_s)
            self._recent[task_id] = (self._clock(), timeline)
            return timeline
