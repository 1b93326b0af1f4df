"""A large upload's hashing, encryption and writing, beside the event loop.

An upload costs, per byte: the TLS decryption of the data connection,
SHA-256 of the plaintext, AES-GCM, and a write that the kernel throttles to
the disk's speed once dirty pages outrun it (the upload is made durable
before it is answered, so every byte reaches the disk within the
transfer's time). Done in line, all of it waits on the one event-loop
thread, one after another. Here, once a file is large:

- ``PipelinedWriter`` hands the plaintext, in batches of about 1 MiB, to a
  thread of its own that hashes, encrypts and writes it, while the loop
  goes on decrypting TLS. hashlib, AES-GCM and the write system call let
  go of the GIL, so the two threads run at once on two cores. The first
  ``INLINE_BYTES`` are written in line: a small file costs no thread.
- ``ReadAhead`` does the same for a large download the other way round:
  a thread reads and decrypts the next blocks while the loop sends.
- ``EarlyWriteback`` asks the kernel every ``WRITEBACK_BYTES`` to start
  writing what was just written and waits for the range before it (Linux
  ``sync_file_range``; elsewhere it does nothing), so the disk works from
  the start of the transfer and the fsync at the end has little left to
  do. The newest large upload stays in memory (``RecentUploads``); when
  the next one begins, the one before is dropped from the page cache, so
  the new one reuses that memory instead of pages the kernel must take
  fresh (costly on a virtual machine). Older large files are read back
  from the disk; ``ReadAhead`` does that while the loop sends.

Guarantees: the plaintext is hashed, encrypted and written in the order it
was accepted; ``write`` waits for the thread only when ``has_room`` was
false before it (the data channel stops reading until it is true);
memory held is at most ``QUEUE_BATCHES`` + 1 batches; an error of the
thread (a full disk) is raised, as the exception it was, by
the next ``write`` or by ``join``, and nothing accepted after it is
written; ``join``, ``sha256_hex`` and ``finish`` return only once every
accepted byte is written. Not thread-safe: one caller at a time.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import threading
from collections.abc import Callable
from typing import Any
from typing import BinaryIO

from .crypto import DecryptingReader
from .crypto import EncryptingWriter
from .crypto import Header

INLINE_BYTES = 4 * 1024 * 1024
BATCH_BYTES = 1024 * 1024
QUEUE_BATCHES = 8
AHEAD_BATCHES = 2  # a download's blocks read ahead of the event loop
WRITEBACK_BYTES = 8 * 1024 * 1024

# sync_file_range(2) flags.
_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4


class PipelinedWriter:
    """An ``EncryptingWriter`` fed from a thread once the file is large;
    ``on_thread`` runs on that thread when it starts, before any batch."""

    def __init__(
        self,
        writer: EncryptingWriter,
        on_thread: Callable[[], None] | None = None,
    ) -> None:
        self._writer = writer
        self._on_thread = on_thread
        self._accepted = writer.plaintext_size
        self._inline_until = writer.plaintext_size + INLINE_BYTES
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._queue: queue.Queue[list[bytes] | None] = queue.Queue(QUEUE_BATCHES)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._room_lock = threading.Lock()
        self._on_room: Callable[[], None] | None = None

    @property
    def plaintext_size(self) -> int:
        """Plaintext bytes accepted so far, written or not yet."""
        return self._accepted

    @property
    def file_id(self) -> bytes:
        return self._writer.file_id

    @property
    def header(self) -> Header:
        return self._writer.header

    def write(self, data: bytes) -> int:
        self._raise_error()
        count = len(data)
        if self._thread is None and self._accepted + count <= self._inline_until:
            self._writer.write(data)
        else:
            # Kept as it is until the thread takes it: a copy if the caller
            # could reuse the buffer, else none.
            self._batch.append(data if type(data) is bytes else bytes(data))
            self._batch_bytes += count
            if self._batch_bytes >= BATCH_BYTES:
                self._hand_over()
        self._accepted += count
        return count

    def has_room(self) -> bool:
        """Whether the next ``write`` returns without waiting for the
        thread: the queue has room for the batch it may hand over (only
        the caller fills the queue)."""
        return self._thread is None or not self._queue.full()

    def when_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the queue is down to half, from the
        writer thread (at once, here, if it is already)."""
        with self._room_lock:
            if self._queue.qsize() > QUEUE_BATCHES // 2 and self._thread is not None:
                self._on_room = callback
                return
        callback()

    def join(self) -> None:
        """Wait until every accepted byte is written; raise the thread's
        error, if it had one."""
        if self._batch:
            self._hand_over()
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()
        self._raise_error()

    def sha256_hex(self) -> str:
        self.join()
        return self._writer.sha256_hex()

    def finish(self) -> None:
        self.join()
        self._writer.finish()

    def close(self) -> None:
        """Stop the thread, whatever happened (the file is being dropped
        or kept as it is)."""
        with contextlib.suppress(Exception):
            self.join()

    def _hand_over(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="censusdrop-upload", daemon=True
            )
            self._thread.start()
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        self._queue.put(batch)

    def _run(self) -> None:
        write = self._writer.write
        start, self._on_thread = self._on_thread, None
        if start is not None:
            try:
                start()
            except Exception as exc:
                self._error = exc
        while (batch := self._queue.get()) is not None:
            self._tell_room()
            if self._error is not None:
                continue  # dropped: the caller learns of the error
            try:
                # One piece: one hash update, one write of its chunks.
                write(batch[0] if len(batch) == 1 else b"".join(batch))
            except BaseException as exc:
                self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _tell_room(self) -> None:
        with self._room_lock:
            callback = None
            if self._on_room is not None and self._queue.qsize() <= QUEUE_BATCHES // 2:
                callback, self._on_room = self._on_room, None
        if callback is not None:
            callback()


