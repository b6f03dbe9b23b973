"""Content-addressed artifacts on disk (``<artifacts_dir>/<sha256 hex>``), hash-checked when stored.

A file is hashed while it is copied into a temporary file next to its final place; only when
the digest equals the announced one is it renamed into place (atomically) and recorded in
the state store. A tampered or truncated file is refused with
:class:`~miner.daemon.errors.ArtifactHashMismatch` and leaves nothing behind. Serving reads
the file as stored (the server streams it with range support).

The methods block (disk I/O); async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path

from miner.daemon.errors import ArtifactError, ArtifactHashMismatch
from miner.daemon.store import StateStore

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
_HEX64 = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


def normalize_sha256(value: str) -> str:
    """``value`` as 64 lower-case hex digits (``0x`` dropped); ArtifactError otherwise."""
    if not _HEX64.match(value):
        raise ArtifactError(f"not a sha256 hex digest: {value[:80]!r}")
    return value.lower().removeprefix("0x")


class ArtifactStore:
    """The artifact directory plus its index in the state store."""

    def __init__(self, directory: Path, store: StateStore) -> None:
        self._dir = directory
        self._store = store
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def directory(self) -> Path:
        return self._dir

    def put_file(self, source: Path, expected_sha256: str, task_id: int | None = None) -> Path:
        """Copy ``source`` in under its hash, refusing it unless it hashes to ``expected``."""
        expected = normalize_sha256(expected_sha256)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self._dir, prefix=".incoming-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                while chunk := src.read(CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            actual = digest.hexdigest()
            if actual != expected:
                raise ArtifactHashMismatch(expected=expected, actual=actual)
            final = self._dir / expected
            tmp.replace(final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._store.add_artifact(expected, final, size, task_id)
        logger.info("artifact stored sha256=%s size_bytes=%d task=%s", expected, size, task_id)
        return final

    def put_bytes(self, data: bytes, expected_sha256: str, task_id: int | None = None) -> Path:
        """Like :meth:`put_file` for bytes in memory (manifests, small files)."""
        expected = normalize_sha256(expected_sha256)
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ArtifactHashMismatch(expected=expected, actual=actual)
        fd, tmp_name = tempfile.mkstemp(dir=self._dir, prefix=".incoming-")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        final = self._dir / expected
        Path(tmp_name).replace(final)
        self._store.add_artifact(expected, final, len(data), task_id)
        return final

    def path_of(self, sha256: str) -> Path | None:
        """The stored file for ``sha256``, or None if unknown (or missing on disk)."""
        try:
            key = normalize_sha256(sha256)
        except ArtifactError:
            return None
        record = self._store.artifact(key)
        if record is None or not record.path.is_file():
            return None
        return record.path
