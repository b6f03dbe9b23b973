"""The runner's command line and its standby mode (before any job runs)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from miner.daemon import jobrunner


def run_main(monkeypatch: pytest.MonkeyPatch, argv: list[str], stdin: str) -> int:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
    return jobrunner.main(argv)


@pytest.mark.parametrize("argv", [[], ["--standby"], ["--bogus"], ["a", "b"],
                                  ["--standby", "x", "y"]])
def test_usage_errors(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    assert run_main(monkeypatch, argv, "key\n") == 2


def test_no_key_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert run_main(monkeypatch, [str(tmp_path)], "") == 2


def test_standby_exits_quietly_when_no_job_comes(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    assert run_main(monkeypatch, ["--standby", str(tmp_path)], "key\n") == \
        jobrunner.EXIT_PARENT_GONE
    assert list(tmp_path.iterdir()) == []


def test_standby_refuses_a_job_folder_outside_its_tasks(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    tasks, elsewhere = tmp_path / "tasks", tmp_path / "other" / "7"
    tasks.mkdir()
    elsewhere.mkdir(parents=True)
    assert run_main(monkeypatch, ["--standby", str(tasks)], f"key\n{elsewhere}\n") == 2
    assert list(elsewhere.iterdir()) == []  # no log, no lock, no pid file
