"""The daemon's local state: one SQLite file (WAL), one writer, one transaction per change.

Tables: ``tasks`` (the task as this daemon sees it: phase, role, group, manifest),
``txs`` (every transaction the daemon sends: purpose, task, nonce, hash, status),
``checkpoints`` (path, step, sha256), ``artifacts`` (sha256 → path), ``signatures``
(collected EIP-712 signatures per result root). Claims are the ``txs`` with purpose
``claim`` (:meth:`StateStore.claims`).

**Intent records** make a restart after ``kill -9`` safe:

1. before sending, :meth:`StateStore.begin_tx` writes an ``intent`` for (purpose, task) in
   one transaction — or returns the live record already there (``fresh=False``), in which
   case the caller must *not* send again but reconcile;
2. right after the send, :meth:`mark_sent` (hash, nonce) and then :meth:`mark_mined` or
   :meth:`mark_failed` record the outcome;
3. on restart, every record still ``intent``/``sent`` (:meth:`open_txs`) is reconciled with
   the chain by :func:`reconcile`: done on chain → mark mined; a transaction of ours still
   pending → wait; neither → ``abandoned`` (nothing was mined, a fresh intent may be sent).

A unique partial index keeps at most one live (``intent``/``sent``/``mined``) record per
(purpose, task), so even a bug cannot create a second claim intent.

The class is synchronous (stdlib ``sqlite3``) and thread-safe behind one lock; the async
daemon calls it through ``asyncio.to_thread``. Writes are ``synchronous=FULL`` so a
recorded intent survives a power cut too.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from miner.daemon.errors import StoreError

SCHEMA_VERSION = 1


class TaskPhase(StrEnum):
    """A task as this daemon sees it (not the contract's state)."""

    SEEN = "seen"
    REFUSED = "refused"
    CLAIMING = "claiming"
    CLAIMED = "claimed"
    FORMED = "formed"
    TRAINING = "training"
    SEARCHING = "searching"
    SIGNING = "signing"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    SETTLED = "settled"
    WITHDRAWN = "withdrawn"
    FAILED = "failed"


TERMINAL_PHASES = frozenset({TaskPhase.REFUSED, TaskPhase.WITHDRAWN, TaskPhase.FAILED})
ACTIVE_PHASES = frozenset({
    TaskPhase.CLAIMING, TaskPhase.CLAIMED, TaskPhase.FORMED, TaskPhase.TRAINING,
    TaskPhase.SEARCHING, TaskPhase.SIGNING, TaskPhase.SUBMITTING,
})


class TxStatus(StrEnum):
    INTENT = "intent"
    SENT = "sent"
    MINED = "mined"
    FAILED = "failed"
    ABANDONED = "abandoned"


LIVE_STATUSES = (TxStatus.INTENT, TxStatus.SENT, TxStatus.MINED)


@dataclass(frozen=True)
class TaskRecord:
    task_id: int
    phase: TaskPhase
    spec_hash: str
    reason: str
    role: str | None
    slot: int | None
    group: tuple[str, ...]
    result_root: str | None
    updated_at: float


@dataclass(frozen=True)
class TxRecord:
    tx_id: int
    purpose: str
    task_id: int
    status: TxStatus
    nonce: int | None
    tx_hash: str | None
    block_number: int | None
    error: str


@dataclass(frozen=True)
class CheckpointRecord:
    task_id: int
    step: int
    path: Path
    sha256: str


@dataclass(frozen=True)
class ArtifactRecord:
    sha256: str
    path: Path
    size_bytes: int
    task_id: int | None


class Resolution(StrEnum):
    DONE = "done"
    WAIT = "wait"
    RETRY = "retry"


def reconcile(record: TxRecord, done_on_chain: bool, own_tx_pending: bool) -> Resolution:
    """What to do with a live record found at start-up (pure).

    ``done_on_chain``: the effect is visible (we are a member; the result root is set…).
    ``own_tx_pending``: the account has transactions in the mempool (pending nonce above
    the mined one), so the intent may still be mined.
    """
    if record.status is TxStatus.MINED or done_on_chain:
        return Resolution.DONE
    if own_tx_pending:
        return Resolution.WAIT
    return Resolution.RETRY


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id INTEGER PRIMARY KEY, phase TEXT NOT NULL, spec_hash TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '', role TEXT, slot INTEGER, group_json TEXT NOT NULL DEFAULT '[]',
    manifest BLOB, result_root TEXT, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS txs (
    tx_id INTEGER PRIMARY KEY AUTOINCREMENT, purpose TEXT NOT NULL, task_id INTEGER NOT NULL,
    status TEXT NOT NULL, nonce INTEGER, tx_hash TEXT, block_number INTEGER,
    error TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS txs_one_live ON txs (purpose, task_id)
    WHERE status IN ('intent', 'sent', 'mined');
CREATE TABLE IF NOT EXISTS checkpoints (
    task_id INTEGER NOT NULL, step INTEGER NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL,
    created_at REAL NOT NULL, PRIMARY KEY (task_id, step));
CREATE TABLE IF NOT EXISTS artifacts (
    sha256 TEXT PRIMARY KEY, path TEXT NOT NULL, size_bytes INTEGER NOT NULL, task_id INTEGER,
    created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS signatures (
    task_id INTEGER NOT NULL, result_root TEXT NOT NULL, signer TEXT NOT NULL,
    signature BLOB NOT NULL, PRIMARY KEY (task_id, result_root, signer));
"""


def _task(row: sqlite3.Row) -> TaskRecord:
    return TaskRecord(
        task_id=row["task_id"], phase=TaskPhase(row["phase"]), spec_hash=row["spec_hash"],
        reason=row["reason"], role=row["role"], slot=row["slot"],
        group=tuple(json.loads(row["group_json"])), result_root=row["result_root"],
        updated_at=row["updated_at"],
    )


def _tx(row: sqlite3.Row) -> TxRecord:
    return TxRecord(
        tx_id=row["tx_id"], purpose=row["purpose"], task_id=row["task_id"],
        status=TxStatus(row["status"]), nonce=row["nonce"], tx_hash=row["tx_hash"],
        block_number=row["block_number"], error=row["error"],
    )


class StateStore:
    """The SQLite state file (see the module docstring)."""

    def __init__(self, db: sqlite3.Connection, path: Path, clock: Callable[[], float]) -> None:
        self._db = db
        self._path = path
        self._clock = clock
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, clock: Callable[[], float] = time.time) -> StateStore:
        """Open (creating if needed) the state file; refuses a newer schema."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{path} has schema {version}, newer than {SCHEMA_VERSION}")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open {path}: {exc}") from exc
        return cls(db, path, clock)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute(sql, args).fetchall())

    # ---- tasks ---------------------------------------------------------------------------

    def record_task(self, task_id: int, spec_hash: str, phase: TaskPhase = TaskPhase.SEEN,
                    reason: str = "") -> TaskRecord:
        """The task's record, inserting it in ``phase`` if this daemon has not seen it yet."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO tasks (task_id, phase, spec_hash, reason, updated_at) "
                "VALUES (?, ?, ?, ?, ?)", (task_id, phase.value, spec_hash, reason, self._clock()))
            return _task(db.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone())

    def set_phase(self, task_id: int, phase: TaskPhase, reason: str = "") -> TaskRecord:
        """Move a task to ``phase``; a terminal phase is never left."""
        with self._transaction() as db:
            row = db.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            if row is None:
                raise StoreError(f"unknown task {task_id}")
            current = TaskPhase(row["phase"])
            if current in TERMINAL_PHASES and phase is not current:
                raise StoreError(f"task {task_id} is {current.value}; cannot become {phase.value}")
            db.execute("UPDATE tasks SET phase = ?, reason = ?, updated_at = ? WHERE task_id = ?",
                       (phase.value, reason, self._clock(), task_id))
            return _task(db.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone())

    def set_group(self, task_id: int, members: Sequence[str], me: str) -> TaskRecord:
        """Record the group (slot order) and this daemon's slot and role in it."""
        lowered = [m.lower() for m in members]
        if me.lower() not in lowered:
            raise StoreError(f"{me} is not a member of task {task_id}")
        slot = lowered.index(me.lower())
        role = "leader" if slot == 0 else "member"
        with self._transaction() as db:
            db.execute(
                "UPDATE tasks SET group_json = ?, slot = ?, role = ?, updated_at = ? "
                "WHERE task_id = ?",
                (json.dumps(list(members)), slot, role, self._clock(), task_id))
            row = db.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        if row is None:
            raise StoreError(f"unknown task {task_id}")
        return _task(row)

    def set_manifest(self, task_id: int, manifest: bytes, result_root: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE tasks SET manifest = ?, result_root = ?, updated_at = ? "
                       "WHERE task_id = ?", (manifest, result_root, self._clock(), task_id))

    def manifest(self, task_id: int) -> bytes | None:
        rows = self._read("SELECT manifest FROM tasks WHERE task_id = ?", (task_id,))
        return bytes(rows[0]["manifest"]) if rows and rows[0]["manifest"] is not None else None

    def task(self, task_id: int) -> TaskRecord | None:
        rows = self._read("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
        return _task(rows[0]) if rows else None

    def tasks(self, phases: Sequence[TaskPhase] | None = None) -> list[TaskRecord]:
        rows = self._read("SELECT * FROM tasks ORDER BY task_id")
        wanted = set(phases) if phases is not None else None
        return [t for t in map(_task, rows) if wanted is None or t.phase in wanted]

    def active_count(self) -> int:
        return len(self.tasks(sorted(ACTIVE_PHASES)))

    # ---- transactions ----------------------------------------------------------------------

    def begin_tx(self, purpose: str, task_id: int, nonce: int | None = None
                 ) -> tuple[TxRecord, bool]:
        """Write an intent, or return the live record already there; ``fresh`` says which."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT * FROM txs WHERE purpose = ? AND task_id = ? AND status IN (?, ?, ?)",
                (purpose, task_id, *LIVE_STATUSES)).fetchone()
            if row is not None:
                return _tx(row), False
            now = self._clock()
            cursor = db.execute(
                "INSERT INTO txs (purpose, task_id, status, nonce, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?)", (purpose, task_id, TxStatus.INTENT, nonce, now, now))
            row = db.execute("SELECT * FROM txs WHERE tx_id = ?", (cursor.lastrowid,)).fetchone()
            return _tx(row), True

    def _update_tx(self, tx_id: int, status: TxStatus, allowed: Sequence[TxStatus],
                   **fields: Any) -> TxRecord:
        with self._transaction() as db:
            row = db.execute("SELECT * FROM txs WHERE tx_id = ?", (tx_id,)).fetchone()
            if row is None:
                raise StoreError(f"unknown transaction record {tx_id}")
            if TxStatus(row["status"]) not in allowed:
                raise StoreError(f"transaction record {tx_id} is {row['status']}, "
                                 f"cannot become {status.value}")
            sets = ", ".join(f"{k} = COALESCE(?, {k})" for k in fields)
            db.execute(f"UPDATE txs SET status = ?, {sets}, updated_at = ? WHERE tx_id = ?",
                       (status.value, *fields.values(), self._clock(), tx_id))
            return _tx(db.execute("SELECT * FROM txs WHERE tx_id = ?", (tx_id,)).fetchone())

    def mark_sent(self, tx_id: int, tx_hash: str, nonce: int | None = None) -> TxRecord:
        return self._update_tx(tx_id, TxStatus.SENT, (TxStatus.INTENT, TxStatus.SENT),
                               tx_hash=tx_hash, nonce=nonce)

    def mark_mined(self, tx_id: int, tx_hash: str | None = None,
                   block_number: int | None = None) -> TxRecord:
        return self._update_tx(tx_id, TxStatus.MINED, LIVE_STATUSES,
                               tx_hash=tx_hash, block_number=block_number)

    def mark_failed(self, tx_id: int, error: str) -> TxRecord:
        """Nothing of this transaction is on chain (pre-flight revert, reverted, dropped)."""
        return self._update_tx(tx_id, TxStatus.FAILED, (TxStatus.INTENT, TxStatus.SENT),
                               error=error)

    def mark_abandoned(self, tx_id: int, error: str = "not on chain after restart") -> TxRecord:
        return self._update_tx(tx_id, TxStatus.ABANDONED, (TxStatus.INTENT, TxStatus.SENT),
                               error=error)

    def open_txs(self) -> list[TxRecord]:
        """Records whose outcome is unknown (``intent``/``sent``): reconcile these on start."""
        rows = self._read("SELECT * FROM txs WHERE status IN (?, ?) ORDER BY tx_id",
                          (TxStatus.INTENT, TxStatus.SENT))
        return [_tx(r) for r in rows]

    def txs(self, task_id: int | None = None, purpose: str | None = None) -> list[TxRecord]:
        rows = self._read("SELECT * FROM txs ORDER BY tx_id")
        return [t for t in map(_tx, rows)
                if (task_id is None or t.task_id == task_id)
                and (purpose is None or t.purpose == purpose)]

    def claims(self) -> list[TxRecord]:
        return self.txs(purpose="claim")

    # ---- checkpoints, artifacts, signatures --------------------------------------------------

    def add_checkpoint(self, task_id: int, step: int, path: Path, sha256: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?)",
                       (task_id, step, str(path), sha256, self._clock()))

    def latest_checkpoint(self, task_id: int) -> CheckpointRecord | None:
        rows = self._read("SELECT * FROM checkpoints WHERE task_id = ? ORDER BY step DESC LIMIT 1",
                          (task_id,))
        if not rows:
            return None
        row = rows[0]
        return CheckpointRecord(task_id, row["step"], Path(row["path"]), row["sha256"])

    def add_artifact(self, sha256: str, path: Path, size_bytes: int,
                     task_id: int | None = None) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?, ?)",
                       (sha256.lower(), str(path), size_bytes, task_id, self._clock()))

    def artifact(self, sha256: str) -> ArtifactRecord | None:
        rows = self._read("SELECT * FROM artifacts WHERE sha256 = ?", (sha256.lower(),))
        if not rows:
            return None
        row = rows[0]
        return ArtifactRecord(row["sha256"], Path(row["path"]), row["size_bytes"], row["task_id"])

    def add_signature(self, task_id: int, result_root: str, signer: str, signature: bytes) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO signatures VALUES (?, ?, ?, ?)",
                       (task_id, result_root.lower(), signer, signature))

    def signatures(self, task_id: int, result_root: str) -> dict[str, bytes]:
        rows = self._read("SELECT signer, signature FROM signatures "
                          "WHERE task_id = ? AND result_root = ?", (task_id, result_root.lower()))
        return {row["signer"]: bytes(row["signature"]) for row in rows}
