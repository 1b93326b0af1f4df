"""Errors of the storage layer.

Every error raised on purpose by ``censusdrop.server.storage`` derives from
:class:`StorageError`, so a caller at a boundary (an FTP reply, a CLI command)
can catch one class::

    StorageError
    ├── KeyringError          the key hierarchy cannot serve a request
    │   ├── KeyNotFound       no round key by that name
    │   ├── KeyDestroyed      the round key was destroyed (crypto-shredded)
    │   ├── MasterKeyError    master key missing, wrong, corrupt or unsafe
    │   └── KeyFileError      a round key file cannot be read (gone since
    │       │                 it was read, a folder in its place, I/O error)
    │       └── KeyFileDamaged  ... or is malformed or not authentic (also
    │                           a FormatError, so an IntegrityError)
    ├── IntegrityError        authentication failed: damaged, forged or foreign
    │   ├── FormatError       not a censusdrop encrypted file, or malformed
    │   └── NotCurrent        a file that is not the version indexed at its path
    ├── NotFound              no file or folder at that path
    ├── AlreadyExists         something is already at that path
    ├── WrongKind             a file where a folder was expected, or the reverse
    ├── NotEmpty              a folder to be removed still holds something
    ├── NoSpace               the disk is full; nothing was changed
    └── ResumeRefused         no resumable upload there, or not at that offset

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


class KeyFileError(KeyringError):
    """A round key file cannot be used; the message names the file.

    Every file under that key is unreadable until the key file is restored,
    though the stored files themselves may well be intact.
    """


class QuotaExceeded(StorageError):
    """An area would go over its quota of bytes or of files."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


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


class KeyFileDamaged(KeyFileError, FormatError):
    """A round key file is malformed, or does not authenticate under the
    master key (edited, swapped, or from another keyring)."""


class NotCurrent(IntegrityError):
    """The file at a path is not the version the index says is current there.

    A whole file swapped or rolled back on disk authenticates on its own;
    only its file id, checked against the index, gives it away.
    """

    def __init__(self) -> None:
        super().__init__(
            "the file on disk is not the current version indexed for its path"
        )


class NotFound(StorageError):
    """No file or folder at that path."""


class AlreadyExists(StorageError):
    """Something is already at that path."""


class WrongKind(StorageError):
    """A file where a folder was expected, or the other way round."""


class NotEmpty(StorageError):
    """A folder to be removed still holds something."""


class NoSpace(StorageError):
    """The disk is full; nothing was changed."""


class ResumeRefused(StorageError):
    """An upload cannot resume where the client asked.

    ``offset`` is where it could resume, or None when nothing can be
    resumed (no partial upload of this account at that path).
    """

    def __init__(self, message: str, offset: int | None) -> None:
        super().__init__(message)
        self.offset = offset
