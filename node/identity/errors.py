# ruff: noqa: N818 (the names read as facts: KeystoreNotFound, WrongPassword)
"""The identity layer's error subtree (everything under :class:`~node.errors.IdentityError`).

Messages name the keystore (path or name) and never carry a password or key material.
"""

from __future__ import annotations

from typing import ClassVar

from node.errors import IdentityError


class KeystoreNotFound(IdentityError):
    """No keystore at that path, or no keystore with that name or address in a folder."""

    template: ClassVar[str] = "no keystore {what} in {where}"


class KeystoreExists(IdentityError):
    """Creating or importing would overwrite a keystore (same name or same address)."""

    template: ClassVar[str] = "a keystore for {what} already exists at {path}"


class KeystoreInvalid(IdentityError):
    """A file that is not a readable eth-account V3 keystore."""

    template: ClassVar[str] = "{path} is not a valid keystore: {reason}"


class WrongPassword(IdentityError):
    """The password does not decrypt the keystore (MAC mismatch)."""

    template: ClassVar[str] = "wrong password for keystore {path}"


class PasswordUnavailable(IdentityError):
    """The configured password source gave nothing usable (unset variable, missing file…)."""

    template: ClassVar[str] = "no password from {source}: {reason}"


class InvalidKeyName(IdentityError):
    """A keystore name that cannot be used as a file name."""

    template: ClassVar[str] = (
        "invalid keystore name {name!r}: use 1-64 letters, digits, '.', '_' or '-'"
    )


class InvalidPrivateKey(IdentityError):
    """Text that is not a 32-byte secp256k1 private key (the text itself is never shown)."""

    template: ClassVar[str] = "not a valid private key: {reason}"
