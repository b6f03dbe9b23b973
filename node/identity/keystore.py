"""Encrypted keystores: eth-account V3 JSON files, one per key, in a keystore folder.

A keystore folder holds ``<name>.json`` files (mode 0600, folder 0700). The name is the
user's label for the key; the address is read from the file, so listing needs no password.
Keys are created or imported, written atomically (temp file + hard link, which also refuses
to overwrite), and decrypted only by :func:`unlock`, which returns an eth-account
``LocalAccount``.

The key derivation is chosen with :class:`KdfParams`: the default is scrypt with
n = 2**18 (geth's "standard" strength, about half a second per unlock);
:meth:`KdfParams.insecure_fast` is for tests and throwaway devnet accounts only.

Nothing here logs, prints or puts into an error message a password or a private key.
Unlocking is CPU-bound (scrypt): async callers run it with ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_keyfile.exceptions import EthKeyfileValueError
from eth_utils.address import to_checksum_address
from pydantic import SecretStr

from node.identity.errors import (
    InvalidKeyName,
    InvalidPrivateKey,
    KeystoreExists,
    KeystoreInvalid,
    KeystoreNotFound,
    WrongPassword,
)

logger = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HEX_KEY = re.compile(r"(0x)?[0-9a-fA-F]{64}")
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SUFFIX = ".json"


@dataclass(frozen=True)
class KdfParams:
    """How a password is stretched into the keystore's encryption key.

    ``work`` is scrypt's ``n`` (a power of two) or pbkdf2's iteration count.
    """

    kind: Literal["scrypt", "pbkdf2"] = "scrypt"
    work: int = 2**18

    @classmethod
    def insecure_fast(cls) -> KdfParams:
        """Milliseconds per unlock: for tests and devnet throwaway keys, never real funds."""
        return cls("scrypt", 2**4)


@dataclass(frozen=True)
class KeystoreInfo:
    """A keystore on disk: its label, address and file (no secret, safe to log)."""

    name: str
    address: str
    path: Path


def validate_name(name: str) -> str:
    """``name`` if it can be a keystore file name, else :class:`InvalidKeyName`."""
    if not _NAME.fullmatch(name) or name.startswith("."):
        raise InvalidKeyName(name=name)
    return name


def parse_private_key(text: SecretStr) -> bytes:
    """32 key bytes from hex text (``0x`` optional, surrounding space ignored)."""
    raw = text.get_secret_value().strip()
    if not _HEX_KEY.fullmatch(raw):
        raise InvalidPrivateKey(reason="expected 64 hex digits, optionally prefixed by 0x")
    key = bytes.fromhex(raw[2:] if raw.startswith("0x") else raw)
    if not 0 < int.from_bytes(key, "big") < _SECP256K1_N:
        raise InvalidPrivateKey(reason="out of the secp256k1 range")
    return key


def read_private_key_file(path: Path) -> SecretStr:
    """The hex private key stored in ``path`` (for ``keys import --key-file``)."""
    try:
        return SecretStr(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KeystoreNotFound(what="key file", where=str(path)) from exc


def _write_exclusive(path: Path, payload: dict[str, Any], what: str) -> None:
    """Write ``payload`` to ``path`` with mode 0600; refuse if ``path`` exists."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # atomic, and fails instead of overwriting
        except FileExistsError as exc:
            raise KeystoreExists(what=what, path=str(path)) from exc
    finally:
        tmp.unlink(missing_ok=True)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise KeystoreNotFound(what=f"file {path.name}", where=str(path.parent)) from exc
    except (OSError, ValueError) as exc:
        raise KeystoreInvalid(path=str(path), reason=type(exc).__name__) from exc
    if not isinstance(data, dict) or not isinstance(data.get("crypto"), dict):
        raise KeystoreInvalid(path=str(path), reason="no 'crypto' section")
    if data.get("version") != 3:
        raise KeystoreInvalid(path=str(path), reason="only version 3 keystores are supported")
    return data


def _address_of(data: dict[str, Any], path: Path) -> str:
    raw = data.get("address")
    if not isinstance(raw, str):
        raise KeystoreInvalid(path=str(path), reason="no address field")
    try:
        return str(to_checksum_address(raw if raw.startswith("0x") else "0x" + raw))
    except ValueError as exc:
        raise KeystoreInvalid(path=str(path), reason="malformed address field") from exc


def list_keystores(directory: Path) -> list[KeystoreInfo]:
    """Every valid keystore in ``directory``, sorted by name (others skipped with a warning)."""
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        if path.name.startswith("."):
            continue
        try:
            address = _address_of(_read_json(path), path)
        except KeystoreInvalid as exc:
            logger.warning("skipping keystore file path=%s reason=%s", path, exc)
            continue
        found.append(KeystoreInfo(name=path.name[: -len(SUFFIX)], address=address, path=path))
    return found


def _store(
    directory: Path, key: bytes, password: SecretStr, name: str, kdf: KdfParams
) -> KeystoreInfo:
    validate_name(name)
    address = str(Account.from_key(key).address)
    for existing in list_keystores(directory):
        if existing.address == address:
            raise KeystoreExists(what=f"address {address}", path=str(existing.path))
    payload = Account.encrypt(key, password.get_secret_value(), kdf=kdf.kind, iterations=kdf.work)
    path = directory / f"{name}{SUFFIX}"
    _write_exclusive(path, payload, f"name {name!r}")
    logger.info("keystore written name=%s address=%s kdf=%s", name, address, kdf.kind)
    return KeystoreInfo(name=name, address=address, path=path)


def create(
    directory: Path, password: SecretStr, name: str, *, kdf: KdfParams | None = None
) -> KeystoreInfo:
    """Make a new random key and store it encrypted as ``directory/<name>.json``."""
    return _store(directory, secrets.token_bytes(32), password, name, kdf or KdfParams())


def import_key(
    directory: Path,
    private_key: SecretStr,
    password: SecretStr,
    name: str,
    *,
    kdf: KdfParams | None = None,
) -> KeystoreInfo:
    """Store an existing hex private key encrypted; refuses a duplicate name or address."""
    return _store(directory, parse_private_key(private_key), password, name, kdf or KdfParams())


def resolve_keystore(reference: str, directory: Path) -> Path:
    """A keystore file from a path, a name in ``directory``, or an address in ``directory``."""
    as_path = Path(reference).expanduser()
    if as_path.is_file():
        return as_path
    for info in list_keystores(directory):
        if reference in (info.name, info.address) or reference.lower() == info.address.lower():
            return info.path
    raise KeystoreNotFound(what=f"named {reference!r}", where=str(directory))


def unlock(path: Path, password: SecretStr) -> LocalAccount:
    """Decrypt the keystore at ``path``; :class:`WrongPassword` if the MAC does not match."""
    data = _read_json(path)
    expected = _address_of(data, path)
    try:
        key = Account.decrypt(data, password.get_secret_value())
    except EthKeyfileValueError as exc:
        if "MAC mismatch" in str(exc):
            raise WrongPassword(path=str(path)) from None
        raise KeystoreInvalid(path=str(path), reason=type(exc).__name__) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise KeystoreInvalid(path=str(path), reason=type(exc).__name__) from None
    account: LocalAccount = Account.from_key(key)
    if account.address != expected:
        raise KeystoreInvalid(path=str(path), reason="decrypted key does not match its address")
    logger.info("keystore unlocked path=%s address=%s", path, account.address)
    return account
