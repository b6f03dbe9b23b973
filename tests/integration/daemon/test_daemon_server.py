"""The miner's aiohttp app through aiohttp's test client: artifacts with ranges, tampered
artifacts refused, manifests, progress JSON, SSE order, metrics text, the sub-app hook."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from miner.daemon.errors import ArtifactHashMismatch
from miner.daemon.server import ServerDeps, create_app
from miner.daemon.store import StateStore, TaskPhase
from tests.daemon_support import server_deps

BLOB = bytes(range(256)) * 40  # 10240 bytes
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()


@dataclass
class Rig:
    client: TestClient
    deps: ServerDeps


async def _pong(request: web.Request) -> web.Response:
    return web.Response(text="pong")


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = StateStore.open(tmp_path / "state.sqlite")
    deps = server_deps(tmp_path, store, "0x" + "ab" * 20)
    exchange = web.Application()
    exchange.add_routes([web.get("/ping", _pong)])
    app = create_app(deps, subapps={"/exchange": exchange})
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Rig(client, deps)
    finally:
        await client.close()
        store.close()


async def test_artifact_full_and_ranges(rig: Rig, tmp_path: Path) -> None:
    source = tmp_path / "weights.safetensors"
    source.write_bytes(BLOB)
    rig.deps.artifacts.put_file(source, "0x" + BLOB_SHA.upper(), task_id=1)
    full = await rig.client.get(f"/artifacts/{BLOB_SHA}")
    assert full.status == 200 and await full.read() == BLOB
    assert full.headers["X-Content-SHA256"] == BLOB_SHA and full.headers["Accept-Ranges"] == "bytes"
    part = await rig.client.get(f"/artifacts/0x{BLOB_SHA}", headers={"Range": "bytes=100-299"})
    assert part.status == 206 and await part.read() == BLOB[100:300]
    assert part.headers["Content-Range"] == f"bytes 100-299/{len(BLOB)}"
    tail = await rig.client.get(f"/artifacts/{BLOB_SHA}", headers={"Range": "bytes=-16"})
    assert tail.status == 206 and await tail.read() == BLOB[-16:]
    beyond = await rig.client.get(f"/artifacts/{BLOB_SHA}",
                                  headers={"Range": f"bytes={len(BLOB) + 5}-"})
    assert beyond.status == 416
    assert (await rig.client.get("/artifacts/" + "0" * 64)).status == 404
    assert (await rig.client.get("/artifacts/nothex")).status == 400
    assert rig.deps.metrics.artifact_bytes.value() == len(BLOB) + 200 + 16


async def test_tampered_artifact_is_refused_at_store_time(rig: Rig, tmp_path: Path) -> None:
    source = tmp_path / "weights.safetensors"
    source.write_bytes(BLOB[:-1] + b"\x00")  # one byte changed after the hash was announced
    with pytest.raises(ArtifactHashMismatch):
        rig.deps.artifacts.put_file(source, BLOB_SHA)
    assert list(rig.deps.artifacts.directory.iterdir()) == []  # no temporary file left
    assert (await rig.client.get(f"/artifacts/{BLOB_SHA}")).status == 404


async def test_manifest_and_progress(rig: Rig) -> None:
    assert (await rig.client.get("/tasks/4/manifest")).status == 404
    assert (await rig.client.get("/tasks/4/progress")).status == 404
    assert (await rig.client.get("/tasks/x/progress")).status in (400, 404)
    rig.deps.store.record_task(4, "0xspec", TaskPhase.TRAINING)
    rig.deps.store.set_manifest(4, b'{"task_id":4}', "0x" + "12" * 32)
    manifest = await rig.client.get("/tasks/4/manifest")
    assert await manifest.read() == b'{"task_id":4}'
    assert manifest.headers["X-Manta-Result-Root"] == "0x" + "12" * 32
    early = await (await rig.client.get("/tasks/4/progress")).json()
    assert early == {"task_id": 4, "daemon_phase": "training"}
    rig.deps.hub.publish(4, {"phase": "training", "step": 3, "total_steps": 9})
    body = await (await rig.client.get("/tasks/4/progress")).json()
    assert (body["step"], body["total_steps"], body["daemon_phase"]) == (3, 9, "training")
    health = await (await rig.client.get("/healthz")).json()
    assert health["status"] == "ok" and health["tasks_active"] == 1


def _parse_sse(text: str) -> list[tuple[str, dict[str, object]]]:
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines()
                      if ": " in line and not line.startswith(":"))
        if "event" in fields:
            out.append((fields["event"], json.loads(fields["data"])))
    return out


async def test_sse_delivers_snapshot_then_events_in_order(rig: Rig) -> None:
    hub = rig.deps.hub
    hub.publish(6, {"phase": "training", "step": 0, "total_steps": 50})
    response = await rig.client.get("/tasks/6/events")
    assert response.headers["Content-Type"].startswith("text/event-stream")

    async def produce() -> None:
        await asyncio.sleep(0.3)  # the stream is open and has sent a keepalive
        for step in range(1, 21):
            hub.publish(6, {"step": step, "subnets": [{"name": "s", "loss": 1.0 / step}]})
        hub.publish(6, {"phase": "done"})

    producer = asyncio.create_task(produce())
    text = (await asyncio.wait_for(response.read(), 10)).decode()
    await producer
    assert ": keepalive" in text
    events = _parse_sse(text)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "snapshot" and kinds[-1] == "end" and kinds.count("progress") == 21
    seqs = [data["seq"] for kind, data in events if kind == "progress"]
    assert seqs == list(range(2, 23))  # every update, in order, none repeated
    assert events[-2][1]["phase"] == "done"
    after = await rig.client.get("/tasks/6/events")  # a finished task: snapshot, then end
    assert [k for k, _ in _parse_sse((await after.read()).decode())] == ["snapshot", "end"]
    assert rig.deps.metrics.sse_clients.value() == 0


_SAMPLE = re.compile(r'^[a-z_:][a-z0-9_:]*(\{[^}]*\})? -?[0-9.e+]+$')


async def test_signature_route_serves_only_this_miners_signature(rig: Rig) -> None:
    root = "0x" + "34" * 32
    url = f"/tasks/8/signature?result_root={root}"
    assert (await rig.client.get(url)).status == 404
    rig.deps.store.add_signature(8, root, "0x" + "cd" * 20, b"\x02" * 65)  # a peer's
    assert (await rig.client.get(url)).status == 404
    rig.deps.store.add_signature(8, root, str(rig.deps.address), b"\x01" * 65)
    body = await (await rig.client.get(url)).json()
    assert body == {"signer": rig.deps.address, "signature": "0x" + "01" * 65}
    assert (await rig.client.get("/tasks/8/signature")).status == 404


async def test_metrics_and_subapp_hook(rig: Rig) -> None:
    assert await (await rig.client.get("/exchange/ping")).text() == "pong"
    await rig.client.get("/healthz")
    response = await rig.client.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await response.text()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) manta_miner_[a-z_]+ ", line), line
            continue
        assert _SAMPLE.match(line), line
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    assert samples['manta_miner_http_requests_total{route="/healthz",status="200"}'] == 1.0
    assert "manta_miner_tasks_active" in samples
