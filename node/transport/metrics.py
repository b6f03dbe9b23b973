"""A small metrics registry: labelled counters with Prometheus text exposition.

No process-wide registry: the entry point makes one :class:`MetricsRegistry`, passes it to
every component, and serves :meth:`MetricsRegistry.exposition` at ``/metrics``. Names follow
``manta_<component>_<what>_<unit>``; counters end in ``_total``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from node.errors import ConfigError

LabelValues = tuple[str, ...]


@dataclass
class Counter:
    """A monotonically increasing count, one value per combination of label values."""

    name: str
    help: str
    label_names: tuple[str, ...] = ()
    values: dict[LabelValues, float] = field(default_factory=dict)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` (>= 0) to the series named by ``labels``."""
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        """The current value of one series (0 when it was never incremented)."""
        return self.values.get(self._key(labels), 0.0)

    def _key(self, labels: dict[str, str]) -> LabelValues:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {sorted(labels)}")
        return tuple(str(labels[name]) for name in self.label_names)

    def exposition_lines(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        if not self.label_names and not self.values:
            lines.append(f"{self.name} 0")
        for key in sorted(self.values):
            lines.append(f"{self.name}{_labels(self.label_names, key)} {_number(self.values[key])}")
        return lines


@dataclass
class MetricsRegistry:
    """Named counters of one process; asking twice for a name returns the same counter."""

    counters: dict[str, Counter] = field(default_factory=dict)

    def counter(self, name: str, help: str, label_names: Sequence[str] = ()) -> Counter:
        """The counter ``name``, created on first use."""
        existing = self.counters.get(name)
        if existing is not None:
            if existing.label_names != tuple(label_names):
                raise ConfigError(f"metric {name} already registered with other labels")
            return existing
        made = Counter(name, help, tuple(label_names))
        self.counters[name] = made
        return made

    def exposition(self) -> str:
        """Prometheus text format (version 0.0.4) of every counter."""
        lines: list[str] = []
        for name in sorted(self.counters):
            lines.extend(self.counters[name].exposition_lines())
        return "\n".join(lines) + "\n"


def _labels(names: tuple[str, ...], values: LabelValues) -> str:
    if not names:
        return ""
    body = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


@dataclass(frozen=True)
class TransportMetrics:
    """The transport's counters, registered in one registry."""

    refused: Counter
    handshakes: Counter
    messages_in: Counter
    messages_out: Counter
    bytes_in: Counter
    bytes_out: Counter
    connections: Counter
    sessions_evicted: Counter

    @classmethod
    def create(cls, registry: MetricsRegistry) -> TransportMetrics:
        """Register (or find) the transport's counters in ``registry``."""
        return cls(
            refused=registry.counter(
                "manta_transport_refused_total",
                "Handshakes, frames and messages refused, by the check that refused them.",
                ("reason",),
            ),
            handshakes=registry.counter(
                "manta_transport_handshakes_total", "Sessions opened, by our role.", ("role",)
            ),
            messages_in=registry.counter(
                "manta_transport_messages_received_total", "Messages delivered to a handler."
            ),
            messages_out=registry.counter(
                "manta_transport_messages_sent_total", "Messages a peer accepted."
            ),
            bytes_in=registry.counter(
                "manta_transport_received_bytes_total", "Payload bytes delivered to handlers."
            ),
            bytes_out=registry.counter(
                "manta_transport_sent_bytes_total", "Payload bytes a peer accepted."
            ),
            connections=registry.counter(
                "manta_transport_connections_total",
                "Server connections by event: opened, refused at the cap, evicted for a new one.",
                ("event",),
            ),
            sessions_evicted=registry.counter(
                "manta_transport_sessions_evicted_total",
                "Sessions dropped for a newer one of the same peer (or for room in the table).",
            ),
        )
