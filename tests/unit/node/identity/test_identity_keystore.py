"""Keystores: create/import/list/unlock, permissions, errors, and no key material leaking."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest
from eth_account import Account
from pydantic import SecretStr

from node.errors import IdentityError
from node.identity import keystore
from node.identity.errors import (
    InvalidKeyName,
    InvalidPrivateKey,
    KeystoreExists,
    KeystoreInvalid,
    KeystoreNotFound,
    WrongPassword,
)
from node.identity.keystore import KdfParams

FAST = KdfParams.insecure_fast()
PASSWORD = SecretStr("correct horse battery staple")
KEY_HEX = "0x" + "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


def test_create_then_unlock_roundtrip(tmp_path: Path) -> None:
    info = keystore.create(tmp_path / "keys", PASSWORD, "alice", kdf=FAST)
    account = keystore.unlock(info.path, PASSWORD)
    assert account.address == info.address
    assert info.path == tmp_path / "keys" / "alice.json"
    data = json.loads(info.path.read_text())
    assert data["version"] == 3 and data["crypto"]["kdf"] == "scrypt"
    assert data["crypto"]["kdfparams"]["n"] == FAST.work


def test_files_and_folder_are_private(tmp_path: Path) -> None:
    info = keystore.create(tmp_path / "keys", PASSWORD, "alice", kdf=FAST)
    assert stat.S_IMODE(info.path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert [p.name for p in (tmp_path / "keys").iterdir()] == ["alice.json"]  # no temp left


def test_pbkdf2_is_supported(tmp_path: Path) -> None:
    info = keystore.create(tmp_path, PASSWORD, "p", kdf=KdfParams("pbkdf2", 1000))
    assert json.loads(info.path.read_text())["crypto"]["kdf"] == "pbkdf2"
    assert keystore.unlock(info.path, PASSWORD).address == info.address


def test_import_known_key_gives_its_address(tmp_path: Path) -> None:
    info = keystore.import_key(tmp_path, SecretStr(KEY_HEX), PASSWORD, "known", kdf=FAST)
    assert info.address == Account.from_key(KEY_HEX).address
    assert keystore.unlock(info.path, PASSWORD).key.hex() == KEY_HEX[2:]


def test_import_refuses_duplicate_address_and_name(tmp_path: Path) -> None:
    keystore.import_key(tmp_path, SecretStr(KEY_HEX), PASSWORD, "known", kdf=FAST)
    with pytest.raises(KeystoreExists, match="address"):
        keystore.import_key(tmp_path, SecretStr(KEY_HEX[2:]), PASSWORD, "again", kdf=FAST)
    with pytest.raises(KeystoreExists, match="known"):
        keystore.create(tmp_path, PASSWORD, "known", kdf=FAST)
    assert [i.name for i in keystore.list_keystores(tmp_path)] == ["known"]


@pytest.mark.parametrize("bad", ["", "0x1234", "zz" * 32, "0x" + "00" * 32, "0x" + "ff" * 32])
def test_import_refuses_bad_keys_without_echoing_them(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvalidPrivateKey) as caught:
        keystore.import_key(tmp_path, SecretStr(bad), PASSWORD, "bad", kdf=FAST)
    if len(bad) > 8:
        assert bad not in str(caught.value)
    assert not list(tmp_path.iterdir())


def test_wrong_password(tmp_path: Path) -> None:
    info = keystore.create(tmp_path, PASSWORD, "alice", kdf=FAST)
    with pytest.raises(WrongPassword) as caught:
        keystore.unlock(info.path, SecretStr("nope"))
    assert isinstance(caught.value, IdentityError)
    assert "nope" not in str(caught.value)


def test_unlock_errors(tmp_path: Path) -> None:
    with pytest.raises(KeystoreNotFound):
        keystore.unlock(tmp_path / "missing.json", PASSWORD)
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(KeystoreInvalid):
        keystore.unlock(tmp_path / "junk.json", PASSWORD)


def test_list_skips_invalid_files_and_sorts(tmp_path: Path) -> None:
    b = keystore.create(tmp_path, PASSWORD, "bob", kdf=FAST)
    a = keystore.create(tmp_path, PASSWORD, "alice", kdf=FAST)
    (tmp_path / "junk.json").write_text("[]")
    assert keystore.list_keystores(tmp_path) == [a, b]
    assert keystore.list_keystores(tmp_path / "absent") == []


def test_resolve_by_name_address_or_path(tmp_path: Path) -> None:
    info = keystore.create(tmp_path, PASSWORD, "alice", kdf=FAST)
    assert keystore.resolve_keystore("alice", tmp_path) == info.path
    assert keystore.resolve_keystore(info.address.lower(), tmp_path) == info.path
    assert keystore.resolve_keystore(str(info.path), tmp_path / "elsewhere") == info.path
    with pytest.raises(KeystoreNotFound):
        keystore.resolve_keystore("carol", tmp_path)


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "x" * 65, "sp ace"])
def test_invalid_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidKeyName):
        keystore.create(tmp_path, PASSWORD, name, kdf=FAST)


def test_no_key_material_in_reprs_or_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = SecretStr(KEY_HEX)
    info = keystore.import_key(tmp_path, secret, PASSWORD, "known", kdf=FAST)
    account = keystore.unlock(info.path, PASSWORD)
    with pytest.raises(WrongPassword) as caught:
        keystore.unlock(info.path, SecretStr("wrong-" + KEY_HEX))
    rendered = " ".join([
        repr(info), str(info), repr(secret), str(secret), repr(PASSWORD), str(PASSWORD),
        repr(account), str(account), repr(caught.value), caplog.text,
    ])
    assert KEY_HEX[2:] not in rendered.lower()
    assert PASSWORD.get_secret_value() not in rendered
    assert info.address in caplog.text  # the logs do say what happened
