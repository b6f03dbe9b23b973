"""The ``manta`` CLI over a fake API: parsing, rendering, ``--json`` and exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from client.cli import app
from client.errors import NoMemberReachable, WrongTaskState
from client.models import (
    Check,
    FetchOutcome,
    MemberInfo,
    SubmitOutcome,
    SubmitPlan,
    TaskInfo,
    TaskList,
    TaskRow,
    TxOutcome,
    VerifyReport,
    WatchUpdate,
    WithdrawOutcome,
)
from node.chain.errors import ContractRevert, InsufficientFunds

A1 = "0x" + "11" * 20
A2 = "0x" + "22" * 20
ZERO = "0x" + "00" * 20
H = "0x" + "ab" * 32
INFO = TaskInfo(task_id=3, state="RUNNING", client=A1, token=ZERO, reward_wei=5 * 10**17,
                bond_wei=10**17, slots=2, claimed=2, arbiter=A2, claim_deadline=1_700_000_000,
                work_deadline=1_700_003_600, settle_deadline=0, spec_hash=H, result_root=None,
                spec_uri="file:///s.json", members=(MemberInfo(slot=0, address=A2,
                                                               endpoint="http://m:1"),),
                chain_time=1_700_000_100)
PLAN = SubmitPlan(spec_hash=H, spec_uri="file:///s.json", token=ZERO, reward_wei=5 * 10**17,
                  bond_wei=0, slots=1, claim_window_s=60, work_window_s=60, review_window_s=60,
                  arbitration_window_s=60, arbiter=A2, validation_hash=H, client=A1,
                  claim_deadline=1_700_000_060, latest_work_deadline=1_700_000_120,
                  escrow_wei=5 * 10**17)


class FakeApi(SimpleNamespace):
    """Records the calls; answers with canned models (or raises ``self.error``)."""

    def __init__(self, error: Exception | None = None) -> None:
        super().__init__(calls=[], error=error)

    def _answer(self, name: str, value: Any, *args: Any) -> Any:
        self.calls.append((name, args))
        if self.error is not None:
            raise self.error
        return value

    async def submit_task(self, config: Any, request: Any) -> SubmitOutcome:
        return self._answer("submit", SubmitOutcome(plan=PLAN, posted=not request.dry_run,
                                                    task_id=7, tx_hash=H, block_number=9,
                                                    gas_used=21000), config, request)

    async def task_status(self, config: Any, task_id: int) -> TaskInfo:
        return self._answer("status", INFO, config, task_id)

    async def list_tasks(self, config: Any, client: str | None, limit: int) -> TaskList:
        row = TaskRow(task_id=3, state="OPEN", client=A1, reward_wei=1, slots=1, claimed=0)
        return self._answer("list", TaskList(tasks=(row,), total=3), client, limit)

    async def cancel_task(self, config: Any, task_id: int) -> TxOutcome:
        return self._answer("cancel", TxOutcome(task_id=task_id, action="cancel", tx_hash=H,
                                                block_number=5, gas_used=3, state="CANCELLED"),
                            task_id)

    async def dispute_task(self, config: Any, task_id: int, reason: str) -> TxOutcome:
        return self._answer("dispute", TxOutcome(task_id=task_id, action="dispute", tx_hash=H,
                                                 block_number=5, gas_used=3, state="DISPUTED"),
                            task_id, reason)

    async def withdraw(self, config: Any, token: str) -> WithdrawOutcome:
        return self._answer("withdraw", WithdrawOutcome(account=A1, token=token,
                                                        amount_wei=10**18, tx_hash=H), token)

    async def fetch_result(self, config: Any, task_id: int, out: Path) -> FetchOutcome:
        return self._answer("fetch", FetchOutcome(
            task_id=task_id, out_dir=out, result_root=H, files={"manifest.json": H},
            sources={"manifest.json": "http://m:1"}, metrics={"accuracy": 0.9}), task_id, out)

    async def verify_result(self, config: Any, task_id: int, result: Path | None,
                            data: Path | None) -> VerifyReport:
        ok = task_id != 13
        return self._answer("verify", VerifyReport(
            task_id=task_id, checks=(Check(name="weights sha256", ok=ok, detail="x"),),
            claimed={}, measured={}, evaluated=False), task_id)

    async def watch_task(self, config: Any, task_id: int, on_update: Any,
                         poll: float) -> TaskInfo:
        on_update(WatchUpdate(kind="state", task_id=task_id, name="RUNNING"))
        on_update(WatchUpdate(kind="progress", task_id=task_id, member=A2, name="progress",
                              data={"phase": "training", "step": 5, "total_steps": 10}))
        on_update(WatchUpdate(kind="event", task_id=task_id, name="TaskSettled",
                              data={"miners_paid": True}))
        return self._answer("watch", INFO.model_copy(update={"state": "SETTLED"}), task_id)


def invoke(api: FakeApi, *args: str) -> Any:
    return CliRunner().invoke(app, ["--deployment", "/nonexistent.json", *args], obj=api,
                              env={"COLUMNS": "200"})


def test_submit_parses_amounts_and_renders_plan(tmp_path: Path) -> None:
    api = FakeApi()
    result = invoke(api, "task", "submit", "spec.toml", "--reward", "0.5eth", "--bond",
                    "100gwei", "--slots", "2", "--arbiter", A2, "--claim-window", "2h")
    assert result.exit_code == 0, result.output
    request = api.calls[0][1][1]
    assert request.reward_wei == 5 * 10**17 and request.bond_wei == 100 * 10**9
    assert request.claim_window_s == 7200 and request.slots == 2
    assert H in result.output and "0.5 ETH" in result.output and "task id" in result.output


def test_submit_json_is_one_object() -> None:
    result = invoke(FakeApi(), "task", "submit", "s.toml", "--reward", "1", "--arbiter", A2,
                    "--dry-run", "--json")
    payload = json.loads(result.output)
    assert payload["posted"] is False and payload["plan"]["spec_hash"] == H


@pytest.mark.parametrize("args", [
    ("task", "submit", "s.toml", "--reward", "1.5wei", "--arbiter", A2),
    ("task", "submit", "s.toml", "--reward", "1eth", "--arbiter", A2, "--work-window", "soon"),
])
def test_bad_amount_or_duration_is_exit_1_without_calling_the_api(args: tuple[str, ...]) -> None:
    api = FakeApi()
    result = invoke(api, *args)
    assert result.exit_code == 1 and api.calls == []
    assert result.output.startswith("error: cannot read")


@pytest.mark.parametrize("args", [
    ("task", "submit", "s.toml"),  # --reward missing
    ("task", "status", "zero"), ("task", "status", "0"), ("task", "frobnicate"),
    ("task", "submit", "s.toml", "--reward", "1", "--arbiter", A2, "--slots", "33"),
])
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    api = FakeApi()
    assert invoke(api, *args).exit_code == 2 and api.calls == []


@pytest.mark.parametrize("error", [
    WrongTaskState(task_id=3, state="RUNNING", command="cancel", needed="OPEN"),
    ContractRevert("TaskMarketNotClient", {"taskId": 3, "caller": A2}, b"\0" * 4),
    InsufficientFunds(account=A1, needed_wei=10, balance_wei=1),
    NoMemberReachable(task_id=3, what="the result manifest", tried="x: HTTP 404"),
])
def test_our_errors_are_one_line_and_exit_1(error: Exception) -> None:
    result = invoke(FakeApi(error), "task", "cancel", "3")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0] == f"error: {error}"
    assert "Traceback" not in result.output


def test_status_human_and_json() -> None:
    human = invoke(FakeApi(), "task", "status", "3")
    assert human.exit_code == 0 and "RUNNING" in human.output and "http://m:1" in human.output
    payload = json.loads(invoke(FakeApi(), "task", "status", "3", "--json").output)
    assert payload["members"][0]["endpoint"] == "http://m:1" and payload["reward_wei"] == 5 * 10**17


def test_list_cancel_dispute_withdraw_fetch_render() -> None:
    api = FakeApi()
    assert "OPEN" in invoke(api, "task", "list", "--client", A1).output
    assert "CANCELLED" in invoke(api, "task", "cancel", "3").output
    assert json.loads(invoke(api, "task", "dispute", "3", "--reason", "bad", "--json").output)[
        "state"] == "DISPUTED"
    assert "1 ETH" in invoke(api, "withdraw").output
    out = invoke(api, "task", "fetch", "3", "-o", "res", "--json")
    assert json.loads(out.output)["sources"]["manifest.json"] == "http://m:1"
    assert [c[0] for c in api.calls] == ["list", "cancel", "dispute", "withdraw", "fetch"]
    assert api.calls[2][1] == (3, "bad")


def test_verify_exit_code_follows_the_checks() -> None:
    assert invoke(FakeApi(), "task", "verify", "3").exit_code == 0
    failed = invoke(FakeApi(), "task", "verify", "13")
    assert failed.exit_code == 1 and "FAIL" in failed.output


def test_watch_json_streams_updates_then_final_info() -> None:
    result = invoke(FakeApi(), "task", "watch", "3", "--json")
    lines = [json.loads(line) for line in result.output.strip().splitlines()]
    assert [entry.get("kind") for entry in lines[:3]] == ["state", "progress", "event"]
    assert lines[-1]["state"] == "SETTLED"


def test_watch_human_renders_bars_and_final_table() -> None:
    result = invoke(FakeApi(), "task", "watch", "3")
    assert result.exit_code == 0 and "SETTLED" in result.output and "5/10" in result.output


def test_keys_new_list_import_never_take_secrets_from_argv(tmp_path: Path) -> None:
    env = {"PW": "pw-for-tests", "MANTA_IDENTITY__KDF_WORK": "16"}
    base = ["--keystore-dir", str(tmp_path), "--password-env", "PW"]
    runner = CliRunner()
    new = runner.invoke(app, [*base, "keys", "new", "alice", "--json"], env=env, obj=FakeApi())
    assert new.exit_code == 0, new.output
    address = json.loads(new.output)["address"]
    key_file = tmp_path / "k.hex"
    key_file.write_text("0x" + "42" * 32)
    imported = runner.invoke(app, [*base, "keys", "import", "bob", "--key-file", str(key_file)],
                             env=env, obj=FakeApi())
    assert imported.exit_code == 0 and "bob" in imported.output
    listed = json.loads(runner.invoke(app, [*base, "keys", "list", "--json"],
                                      obj=FakeApi()).output)
    assert {k["name"]: k["address"] for k in listed["keystores"]}["alice"] == address
    dup = runner.invoke(app, [*base, "keys", "new", "alice"], env=env, obj=FakeApi())
    assert dup.exit_code == 1 and dup.output.startswith("error:")
