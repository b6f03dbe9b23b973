"""Fetch a task's spec from its ``specURI`` and check it against the on-chain ``specHash``.

Supported URIs: ``http(s)://`` (aiohttp, bounded size and time) and ``file://`` (local
development and tests). The bytes are checked by
:func:`node.documents.spec.parse_spec_checked` before anything reads them.

A dataset named by URL is pinned by its sha256 in the spec. :class:`SpecFetcher` downloads
it *before* the claim (streamed, size-bounded, hashed on the way) into
``<datasets_dir>/<sha256 hex>`` — the file the training side reads — so a dataset that does
not match its hash is refused before any bond is posted. A file already there (an earlier
task) is not fetched again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

import aiohttp

from miner.daemon.errors import DaemonError
from node.chain.models import TaskPosted
from node.documents.canonical import HashMismatch
from node.documents.spec import TaskSpec, parse_spec_checked

logger = logging.getLogger(__name__)

MAX_SPEC_BYTES = 1 << 20


class SpecFetchError(DaemonError):
    """The spec could not be fetched (unreachable, too large, unsupported URI)."""

    template = "cannot fetch spec {uri}: {reason}"


async def read_spec_bytes(uri: str, timeout_s: float = 10.0,
                          max_bytes: int = MAX_SPEC_BYTES) -> bytes:
    """The raw bytes at ``uri`` (at most ``max_bytes``)."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise SpecFetchError(uri=uri, reason=str(exc)) from exc
    elif parsed.scheme in ("http", "https"):
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, \
                    session.get(uri) as response:
                if response.status != 200:
                    raise SpecFetchError(uri=uri, reason=f"HTTP {response.status}")
                data = await response.content.read(max_bytes + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SpecFetchError(uri=uri, reason=str(exc) or type(exc).__name__) from exc
    else:
        raise SpecFetchError(uri=uri, reason=f"unsupported scheme {parsed.scheme!r}")
    if len(data) > max_bytes:
        raise SpecFetchError(uri=uri, reason=f"larger than {max_bytes} bytes")
    return data


async def fetch_spec(task: TaskPosted, timeout_s: float = 10.0) -> TaskSpec:
    """The task's spec, refused (:class:`~node.errors.SpecError`) unless it hashes right."""
    raw = await read_spec_bytes(task.spec_uri, timeout_s)
    return parse_spec_checked(raw, "0x" + task.spec_hash.hex())


class DatasetHashMismatch(HashMismatch):
    """The dataset at the spec's URL is not the one the spec pins; it was not kept."""


async def _stream_to(response: aiohttp.ClientResponse, out: BinaryIO, max_bytes: int,
                     uri: str) -> str:
    digest = hashlib.sha256()
    size = 0
    async for chunk in response.content.iter_chunked(1 << 20):
        size += len(chunk)
        if size > max_bytes:
            raise SpecFetchError(uri=uri, reason=f"dataset larger than {max_bytes} bytes")
        digest.update(chunk)
        await asyncio.to_thread(out.write, chunk)
    return "0x" + digest.hexdigest()


class SpecFetcher:
    """Spec and (URL) dataset, both hash-checked before the claim; usable as ``fetch_spec``."""

    def __init__(self, datasets_dir: Path, session: aiohttp.ClientSession,
                 timeout_s: float = 10.0, dataset_timeout_s: float = 600.0,
                 max_dataset_bytes: int = 2 << 30) -> None:
        self.datasets_dir = datasets_dir
        self._session = session
        self._timeout_s = timeout_s
        self._dataset_timeout = aiohttp.ClientTimeout(total=dataset_timeout_s,
                                                      sock_read=timeout_s)
        self._max_bytes = max_dataset_bytes

    async def __call__(self, task: TaskPosted) -> TaskSpec:
        spec = await fetch_spec(task, self._timeout_s)
        if spec.dataset.url is not None and spec.dataset.sha256 is not None:
            await self.dataset(spec.dataset.url, spec.dataset.sha256)
        return spec

    def dataset_path(self, sha256: str) -> Path:
        return self.datasets_dir / sha256.lower().removeprefix("0x")

    async def dataset(self, url: str, sha256: str) -> Path:
        """The dataset file pinned by ``sha256``, downloaded once and checked."""
        final = self.dataset_path(sha256)
        if final.is_file():
            return final
        self.datasets_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.datasets_dir, prefix=".incoming-")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                async with self._session.get(url, timeout=self._dataset_timeout) as response:
                    if response.status != 200:
                        raise SpecFetchError(uri=url, reason=f"dataset: HTTP {response.status}")
                    actual = await _stream_to(response, out, self._max_bytes, url)
            if actual != sha256.lower():
                raise DatasetHashMismatch(what="dataset", expected=sha256, actual=actual)
            tmp.replace(final)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SpecFetchError(uri=url, reason=f"dataset: {exc!r}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        logger.info("dataset stored sha256=%s url=%s", sha256, url)
        return final
