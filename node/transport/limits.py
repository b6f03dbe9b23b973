"""The process's file-descriptor limit, raised by the daemon at start.

Each connection a server holds is a file descriptor; the common soft limit (1024) is below
what a miner serving its group, its artifacts and its monitor may need, and an exhausted
table makes honest handshakes fail before any check of ours runs. The transport caps its
connections (:class:`~node.transport.config.TransportConfig.max_connections`); the daemon
raises its own soft limit towards the hard limit so that the cap, not the kernel, is what
binds. :func:`plan_fd_limit` is the pure rule, :func:`raise_fd_limit` applies it (call it
once, from the entry point).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

DEFAULT_FD_TARGET = 65536
"""Enough for the default connection cap several times over, and below every common hard
limit's ceiling (``RLIM_INFINITY`` hard limits are capped here too)."""


@dataclass(frozen=True)
class FdLimit:
    """The soft limit before and after, and the hard limit (``-1``: unlimited)."""

    before: int
    after: int
    hard: int

    @property
    def raised(self) -> bool:
        return self.after > self.before


def plan_fd_limit(soft: int, hard: int, target: int = DEFAULT_FD_TARGET) -> int:
    """The soft limit to set: ``target``, never above ``hard`` (``-1`` is unlimited), never
    below the current ``soft`` (lowering it could break what is already open)."""
    if soft < 0:  # already unlimited
        return soft
    ceiling = target if hard < 0 else min(target, hard)
    return max(soft, ceiling)


def raise_fd_limit(target: int = DEFAULT_FD_TARGET) -> FdLimit:
    """Raise this process's ``RLIMIT_NOFILE`` soft limit towards ``target`` (see
    :func:`plan_fd_limit`); where the platform has no such limit, report it unchanged."""
    try:
        import resource
    except ImportError:  # not a POSIX platform: nothing to raise
        return FdLimit(-1, -1, -1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = plan_fd_limit(soft, hard, target)
    if want != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError) as exc:
            logger.warning("fd limit not raised soft=%d want=%d error=%s", soft, want, exc)
            return FdLimit(soft, soft, hard)
    logger.info("fd limit soft=%d->%d hard=%d", soft, want, hard)
    return FdLimit(soft, want, hard)
