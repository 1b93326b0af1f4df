"""The file objects of the storage layer: ``Upload`` and ``Download``.

pyftpdlib, the validator and the CLI write and read through these; they are
made by ``Storage`` (``begin_upload``, ``resume_upload``, ``open_read``)
and its ``Staging``, never directly.

Trusts: the staging file it was handed to be locked by this upload alone.
Guarantees: an upload becomes a version only through ``commit``; one that
is closed uncommitted is kept as a resumable partial when it has a key (an
FTP upload of an account) and holds at least one whole chunk, and is
removed otherwise; one that failed for lack of space is always removed. A
download returns only authenticated bytes of the file it was opened for,
and gives the index's SHA-256 as the digest of what it served only when it
served every byte from offset 0 and authenticated the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from typing import BinaryIO

from .crypto import DecryptingReader
from .crypto import EncryptingWriter
from .crypto import read_header
from .errors import IntegrityError
from .errors import NoSpace
from .errors import NotCurrent
from .errors import QuotaExceeded
from .errors import StorageError
from .keyring import Keyring
from .partials import PartialKey
from .pipeline import PipelinedWriter
from .pipeline import ReadAhead

if TYPE_CHECKING:
    from .staging import Staging

logger = logging.getLogger(__name__)

COPY_CHUNK = 1024 * 1024
READ_AHEAD_FROM = 4 * 1024 * 1024  # bytes left to read that start a read-ahead

# How the SHA-256 of what a download served was obtained (``Served``).
DIGEST_FROM_INDEX = "index"  # every byte from 0, end authenticated
DIGEST_COMPUTED = "computed"  # hashed from the bytes themselves
DIGEST_UNAVAILABLE = "unavailable"  # they no longer read back


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


@dataclasses.dataclass(frozen=True)
class Served:
    """The SHA-256 of the bytes a download sent, and how it was obtained."""

    sha256: str | None
    source: str


class Upload:
    """A file being written; pyftpdlib writes into it like a file object.

    ``commit`` makes it the current version; ``close`` without ``commit``
    keeps it as a partial (see the module docstring) or discards it;
    ``discard`` always throws it away. Each is safe to call more than once.
    ``resumed_from`` is the offset it was resumed at (0 for a new upload).
    """

    def __init__(
        self,
        staging: Staging,
        area: str,
        path: str,
        account: str | None,
        staged: Path,
        raw: BinaryIO,
        writer: EncryptingWriter,
        key: PartialKey | None = None,
    ) -> None:
        self.staging = staging
        self.area = area
        self.path = path
        self.account = account
        self.name = path
        self.staged = staged
        self.key = key
        self.closed = False
        self.committed: VersionInfo | None = None
        self.indexed = False  # set by the storage once the row is written
        self.resumed_from = writer.plaintext_size
        self._raw = raw
        # Hashes, encrypts and writes a large upload on a thread of its own,
        # which first writes the sidecar that keeps it resumable after a
        # crash (see ``partials``): a new upload has none before, since a
        # file made and removed for each small upload would cost more than
        # resuming one saves; a resumed one had it from the start.
        new = key is not None and self.resumed_from == 0
        self._writer = PipelinedWriter(writer, self._note if new else None)
        self._failed = False
        self.allowance: int | None = None  # bytes the quota leaves it

    @property
    def size(self) -> int:
        return self._writer.plaintext_size

    @property
    def file_id(self) -> str:
        return self._writer.file_id.hex()

    def has_room(self) -> bool:
        """Whether ``write`` takes the next read without waiting for the
        writer thread."""
        return self._writer.has_room()

    def when_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from another thread) once ``write`` has room
        again; see ``PipelinedWriter.when_room``."""
        self._writer.when_room(callback)

    def sha256_hex(self) -> str:
        """SHA-256 of all the plaintext so far, resumed bytes included."""
        return self._writer.sha256_hex()

    def write(self, data: bytes) -> int:
        if self.allowance is not None and self.size + len(data) > self.allowance:
            self._failed = True
            raise QuotaExceeded(f"{self.path} would exceed the quota", "bytes")
        try:
            return self._writer.write(data)
        except OSError as exc:
            self._failed = True
            raise translate(exc) from exc

    def _note(self) -> None:
        assert self.key is not None
        self.staging.partials.note(self.staged, self.key, at=dt.datetime.now(dt.UTC))

    def commit(self, *, at: dt.datetime | None = None) -> VersionInfo:
        if self.committed is not None:
            return self.committed
        if self.closed:
            raise StorageError("upload already closed")
        try:
            self._writer.finish()
            self._raw.flush()
            os.fsync(self._raw.fileno())
        except (OSError, ValueError) as exc:
            self.discard()
            if isinstance(exc, OSError):
                raise translate(exc) from exc
            raise StorageError(f"upload cannot be finished: {exc}") from exc
        info = VersionInfo(
            id=self.file_id,
            area=self.area,
            path=self.path,
            number=0,
            size=self._writer.plaintext_size,
            sha256=self._writer.sha256_hex(),
            created_at=at or dt.datetime.now(dt.UTC),
            account=self.account,
            state="current",
        )
        try:
            self.committed = self.staging.commit(self, info)
        except BaseException:
            if self.indexed:
                self._release()  # a version now: the sweep puts it in place
            else:
                self.discard()
            raise
        self._release()
        return self.committed

    def suspend(self, *, at: dt.datetime | None = None) -> int | None:
        """Keep what arrived as a resumable partial; return its offset.

        Returns None, having discarded the upload, when it has no key, no
        whole chunk yet, or cannot be flushed.
        """
        if self.closed or self.committed is not None:
            return None
        chunk = self._writer.header.chunk_size
        offset = self._writer.plaintext_size // chunk * chunk
        if self.key is None or self._failed or offset == 0:
            self.discard()
            return None
        try:
            self._writer.join()
            self._raw.flush()
            os.fsync(self._raw.fileno())
            self.staging.partials.keep(
                self.staged, self.key, at=at or dt.datetime.now(dt.UTC)
            )
        except (OSError, ValueError):
            logger.warning("partial upload could not be kept", exc_info=True)
            self.discard()
            return None
        self._release()
        logger.info(
            "upload suspended file_id=%s offset=%d resumed_from=%d",
            self.file_id,
            offset,
            self.resumed_from,
        )
        return offset

    def discard(self) -> None:
        """Throw the upload away, freeing its space at once."""
        if self.closed:
            return
        self._writer.close()  # its thread may be writing the sidecar
        self.staged.unlink(missing_ok=True)
        self.staging.partials.forget(self.staged)
        self._release()

    def close(self) -> None:
        if not self.closed:
            self.suspend()

    def _release(self) -> None:
        self.closed = True
        self._writer.close()
        try:
            self._raw.close()  # also drops the lock
        except OSError:
            logger.debug("staging file close failed", exc_info=True)


