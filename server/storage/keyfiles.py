"""Small, durable, private files for the keyring.

Trusts: the local filesystem to honour ``fsync``, ``rename`` and ``link``
as POSIX describes; the process umask only ever to narrow permissions.

Guarantees:

- a file written by :func:`write_atomic` is either wholly the old content
  or wholly the new one after a crash, and is never readable by anyone but
  the owner (created ``0600`` before a byte is written); with ``shared``,
  and only when its folder lets its group read, the file gets that
  folder's group and ``0640``, also before a byte is written;
- :func:`create_exclusive` never replaces an existing file;
- :func:`shred` overwrites a file in place, makes that durable, then unlinks
  it and makes the unlink durable. On copy-on-write or wear-levelled storage
  the old blocks may survive; the keyring's design makes that harmless only
  as long as the master key that wrapped them is also gone (see keyring);
- :class:`Secret` never shows its value in ``repr``, ``str`` or a pickle.

The record format is line-oriented ASCII: a title line naming the kind and
version, then ``name: value`` lines in a fixed order, each ending in ``\\n``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .errors import FormatError

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
SHARED_FILE_MODE = 0o640
MAX_RECORD_SIZE = 4096


class Secret:
    """Key material whose representation never shows the value."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if not isinstance(value, bytes):
            raise TypeError("value must be bytes")
        self._value = value

    def reveal(self) -> bytes:
        """The raw bytes; call at the point of use, never to log or store."""
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("key material cannot be pickled")


def encode_record(title: str, fields: Sequence[tuple[str, str]]) -> bytes:
    """Serialize a record; ``fields`` keep their order."""
    lines = [title] + [f"{name}: {value}" for name, value in fields]
    return ("\n".join(lines) + "\n").encode("ascii")


def decode_record(
    data: bytes, title: str, required: Sequence[str], optional: Sequence[str] = ()
) -> dict[str, str]:
    """Parse a record strictly: known fields only, no duplicates, no gaps."""
    if len(data) > MAX_RECORD_SIZE or not data.endswith(b"\n"):
        _malformed(title, "size or ending")
    try:
        lines = data.decode("ascii").split("\n")[:-1]
    except UnicodeDecodeError:
        _malformed(title, "not ASCII")
    if not lines or lines[0] != title:
        _malformed(title, "title line")

    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(": ")
        known = name in required or name in optional
        if not sep or not value or not known or name in fields:
            _malformed(title, f"line {line[:40]!r}")
        fields[name] = value

    missing = [name for name in required if name not in fields]
    if missing:
        _malformed(title, f"missing {', '.join(missing)}")
    return fields


def read_record_file(path: Path) -> bytes:
    """Read a small key file whole; bigger than a record means corrupt."""
    with open(path, "rb") as handle:
        data = handle.read(MAX_RECORD_SIZE + 1)
    return data


def write_atomic(
    path: Path, data: bytes, *, shred_replaced: bool = False, shared: bool = False
) -> None:
    """Replace ``path`` with ``data`` durably and atomically, mode 0600
    (``shared``: see :func:`folder_share`).

    With ``shred_replaced``, the replaced content is overwritten once the
    new content is in place (a second link keeps the old inode reachable
    until then), so a rotated-out key does not linger in free blocks.
    """
    temporary = temporary_name(path)
    replaced = temporary_name(path) if shred_replaced else None
    try:
        _write_new(temporary, data, shared)
        if replaced is not None:
            with contextlib.suppress(FileNotFoundError):
                os.link(path, replaced)
        os.replace(temporary, path)
    except BaseException:
        # Unlink only: before the replace, ``replaced`` is still the live file.
        for leftover in (temporary, replaced):
            if leftover is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
        raise
    fsync_dir(path.parent)
    if replaced is not None and replaced.exists():
        shred(replaced)


def create_exclusive(path: Path, data: bytes, *, shared: bool = False) -> bool:
    """Create ``path`` with ``data`` unless it exists; True if created
    (``shared``: see :func:`folder_share`).

    The content is complete before the name appears (write aside, then
    ``link``), so a reader never sees a half-written key file.
    """
    temporary = temporary_name(path)
    try:
        _write_new(temporary, data, shared)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    fsync_dir(path.parent)
    return True


def temporary_name(path: Path) -> Path:
    """A hidden sibling name that ``leftover_temporaries`` recognizes."""
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")


def leftover_temporaries(path: Path) -> list[Path]:
    """Temporaries of ``path`` left by a crash between write and rename."""
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


def sweep_temporaries(path: Path) -> int:
    """Shred crash leftovers of ``path``; call only under the keyring lock.

    A leftover that is another link to the live file is only unlinked:
    overwriting it would overwrite the live key.
    """
    swept = 0
    for leftover in leftover_temporaries(path):
        if path.exists() and os.path.samefile(leftover, path):
            os.unlink(leftover)
        else:
            shred(leftover)
        swept += 1
    return swept


def shred(path: Path) -> None:
    """Overwrite ``path`` with random bytes, then unlink it, durably."""
    with open(path, "r+b", buffering=0) as handle:
        size = os.fstat(handle.fileno()).st_size
        handle.write(secrets.token_bytes(size))
        os.fsync(handle.fileno())
    os.unlink(path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make renames, links and unlinks in ``path`` durable."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def make_private_dir(path: Path) -> bool:
    """Create ``path`` mode 0700, or tighten it if it exists but is empty.

    Returns False, changing nothing, for a non-empty directory that others
    can reach: tightening a directory someone else may rely on is not ours
    to do silently.
    """
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077 == 0:
        return True
    if any(path.iterdir()):
        return False
    os.chmod(path, PRIVATE_DIR_MODE)
    return True


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an advisory lock on ``path`` across processes (flock)."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def folder_share(folder: Path) -> int | None:
    """The group a shared file in ``folder`` gets: the folder's, when the
    folder lets its group read; None (owner only) otherwise."""
    info = folder.stat()
    return info.st_gid if info.st_mode & stat.S_IRGRP else None


def _write_new(path: Path, data: bytes, shared: bool = False) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    descriptor = os.open(path, flags, PRIVATE_FILE_MODE)
    try:
        group = folder_share(path.parent) if shared else None
        if group is not None:
            os.fchown(descriptor, -1, group)
            os.fchmod(descriptor, SHARED_FILE_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _malformed(title: str, detail: str) -> NoReturn:
    raise FormatError(f"malformed key file ({title!r}): {detail}")
