"""Where the validator reads a tree from.

The validator sees a prefecture's area only through :class:`TreeSource`, so
that it can read plain directories (tests, previews of imports) and, later,
the encrypted storage layer alike. :class:`DirectorySource` is the plain
directory reader.

What it guarantees: it never reads outside its root. Symbolic links are not
followed at all (not even those pointing inside the root): they are left out
of the walk and listed in ``refused``, and ``open`` refuses any path whose
real location is outside the root or that is itself a link. A folder that
cannot be listed raises :class:`SourceError` rather than being skipped, so
that an unreadable part of a tree can never pass unseen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import stat
from collections.abc import Iterable
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from typing import BinaryIO
from typing import Protocol
from typing import cast

from .model import ValidationError

log = logging.getLogger(__name__)

# Deeper folders are listed but not entered: a guard against runaway trees.
HARD_DEPTH_LIMIT = 64


class SourceError(ValidationError):
    """The tree or one of its files cannot be read."""


class TreeChanged(SourceError):
    """A file changed while the tree was being judged (an upload replaced
    or removed it): the run is void and the tree is judged again."""


@dataclasses.dataclass(frozen=True, slots=True)
class SourceEntry:
    """One file or folder of a tree.

    ``path`` is POSIX, relative to the area root, without leading or
    trailing slash. ``mtime`` is POSIX seconds. ``sha256`` is the hex digest
    of the plaintext when the source knows it (the storage index does); the
    tree digest then covers contents, not just sizes and times. ``version``
    names this exact content, never reused for other content (the storage
    layer's version id), when the source can vouch for one; with
    ``sha256`` it lets a :class:`ContentCache` skip opening the file.
    """

    path: str
    is_dir: bool
    size: int
    mtime: float
    sha256: str | None = None
    version: str | None = None


class TreeSource(Protocol):
    def walk(self) -> Iterable[SourceEntry]:
        """Every file and folder of the tree, in any order."""
        ...

    def open(self, path: str) -> BinaryIO:
        """The plaintext of a file, seekable."""
        ...


@contextlib.contextmanager
def reading(source: TreeSource, path: str) -> Iterator[IO[bytes]]:
    """``source.open(path)`` for a reader that may swallow exceptions.

    Some readers (olefile, the spreadsheet libraries) turn any exception
    into their own verdict on the file. A ``SourceError`` while reading is
    the source failing, not the file: it is raised again when the reading
    is over, so that it never stands (or is remembered) as a fault of the
    file's content.
    """
    with source.open(path) as fp:
        stream = _Watched(fp)
        yield cast(IO[bytes], stream)
    if stream.failure is not None:
        raise stream.failure


class DirectorySource:
    """A plain directory as a :class:`TreeSource`."""

    def __init__(self, root: Path) -> None:
        self._root = os.path.realpath(root)
        if not os.path.isdir(self._root):
            raise SourceError(f"not a directory: {root}")
        self.refused: list[str] = []

    def walk(self) -> Iterator[SourceEntry]:
        stack: list[tuple[str, int]] = [("", 0)]
        while stack:
            rel, depth = stack.pop()
            children = self._scan(rel)
            for entry in sorted(children, key=lambda e: e.name, reverse=True):
                path = f"{rel}/{entry.name}" if rel else entry.name
                item = self._entry(entry, path)
                if item is None:
                    continue
                if item.is_dir and depth + 1 < HARD_DEPTH_LIMIT:
                    stack.append((path, depth + 1))
                yield item

    def open(self, path: str) -> BinaryIO:
        full = self._resolve(path)
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
        try:
            fd = os.open(full, flags)
        except OSError as exc:
            raise SourceError(f"cannot open {path!r}: {exc.strerror}") from exc
        return os.fdopen(fd, "rb")

    def _scan(self, rel: str) -> list[os.DirEntry[str]]:
        folder = os.path.join(self._root, rel) if rel else self._root
        try:
            with os.scandir(folder) as it:
                return list(it)
        except OSError as exc:
            raise SourceError(f"cannot list {rel or '.'!r}: {exc.strerror}") from exc

    def _entry(self, entry: os.DirEntry[str], path: str) -> SourceEntry | None:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            raise SourceError(f"cannot stat {path!r}: {exc.strerror}") from exc
        if stat.S_ISLNK(st.st_mode):
            log.warning("symlink refused path=%r", path)
            self.refused.append(path)
            return None
        is_dir = stat.S_ISDIR(st.st_mode)
        if not is_dir and not stat.S_ISREG(st.st_mode):
            log.warning("special file refused path=%r", path)
            self.refused.append(path)
            return None
        return SourceEntry(path, is_dir, 0 if is_dir else st.st_size, st.st_mtime)

    def _resolve(self, path: str) -> str:
        parts = path.split("/")
        if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise SourceError(f"not a relative tree path: {path!r}")
        full = os.path.join(self._root, *parts)
        # The parent's real location must stay under the root: a linked
        # folder on the way would otherwise lead out of it.
        parent = os.path.realpath(os.path.dirname(full))
        if os.path.commonpath([parent, self._root]) != self._root:
            raise SourceError(f"path leaves the tree: {path!r}")
        return full


class _Watched(io.RawIOBase):
    """A source's stream that keeps the first ``SourceError`` it raised."""

    def __init__(self, inner: BinaryIO) -> None:
        super().__init__()
        self._inner = inner
        self.failure: SourceError | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            data = self._inner.read(len(buffer))
        except SourceError as exc:
            self.failure = self.failure or exc
            raise
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        try:
            return self._inner.seek(offset, whence)
        except SourceError as exc:
            self.failure = self.failure or exc
            raise

    def tell(self) -> int:
        return self._inner.tell()
