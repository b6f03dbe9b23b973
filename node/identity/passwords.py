"""Where a keystore password comes from: a prompt, an environment variable, or a file.

Never from the command line: argv is visible to every user of the machine (``ps``) and lands
in shell histories. A command names a *source* (``--password-env NAME`` or
``--password-file PATH``); without one it prompts on the terminal.

Passwords travel as :class:`pydantic.SecretStr`, whose ``repr``/``str`` print stars, so a
stray log line or traceback cannot leak one. This module never reads the environment
itself: the caller passes the mapping (``node.config.environment()``), which keeps tests
hermetic and the one environment read in ``config.py``.
"""

from __future__ import annotations

import getpass
import logging
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from node.identity.errors import PasswordUnavailable

logger = logging.getLogger(__name__)

#: How a prompt is shown and answered; ``getpass.getpass`` in production, a stub in tests.
PromptFn = Callable[[str], str]


def password_from_env(var_name: str, environ: Mapping[str, str]) -> SecretStr:
    """The password held by the environment variable ``var_name`` (must be set, non-empty)."""
    value = environ.get(var_name)
    if value is None:
        raise PasswordUnavailable(source=f"environment variable {var_name}", reason="not set")
    if not value:
        raise PasswordUnavailable(source=f"environment variable {var_name}", reason="empty")
    return SecretStr(value)


def password_from_file(path: Path) -> SecretStr:
    """The first line of ``path`` (one trailing newline stripped; must be non-empty).

    A file that group or others can read is accepted with a warning: refusing it would
    break read-only mounts (Docker/Kubernetes secrets) that cannot be chmod-ed.
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PasswordUnavailable(source=f"file {path}", reason=exc.strerror or str(exc)) from exc
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        logger.warning("password file readable by others path=%s mode=%o", path, mode & 0o777)
    first = text.splitlines()[0] if text else ""
    if not first:
        raise PasswordUnavailable(source=f"file {path}", reason="empty")
    return SecretStr(first)


def password_from_prompt(
    prompt: str = "Keystore password: ",
    *,
    confirm: bool = False,
    prompt_fn: PromptFn = getpass.getpass,
) -> SecretStr:
    """Ask on the terminal (no echo); with ``confirm`` ask twice and require the same answer."""
    first = prompt_fn(prompt)
    if not first:
        raise PasswordUnavailable(source="prompt", reason="empty")
    if confirm and prompt_fn("Repeat password: ") != first:
        raise PasswordUnavailable(source="prompt", reason="the two entries differ")
    return SecretStr(first)


@dataclass(frozen=True)
class PasswordSource:
    """A password source named by the user: an env variable, a file, or (neither) a prompt.

    Holds only *where* the password is, never the password, so it is safe to log and to
    keep in settings.
    """

    env_var: str | None = None
    file: Path | None = None

    def __post_init__(self) -> None:
        if self.env_var is not None and self.file is not None:
            raise PasswordUnavailable(
                source="options", reason="give a password variable or a password file, not both"
            )

    def describe(self) -> str:
        """Where the password will come from, for messages."""
        if self.env_var is not None:
            return f"environment variable {self.env_var}"
        if self.file is not None:
            return f"file {self.file}"
        return "prompt"

    def resolve(
        self,
        environ: Mapping[str, str],
        *,
        confirm: bool = False,
        prompt_fn: PromptFn = getpass.getpass,
    ) -> SecretStr:
        """Read the password from this source (prompting, with ``confirm``, if no source)."""
        if self.env_var is not None:
            return password_from_env(self.env_var, environ)
        if self.file is not None:
            return password_from_file(self.file)
        return password_from_prompt(confirm=confirm, prompt_fn=prompt_fn)
