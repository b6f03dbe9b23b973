"""Password sources: environment variable, file, prompt; never argv."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from node.identity.errors import PasswordUnavailable
from node.identity.passwords import PasswordSource, password_from_file, password_from_prompt


def test_env_source_reads_the_named_variable() -> None:
    source = PasswordSource(env_var="MY_PW")
    assert source.resolve({"MY_PW": "s3cret"}).get_secret_value() == "s3cret"
    assert "s3cret" not in repr(source.resolve({"MY_PW": "s3cret"}))
    with pytest.raises(PasswordUnavailable, match="MY_PW: not set"):
        source.resolve({})
    with pytest.raises(PasswordUnavailable, match="empty"):
        source.resolve({"MY_PW": ""})


def test_file_source_takes_the_first_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "pw"
    path.write_text("s3cret\nignored\n")
    path.chmod(0o600)
    assert PasswordSource(file=path).resolve({}).get_secret_value() == "s3cret"
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        password_from_file(path)
    assert "readable by others" in caplog.text and "s3cret" not in caplog.text
    with pytest.raises(PasswordUnavailable, match="No such file"):
        password_from_file(tmp_path / "absent")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(PasswordUnavailable, match="empty"):
        password_from_file(tmp_path / "empty")


def test_prompt_with_confirmation() -> None:
    answers = iter(["pw1", "pw1"])
    typed = password_from_prompt(confirm=True, prompt_fn=lambda _: next(answers))
    assert typed.get_secret_value() == "pw1"
    answers = iter(["pw1", "pw2"])
    with pytest.raises(PasswordUnavailable, match="differ"):
        password_from_prompt(confirm=True, prompt_fn=lambda _: next(answers))
    assert PasswordSource().resolve({}, prompt_fn=lambda _: "typed").get_secret_value() == "typed"


def test_env_and_file_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PasswordUnavailable, match="not both"):
        PasswordSource(env_var="X", file=tmp_path)
    assert PasswordSource(env_var="X").describe() == "environment variable X"
