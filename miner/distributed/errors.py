"""The distributed-training subtree of :class:`node.errors.MantaError`."""

from __future__ import annotations

from node.errors import MantaError


class DistributedError(MantaError):
    """Anything gradient averaging, inside a rig or between miners, refuses to do."""


class LayoutError(DistributedError):
    """Gradients, masks or flat buffers whose shapes do not agree."""

    template = "layout mismatch: {detail}"


class FrameError(DistributedError):
    """A gradient frame from a peer that fails its checks (header, size, round, codec)."""

    template = "bad gradient frame from {peer}: {detail}"


class ExchangeError(DistributedError):
    """A round between miners that cannot run at all (no peers, unknown peer, closed channel)."""

    template = "gradient exchange failed: {detail}"


class LaunchError(DistributedError):
    """A local worker process that failed; the whole group was stopped."""

    template = "worker rank {rank} exited with code {code}{detail}"
    rank: int
    code: int

    def __init__(self, rank: int, code: int, detail: str = "") -> None:
        super().__init__(detail, rank=rank, code=code)


class JoinError(DistributedError):
    """A request to (re)join a group's exchange that cannot be granted: not a member, a
    malformed request, or a group state that does not fit."""

    template = "join refused for {peer}: {detail}"
