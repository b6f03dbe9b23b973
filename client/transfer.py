"""Talking to the group's miners over HTTP: manifests, artifacts and progress streams.

Written against the miner daemon's documented API (``GET /tasks/{id}/manifest``,
``GET /artifacts/{sha256}``, ``GET /tasks/{id}/progress``, SSE ``GET /tasks/{id}/events``),
never against miner code. Every download is checked before it is used: the manifest
against the on-chain ``resultRoot`` (keccak256 of the bytes), each artifact against its
sha256 while it streams to a temporary file. A member that fails or lies is skipped and
the next one is tried; when none succeeds, :class:`NoMemberReachable` lists what each said.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from client.errors import NoMemberReachable
from node.documents.canonical import HashMismatch, check_hash
from node.documents.manifest import ResultManifest, parse_manifest_checked
from node.errors import MantaError

logger = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 1 << 20
CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class Member:
    """A group member and the endpoint it registered on chain ('' if none)."""

    address: str
    endpoint: str


@dataclass(frozen=True)
class FetchedManifest:
    raw: bytes
    manifest: ResultManifest
    source: str


class _Refused(Exception):  # noqa: N818
    """One member's failure (message only); never leaves this module."""


def _url(member: Member, path: str) -> str:
    if not member.endpoint:
        raise _Refused("no endpoint registered")
    return member.endpoint.rstrip("/") + path


def _summary(failures: Sequence[tuple[Member, str]]) -> str:
    return "; ".join(f"{m.address} ({m.endpoint or 'no endpoint'}): {why}" for m, why in failures)


async def _get_manifest(session: aiohttp.ClientSession, member: Member, task_id: int,
                        expected_root: str) -> FetchedManifest:
    async with session.get(_url(member, f"/tasks/{task_id}/manifest")) as response:
        if response.status != 200:
            raise _Refused(f"HTTP {response.status}")
        raw = await response.content.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise _Refused(f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
    return FetchedManifest(raw, parse_manifest_checked(raw, expected_root), member.endpoint)


async def fetch_manifest(session: aiohttp.ClientSession, members: Sequence[Member],
                         task_id: int, expected_root: str) -> FetchedManifest:
    """The first manifest, in member order, whose keccak256 is ``expected_root``."""
    failures: list[tuple[Member, str]] = []
    for member in members:
        try:
            return await _get_manifest(session, member, task_id, expected_root)
        except (_Refused, MantaError, aiohttp.ClientError, TimeoutError) as exc:
            logger.info("manifest refused member=%s reason=%s", member.address, exc)
            failures.append((member, str(exc) or type(exc).__name__))
    raise NoMemberReachable(task_id=task_id, what="the result manifest", tried=_summary(failures))


async def _download(session: aiohttp.ClientSession, member: Member, sha256: str,
                    dest: Path) -> None:
    digest = hashlib.sha256()
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        async with session.get(_url(member, f"/artifacts/{sha256.removeprefix('0x')}")) as resp:
            if resp.status != 200:
                raise _Refused(f"HTTP {resp.status}")
            with open(tmp, "wb") as handle:
                async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                    digest.update(chunk)
                    handle.write(chunk)
        check_hash(f"artifact {dest.name}", sha256, digest.hexdigest())
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)


async def download_artifact(session: aiohttp.ClientSession, members: Sequence[Member],
                            task_id: int, sha256: str, dest: Path) -> str:
    """Download the file ``sha256`` to ``dest`` from the first member that serves it intact;
    returns that member's endpoint. ``dest`` appears only once its hash is checked."""
    failures: list[tuple[Member, str]] = []
    for member in members:
        try:
            await _download(session, member, sha256, dest)
            return member.endpoint
        except (_Refused, HashMismatch, aiohttp.ClientError, TimeoutError, OSError) as exc:
            logger.info("artifact refused member=%s reason=%s", member.address, exc)
            failures.append((member, str(exc) or type(exc).__name__))
    raise NoMemberReachable(task_id=task_id, what=f"artifact {sha256}", tried=_summary(failures))


# ---- progress --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: str
    id: str | None = None

    def json(self) -> dict[str, Any]:
        value = json.loads(self.data) if self.data else {}
        return value if isinstance(value, dict) else {"value": value}


def parse_sse_lines(lines: Sequence[str]) -> list[SseEvent]:
    """Complete events from Server-Sent-Events lines (pure; comments and partial events dropped)."""
    events: list[SseEvent] = []
    name, ident = "message", None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                events.append(SseEvent(name, "\n".join(data), ident))
            name, data, ident = "message", [], None
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                ident = value
    return events


async def stream_events(session: aiohttp.ClientSession, member: Member,
                        task_id: int) -> AsyncIterator[SseEvent]:
    """A member's live progress events, until its ``end`` event or the stream closes."""
    url = _url(member, f"/tasks/{task_id}/events")
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
    async with session.get(url, timeout=timeout,
                           headers={"Accept": "text/event-stream"}) as response:
        if response.status != 200:
            raise _Refused(f"HTTP {response.status}")
        pending: list[str] = []
        async for raw in response.content:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            pending.append(line)
            if line == "":
                for event in parse_sse_lines(pending):
                    yield event
                    if event.event == "end":
                        return
                pending = []


async def progress_snapshot(session: aiohttp.ClientSession, member: Member,
                            task_id: int) -> dict[str, Any] | None:
    """A member's ``/tasks/{id}/progress`` snapshot, or None if it has none or is down."""
    try:
        async with session.get(_url(member, f"/tasks/{task_id}/progress")) as response:
            if response.status != 200:
                return None
            value = await response.json()
    except (_Refused, aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return value if isinstance(value, dict) else None
