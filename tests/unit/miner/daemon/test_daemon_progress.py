"""Progress hub (snapshot, ETA, bounded fan-out), the file tailer, and the metrics text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from miner.daemon.metrics import MinerMetrics, Registry
from miner.daemon.progress import (
    ProgressHub,
    ProgressTailer,
    append_progress,
    eta_s,
    smoothed_rate,
)


def test_eta_and_rate_are_pure() -> None:
    assert eta_s(10, 110, 2.0) == 50.0
    assert eta_s(120, 110, 2.0) == 0.0
    assert eta_s(10, 110, 0.0) is None
    assert smoothed_rate(None, 10, 5.0) == 2.0
    assert smoothed_rate(2.0, 0, 5.0) == 2.0  # no progress: keep the estimate
    assert smoothed_rate(2.0, 40, 10.0) == pytest.approx(0.3 * 4.0 + 0.7 * 2.0)


async def test_snapshot_merges_and_gives_eta() -> None:
    metrics = MinerMetrics()
    hub = ProgressHub(metrics=metrics)
    hub.publish(1, {"phase": "training", "step": 0, "total_steps": 100, "time_s": 1000.0})
    snap = hub.publish(1, {"step": 10, "time_s": 1005.0,
                           "subnets": [{"name": "max", "loss": 1.5, "accuracy": 0.4}]})
    assert snap["phase"] == "training" and snap["seq"] == 2
    assert snap["steps_per_s"] == pytest.approx(2.0) and snap["eta_s"] == pytest.approx(45.0)
    assert metrics.eta.value(task="1") == pytest.approx(45.0)
    assert hub.snapshot(2) is None


async def test_slow_subscriber_loses_oldest_events_only() -> None:
    metrics = MinerMetrics()
    hub = ProgressHub(queue_size=3, metrics=metrics)
    sub = hub.subscribe(1)
    for step in range(6):
        hub.publish(1, {"phase": "training", "step": step})
    got = [(await sub.get() or {})["seq"] for _ in range(3)]
    assert got == [4, 5, 6] and sub.dropped == 3
    assert metrics.sse_dropped.value() == 3 and metrics.sse_clients.value() == 1
    hub.publish(1, {"phase": "done"})
    assert [e["phase"] async for e in sub] == ["done"]  # then the stream ends
    sub.close()
    assert metrics.sse_clients.value() == 0


async def test_tailer_reads_complete_lines_and_skips_bad_ones(tmp_path: Path) -> None:
    path = tmp_path / "progress.jsonl"
    hub = ProgressHub()
    tailer = ProgressTailer(path, 5, hub)
    assert await tailer.poll_once() == 0  # no file yet
    append_progress(path, {"phase": "training", "step": 1})
    with path.open("ab") as handle:
        handle.write(b'not json\n{"step": 2, "epoch"')  # a bad line and half a line
    assert await tailer.poll_once() == 1 and tailer.bad_lines == 1
    with path.open("ab") as handle:
        handle.write(b': 3}\n')
    assert await tailer.poll_once() == 1
    snapshot = hub.snapshot(5)
    assert snapshot is not None and (snapshot["step"], snapshot["epoch"]) == (2, 3)
    append_progress(path, {"phase": "done"})
    await tailer.run()  # returns by itself once the final phase is read


_LINE = re.compile(r'^([a-z_:][a-z0-9_:]*)(\{([a-z_]+="[^"]*",?)*\})? (-?[0-9.e+]+|NaN|[+-]Inf)$')


def test_metrics_text_exposition() -> None:
    metrics = MinerMetrics()
    metrics.http_requests.inc(route="/healthz", status="200")
    metrics.http_requests.inc(2, route="/healthz", status="200")
    metrics.step.set(12, task="3")
    metrics.throughput.set(1.5, task="3")
    text = metrics.registry.render()
    assert 'manta_miner_http_requests_total{route="/healthz",status="200"} 3' in text
    assert 'manta_miner_training_samples_per_second{task="3"} 1.5' in text
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or _LINE.match(line), line
    with pytest.raises(ValueError, match="_total"):
        Registry().counter("manta_miner_things", "no suffix")
    with pytest.raises(ValueError, match="cannot decrease"):
        metrics.http_requests.inc(-1, route="/x", status="200")
    with pytest.raises(ValueError, match="takes labels"):
        metrics.step.set(1)
