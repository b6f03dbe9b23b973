"""The daemon's error subtree (everything under :class:`DaemonError`)."""

from __future__ import annotations

from typing import ClassVar

from node.errors import MantaError


class DaemonError(MantaError):
    """Root of every error raised by ``miner.daemon``."""


class StoreError(DaemonError):
    """The local state store cannot be used (wrong schema, corrupt file, bad transition)."""

    template: ClassVar[str] = "state store: {detail}"


class ArtifactError(DaemonError):
    """An artifact that cannot be stored or found."""

    template: ClassVar[str] = "artifact: {detail}"


class ArtifactHashMismatch(ArtifactError):  # noqa: N818 (like documents.HashMismatch)
    """A file whose sha256 is not the one it was announced with; it was not stored."""

    template: ClassVar[str] = "artifact hash mismatch: expected {expected}, got {actual}"
