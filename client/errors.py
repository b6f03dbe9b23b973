# ruff: noqa: N818 (the names read as facts: NoMemberReachable, WrongTaskState)
"""The client's error subtree (under :class:`node.errors.MantaError`).

Each error composes its sentence from structured fields, so the CLI's one handler can print
``error: <message>`` and exit with code 1 without knowing which error it was.
"""

from __future__ import annotations

from typing import ClassVar

from node.errors import MantaError


class ClientError(MantaError):
    """Root of the client's errors."""


class BadAmount(ClientError):
    """An amount the user typed that is not a whole number of wei."""

    template: ClassVar[str] = (
        "cannot read amount {text!r}: {reason} (examples: 0.5eth, 500gwei, 12wei, 1000)"
    )


class BadDuration(ClientError):
    """A duration the user typed that is not a whole number of seconds."""

    template: ClassVar[str] = "cannot read duration {text!r}: {reason} (examples: 90s, 30m, 2h, 1d)"


class SpecFileError(ClientError):
    """A spec file that cannot be read as TOML or JSON."""

    template: ClassVar[str] = "spec file {path}: {reason}"


class NotConfigured(ClientError):
    """A setting the command needs (RPC URL, deployment, keystore) is missing."""

    template: ClassVar[str] = "{what} is not set: {hint}"


class NoMemberReachable(ClientError):
    """No group member served what was asked for; lists what each one answered."""

    template: ClassVar[str] = "no group member of task {task_id} served {what}: {tried}"


class WrongTaskState(ClientError):
    """The task is not in a state where the command makes sense (checked before sending)."""

    template: ClassVar[str] = "task {task_id} is {state}; {command} needs {needed}"


class OutputExists(ClientError):
    """``fetch`` would overwrite files the user already has."""

    template: ClassVar[str] = "{path} exists and is not empty; choose another output folder"


class DatasetPackError(ClientError):
    """A folder or file that cannot be packed as a dataset."""

    template: ClassVar[str] = "cannot pack {path}: {reason}"


class VerifyError(ClientError):
    """A delivered network that cannot be evaluated (missing torch, bad data, bad export)."""

    template: ClassVar[str] = "cannot verify: {reason}"
