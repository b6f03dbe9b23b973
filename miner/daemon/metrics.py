"""A small Prometheus registry (counters and gauges with labels) and its text exposition.

No process-wide registry: :class:`MinerMetrics` is made at the entry point and handed to
the server and the daemon. Names follow ``manta_miner_<what>_<unit>`` (``_total`` for
counters). The output is the Prometheus text format 0.0.4.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Literal

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Metric:
    """One metric family: a name, a help line, a type and its labelled values."""

    def __init__(self, name: str, help_text: str, kind: Literal["counter", "gauge"],
                 labels: Sequence[str] = ()) -> None:
        if not _NAME.match(name) or any(not _LABEL.match(label) for label in labels):
            raise ValueError(f"invalid metric or label name in {name}{tuple(labels)}")
        if kind == "counter" and not name.endswith("_total"):
            raise ValueError(f"counter {name} must end in _total")
        self.name = name
        self.help = help_text
        self.kind = kind
        self.labels = tuple(labels)
        self._values: dict[LabelValues, float] = {}
        self._lock = threading.Lock()
        if not self.labels:
            self._values[()] = 0.0

    def _key(self, labels: Mapping[str, str]) -> LabelValues:
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {tuple(labels)}")
        return tuple(str(labels[name]) for name in self.labels)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if self.kind == "counter" and amount < 0:
            raise ValueError(f"counter {self.name} cannot decrease")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def set(self, value: float, **labels: str) -> None:
        if self.kind != "gauge":
            raise ValueError(f"{self.name} is a counter; use inc")
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def remove(self, **labels: str) -> None:
        with self._lock:
            self._values.pop(self._key(labels), None)

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {_escape(self.help)}", f"# TYPE {self.name} {self.kind}"]
        with self._lock:
            items = sorted(self._values.items())
        for key, value in items:
            if key:
                pairs = ",".join(
                    f'{n}="{_escape(v)}"' for n, v in zip(self.labels, key, strict=True))
                lines.append(f"{self.name}{{{pairs}}} {_format(value)}")
            else:
                lines.append(f"{self.name} {_format(value)}")
        return lines


class Registry:
    """The metric families of one process, rendered together."""

    def __init__(self) -> None:
        self._metrics: dict[str, Metric] = {}

    def add(self, metric: Metric) -> Metric:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Metric:
        return self.add(Metric(name, help_text, "counter", labels))

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Metric:
        return self.add(Metric(name, help_text, "gauge", labels))

    def render(self) -> str:
        """The text exposition of every family, ending with a newline."""
        lines: list[str] = []
        for name in sorted(self._metrics):
            lines.extend(self._metrics[name].render())
        return "\n".join(lines) + "\n"


class MinerMetrics:
    """The daemon's metrics (one instance per process, passed to whoever updates them)."""

    def __init__(self, registry: Registry | None = None) -> None:
        r = self.registry = registry or Registry()
        self.http_requests = r.counter(
            "manta_miner_http_requests_total", "HTTP requests served", ("route", "status"))
        self.artifact_bytes = r.counter(
            "manta_miner_artifact_sent_bytes_total", "Artifact bytes sent to downloaders")
        self.artifacts_refused = r.counter(
            "manta_miner_artifacts_refused_total", "Artifacts refused at store time (bad hash)")
        self.sse_clients = r.gauge(
            "manta_miner_sse_clients", "Connected live-progress subscribers")
        self.sse_dropped = r.counter(
            "manta_miner_sse_dropped_events_total", "Events dropped for slow subscribers")
        self.tasks_active = r.gauge("manta_miner_tasks_active", "Tasks claimed and not settled")
        self.decisions = r.counter(
            "manta_miner_claim_decisions_total", "Claim policy verdicts", ("verdict",))
        self.txs = r.counter(
            "manta_miner_transactions_total", "Transactions by purpose and outcome",
            ("purpose", "outcome"))
        self.step = r.gauge("manta_miner_training_step", "Training step", ("task",))
        self.throughput = r.gauge(
            "manta_miner_training_samples_per_second", "Training throughput", ("task",))
        self.eta = r.gauge("manta_miner_training_eta_seconds", "Estimated time left", ("task",))
        self.grad_bytes = r.gauge(
            "manta_miner_gradient_traffic_bytes", "Gradient bytes exchanged so far",
            ("task", "direction"))
