"""Spec and dataset fetching before a claim: hashes checked, a bad dataset never kept."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from miner.daemon.specs import DatasetHashMismatch, SpecFetcher, SpecFetchError
from node.chain.models import TaskPosted
from node.documents.canonical import HashMismatch
from node.documents.spec import Constraint, DatasetRef, TaskSpec

DATA = b"pixels" * 5000


@pytest_asyncio.fixture
async def server() -> AsyncIterator[TestServer]:
    async def dataset(request: web.Request) -> web.Response:
        return web.Response(body=DATA)

    app = web.Application()
    app.add_routes([web.get("/data.bin", dataset)])
    test_server = TestServer(app)
    await test_server.start_server()
    yield test_server
    await test_server.close()


def posted(tmp_path: Path, spec: TaskSpec, body: bytes | None = None) -> TaskPosted:
    path = tmp_path / "spec.json"
    path.write_bytes(spec.canonical() if body is None else body)
    fields: dict[str, Any] = {
        "block_number": 1, "block_hash": b"\x01" * 32, "tx_hash": b"\x02" * 32, "log_index": 0,
        "task_id": 1, "client": "0x" + "aa" * 20, "token": "0x" + "00" * 20, "reward_wei": 1,
        "bond_wei": 0, "slots": 1, "claim_deadline": 10, "work_window_s": 10,
        "review_window_s": 10, "arbitration_window_s": 10, "arbiter": "0x" + "bb" * 20,
        "spec_hash": spec.spec_hash(), "validation_hash": b"\x03" * 32,
        "spec_uri": path.as_uri()}
    return TaskPosted(**fields)


def spec_with(url: str, sha256: str) -> TaskSpec:
    return TaskSpec(kind="classification", dataset=DatasetRef(url=url, sha256=sha256),
                    constraint=Constraint(max_params=10**6))


async def test_dataset_downloaded_once_and_checked(server: TestServer, tmp_path: Path) -> None:
    url = str(server.make_url("/data.bin"))
    good = "0x" + hashlib.sha256(DATA).hexdigest()
    async with aiohttp.ClientSession() as session:
        fetcher = SpecFetcher(tmp_path / "datasets", session)
        spec = await fetcher(posted(tmp_path, spec_with(url, good)))
        assert spec.dataset.sha256 == good
        assert fetcher.dataset_path(good).read_bytes() == DATA
        await server.close()  # a second task with the same dataset needs no download
        assert await fetcher.dataset(url, good) == fetcher.dataset_path(good)


async def test_dataset_hash_mismatch_keeps_nothing(server: TestServer, tmp_path: Path) -> None:
    url = str(server.make_url("/data.bin"))
    wrong = "0x" + "ee" * 32
    async with aiohttp.ClientSession() as session:
        fetcher = SpecFetcher(tmp_path / "datasets", session)
        with pytest.raises(DatasetHashMismatch, match="dataset hash mismatch"):
            await fetcher(posted(tmp_path, spec_with(url, wrong)))
        assert list((tmp_path / "datasets").iterdir()) == []
        small = SpecFetcher(tmp_path / "small", session, max_dataset_bytes=100)
        with pytest.raises(SpecFetchError, match="larger than 100"):
            await small.dataset(url, wrong)
        missing = str(server.make_url("/nothing"))
        with pytest.raises(SpecFetchError, match="HTTP 404"):
            await fetcher.dataset(missing, wrong)


async def test_spec_bytes_must_match_the_chain(tmp_path: Path) -> None:
    spec = TaskSpec(kind="classification", dataset=DatasetRef(name="digits"),
                    constraint=Constraint(max_flops=10))
    async with aiohttp.ClientSession() as session:
        fetcher = SpecFetcher(tmp_path, session)
        assert await fetcher(posted(tmp_path, spec)) == spec
        with pytest.raises(HashMismatch):
            await fetcher(posted(tmp_path, spec, body=spec.canonical() + b" "))
        task = posted(tmp_path, spec).model_copy(update={"spec_uri": "ftp://x/spec.json"})
        with pytest.raises(SpecFetchError, match="unsupported scheme"):
            await fetcher(task)
