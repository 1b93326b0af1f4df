"""The validator's view of one area of the storage layer.

Trusts: the storage layer (its listing, its authenticated decryption and
its version index). Guarantees: the validator sees only the committed,
current files of one area (uploads in progress live in ``staging/``, outside
every area); every read is decrypted and authenticated by the storage
layer; the files censusdrop itself writes (the reports) and the completion
marker at the area root are left out, so a report never judges itself nor
changes the digest; a folder that cannot be listed raises ``SourceError``
rather than being skipped, so no unreadable part of a tree passes unseen.

Each file comes with the SHA-256 of its plaintext and its version id from
the version index, so the report's digest covers contents, not only names
and sizes, and the validator's content cache knows an unchanged file
without opening it (``opened`` counts the files a run did open).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from typing import cast

import sqlalchemy as sa

from censusdrop.audit.locking import read_connection
from censusdrop.server.filesystem import REPORT_NAMES
from censusdrop.server.schema import file_versions
from censusdrop.server.storage.keyring import Keyring
from censusdrop.server.storage.store import Download
from censusdrop.server.storage.store import Storage
from censusdrop.server.storage.store import StorageError
from censusdrop.server.validation import SourceEntry
from censusdrop.server.validation import SourceError
from censusdrop.server.validation import TreeChanged
from censusdrop.server.validation.source import HARD_DEPTH_LIMIT

logger = logging.getLogger(__name__)

# A prefecture declares its submission complete by putting a file of this
# name (any content, any extension) at the root of its area.
MARKER_NAME = "提交完成.txt"
MARKER_STEM = "提交完成"

# The report files the server writes at the root of every area (read-only
# for prefectures: ``filesystem.REPORT_NAMES``).
TEXT_REPORT = "预审报告.txt"
HTML_REPORT = "预审报告.html"

READ_BUFFER = 64 * 1024


def is_marker(path: str) -> bool:
    """Whether ``path`` (relative to the area) is a completion marker."""
    if "/" in path:
        return False
    stem, dot, _ = path.rpartition(".")
    return path == MARKER_STEM or (bool(dot) and stem == MARKER_STEM)


def is_server_file(path: str) -> bool:
    """Whether ``path`` is a report censusdrop writes into every area."""
    return path in REPORT_NAMES


class StorageSource:
    """One area of ``Storage`` as a validator ``TreeSource``, for one run.

    The version index is read once per walk (ids, sizes, digests) rather
    than once per file, round keys once per run (see ``_RunKeyring``), and
    a file is opened where the walk found it, without looking it up again:
    the validator may open every file of a tree that holds thousands.
    """

    def __init__(self, storage: Storage, area: str) -> None:
        self._storage = storage
        self._area = area
        self._index: dict[str, _Indexed] = {}
        self._found: dict[str, str] = {}  # regular files the walk saw, on disk
        self._keyring = cast(Keyring, _RunKeyring(storage.keyring))
        self.opened = 0

    def walk(self) -> Iterator[SourceEntry]:
        if not self._storage.exists(self._area, ""):
            return  # nobody has logged in yet: an empty submission
        self._index = self._read_index()
        stack: list[tuple[str, int]] = [("", 0)]
        while stack:
            folder, depth = stack.pop()
            for entry in self._scan(folder):
                path = f"{folder}/{entry.name}" if folder else entry.name
                item = self._entry(entry, path)
                if item is None or is_server_file(path) or is_marker(path):
                    continue
                if item.is_dir and depth + 1 < HARD_DEPTH_LIMIT:
                    stack.append((path, depth + 1))
                yield item

    def open(self, path: str) -> BinaryIO:
        """The plaintext of the current version of ``path``.

        As ``Storage.open_read`` does, a file on disk that is not the
        version the index holds for ``path`` is refused (``NotCurrent``).
        """
        known = self._index.get(path)
        self.opened += 1
        try:
            if known is None:
                download = self._storage.open_read(self._area, path)
            else:
                download = Download(
                    self._local(path), self._keyring, path, expected_id=known.id
                )
        except (StorageError, OSError, ValueError) as exc:
            if self._replaced(path, known):
                raise TreeChanged(f"{path!r} changed during the run") from exc
            raise SourceError(f"cannot open {path!r}: {exc}") from exc
        return io.BufferedReader(_RawDownload(download), READ_BUFFER)

    def _replaced(self, path: str, known: _Indexed | None) -> bool:
        """Whether the index no longer holds the version the walk saw at
        ``path`` (an upload replaced it, or it was deleted or moved): then
        a failed open is the tree changing, not a damaged file."""
        try:
            current = self._storage.current_version(self._area, path)
        except (StorageError, sa.exc.SQLAlchemyError):
            return False
        if known is None:
            return current is None
        return current is None or current.id != known.id

    def _local(self, path: str) -> Path:
        found = self._found.get(path)
        if found is not None:
            return Path(found)  # below the area: listed by ``_scan``
        return self._storage.layout.existing(self._area, path)

    def _scan(self, folder: str) -> list[os.DirEntry[str]]:
        try:
            local = self._storage.layout.existing(self._area, folder)
            with os.scandir(local) as entries:
                return list(entries)
        except (StorageError, OSError, ValueError) as exc:
            raise SourceError(f"cannot list {folder or '.'!r}: {exc}") from exc

    def _entry(self, entry: os.DirEntry[str], path: str) -> SourceEntry | None:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError as exc:
            raise SourceError(f"cannot stat {path!r}: {exc.strerror}") from exc
        if stat.S_ISDIR(info.st_mode):
            return SourceEntry(path, True, 0, info.st_mtime)
        if not stat.S_ISREG(info.st_mode):
            # The storage layer makes neither links nor devices: left out.
            logger.warning("prereview skipped special file path=%r", path)
            return None
        self._found[path] = entry.path
        known = self._index.get(path)
        if known is None:  # committed but not indexed yet: ask the storage
            size = self._storage.stat(self._area, path).size
            return SourceEntry(path, False, size, info.st_mtime)
        return SourceEntry(
            path, False, known.size, info.st_mtime, known.sha256, known.id
        )

    def _read_index(self) -> dict[str, _Indexed]:
        """Id, size and plaintext SHA-256 of every current file, at once."""
        columns = file_versions.c
        query = sa.select(columns.path, columns.id, columns.size, columns.sha256)
        query = query.where(columns.area == self._area, columns.state == "current")
        with read_connection(self._storage.engine) as conn:
            return {
                path: _Indexed(version, size, sha256)
                for path, version, size, sha256 in conn.execute(query)
            }


@dataclasses.dataclass(frozen=True, slots=True)
class _Indexed:
    id: str
    size: int
    sha256: str


class _RunKeyring:
    """The keyring as one run sees it: each round key read once, not once
    per file (reading one means a key file read and a master-key unwrap).

    A round key destroyed while a run is going still opens the rest of that
    run's files, for a second or two; the next run is refused. Everything
    else is the keyring's own code.
    """

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring
        self._round_keys: dict[str, bytes] = {}

    def round_key(self, name: str) -> bytes:
        if name not in self._round_keys:
            self._round_keys[name] = self._keyring.round_key(name)
        return self._round_keys[name]

    def unwrap_file_key(self, round_name: str, wrapped: bytes, aad: bytes) -> bytes:
        # The keyring's method, which asks ``self.round_key`` for the key.
        return Keyring.unwrap_file_key(cast(Keyring, self), round_name, wrapped, aad)


class _RawDownload(io.RawIOBase):
    """A storage ``Download`` as a raw stream (``zipfile`` and ``io`` need
    ``readinto``, ``seekable`` and friends, which ``Download`` leaves out)."""

    def __init__(self, download: Download) -> None:
        super().__init__()
        self._download = download

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._download.seek(offset, whence)

    def tell(self) -> int:
        return self._download.tell()

    def close(self) -> None:
        if not self.closed:
            self._download.close()
        super().close()

    def _read(self, size: int) -> bytes:
        try:
            return self._download.read(size)
        except StorageError as exc:
            # An authentication failure is damage, not a malformed upload:
            # the operator must hear of it, the report shows it as unreadable.
            logger.error("stored file failed to decrypt name=%r", self._download.name)
            raise SourceError(f"cannot read {self._download.name!r}") from exc
