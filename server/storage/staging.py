"""Uploads between their first byte and their place in an area.

Creates uploads, resumes partials, commits, and recovers what a crash left
in ``staging/``. Trusts: the layout, the keyring and the version index.

Guarantees, with the database as the journal of a commit:

- an upload is fsynced, then its row is written (the commit point), then
  it is renamed into place; a crash before the row leaves no version, and
  the upload becomes a partial (or is removed); a crash after the row is
  finished by the next sweep (``recover``), so a committed upload is never
  lost and never half in place;
- a staging file is locked by its writer for as long as it is open, so a
  sweep in any process leaves live uploads alone;
- two commits of one path, in one process or in several server processes
  sharing the data root, are serialised from the version row to the move
  into place (a thread lock per stripe, then ``flock`` on the stripe's file
  in ``locks/`` under the data root), and so is a sweep finishing a
  crashed commit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import logging
import os
import threading
import uuid
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from typing import cast

import sqlalchemy as sa

from censusdrop.audit.locking import read_connection

from . import index
from .crypto import EncryptingWriter
from .errors import StorageError
from .keyring import Keyring
from .layout import Layout
from .layout import fsync_dir
from .layout import header_id
from .partials import PartialKey
from .partials import Partials
from .partials import cut_to_whole_chunks
from .partials import lock
from .partials import whole_chunk_offset
from .pipeline import EarlyWriteback
from .streams import Download
from .streams import Upload
from .streams import VersionInfo
from .streams import digest_of
from .streams import translate

logger = logging.getLogger(__name__)

COMMIT_LOCKS = 64
LOCKS_DIR = "locks"  # under the data root, beside staging/


class Staging:
    """The upload side of a ``Storage``."""

    def __init__(
        self,
        layout: Layout,
        keyring: Keyring,
        engine: sa.Engine,
        partials: Partials,
        key_for: Callable[[str], str],
    ) -> None:
        self.layout = layout
        self.keyring = keyring
        self.engine = engine
        self.partials = partials
        # The round key a new upload into an area is encrypted under.
        self.key_for = key_for
        # Commits run on worker threads. Two uploads of one path commit one
        # at a time, so each is placed in the order its row was written;
        # other paths (another lock of the set) commit side by side.
        self._commit_locks = [threading.Lock() for _ in range(COMMIT_LOCKS)]

    # --- starting

    def new(
        self,
        area: str,
        path: str,
        account: str | None,
        key: PartialKey | None,
    ) -> Upload:
        creating = self.layout.staging / f"{uuid.uuid4().hex}.new"
        fd = os.open(creating, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        raw = _writeback(os.fdopen(fd, "wb"))
        try:
            lock(raw, wait=True)
            writer = EncryptingWriter(raw, self.keyring, self.key_for(area))
            staged = creating.with_name(f"{writer.file_id.hex()}.part")
            os.rename(creating, staged)
        except BaseException as exc:
            raw.close()
            creating.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise translate(exc) from exc
            raise
        return Upload(self, area, path, account, staged, raw, writer, key)

    def take(self, key: PartialKey, at: dt.datetime) -> Upload | None:
        """Resume the partial of ``key``, if there is one.

        Every chunk of it is authenticated again and hashed (IntegrityError,
        and the partial is removed, if one fails).
        """
        taken = self.partials.take(key, at=at)
        if taken is None:
            return None
        staged, raw = taken
        raw = _writeback(raw)
        try:
            cut_to_whole_chunks(raw)
            writer = EncryptingWriter.resume(raw, self.keyring)
            self.partials.note(staged, key, at=at)
        except BaseException as exc:
            raw.close()
            staged.unlink(missing_ok=True)
            self.partials.forget(staged)
            logger.warning("partial upload discarded: %s", type(exc).__name__)
            if isinstance(exc, OSError):
                raise translate(exc) from exc
            raise
        return Upload(self, key.area, key.path, key.account, staged, raw, writer, key)

    # --- committing

    def commit(self, upload: Upload, info: VersionInfo) -> VersionInfo:
        """Index ``upload`` as the current version, then put it in place."""
        with self.holding(upload.area, upload.path):
            return self._commit(upload, info)

    @contextlib.contextmanager
    def holding(self, area: str, *paths: str, every: bool = False) -> Iterator[None]:
        """Hold the commit locks of ``paths`` (of every path with ``every``,
        for a folder move), so no commit to them is between its version
        row and its move into place meanwhile. Taken in one order, so two
        holders never wait for each other."""
        if every:
            stripes: Iterable[int] = range(COMMIT_LOCKS)
        else:
            stripes = sorted({hash((area, path)) % COMMIT_LOCKS for path in paths})
        with contextlib.ExitStack() as stack:
            for stripe in stripes:
                # The thread lock first: one thread per process waits on
                # the file lock, which other server processes share.
                stack.enter_context(self._commit_locks[stripe])
                stack.enter_context(self._stripe_file(stripe))
            yield

    @contextlib.contextmanager
    def _stripe_file(self, stripe: int) -> Iterator[None]:
        # Opened for each hold: an open file inherited across a fork would
        # share its flock with the other process.
        folder = self.layout.root / LOCKS_DIR
        path = folder / f"commit-{stripe:02d}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            folder.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _commit(self, upload: Upload, info: VersionInfo) -> VersionInfo:
        self.layout.check_target(upload.area, upload.path)
        try:
            with self.engine.begin() as conn:
                info = dataclasses.replace(
                    info, number=index.next_number(conn, upload.area, upload.path)
                )
                self.retire(conn, upload.area, upload.path, "superseded")
                index.insert(conn, info)
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError("the version index cannot be written") from exc
        # The version exists from here on: if placing it fails, the next
        # sweep finishes the job instead of losing it.
        upload.indexed = True
        self.settle(upload.area, upload.path, upload.staged)
        self.partials.forget(upload.staged)
        if upload.key is not None:
            self.partials.discard(upload.key)
        return info

    def retire(
        self, conn: sa.Connection, area: str, path: str, state: str
    ) -> VersionInfo | None:
        """Mark the current version at ``path`` as no longer current."""
        current = index.current(conn, area, path)
        if current is not None:
            return index.set_state(conn, current, state)
        if self.layout.local(area, path).is_file():
            return self._adopt(conn, area, path, state)
        return None

    def settle(self, area: str, path: str, staged: Path) -> None:
        """Shelve the file at ``path``, if any, and move ``staged`` there."""
        target = self.layout.local(area, path)
        if target.exists():
            self.layout.shelve(area, target)
        os.rename(staged, target)
        fsync_dir(target.parent)
        fsync_dir(staged.parent)

    # --- after a crash

    def sweep(self, *, at: dt.datetime, grace: dt.timedelta) -> int:
        """Finish committed uploads left in staging, keep interrupted ones as
        partials, remove expired partials; return how many files went."""
        removed = 0
        try:
            for staged in self.partials.orphans(at=at, grace=grace):
                removed += self._recover(staged, at)
            removed += self.partials.sweep(at=at, grace=grace)
        except (OSError, StorageError, sa.exc.SQLAlchemyError):
            logger.exception("staging sweep failed")
        return removed

    def _recover(self, staged: Path, at: dt.datetime) -> int:
        """Deal with an upload whose writer is gone."""
        with read_connection(self.engine) as conn:
            version = index.by_id(conn, staged.stem)
        if version is not None:
            logger.warning("committed upload put in place version=%s", version.id)
            with self.holding(version.area, version.path):
                self._place_recovered(version, staged)
            self.partials.forget(staged)
            return 0
        key = self.partials.sidecar_key(staged)
        if key is not None and _resumable(staged):
            self.partials.keep(staged, key, at=at)
            return 0
        staged.unlink(missing_ok=True)
        self.partials.forget(staged)
        return 1

    def _place_recovered(self, version: VersionInfo, staged: Path) -> None:
        # Read again under the lock: a commit of the path may have
        # superseded it since.
        with read_connection(self.engine) as conn:
            version = index.by_id(conn, version.id) or version
        if version.state == "current":
            self.settle(version.area, version.path, staged)
        else:
            os.rename(staged, self.layout.blob(index.blob_of(version)))

    def _adopt(
        self, conn: sa.Connection, area: str, path: str, state: str
    ) -> VersionInfo:
        """Index a file that has no row, so that it is kept as a version."""
        local = self.layout.local(area, path)
        digest, size = digest_of(Download(local, self.keyring, path))
        info = VersionInfo(
            header_id(local),
            area,
            path,
            index.next_number(conn, area, path),
            size,
            digest,
            dt.datetime.fromtimestamp(local.stat().st_mtime, dt.UTC),
            None,
            state,
        )
        logger.warning("unindexed file adopted area=%s version=%s", area, info.id)
        index.insert(conn, info)
        return info


def _resumable(staged: Path) -> bool:
    try:
        with staged.open("rb") as raw:
            return whole_chunk_offset(raw) > 0
    except (OSError, StorageError):
        return False


def _writeback(raw: BinaryIO) -> BinaryIO:
    """An upload's file, written back to the disk as it grows (pipeline.py)."""
    return cast(BinaryIO, EarlyWriteback(raw))
