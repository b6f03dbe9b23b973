"""The progress stream's wire format, shared by the miner's server and the client's monitor:
one Server-Sent Event, and the phases after which a task's stream ends."""

from __future__ import annotations

import json
from collections.abc import Mapping

#: A task in one of these phases sends no more progress; its stream ends.
FINAL_PHASES = ("done", "failed")


def sse_frame(event: str, data: Mapping[str, object], event_id: object | None = None) -> bytes:
    """One Server-Sent Event (pure): ``id`` when given, ``event``, ``data`` as compact JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return f"{head}event: {event}\ndata: {payload}\n\n".encode()
