"""Step-granular training checkpoints: atomic on disk, self-verifying, tied to one config.

A checkpoint file is a short header line — ``MANTA-CKPT 1 <sha256 of payload> <config
hash>`` — followed by the payload that ``torch.save`` wrote (tensors, numbers and strings
only, so it loads with ``weights_only=True``). Loading recomputes the sha256 and compares the
config hash before anything is unpickled.

Writes go to a temporary file in the same folder, are fsynced, then renamed over the final
name, and the folder is fsynced: a crash leaves either the old or the new checkpoint, never
half of one. :class:`CheckpointStore` keeps the newest ``keep`` files and deletes older ones
only after the new one is in place.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from miner.automl.errors import CheckpointError

logger = logging.getLogger(__name__)

_MAGIC = b"MANTA-CKPT 1"
_NAME = re.compile(r"^ckpt-(\d{10})\.pt$")


def encode_checkpoint(payload: dict[str, Any], config_hash: str) -> bytes:
    """The bytes of a checkpoint file holding ``payload``."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    digest = hashlib.sha256(body).hexdigest()
    return b" ".join([_MAGIC, digest.encode(), config_hash.encode()]) + b"\n" + body


def decode_checkpoint(
    data: bytes, expected_hash: str | None, path: str = "<bytes>"
) -> dict[str, Any]:
    """The payload of checkpoint bytes; CheckpointError if corrupt or from another config."""
    header, sep, body = data.partition(b"\n")
    fields = header.split(b" ")
    if not sep or len(fields) != 4 or b" ".join(fields[:2]) != _MAGIC:
        raise CheckpointError(path=path, detail="not a MANTA checkpoint (bad header)")
    digest, config_hash = fields[2].decode(errors="replace"), fields[3].decode(errors="replace")
    if hashlib.sha256(body).hexdigest() != digest:
        raise CheckpointError(path=path, detail="sha256 mismatch: the file is corrupt or truncated")
    if expected_hash is not None and config_hash != expected_hash:
        raise CheckpointError(
            path=path,
            detail=f"made by config {config_hash[:12]}, this run's config is {expected_hash[:12]}",
        )
    try:
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means an unusable file
        raise CheckpointError(path=path, detail=f"cannot unpickle: {exc}") from exc
    if not isinstance(payload, dict):
        raise CheckpointError(path=path, detail="payload is not a mapping")
    return payload


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` so that readers see the old or the new file, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: Path, expected_hash: str | None) -> dict[str, Any]:
    """Read and verify one checkpoint file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(path=str(path), detail=f"cannot read: {exc.strerror or exc}") from exc
    return decode_checkpoint(data, expected_hash, str(path))


class CheckpointStore:
    """Numbered checkpoints ``ckpt-<step>.pt`` in one folder, newest ``keep`` kept."""

    def __init__(self, folder: Path, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.folder = folder
        self.keep = keep

    def steps(self) -> list[int]:
        """Steps that have a checkpoint, oldest first."""
        if not self.folder.is_dir():
            return []
        found = (_NAME.match(p.name) for p in self.folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def path(self, step: int) -> Path:
        return self.folder / f"ckpt-{step:010d}.pt"

    def latest(self) -> Path | None:
        steps = self.steps()
        return self.path(steps[-1]) if steps else None

    def save(self, step: int, payload: dict[str, Any], config_hash: str) -> Path:
        """Write the checkpoint of ``step``, then prune all but the newest ``keep``."""
        path = self.path(step)
        write_atomic(path, encode_checkpoint(payload, config_hash))
        for old in self.steps()[: -self.keep]:
            self.path(old).unlink(missing_ok=True)
        logger.info("checkpoint saved step=%d path=%s", step, path.name)
        return path

    def load_latest(self, expected_hash: str) -> dict[str, Any] | None:
        """The newest checkpoint's payload, or None if there is none."""
        path = self.latest()
        return None if path is None else load_checkpoint(path, expected_hash)
