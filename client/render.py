"""The CLI's render layer: the only place in the client that writes to the terminal.

Each function takes a model from :mod:`client.models` and prints it for people (rich);
``--json`` output bypasses this module (one JSON object per command, or per update for
``watch``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.console import Console, Group
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from client.datasets import PackedDataset
from client.models import (
    FetchOutcome,
    SubmitOutcome,
    TaskInfo,
    TaskList,
    TxOutcome,
    VerifyReport,
    WatchUpdate,
    WithdrawOutcome,
)
from client.units import format_wei
from node.chain.models import ZERO_ADDRESS


def when(timestamp: int, now: int | None = None) -> str:
    """A unix time as UTC, with the distance from ``now`` when given (0 = not set)."""
    if timestamp == 0:
        return "-"
    text = dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if now:
        delta = timestamp - now
        text += f" (in {delta} s)" if delta >= 0 else f" ({-delta} s ago)"
    return text


def amount(amount_wei: int, token: str) -> str:
    if token == ZERO_ADDRESS:
        return f"{format_wei(amount_wei)} ({amount_wei} wei)"
    return f"{amount_wei} units of token {token}"


def submit(console: Console, outcome: SubmitOutcome) -> None:
    plan = outcome.plan
    table = Table(title="task" if outcome.posted else "task (dry run: nothing posted)",
                  show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows = [
        ("spec hash", plan.spec_hash), ("spec URI", plan.spec_uri),
        ("reward (escrowed now)", amount(plan.reward_wei, plan.token)),
        ("bond per slot", amount(plan.bond_wei, plan.token)), ("slots", str(plan.slots)),
        ("arbiter", plan.arbiter), ("client", plan.client),
        ("claim deadline", when(plan.claim_deadline)),
        ("work deadline (latest)", when(plan.latest_work_deadline)),
        ("review / arbitration", f"{plan.review_window_s} s / {plan.arbitration_window_s} s"),
    ]
    if outcome.posted:
        rows = [("task id", f"[green]{outcome.task_id}[/]"), *rows,
                ("tx", f"{outcome.tx_hash} (block {outcome.block_number}, "
                       f"{outcome.gas_used} gas)")]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def task_info(console: Console, info: TaskInfo) -> None:
    table = Table(title=f"task {info.task_id}: {info.state}", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    now = info.chain_time
    for key, value in (
        ("client", info.client), ("reward", amount(info.reward_wei, info.token)),
        ("bond per slot", amount(info.bond_wei, info.token)),
        ("slots", f"{info.claimed}/{info.slots} claimed"), ("arbiter", info.arbiter),
        ("claim deadline", when(info.claim_deadline, now)),
        ("work deadline", when(info.work_deadline, now)),
        ("settle deadline", when(info.settle_deadline, now)),
        ("spec", f"{info.spec_hash} {info.spec_uri}"),
        ("result root", info.result_root or "-"), ("result URI", info.result_uri or "-"),
    ):
        table.add_row(key, value)
    console.print(table)
    if info.members:
        group = Table(title="group")
        for column in ("slot", "miner", "endpoint"):
            group.add_column(column, overflow="fold")
        for m in info.members:
            group.add_row(str(m.slot), m.address, m.endpoint or "-")
        console.print(group)


def task_list(console: Console, listing: TaskList) -> None:
    table = Table(title=f"{len(listing.tasks)} of {listing.total} tasks")
    for column in ("id", "state", "client", "reward (wei)", "claimed"):
        table.add_column(column)
    for row in listing.tasks:
        table.add_row(str(row.task_id), row.state, row.client, str(row.reward_wei),
                      f"{row.claimed}/{row.slots}")
    console.print(table)


def tx(console: Console, outcome: TxOutcome) -> None:
    console.print(f"{outcome.action} task {outcome.task_id}: now [bold]{outcome.state}[/] "
                  f"(tx {outcome.tx_hash}, block {outcome.block_number}, "
                  f"{outcome.gas_used} gas)")


def withdrawn(console: Console, outcome: WithdrawOutcome) -> None:
    if outcome.tx_hash is None:
        console.print(f"nothing to withdraw for {outcome.account} in {outcome.token}")
        return
    console.print(f"withdrew {amount(outcome.amount_wei, outcome.token)} to {outcome.account} "
                  f"(tx {outcome.tx_hash})")


def fetched(console: Console, outcome: FetchOutcome) -> None:
    table = Table(title=f"task {outcome.task_id} → {outcome.out_dir}")
    for column in ("file", "sha256 / root", "from"):
        table.add_column(column, overflow="fold")
    for name, digest in outcome.files.items():
        table.add_row(name, digest, outcome.sources.get(name, ""))
    console.print(table)
    console.print(f"claimed metrics: {outcome.metrics}")


def verified(console: Console, report: VerifyReport) -> None:
    table = Table(title=f"verify task {report.task_id}")
    for column in ("check", "", "detail"):
        table.add_column(column, overflow="fold")
    for check in report.checks:
        table.add_row(check.name, "[green]ok[/]" if check.ok else "[red]FAIL[/]", check.detail)
    console.print(table)
    if report.note:
        console.print(report.note)


def packed(console: Console, result: PackedDataset) -> None:
    console.print(f"packed {result.samples} samples {result.image_shape}, {result.classes} "
                  f"classes → {result.path}\nsha256 {result.sha256}\n"
                  f"spec: [dataset] url = \"<where you serve it>/{result.path.name}\", "
                  f"sha256 = \"{result.sha256}\"")


class WatchView:
    """Progress bars per member plus the latest chain events, for ``rich.live.Live``."""

    def __init__(self, task_id: int) -> None:
        self.task_id = task_id
        self.state = "?"
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total} {task.fields[info]}"))
        self.bars: dict[str, TaskID] = {}
        self.events: list[tuple[str, str]] = []
        self.latest: dict[str, dict[str, Any]] = {}

    def update(self, update: WatchUpdate) -> None:
        if update.kind == "state":
            self.state = update.name
        elif update.kind == "event":
            self.events = [*self.events[-7:], (update.name, _brief(update.data))]
        else:
            self._progress(update.member, update.data)

    def _progress(self, member: str, update: dict[str, Any]) -> None:
        """Events carry only the fields that changed: merge them into the member's last view."""
        if member not in self.bars:
            self.bars[member] = self.progress.add_task(member[:10] + "…", total=None, info="")
            self.latest[member] = {}
        data = self.latest[member]
        data.update(update)
        info = " ".join(f"{k}={data[k]}" for k in ("phase", "epoch", "eta_s") if k in data)
        total = data.get("total_steps")
        self.progress.update(self.bars[member], completed=data.get("step", 0),
                             total=total if isinstance(total, int) and total > 0 else None,
                             info=info)

    def __rich__(self) -> Group:
        table = Table(title=f"task {self.task_id}: {self.state}")
        table.add_column("event")
        table.add_column("details", overflow="fold")
        for name, text in self.events:
            table.add_row(name, text)
        return Group(table, self.progress)


def _brief(data: dict[str, Any]) -> str:
    skip = {"task_id", "tx_hash", "block_hash", "log_index"}
    return " ".join(f"{k}={v}" for k, v in data.items() if k not in skip)
