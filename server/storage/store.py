"""The storage layer: every byte that enters or leaves goes through here.

Trusts: the keyring (keys), the database (the version index) and the data
root (a folder no other program writes). Guarantees:

- an upload is written, encrypted, to a staging file and becomes visible at
  its path only when committed complete (fsync, then an atomic rename);
  an aborted or failed upload leaves the previous state exactly as it was;
- overwriting, deleting or renaming over a file keeps the earlier version;
- file contents on disk are encrypted (``censusdrop.server.storage.crypto``)
  and every read is authenticated.

Layout under the data root::

    areas/<area>/<path>      current files (encrypted), folders as folders
    versions/<area>/<id>     earlier versions, by version id
    staging/<token>.part     uploads in progress, never listed

Areas are prefecture codes. Paths are relative POSIX strings whose
components ``censusdrop.server.names`` has already checked. A version's id is
the file id in its encrypted header, so a file on disk names its own row.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
import errno
import hashlib
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import sqlalchemy as sa
from censusdrop.server.schema import file_versions
from censusdrop.server.storage.crypto import (
    DecryptingReader,
    EncryptingWriter,
    plaintext_size_of,
    read_header,
)
from censusdrop.server.storage.errors import StorageError
from censusdrop.server.storage.keyring import Keyring

logger = logging.getLogger(__name__)

COPY_CHUNK = 1024 * 1024


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


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    is_dir: bool
    size: int
    mtime: float


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    id: str
    area: str
    path: str
    number: int
    size: int
    sha256: str
    created_at: dt.datetime
    account: str | None
    state: str


class Storage:
    """The data root, its encryption and its version index."""

    def __init__(
        self,
        data_root: Path,
        keyring: Keyring,
        engine: sa.Engine,
        *,
        key_name: str = "default",
    ) -> None:
        self.root = data_root
        self.keyring = keyring
        self.engine = engine
        self.key_name = key_name

    # --- set-up

    def prepare(self) -> int:
        """Create the layout and sweep staging leftovers; return how many."""
        for name in ("areas", "versions", "staging"):
            (self.root / name).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.keyring.ensure_round_key(self.key_name)
        swept = 0
        for leftover in (self.root / "staging").iterdir():
            leftover.unlink()
            swept += 1
        if swept:
            logger.warning("storage swept=%d staging leftovers from a crash", swept)
        return swept

    def ensure_area(self, area: str) -> None:
        self._area_dir(area).mkdir(parents=True, exist_ok=True, mode=0o700)

    # --- reading

    def list(self, area: str, path: str) -> list[Entry]:
        folder = self._existing(area, path)
        if not folder.is_dir():
            raise WrongKind(f"{path} is not a folder")
        return [self._entry(child) for child in sorted(folder.iterdir())]

    def stat(self, area: str, path: str) -> Entry:
        return self._entry(self._existing(area, path))

    def exists(self, area: str, path: str) -> bool:
        return self._local(area, path).exists()

    def open_read(self, area: str, path: str) -> Download:
        local = self._existing(area, path)
        if local.is_dir():
            raise WrongKind(f"{path} is a folder")
        return Download(local, self.keyring, path)

    def read_bytes(self, area: str, path: str) -> bytes:
        with self.open_read(area, path) as handle:
            return handle.read()

    def walk(self, area: str) -> Iterator[tuple[str, Entry]]:
        """Every file and folder of an area as (relative path, entry)."""
        top = self._area_dir(area)
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
        self, area: str, path: str, account: str | None, *, append: bool = False
    ) -> Upload:
        """Start writing ``path``; nothing is visible until ``commit``."""
        target = self._local(area, path)
        if target.is_dir():
            raise WrongKind(f"{path} is a folder")
        if not target.parent.is_dir():
            raise NotFound(f"folder of {path} does not exist")
        upload = Upload(self, area, path, account)
        if append and target.exists():
            with self.open_read(area, path) as current:
                while chunk := current.read(COPY_CHUNK):
                    upload.write(chunk)
        return upload

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
        local = self._local(area, path)
        try:
            local.mkdir(mode=0o700)
        except FileExistsError:
            raise AlreadyExists(f"{path} already exists") from None
        except FileNotFoundError:
            raise NotFound(f"folder of {path} does not exist") from None

    def rmdir(self, area: str, path: str) -> None:
        local = self._existing(area, path)
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
        local = self._existing(area, path)
        if local.is_dir():
            raise WrongKind(f"{path} is a folder")
        with self.engine.begin() as conn:
            info = self._retire(conn, area, path, local, "deleted")
        _fsync_dir(local.parent)
        return info

    def rename(self, area: str, source: str, target: str, account: str | None) -> None:
        """Move a file or folder; a file it replaces becomes a version."""
        old, new = self._existing(area, source), self._local(area, target)
        if not new.parent.is_dir():
            raise NotFound(f"folder of {target} does not exist")
        if new.is_dir() or (old.is_dir() and new.exists()):
            raise AlreadyExists(f"{target} already exists")
        if old.is_dir() and (target + "/").startswith(source + "/"):
            raise WrongKind("a folder cannot move into itself")
        with self.engine.begin() as conn:
            if new.exists():
                self._retire(conn, area, target, new, "superseded")
            os.rename(old, new)
            self._move_rows(conn, area, source, target)
        _fsync_dir(new.parent)
        _fsync_dir(old.parent)

    # --- versions

    def history(self, area: str, path: str) -> builtins.list[VersionInfo]:
        query = (
            file_versions.select()
            .where(file_versions.c.area == area, file_versions.c.path == path)
            .order_by(file_versions.c.number.desc())
        )
        with self.engine.connect() as conn:
            return [_version(row) for row in conn.execute(query)]

    def restore(
        self, area: str, path: str, version_id: str, account: str | None
    ) -> VersionInfo:
        """Make an earlier version current again, as a new version."""
        chosen = next((v for v in self.history(area, path) if v.id == version_id), None)
        if chosen is None:
            raise NotFound(f"no version {version_id} of {path}")
        source = self._version_file(area, chosen)
        upload = self.begin_upload(area, path, account)
        try:
            with Download(source, self.keyring, path) as reader:
                while chunk := reader.read(COPY_CHUNK):
                    upload.write(chunk)
            return upload.commit()
        finally:
            upload.close()

    def open_version(self, area: str, path: str, version_id: str) -> Download:
        for version in self.history(area, path):
            if version.id == version_id:
                return Download(self._version_file(area, version), self.keyring, path)
        raise NotFound(f"no version {version_id} of {path}")

    # --- internals shared with Upload

    def _commit(self, upload: Upload, staged: Path, info: VersionInfo) -> VersionInfo:
        target = self._local(upload.area, upload.path)
        with self.engine.begin() as conn:
            number = 1 + (
                conn.execute(
                    sa.select(sa.func.max(file_versions.c.number)).where(
                        file_versions.c.area == upload.area,
                        file_versions.c.path == upload.path,
                    )
                ).scalar()
                or 0
            )
            if target.exists():
                self._retire(conn, upload.area, upload.path, target, "superseded")
            info = dataclasses.replace(info, number=number)
            conn.execute(file_versions.insert().values(**_row(info)))
            os.rename(staged, target)
        _fsync_dir(target.parent)
        return info

    def _retire(
        self, conn: sa.Connection, area: str, path: str, local: Path, state: str
    ) -> VersionInfo:
        """Move the current file at ``path`` into versions, as ``state``."""
        with local.open("rb") as raw:
            version_id = read_header(raw).file_id.hex()
        keep = self.root / "versions" / area / version_id
        keep.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        row = conn.execute(
            file_versions.select().where(file_versions.c.id == version_id)
        ).first()
        if row is None:
            info = self._adopt(conn, area, path, local, version_id)
        else:
            info = _version(row)
        conn.execute(
            file_versions.update()
            .where(file_versions.c.id == version_id)
            .values(state=state, blob=f"versions/{area}/{version_id}")
        )
        os.rename(local, keep)
        _fsync_dir(keep.parent)
        return dataclasses.replace(info, state=state)

    def _adopt(
        self, conn: sa.Connection, area: str, path: str, local: Path, version_id: str
    ) -> VersionInfo:
        """Index a current file that has no row (left by an interrupted commit)."""
        digest, size = _digest(Download(local, self.keyring, path))
        number = 1 + (
            conn.execute(
                sa.select(sa.func.max(file_versions.c.number)).where(
                    file_versions.c.area == area, file_versions.c.path == path
                )
            ).scalar()
            or 0
        )
        info = VersionInfo(
            version_id,
            area,
            path,
            number,
            size,
            digest,
            dt.datetime.fromtimestamp(local.stat().st_mtime, dt.UTC),
            None,
            "current",
        )
        conn.execute(file_versions.insert().values(**_row(info)))
        return info

    def _move_rows(
        self, conn: sa.Connection, area: str, source: str, target: str
    ) -> None:
        rows = conn.execute(
            sa.select(file_versions.c.id, file_versions.c.path).where(
                file_versions.c.area == area, file_versions.c.state == "current"
            )
        ).all()
        for version_id, path in rows:
            if path == source or path.startswith(source + "/"):
                conn.execute(
                    file_versions.update()
                    .where(file_versions.c.id == version_id)
                    .values(path=target + path[len(source) :])
                )

    def _version_file(self, area: str, version: VersionInfo) -> Path:
        if version.state == "current":
            return self._local(area, version.path)
        return self.root / "versions" / area / version.id

    def _staging_file(self) -> Path:
        return self.root / "staging" / f"{uuid.uuid4().hex}.part"

    def _area_dir(self, area: str) -> Path:
        if not area or "/" in area or area in (".", ".."):
            raise ValueError(f"bad area {area!r}")
        return self.root / "areas" / area

    def _local(self, area: str, path: str) -> Path:
        # Components were checked by names.normalize_path; refuse anything
        # that could still climb out, as a second line of defence.
        parts = [part for part in path.split("/") if part]
        if any(part in (".", "..") or "\\" in part or "\0" in part for part in parts):
            raise ValueError(f"bad path {path!r}")
        return self._area_dir(area).joinpath(*parts)

    def _existing(self, area: str, path: str) -> Path:
        local = self._local(area, path)
        if local.is_symlink() or not local.exists():
            raise NotFound(f"{path or '/'} does not exist")
        return local

    def _entry(self, local: Path) -> Entry:
        info = local.stat()
        if local.is_dir():
            return Entry(local.name, True, 0, info.st_mtime)
        with local.open("rb") as raw:
            size = plaintext_size_of(info.st_size, read_header(raw))
        return Entry(local.name, False, size, info.st_mtime)


class Upload:
    """A file being written; pyftpdlib writes into it like a file object.

    ``commit`` makes it the current version; ``close`` without ``commit``
    discards it. Both are safe to call more than once.
    """

    def __init__(self, storage: Storage, area: str, path: str, account: str | None):
        self.storage = storage
        self.area = area
        self.path = path
        self.account = account
        self.name = path
        self.closed = False
        self.committed: VersionInfo | None = None
        self._staged = storage._staging_file()
        fd = os.open(self._staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._raw: BinaryIO = os.fdopen(fd, "wb")
        self._writer = EncryptingWriter(self._raw, storage.keyring, storage.key_name)

    def write(self, data: bytes) -> int:
        try:
            return self._writer.write(data)
        except OSError as exc:
            raise _translate(exc) from exc

    @property
    def size(self) -> int:
        return self._writer.plaintext_size

    def commit(self) -> VersionInfo:
        if self.committed is not None:
            return self.committed
        if self.closed:
            raise StorageError("upload already closed")
        try:
            self._writer.finish()
            self._raw.flush()
            os.fsync(self._raw.fileno())
            self._raw.close()
        except OSError as exc:
            self.close()
            raise _translate(exc) from exc
        info = VersionInfo(
            id=self._writer.file_id.hex(),
            area=self.area,
            path=self.path,
            number=0,
            size=self._writer.plaintext_size,
            sha256=self._writer.sha256_hex(),
            created_at=dt.datetime.now(dt.UTC),
            account=self.account,
            state="current",
        )
        self.committed = self.storage._commit(self, self._staged, info)
        self.closed = True
        return self.committed

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if not self._raw.closed:
            self._raw.close()
        if self.committed is None:
            self._staged.unlink(missing_ok=True)


class Download:
    """A decrypting, seekable reader of one stored file (no ``fileno``)."""

    def __init__(self, local: Path, keyring: Keyring, name: str) -> None:
        self.name = name
        raw = local.open("rb")
        try:
            self.version_id = read_header(raw).file_id.hex()
            raw.seek(0)
            self._reader = DecryptingReader(raw, keyring)
        except BaseException:
            raw.close()
            raise
        self.size = self._reader.size
        self.served_from = 0
        self._digest = hashlib.sha256()

    @property
    def closed(self) -> bool:
        return self._reader.closed

    def read(self, size: int = -1) -> bytes:
        data = self._reader.read(size)
        self._digest.update(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        position = self._reader.seek(offset, whence)
        self.served_from, self._digest = position, hashlib.sha256()
        return position

    def served_digest(self) -> str:
        """SHA-256 of the bytes read since the last seek (what was served)."""
        return self._digest.hexdigest()

    def tell(self) -> int:
        return self._reader.tell()

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> Download:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _digest(reader: Download) -> tuple[str, int]:
    size = 0
    with reader:
        while chunk := reader.read(COPY_CHUNK):
            size += len(chunk)
        return reader.served_digest(), size


def _row(info: VersionInfo) -> dict[str, object]:
    row = dataclasses.asdict(info)
    row["blob"] = (
        f"areas/{info.area}/{info.path}"
        if info.state == "current"
        else f"versions/{info.area}/{info.id}"
    )
    return row


def _version(row: sa.Row[tuple[object, ...]]) -> VersionInfo:
    m = row._mapping
    return VersionInfo(
        id=m["id"],
        area=m["area"],
        path=m["path"],
        number=m["number"],
        size=m["size"],
        sha256=m["sha256"],
        created_at=m["created_at"],
        account=m["account"],
        state=m["state"],
    )


def _translate(exc: OSError) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace("no space left on the server's disk")
    return StorageError(f"storage failure: {exc.strerror}")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "AlreadyExists",
    "Download",
    "Entry",
    "NoSpace",
    "NotEmpty",
    "NotFound",
    "Storage",
    "StorageError",
    "Upload",
    "VersionInfo",
    "WrongKind",
]