class Download:
    """A decrypting, seekable reader of one stored file (no ``fileno``).

    ``expected_id``, when given, is the file id the index holds for what is
    being opened; a file with another id raises ``NotCurrent``. ``sha256``
    is the index's SHA-256 of that version's plaintext, when known.

    Every byte read is hashed, unless ``trust_index`` was called (the FTP
    download path) and the reading started at offset 0 of a file whose
    index SHA-256 is known: each chunk authenticates under the file's key
    with its index and the last-chunk flag, and the header's file id was
    checked against the index, so a read that reached the end returned
    exactly the plaintext that digest covers (``served``). A transfer cut
    short gets the digest of what it sent by reading that prefix again
    (``served_again``, slow); such a download keeps its file open after
    ``close`` until ``release``, so that the prefix is read from the very
    file that was sent.
    """

    def __init__(
        self,
        local: Path,
        keyring: Keyring,
        name: str,
        expected_id: str | None = None,
        sha256: str | None = None,
    ) -> None:
        self.name = name
        raw = local.open("rb")
        try:
            self.version_id = read_header(raw).file_id.hex()
            if expected_id is not None and self.version_id != expected_id:
                raise NotCurrent()
            raw.seek(0)
            self._reader = DecryptingReader(raw, keyring)
        except BaseException:
            raw.close()
            raise
        self._raw = raw
        self._ahead: ReadAhead | None = None  # started by a large read
        self.size = self._reader.size
        self.sha256 = sha256 if expected_id is not None else None
        self.served_from = 0
        self._read = 0  # bytes returned since the last seek
        self._digest: hashlib._Hash | None = hashlib.sha256()
        self._trusting = False
        self._closed = False
        self._released = False

    @property
    def closed(self) -> bool:
        return self._closed

    def trust_index(self) -> None:
        """Hash reads from offset 0 no more (see the class docstring)."""
        self._trusting = True
        if self._read == 0:
            self._restart(self.served_from)

    def read(self, size: int = -1) -> bytes:
        data = self.read_view(size)
        return data if isinstance(data, bytes) else data.tobytes()

    def read_view(self, size: int = -1) -> bytes | memoryview:
        """``read``, except that a large file's bytes may come as a view
        into a block decrypted ahead, not copied out of it (the data
        channel hands them to TLS as they are)."""
        position = self.served_from + self._read
        if self._ahead is None and self.size - position >= READ_AHEAD_FROM:
            # A large read: the next blocks are read and decrypted on a
            # thread while this one's bytes are sent.
            with contextlib.suppress(OSError):
                os.posix_fadvise(self._raw.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            self._ahead = ReadAhead(self._reader)
        data: bytes | memoryview
        if self._ahead is not None and size >= 0:
            data = self._ahead.read_view(size)
        else:
            data = (self._ahead or self._reader).read(size)
        self._read += len(data)
        if self._digest is not None:
            self._digest.update(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self._stop_ahead()
        self._reader.seek(self.served_from + self._read)
        position = self._reader.seek(offset, whence)
        self._restart(position)
        return position

    def served_digest(self) -> str:
        """SHA-256 of the bytes read since the last seek, while hashing."""
        if self._digest is None:
            raise StorageError("reads from offset 0 are not being hashed")
        return self._digest.hexdigest()

    def served(self, sent: int, *, complete: bool) -> Served | None:
        """The SHA-256 of the ``sent`` bytes from ``served_from``, if known
        without reading them again; None if ``served_again`` must.

        A complete transfer of every byte of the file from offset 0, the
        end authenticated, gets the index's digest. Otherwise it is the
        running hash, when that covers exactly ``sent`` bytes; without
        ``trust_index`` (an ASCII transfer, whose line ends are rewritten
        on the way) it is the hash of the bytes read, whatever was sent.
        """
        index = self.sha256
        if complete and index is not None and self._is_whole(sent):
            return Served(index, DIGEST_FROM_INDEX)
        hashed = self._digest
        if hashed is not None and (self._read == sent or not self._trusting):
            return Served(hashed.hexdigest(), DIGEST_COMPUTED)
        if sent == 0:
            return Served(hashlib.sha256().hexdigest(), DIGEST_COMPUTED)
        return None

    def served_again(self, sent: int) -> Served:
        """Read the ``sent`` bytes from ``served_from`` again and hash them;
        then ``release``. Slow (a decryption and a hash): off the loop.

        The digest is None when they no longer read back (the file was
        changed in place since they were sent), with the source saying so.
        """
        digest = hashlib.sha256()
        try:
            self._stop_ahead()
            self._reader.seek(self.served_from)
            remaining = sent
            while remaining > 0:
                chunk = self._reader.read(min(remaining, COPY_CHUNK))
                if not chunk:
                    raise IntegrityError("the file ended before the bytes sent")
                digest.update(chunk)
                remaining -= len(chunk)
        except (IntegrityError, OSError, ValueError) as exc:
            logger.error(
                "bytes sent cannot be read again file_id=%s error=%s",
                self.version_id,
                exc,
            )
            return Served(None, DIGEST_UNAVAILABLE)
        finally:
            self.release()
        return Served(digest.hexdigest(), DIGEST_COMPUTED)

    def tell(self) -> int:
        if self._released:
            raise ValueError("I/O operation on closed file")
        return self.served_from + self._read

    def close(self) -> None:
        """Close; a trusting download that sent bytes stays open for
        ``served_again`` until ``release``."""
        self._closed = True
        if not (self._trusting and self._read > 0):
            self.release()

    def release(self) -> None:
        """Close the file itself, without waiting for a read-ahead thread
        in the middle of a read (this runs on the event loop)."""
        self._closed = self._released = True
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            self._reader.close()
        else:
            ahead.discard()  # its thread closes the reader

    def _stop_ahead(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead.close()

    def __enter__(self) -> Download:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _restart(self, position: int) -> None:
        """Count (and hash, unless trusted) what is read from ``position``."""
        self.served_from, self._read = position, 0
        trusted = self._trusting and position == 0 and self.sha256 is not None
        self._digest = None if trusted else hashlib.sha256()

    def _is_whole(self, sent: int) -> bool:
        """Whether ``sent`` bytes from here are the whole authenticated file:
        the reader checks the last chunk before it returns the bytes that
        reach the end."""
        return self.served_from == 0 and self._read == sent == self.size


def digest_of(reader: Download) -> tuple[str, int]:
    """SHA-256 and size of everything ``reader`` holds; closes it."""
    size = 0
    with reader:
        while chunk := reader.read(COPY_CHUNK):
            size += len(chunk)
        return reader.served_digest(), size


def translate(exc: OSError) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace("no space left on the server's disk")
    return StorageError(f"storage failure: {exc.strerror}")
