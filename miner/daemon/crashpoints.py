"""Named crash points: a fault-injection hook for the chaos tests.

In the spirit of etcd's *gofail* and FoundationDB's *buggify*: the daemon calls
:func:`crash_point` at named places of a task's lifecycle (``crash_point("claim.before_send")``).
Disarmed, which is the default and the only state outside a chaos test, the call is one
``None`` check and nothing else. Armed, the named point kills a process with ``SIGKILL`` on
its n-th hit: no ``finally``, no ``atexit``, no buffered write reaches the disk, exactly what
the OOM killer or a power cut does to a daemon. A restart must then finish the task without
sending a transaction twice or losing finished work (DESIGN §7).

The entry points arm it from the environment (:meth:`CrashPlan.from_environ`):

- ``MANTA_CRASH_AT=<point>``: the point to crash at (one of :data:`POINTS`; a typo is a
  :class:`~node.errors.ConfigError`, not a point that never fires);
- ``MANTA_CRASH_AFTER=<n>``: crash on the n-th hit of that point (default 1);
- ``MANTA_CRASH_MARKER=<file>``: written (and synced) just before the kill; while it exists
  the point stays disarmed, so a daemon restarted with the same environment passes through.
  Default: ``<data_dir>/crash-<point>.fired``, i.e. once per data directory.

The daemon passes ``MANTA_CRASH_MARKER`` on to its training subprocess
(:meth:`CrashPlan.child_environ`), whose points (``runner.*``) kill the *daemon* (its parent):
that is how a daemon dies deterministically mid-training or mid-search.

Why process-wide state here, against the house rule: a fault hook must be reachable from any
depth of the call stack without a parameter threaded through every signature (like
``logging``), and it is set only by an entry point, only from an explicit variable.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from node.errors import ConfigError

ENV_AT = "MANTA_CRASH_AT"
ENV_AFTER = "MANTA_CRASH_AFTER"
ENV_MARKER = "MANTA_CRASH_MARKER"

#: Every crash point in the code, in lifecycle order, with the state it leaves behind.
POINTS: Mapping[str, str] = {
    "claim.before_send": "claim intent recorded; the claim is not sent",
    "claim.before_record": "claim mined; the daemon has not recorded it",
    "group.formed": "group recorded (formed); the training job is not started",
    "job.spawned": "training subprocess started and given its key; nothing watches it",
    "runner.training": "daemon killed by its runner after a training step (mid-training)",
    "runner.searching": "daemon killed by its runner after a measured sub-network (mid-search)",
    "result.before_sign": "training done, artifacts stored; the manifest is not signed",
    "result.signed": "manifest stored and signed by the leader; nothing submitted",
    "submit.before_send": "submit intent recorded; the result is not sent",
    "submit.before_record": "result mined; the daemon has not recorded it",
    "result.submitted": "submission recorded; settlement not seen yet",
    "finalize.before_send": "finalize intent recorded (silent client); not sent",
    "finalize.before_record": "finalize mined; the daemon has not recorded it",
    "withdraw.before_send": "task settled, withdraw intent recorded; not sent",
    "withdraw.before_record": "withdraw mined; the daemon has not recorded it",
}


@dataclass
class CrashPlan:
    """Where to crash: ``point`` on its ``after``-th hit, once per ``marker`` file."""

    point: str
    marker: Path
    after: int = 1
    hits: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.point not in POINTS:
            raise ConfigError(f"{ENV_AT}={self.point!r} is not a crash point; "
                              f"known: {', '.join(POINTS)}")
        if self.after < 1:
            raise ConfigError(f"{ENV_AFTER} must be >= 1, got {self.after}")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], data_dir: Path) -> CrashPlan | None:
        """The plan named by ``MANTA_CRASH_*``, or None (unset, or its marker exists)."""
        point = environ.get(ENV_AT, "").strip()
        if not point:
            return None
        raw_after = environ.get(ENV_AFTER, "1").strip()
        if not raw_after.isdigit():
            raise ConfigError(f"{ENV_AFTER} must be a positive integer, got {raw_after!r}")
        marker = Path(environ.get(ENV_MARKER) or data_dir / f"crash-{point}.fired")
        plan = cls(point, marker, int(raw_after))
        return None if marker.exists() else plan

    def child_environ(self) -> dict[str, str]:
        """What a subprocess needs so that its points share this plan's marker."""
        return {ENV_AT: self.point, ENV_AFTER: str(self.after), ENV_MARKER: str(self.marker)}

    def hit(self, name: str) -> bool:
        """Count a hit of ``name``; True when this is the one to crash at."""
        if name != self.point or self.marker.exists():
            return False
        self.hits += 1
        return self.hits == self.after

    def fire(self, pid: int) -> None:
        """Write the marker (synced, so the restarted process sees it), then SIGKILL ``pid``."""
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        with self.marker.open("w", encoding="utf-8") as handle:
            handle.write(f"{self.point} pid={pid}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.kill(pid, signal.SIGKILL)


_plan: CrashPlan | None = None


def arm(plan: CrashPlan | None) -> None:
    """Arm ``plan`` for this process (None disarms); called by entry points only."""
    global _plan
    _plan = plan


def armed() -> CrashPlan | None:
    """The armed plan, if any (the daemon hands its marker on to subprocesses)."""
    return _plan


def crash_point(name: str, pid: int | None = None) -> None:
    """A named place in the lifecycle; SIGKILLs ``pid`` (default: this process) when armed
    for ``name`` and this is its chosen hit. Disarmed, it does nothing."""
    plan = _plan
    if plan is not None and plan.hit(name):
        plan.fire(os.getpid() if pid is None else pid)
