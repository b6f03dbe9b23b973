"""The project's one error root.

Every error MANTA raises on purpose derives from :class:`MantaError`. Each domain keeps its
subtree next to its code (``node/chain/errors.py``, ``node/transport/errors.py``,
``miner/automl/errors.py``…) so that a caller can catch a whole domain at once, and a CLI can
catch everything ours at its single error handler.

Errors compose their message from structured fields: pass the facts as keyword arguments
and let the class say the sentence, so the same error always reads the same way.
"""

from __future__ import annotations

from typing import Any, ClassVar


class MantaError(Exception):
    """Root of every error MANTA raises on purpose.

    Subclasses set ``template`` (a ``str.format`` string over their fields); the fields stay
    available as attributes for code that reacts to them.
    """

    template: ClassVar[str] = "{detail}"

    def __init__(self, detail: str = "", **fields: Any) -> None:
        self.detail = detail
        self.fields = fields
        for name, value in fields.items():
            setattr(self, name, value)
        super().__init__(self._compose())

    def _compose(self) -> str:
        try:
            message = self.template.format(detail=self.detail, **self.fields)
        except (KeyError, IndexError):
            message = self.detail or type(self).__name__
        if self.detail and "{detail}" not in self.template:
            message = f"{message}: {self.detail}"
        return message


class ConfigError(MantaError):
    """A setting, file or command-line value that cannot be used."""


class SpecError(MantaError):
    """An off-chain document (TaskSpec, ResultManifest) that fails validation or its hash."""


class IdentityError(MantaError):
    """A keystore that cannot be created, found or unlocked."""