class ReadAhead:
    """Reads a download's plaintext ahead on a thread of its own.

    The thread reads and decrypts blocks of ``BATCH_BYTES`` from the
    reader's position, at most ``AHEAD_BATCHES`` ahead of the consumer, so
    that the disk and AES-GCM work while the event loop encrypts and sends
    TLS. An error (a damaged chunk, a failed read) reaches the consumer
    in place of the block it is in, after every block before it; nothing
    of a block that failed is returned. The reader belongs to the thread
    until ``close`` (which stops and joins it, and gives the reader back)
    or ``discard`` (which only stops it, for the event loop, which must
    not wait for a read in progress: the thread closes the reader).
    """

    def __init__(self, reader: DecryptingReader) -> None:
        self._reader = reader
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(AHEAD_BATCHES)
        self._stop = threading.Event()
        self._block = memoryview(b"")
        self._ended = False
        self._lock = threading.Lock()
        self._exited = False  # the thread is done with the reader
        self._close_on_exit = False
        self._thread = threading.Thread(
            target=self._run, name="censusdrop-download", daemon=True
        )
        self._thread.start()

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all the rest if negative); b"" at the end."""
        if size < 0:
            return b"".join(iter(lambda: self.read(BATCH_BYTES), b""))
        return self.read_view(size).tobytes()

    def read_view(self, size: int) -> memoryview:
        """Up to ``size`` bytes as a view into a decrypted block, not
        copied; empty at the end."""
        if not self._block and not self._next_block():
            return memoryview(b"")
        data = self._block[:size]
        self._block = self._block[size:]
        return data

    def close(self) -> None:
        """Stop the thread and wait for it; the reader is the caller's again."""
        self._halt()
        self._thread.join()

    def discard(self) -> None:
        """Stop the thread without waiting; the reader is closed once the
        thread is done with it."""
        self._halt()
        with self._lock:
            self._close_on_exit = not self._exited
        if not self._close_on_exit:
            self._reader.close()

    def _halt(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:  # make room for a put the thread is waiting on
                self._queue.get_nowait()

    def _next_block(self) -> bool:
        if self._ended:
            return False
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        if not item:
            self._ended = True
            return False
        self._block = memoryview(item)
        return True

    def _run(self) -> None:
        try:
            self._read_ahead()
        finally:
            with self._lock:
                self._exited = True
                close = self._close_on_exit
            if close:
                self._reader.close()

    def _read_ahead(self) -> None:
        while not self._stop.is_set():
            try:
                item: bytes | BaseException = self._reader.read(BATCH_BYTES)
            except BaseException as exc:
                item = exc
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.5)
                    break
                except queue.Full:
                    continue
            if not isinstance(item, bytes) or not item:
                return


class EarlyWriteback:
    """An upload's file that starts the disk's work as it is written; any
    file method but ``write`` and ``close`` is the file's own."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._unasked = 0  # bytes written since writeback was last asked for
        self._previous: tuple[int, int] | None = None  # range asked for last
        self._large = False

    def write(self, data: Any) -> int:
        count = int(self._raw.write(data))
        self._unasked += count
        if self._unasked >= WRITEBACK_BYTES and _sync_file_range is not None:
            if not self._large:
                self._large = True
                RECENT.let_go()  # its pages are for this file to reuse
            self._write_back()
        return count

    def close(self) -> None:
        if self._large and not self._raw.closed:
            with contextlib.suppress(OSError):
                # A description of its own: a duplicate would share, and
                # keep, the writer's lock on a staging file.
                RECENT.keep(os.open(f"/proc/self/fd/{self._raw.fileno()}", os.O_RDONLY))
        self._raw.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def _write_back(self) -> None:
        """Start writing the range just written; wait for the one before."""
        self._raw.flush()
        end = self._raw.tell()
        start = end - self._unasked
        self._unasked = 0
        fd = self._raw.fileno()
        if _sync_file_range(fd, start, end - start, _WRITE) != 0:
            return  # not supported here: the final fsync does it all
        if self._previous is not None:
            low, high = self._previous
            flags = _WAIT_BEFORE | _WRITE | _WAIT_AFTER
            _sync_file_range(fd, low, high - low, flags)
        self._previous = (start, end)


class RecentUploads:
    """The newest large upload stays in memory, for the reads that often
    follow it (pre-review, a check download); when the next large upload
    begins, the one kept is dropped from the page cache (it is on the disk:
    it was fsynced), so the new one reuses its memory instead of pages the
    kernel must take fresh. One file is kept per process, by an open
    descriptor; one already unlinked is dropped at once."""

    def __init__(self, keep: int = 1) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._kept: list[int] = []

    def keep(self, fd: int) -> None:
        """Take ``fd`` (a descriptor of its own) as the newest."""
        with self._lock:
            self._kept.append(fd)
            dropped = self._kept[: -self._keep] if self._keep else self._kept[:]
            self._kept = self._kept[len(dropped) :]
        if os.fstat(fd).st_nlink == 0:  # a discarded upload
            with self._lock:
                if fd in self._kept:
                    self._kept.remove(fd)
                    dropped.append(fd)
        for old in dropped:
            _drop(old)

    def let_go(self) -> None:
        """Drop every file kept."""
        with self._lock:
            dropped, self._kept = self._kept, []
        for fd in dropped:
            _drop(fd)


def _drop(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


RECENT = RecentUploads()


def _load_sync_file_range() -> Any:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


# Called through ctypes, which lets go of the GIL during the call.
_sync_file_range = _load_sync_file_range()
