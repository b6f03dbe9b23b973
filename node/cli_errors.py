"""The one error handler shared by every MANTA command line (manta, manta-miner, manta-node).

Our errors (and, where a command opts in, OS errors such as an unreadable file) become one
line on stderr and exit code 1; usage errors keep click's exit code 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import typer
from typer.core import TyperGroup

from node.errors import MantaError

logger = logging.getLogger(__name__)


class MantaErrorGroup(TyperGroup):
    """A Typer group whose commands report :class:`MantaError` as one clean line."""

    handled: ClassVar[tuple[type[BaseException], ...]] = (MantaError,)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except self.handled as exc:
            logger.debug("command failed", exc_info=True)
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None


class MantaOrOSErrorGroup(MantaErrorGroup):
    """As :class:`MantaErrorGroup`, and also for files that could not be read or written."""

    handled = (MantaError, OSError)
