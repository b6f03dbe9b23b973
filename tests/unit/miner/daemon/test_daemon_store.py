"""The SQLite state store: tasks, intent records (also across a SIGKILL), checkpoints, artifacts."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from miner.daemon.errors import StoreError
from miner.daemon.store import (
    Resolution,
    StateStore,
    TaskPhase,
    TxRecord,
    TxStatus,
    reconcile,
)

ME = "0x" + "ab" * 20
PEER = "0x" + "cd" * 20


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    with StateStore.open(tmp_path / "state.sqlite") as opened:
        yield opened


def test_task_lifecycle_and_terminal_phase(store: StateStore) -> None:
    first = store.record_task(7, "0xspec")
    again = store.record_task(7, "0xother", TaskPhase.REFUSED)  # already known: unchanged
    assert first.phase is again.phase is TaskPhase.SEEN and again.spec_hash == "0xspec"
    store.set_phase(7, TaskPhase.CLAIMING)
    assert store.active_count() == 1
    record = store.set_group(7, [PEER, ME.upper().replace("0X", "0x")], ME)
    assert (record.slot, record.role, record.group[0]) == (1, "member", PEER)
    store.set_phase(7, TaskPhase.FAILED, "expired")
    with pytest.raises(StoreError, match="cannot become"):
        store.set_phase(7, TaskPhase.TRAINING)
    with pytest.raises(StoreError, match="not a member"):
        store.set_group(7, [PEER], ME)
    assert store.active_count() == 0 and store.tasks([TaskPhase.FAILED])[0].reason == "expired"


def test_intent_is_idempotent_until_it_fails(store: StateStore) -> None:
    record, fresh = store.begin_tx("claim", 3, nonce=4)
    again, fresh_again = store.begin_tx("claim", 3)
    assert fresh and not fresh_again and again.tx_id == record.tx_id
    sent = store.mark_sent(record.tx_id, "0xhash", nonce=4)
    assert (sent.status, sent.tx_hash, sent.nonce) == (TxStatus.SENT, "0xhash", 4)
    store.mark_mined(record.tx_id, block_number=12)
    mined, fresh_after_mined = store.begin_tx("claim", 3)
    assert not fresh_after_mined and mined.status is TxStatus.MINED
    assert mined.tx_hash == "0xhash" and mined.block_number == 12  # COALESCE kept the hash
    with pytest.raises(StoreError, match="cannot become failed"):
        store.mark_failed(record.tx_id, "late")
    other, fresh_other = store.begin_tx("submit", 3)
    store.mark_failed(other.tx_id, "TaskMarketDeadlinePassed")
    retry, fresh_retry = store.begin_tx("submit", 3)
    assert fresh and fresh_other and fresh_retry and retry.tx_id != other.tx_id
    assert [t.purpose for t in store.claims()] == ["claim"]


def test_database_refuses_two_live_intents(store: StateStore, tmp_path: Path) -> None:
    store.begin_tx("claim", 1)
    raw = sqlite3.connect(tmp_path / "state.sqlite")
    with pytest.raises(sqlite3.IntegrityError):
        raw.execute("INSERT INTO txs (purpose, task_id, status, created_at, updated_at) "
                    "VALUES ('claim', 1, 'intent', 0, 0)")
    raw.close()


_CRASHER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from miner.daemon.store import StateStore, TaskPhase
    store = StateStore.open(Path(sys.argv[1]))
    store.record_task(9, "0xspec")
    store.set_phase(9, TaskPhase.CLAIMING)
    record, fresh = store.begin_tx("claim", 9, nonce=0)
    assert fresh
    os.kill(os.getpid(), signal.SIGKILL)  # crash after the intent, before the send
""")


def test_sigkill_between_intent_and_send(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    result = subprocess.run([sys.executable, "-c", _CRASHER, str(path)], cwd=os.getcwd(),
                            capture_output=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    with StateStore.open(path) as store:
        (pending,) = store.open_txs()
        assert (pending.purpose, pending.task_id, pending.status) == ("claim", 9, TxStatus.INTENT)
        again, fresh = store.begin_tx("claim", 9)
        assert not fresh and again.tx_id == pending.tx_id  # the restart cannot claim twice
        assert store.task(9) is not None and store.task(9).phase is TaskPhase.CLAIMING
        # the chain says nothing happened and nothing of ours is pending: send anew
        assert reconcile(pending, done_on_chain=False, own_tx_pending=False) is Resolution.RETRY
        store.mark_abandoned(pending.tx_id)
        retry, fresh = store.begin_tx("claim", 9)
        assert fresh and retry.tx_id != pending.tx_id and store.open_txs() == [retry]


@pytest.mark.parametrize(("status", "done", "pending", "expected"), [
    (TxStatus.INTENT, True, False, Resolution.DONE),
    (TxStatus.INTENT, True, True, Resolution.DONE),
    (TxStatus.SENT, False, True, Resolution.WAIT),
    (TxStatus.INTENT, False, True, Resolution.WAIT),
    (TxStatus.SENT, False, False, Resolution.RETRY),
    (TxStatus.MINED, False, False, Resolution.DONE),
])
def test_reconcile(status: TxStatus, done: bool, pending: bool, expected: Resolution) -> None:
    record = TxRecord(1, "claim", 1, status, None, None, None, "")
    assert reconcile(record, done, pending) is expected


def test_checkpoints_artifacts_signatures_manifest(store: StateStore, tmp_path: Path) -> None:
    store.record_task(2, "0xspec")
    assert store.latest_checkpoint(2) is None
    store.add_checkpoint(2, 10, tmp_path / "a.pt", "0x01")
    store.add_checkpoint(2, 30, tmp_path / "b.pt", "0x02")
    store.add_checkpoint(2, 20, tmp_path / "c.pt", "0x03")
    latest = store.latest_checkpoint(2)
    assert latest is not None and (latest.step, latest.sha256) == (30, "0x02")
    store.add_artifact("AB" * 32, tmp_path / "w", 5, task_id=2)
    found = store.artifact("ab" * 32)
    assert found is not None and found.size_bytes == 5 and store.artifact("cd" * 32) is None
    store.add_signature(2, "0xROOT", ME, b"\x01" * 65)
    store.add_signature(2, "0xroot", PEER, b"\x02" * 65)
    store.add_signature(2, "0xother", PEER, b"\x03" * 65)
    assert store.signatures(2, "0xroot") == {ME: b"\x01" * 65, PEER: b"\x02" * 65}
    assert store.manifest(2) is None
    store.set_manifest(2, b'{"a":1}', "0xroot")
    assert store.manifest(2) == b'{"a":1}' and store.task(2).result_root == "0xroot"


def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version=99")
    raw.close()
    with pytest.raises(StoreError, match="schema 99"):
        StateStore.open(path)
