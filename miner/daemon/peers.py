"""Talking to the other members of a group over their miner HTTP API (see ``server``).

Everything a peer sends is checked before use: a manifest against the root it is served
with (:func:`~node.documents.manifest.parse_manifest_checked`), an artifact against its
sha256 when stored (:class:`~miner.daemon.artifacts.ArtifactStore`), a signature by
recovering its signer (:func:`~miner.daemon.result.check_signature`). So these routes need
no authentication of their own. Every call has a timeout; failures raise
:class:`PeerError` and the caller retries on its next poll.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from pathlib import Path

import aiohttp

from miner.daemon.errors import DaemonError
from node.documents.manifest import ResultManifest, parse_manifest_checked
from node.errors import SpecError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20


class PeerError(DaemonError):
    """A peer that cannot be reached or answers something unusable."""

    template = "peer {endpoint}: {reason}"


class PeerClient:
    """HTTP calls to peers through one session (owned by the caller)."""

    def __init__(self, session: aiohttp.ClientSession, timeout_s: float = 10.0,
                 download_timeout_s: float = 600.0) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._download_timeout = aiohttp.ClientTimeout(total=download_timeout_s,
                                                       sock_read=timeout_s)

    async def manifest(self, endpoint: str, task_id: int) -> tuple[ResultManifest, bytes] | None:
        """The peer's manifest for ``task_id`` (checked against its root), or None if none yet."""
        url = f"{endpoint}/tasks/{task_id}/manifest"
        try:
            async with self._session.get(url, timeout=self._timeout) as response:
                if response.status == 404:
                    return None
                if response.status != 200:
                    raise PeerError(endpoint=endpoint, reason=f"manifest: HTTP {response.status}")
                raw = await response.read()
                root = response.headers.get("X-Manta-Result-Root", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PeerError(endpoint=endpoint, reason=f"manifest: {exc!r}") from exc
        try:
            return parse_manifest_checked(raw, root), raw
        except SpecError as exc:
            raise PeerError(endpoint=endpoint, reason=f"manifest refused: {exc}") from exc

    async def signature(self, endpoint: str, task_id: int, result_root: str) -> bytes | None:
        """The peer's signature over ``result_root``, or None if it has not signed (yet)."""
        url = f"{endpoint}/tasks/{task_id}/signature"
        try:
            async with self._session.get(url, params={"result_root": result_root},
                                         timeout=self._timeout) as response:
                if response.status == 404:
                    return None
                if response.status != 200:
                    raise PeerError(endpoint=endpoint, reason=f"signature: HTTP {response.status}")
                body = await response.json()
            return bytes.fromhex(str(body["signature"]).removeprefix("0x"))
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
            raise PeerError(endpoint=endpoint, reason=f"signature: {exc!r}") from exc

    async def download(self, endpoint: str, sha256: str, directory: Path) -> Path:
        """Stream the peer's artifact into a temporary file in ``directory`` (unchecked:
        the caller hands it to :meth:`ArtifactStore.put_file`, which checks the hash)."""
        url = f"{endpoint}/artifacts/{sha256.removeprefix('0x')}"
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, prefix=".download-")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                async with self._session.get(url, timeout=self._download_timeout) as response:
                    if response.status != 200:
                        raise PeerError(endpoint=endpoint,
                                        reason=f"artifact {sha256}: HTTP {response.status}")
                    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                        await asyncio.to_thread(out.write, chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            path.unlink(missing_ok=True)
            raise PeerError(endpoint=endpoint, reason=f"artifact {sha256}: {exc!r}") from exc
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path
