"""Crash points: disarmed they do nothing; armed from the environment they SIGKILL the named
target on the chosen hit, once per marker file; bad settings are named errors."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from miner.daemon import crashpoints
from miner.daemon.crashpoints import POINTS, CrashPlan, crash_point
from node.errors import ConfigError


@pytest.fixture(autouse=True)
def disarmed() -> Iterator[None]:
    crashpoints.arm(None)
    yield
    crashpoints.arm(None)


@pytest.fixture
def victim() -> Iterator[subprocess.Popen[bytes]]:
    """A process of our own to kill (never this test process)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    if process.poll() is None:
        process.kill()
    process.wait(10)


def test_unset_or_already_fired_means_disarmed(tmp_path: Path) -> None:
    assert CrashPlan.from_environ({}, tmp_path) is None
    assert CrashPlan.from_environ({"MANTA_CRASH_AT": " "}, tmp_path) is None
    (tmp_path / "crash-group.formed.fired").write_text("group.formed\n")
    assert CrashPlan.from_environ({"MANTA_CRASH_AT": "group.formed"}, tmp_path) is None


@pytest.mark.parametrize("environ, fragment", [
    ({"MANTA_CRASH_AT": "claim.typo"}, "not a crash point"),
    ({"MANTA_CRASH_AT": "group.formed", "MANTA_CRASH_AFTER": "two"}, "positive integer"),
    ({"MANTA_CRASH_AT": "group.formed", "MANTA_CRASH_AFTER": "0"}, ">= 1"),
])
def test_bad_settings_are_named_errors(tmp_path: Path, environ: dict[str, str],
                                       fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        CrashPlan.from_environ(environ, tmp_path)


def test_the_nth_hit_of_the_named_point_is_the_one(tmp_path: Path) -> None:
    plan = CrashPlan.from_environ({"MANTA_CRASH_AT": "runner.training",
                                   "MANTA_CRASH_AFTER": "3"}, tmp_path)
    assert plan is not None and plan.marker == tmp_path / "crash-runner.training.fired"
    assert [plan.hit("runner.searching"), plan.hit("runner.training"),
            plan.hit("runner.training"), plan.hit("runner.training")] == [
        False, False, False, True]


def test_an_armed_point_kills_its_target_once(tmp_path: Path,
                                              victim: subprocess.Popen[bytes]) -> None:
    crash_point("group.formed", victim.pid)  # disarmed: nothing happens
    assert victim.poll() is None
    crashpoints.arm(CrashPlan.from_environ({"MANTA_CRASH_AT": "group.formed"}, tmp_path))
    crash_point("claim.before_send", victim.pid)  # another point
    assert victim.poll() is None
    crash_point("group.formed", victim.pid)
    assert victim.wait(10) == -signal.SIGKILL
    marker = tmp_path / "crash-group.formed.fired"
    assert marker.read_text().startswith(f"group.formed pid={victim.pid}")
    crash_point("group.formed", victim.pid)  # fired once: the marker disarms it


def test_a_subprocess_shares_the_marker(tmp_path: Path) -> None:
    plan = CrashPlan.from_environ({"MANTA_CRASH_AT": "runner.searching",
                                   "MANTA_CRASH_AFTER": "2"}, tmp_path / "data")
    assert plan is not None
    child = CrashPlan.from_environ(plan.child_environ(), tmp_path / "elsewhere")
    assert child == plan  # same point, hit and marker, wherever the child's data dir is


def test_every_point_is_documented() -> None:
    assert all(name.count(".") == 1 and text for name, text in POINTS.items())
