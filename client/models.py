"""What the client API returns: frozen pydantic models, rendered by the CLI as tables or JSON.

Wei are ``int``; times are unix seconds (``*_deadline``) or seconds (``*_s``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

FINAL_STATES = ("SETTLED", "CANCELLED", "EXPIRED")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class MemberInfo(_Model):
    slot: int
    address: str
    endpoint: str


class TaskInfo(_Model):
    """A task as the chain sees it now, with its group and the URIs from its events."""

    task_id: int
    state: str
    client: str
    token: str
    reward_wei: int
    bond_wei: int
    slots: int
    claimed: int
    arbiter: str
    claim_deadline: int
    work_deadline: int
    settle_deadline: int
    spec_hash: str
    result_root: str | None
    spec_uri: str = ""
    result_uri: str = ""
    members: tuple[MemberInfo, ...] = ()
    chain_time: int = 0

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES


class TaskRow(_Model):
    task_id: int
    state: str
    client: str
    reward_wei: int
    slots: int
    claimed: int


class TaskList(_Model):
    tasks: tuple[TaskRow, ...]
    total: int


class SubmitPlan(_Model):
    """What ``task submit`` will post, shown before it is sent."""

    spec_hash: str
    spec_uri: str
    token: str
    reward_wei: int
    bond_wei: int
    slots: int
    claim_window_s: int
    work_window_s: int
    review_window_s: int
    arbitration_window_s: int
    arbiter: str
    validation_hash: str
    client: str
    claim_deadline: int
    latest_work_deadline: int
    escrow_wei: int


class SubmitOutcome(_Model):
    plan: SubmitPlan
    posted: bool
    task_id: int | None = None
    tx_hash: str | None = None
    block_number: int | None = None
    gas_used: int | None = None
    spec_path: Path | None = None


class TxOutcome(_Model):
    """One lifecycle call (accept, dispute, cancel, expire) and the task's state after it."""

    task_id: int
    action: str
    tx_hash: str
    block_number: int
    gas_used: int
    state: str


class WithdrawOutcome(_Model):
    account: str
    token: str
    amount_wei: int
    tx_hash: str | None


class FetchOutcome(_Model):
    task_id: int
    out_dir: Path
    result_root: str
    files: dict[str, str]
    sources: dict[str, str]
    metrics: dict[str, Any]


class Check(_Model):
    name: str
    ok: bool
    detail: str


class VerifyReport(_Model):
    task_id: int
    checks: tuple[Check, ...]
    claimed: dict[str, Any]
    measured: dict[str, Any]
    evaluated: bool
    note: str = ""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


class WatchUpdate(_Model):
    """One thing ``watch`` saw: a chain state/event, or a member's progress event."""

    kind: str  # "state" | "event" | "progress"
    task_id: int
    member: str = ""
    name: str = ""
    data: dict[str, Any] = {}
    info: TaskInfo | None = None
