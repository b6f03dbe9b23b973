"""The AutoML engine's subtree of :class:`node.errors.MantaError`."""

from __future__ import annotations

from node.errors import MantaError


class AutoMLError(MantaError):
    """Anything the AutoML engine refuses to do."""


class ArchError(AutoMLError):
    """An architecture that does not belong to the search space."""

    template = "architecture outside the search space: {detail}"


class UnknownSupernetError(AutoMLError):
    """A supernet name that is not registered; suggests the closest names."""

    template = "unknown supernet {name!r}{hint}"

    def __init__(self, name: str, known: list[str]) -> None:
        import difflib

        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else f"; known: {known}"
        super().__init__(name=name, known=known, hint=hint)


class ConstraintError(AutoMLError):
    """A search constraint that no architecture of the space can meet."""

    template = "impossible constraint {detail}"


class CheckpointError(AutoMLError):
    """A checkpoint that is missing, corrupt, or from another run."""

    template = "unusable checkpoint {path}: {detail}"


class DatasetError(AutoMLError):
    """A dataset that cannot be found, read, or has the wrong shape."""

    template = "bad dataset {name!r}: {detail}"
