"""Errors of the storage layer.

Every error raised on purpose by ``censusdrop.server.storage`` derives from
:class:`StorageError`, so a caller at a boundary (an FTP reply, a CLI command)
can catch one class::

    StorageError
    ├── KeyringError          the key hierarchy cannot serve a request
    │   ├── KeyNotFound       no round key by that name
    │   ├── KeyDestroyed      the round key was destroyed (crypto-shredded)
    │   └── MasterKeyError    master key missing, wrong, corrupt or unsafe
    └── IntegrityError        authentication failed: damaged, forged or foreign
        └── FormatError       not a censusdrop encrypted file, or malformed

:class:`IntegrityError` carries one deliberately vague message whatever the
cause (a flipped bit, a dropped chunk, a wrong key): telling an attacker which
check failed helps them, and an operator learns nothing useful from it that
the file path and time do not already say. :class:`FormatError` is a kind of
integrity failure whose message may be specific, because it only describes
the structure anyone can see.

Misuse by the caller (a bad argument, a write after ``finish()``) raises the
builtin ``TypeError`` or ``ValueError`` instead, naming the argument.
"""

from __future__ import annotations

INTEGRITY_MESSAGE = (
    "authentication failed: the data is damaged, truncated, or was not "
    "written with these keys"
)


class StorageError(Exception):
    """Base class of every error the storage layer raises on purpose."""


class KeyringError(StorageError):
    """The key hierarchy cannot serve the request."""


class KeyNotFound(KeyringError):
    """No round key exists under the requested name."""


class KeyDestroyed(KeyringError):
    """The round key was destroyed; what it protected is unreadable for good."""


class MasterKeyError(KeyringError):
    """The master key is missing, wrong for this keyring, corrupt or exposed."""


class IntegrityError(StorageError):
    """Authenticated decryption failed.

    The message is the same for every cause on purpose.
    """

    def __init__(self, message: str = INTEGRITY_MESSAGE) -> None:
        super().__init__(message)


class FormatError(IntegrityError):
    """The bytes are not a well-formed censusdrop encrypted file or key file."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
