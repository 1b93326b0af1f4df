"""The storage layer: every byte that enters or leaves goes through here.

Trusts: the keyring (keys), the database (the version index, ``index``)
and the data root (a folder no other program writes). Guarantees:

- an upload is written, encrypted, to a staging file and becomes visible at
  its path only when committed complete: fsync, then the index row, then
  an atomic rename; a crash between the row and the rename is finished at
  the next start-up, and an upload that never got its row never shows;
- an interrupted upload of an account is kept, for a while, as a partial
  that the same account can resume (``partials``); partials never show;
- overwriting, deleting or renaming over a file keeps the earlier version;
- file contents on disk are encrypted (``censusdrop.server.storage.crypto``)
  under the round key that ``key_resolver`` names for the area at the
  moment the upload starts (``key_name`` when it names none),
  every read is authenticated, and a file whose id is not the one the index
  holds for its path is refused (``NotCurrent``): a file swapped or rolled
  back on disk does not read as current.

Layout under the data root::

    areas/<area>/<path>      current files (encrypted), folders as folders
    versions/<area>/<id>     earlier versions, by version id
    staging/                 uploads in progress and partials, never listed

Areas are prefecture codes. Paths are relative POSIX strings whose
components ``censusdrop.server.names`` has already checked.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
import errno
import logging
import os
import threading
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from censusdrop.audit.locking import lookup_connection
from censusdrop.audit.locking import read_connection

from . import index
from .crypto import plaintext_size_of
from .crypto import read_header
from .errors import AlreadyExists
from .errors import NoSpace
from .errors import NotCurrent
from .errors import NotEmpty
from .errors import NotFound
from .errors import QuotaExceeded
from .errors import ResumeRefused
from .errors import StorageError
from .errors import WrongKind
from .keyring import Keyring
from .layout import Layout
from .layout import fsync_dir
from .partials import DEFAULT_LIFETIME
from .partials import PartialKey
from .partials import Partials
from .staging import Staging
from .streams import COPY_CHUNK
from .streams import Download
from .streams import Upload
from .streams import VersionInfo

logger = logging.getLogger(__name__)

# A live upload in another process is locked; this only covers the moment
# between creating a staging file and locking it.
SWEEP_GRACE = dt.timedelta(minutes=1)


@dataclasses.dataclass(frozen=True)
class Quota:
    """Most bytes and files an area may hold (0: no limit). Applies to the
    uploads of accounts, not to what the server itself writes."""

    bytes: int = 0
    files: int = 0


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    is_dir: bool
    size: int
    mtime: float


# Given an area, the round key its new files go under (None: ``key_name``).
KeyResolver = Callable[[str], str | None]


class Storage:
    """The data root, its encryption, its version index and its partials.

    ``key_resolver`` is asked once per upload (never per chunk), so it may
    read the database; without it every file goes under ``key_name``.
    """

    def __init__(
        self,
        data_root: Path,
        keyring: Keyring,
        engine: sa.Engine,
        *,
        key_name: str = "default",
        key_resolver: KeyResolver | None = None,
        partial_lifetime: dt.timedelta = DEFAULT_LIFETIME,
        quota: Quota = Quota(),
    ) -> None:
        self.root = data_root
        self.quota = quota
        self.keyring = keyring
        self.engine = engine
        self.key_name = key_name
        self.key_resolver = key_resolver
        self._ensured: set[str] = set()
        self._ensure_lock = threading.Lock()
        self.layout = Layout(data_root)
        self.partials = Partials(self.layout.staging, partial_lifetime)
        self.staging = Staging(
            layout=self.layout,
            keyring=keyring,
            engine=engine,
            partials=self.partials,
            key_for=self.key_for,
        )

    def key_for(self, area: str) -> str:
        """The round key a new file in ``area`` is encrypted under; created
        on first use (``KeyDestroyed`` if it was destroyed)."""
        resolved = self.key_resolver(area) if self.key_resolver else None
        name = resolved or self.key_name
        with self._ensure_lock:
            if name not in self._ensured:
                self.keyring.ensure_round_key(name)
                self._ensured.add(name)
        return name

    # --- set-up and sweeping

    def prepare(self, *, at: dt.datetime | None = None, sweep: bool = True) -> int:
        """Create the layout and (unless ``sweep`` is False, as for a tool
        running beside a server) recover staging after a crash.

        Returns how many leftover files were removed.
        """
        self.layout.create()
        self.keyring.ensure_round_key(self.key_name)
        if not sweep:
            return 0
        swept = self.sweep(at=at, grace=dt.timedelta(0))
        if swept:
            logger.warning("storage swept=%d staging leftovers", swept)
        return swept

    def sweep(
        self, *, at: dt.datetime | None = None, grace: dt.timedelta = SWEEP_GRACE
    ) -> int:
        """Finish committed uploads a crash left in staging, keep interrupted
        ones as partials, remove expired partials; return files removed."""
        return self.staging.sweep(at=at or _now(), grace=grace)

    def ensure_area(self, area: str) -> None:
        self.layout.area_dir(area).mkdir(parents=True, exist_ok=True, mode=0o700)

    # --- reading

    def list(self, area: str, path: str) -> list[Entry]:
        folder = self.layout.existing(area, path)
        if not folder.is_dir():
            raise WrongKind(f"{path} is not a folder")
        return [self._entry(child) for child in sorted(folder.iterdir())]

    def stat(self, area: str, path: str) -> Entry:
        return self._entry(self.layout.existing(area, path))

    def exists(self, area: str, path: str) -> bool:
        return self.layout.local(area, path).exists()

    def open_read(self, area: str, path: str) -> Download:
        """The current file at ``path``; ``NotCurrent`` if the file on disk
        is not the version the index holds for it."""
        local = self.layout.existing(area, path)
        if local.is_dir():
            raise WrongKind(f"{path} is a folder")
        current = self.current_version(area, path)
        if current is None:
            raise NotCurrent()
        return Download(
            local, self.keyring, path, expected_id=current.id, sha256=current.sha256
        )

    def read_bytes(self, area: str, path: str) -> bytes:
        with self.open_read(area, path) as handle:
            return handle.read()

    def walk(self, area: str) -> Iterator[tuple[str, Entry]]:
        """Every file and folder of an area as (relative path, entry)."""
        top = self.layout.area_dir(area)
        if not top.is_dir():
            return
        for folder, dirs, files in os.walk(top):
            dirs.sort()
            base = Path(folder)
            for name in sorted(dirs) + sorted(files):
                local = base / name
                yield local.relative_to(top).as_posix(), self._entry(local)

    # --- writing

    def begin_upload(
        self,
        area: str,
        path: str,
        account: str | None,
        *,
        append: bool = False,
        resumable: bool = False,
        at: dt.datetime | None = None,
    ) -> Upload:
        """Start writing ``path``; nothing is visible until ``commit``.

        With ``resumable`` (an FTP upload of ``account``), an interrupted
        upload is kept as a partial; a new upload replaces the account's
        partial at that path, and ``append`` continues it when there is one.
        """
        at = at or _now()
        self.layout.check_target(area, path)
        key = PartialKey(area, path, account) if resumable and account else None
        if key is not None and append:
            resumed = self.staging.take(key, at)
            if resumed is not None:
                return resumed
        elif key is not None:
            self.partials.discard(key)
        allowance = self._allowance(area, path) if key is not None else None
        upload = self.staging.new(area, path, account, key)
        upload.allowance = allowance
        if append and self.layout.local(area, path).exists():
            try:
                with self.open_read(area, path) as current:
                    while chunk := current.read(COPY_CHUNK):
                        upload.write(chunk)
            except BaseException:
                upload.discard()
                raise
        return upload

    def resumable_offset(
        self, area: str, path: str, account: str, *, at: dt.datetime | None = None
    ) -> int | None:
        """Where ``account``'s interrupted upload of ``path`` resumes, if any."""
        return self.partials.offset(PartialKey(area, path, account), at=at or _now())

    def resume_upload(
        self,
        area: str,
        path: str,
        account: str,
        offset: int,
        *,
        at: dt.datetime | None = None,
    ) -> Upload:
        """Continue ``account``'s partial upload of ``path`` at ``offset``.

        ``ResumeRefused`` (with the offset it could resume at, or None) when
        there is no partial or it is not at ``offset``; ``IntegrityError``
        (the partial is then removed) when its chunks do not authenticate.
        """
        at = at or _now()
        self.layout.check_target(area, path)
        upload = self.staging.take(PartialKey(area, path, account), at)
        if upload is None:
            raise ResumeRefused(f"no partial upload of {path} to resume", None)
        if upload.resumed_from != offset:
            actual = upload.suspend(at=at)
            raise ResumeRefused(f"{path} resumes at {actual}, not {offset}", actual)
        upload.allowance = self._allowance(area, path)
        return upload

    def usage(self, area: str) -> tuple[int, int]:
        """Bytes and number of the current files of ``area``."""
        with read_connection(self.engine) as conn:
            return index.usage(conn, area)

    def _allowance(self, area: str, path: str) -> int | None:
        """How many bytes an upload to ``path`` may hold under the quota;
        ``QuotaExceeded`` when it may not start at all."""
        quota = self.quota
        if not (quota.bytes or quota.files):
            return None
        with read_connection(self.engine) as conn:
            used, files = index.usage(conn, area)
            current = index.current(conn, area, path)
        replaced = current.size if current is not None else 0
        if quota.files and current is None and files >= quota.files:
            raise QuotaExceeded(f"{area} holds {files} files", "files")
        if not quota.bytes:
            return None
        allowance = quota.bytes - used + replaced
        if allowance <= 0:
            raise QuotaExceeded(f"{area} holds {used} bytes", "bytes")
        return allowance

    def write_bytes(
        self, area: str, path: str, data: bytes, account: str | None
    ) -> VersionInfo:
        upload = self.begin_upload(area, path, account)
        try:
            upload.write(data)
            return upload.commit()
        finally:
            upload.close()

    def mkdir(self, area: str, path: str) -> None:
        local = self.layout.local(area, path)
        try:
            local.mkdir(mode=0o700)
        except FileExistsError:
            raise AlreadyExists(f"{path} already exists") from None
        except FileNotFoundError:
            raise NotFound(f"folder of {path} does not exist") from None

    def rmdir(self, area: str, path: str) -> None:
        local = self.layout.existing(area, path)
        if not local.is_dir() or not path:
            raise WrongKind(f"{path} is not a folder")
        try:
            local.rmdir()
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise NotEmpty(f"{path} is not empty") from None
            raise

    def remove(self, area: str, path: str, account: str | None) -> VersionInfo:
        """Delete a file; its last version is kept."""
        local = self.layout.existing(area, path)
        if local.is_dir():
            raise WrongKind(f"{path} is a folder")
        with self.staging.holding(area, path), self.engine.begin() as conn:
            info = self.staging.retire(conn, area, path, "deleted")
            self.layout.shelve(area, local)
        fsync_dir(local.parent)
        if info is None:  # gone meanwhile
            raise NotFound(f"{path} does not exist")
        return info

    def rename(self, area: str, source: str, target: str, account: str | None) -> None:
        """Move a file or folder; a file it replaces becomes a version."""
        old, new = self.layout.existing(area, source), self.layout.local(area, target)
        if not new.parent.is_dir():
            raise NotFound(f"folder of {target} does not exist")
        if new.is_dir() or (old.is_dir() and new.exists()):
            raise AlreadyExists(f"{target} already exists")
        if old.is_dir() and (target + "/").startswith(source + "/"):
            raise WrongKind("a folder cannot move into itself")
        held = self.staging.holding(area, source, target, every=old.is_dir())
        with held, self.engine.begin() as conn:
            if new.exists():
                self.staging.retire(conn, area, target, "superseded")
                self.layout.shelve(area, new)
            os.rename(old, new)
            index.move(conn, area, source, target)
        fsync_dir(new.parent)
        fsync_dir(old.parent)

    # --- versions

    def current_version(self, area: str, path: str) -> VersionInfo | None:
        with lookup_connection(self.engine) as conn:  # once per download
            return index.current(conn, area, path)

    def history(self, area: str, path: str) -> builtins.list[VersionInfo]:
        with read_connection(self.engine) as conn:
            return index.history(conn, area, path)

    def restore(
        self, area: str, path: str, version_id: str, account: str | None
    ) -> VersionInfo:
        """Make an earlier version current again, as a new version."""
        upload = self.begin_upload(area, path, account)
        try:
            with self.open_version(area, path, version_id) as reader:
                while chunk := reader.read(COPY_CHUNK):
                    upload.write(chunk)
            return upload.commit()
        finally:
            upload.close()

    def open_version(self, area: str, path: str, version_id: str) -> Download:
        for version in self.history(area, path):
            if version.id == version_id:
                local = self.layout.blob(index.blob_of(version))
                return Download(
                    local,
                    self.keyring,
                    path,
                    expected_id=version.id,
                    sha256=version.sha256,
                )
        raise NotFound(f"no version {version_id} of {path}")

    # --- helpers

    def _entry(self, local: Path) -> Entry:
        info = local.stat()
        if local.is_dir():
            return Entry(local.name, True, 0, info.st_mtime)
        with local.open("rb") as raw:
            size = plaintext_size_of(info.st_size, read_header(raw))
        return Entry(local.name, False, size, info.st_mtime)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


__all__ = [
    "AlreadyExists",
    "Download",
    "Entry",
    "NoSpace",
    "NotCurrent",
    "NotEmpty",
    "NotFound",
    "ResumeRefused",
    "Storage",
    "StorageError",
    "Upload",
    "VersionInfo",
    "WrongKind",
]
