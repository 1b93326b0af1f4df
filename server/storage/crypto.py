"""Encryption at rest: a streaming AEAD file format (STREAM, AES-256-GCM).

Trusts: the keyring to keep round keys secret and to fail loudly; the
operating system's random source; the caller to hand in a seekable binary
file and, for a write, to fsync and publish it (``finish`` only flushes).

Guarantees:

- the bytes on disk reveal nothing about the plaintext but its length;
- a reader returns only bytes that authenticated under this file's key and
  header, at the position they were written: any edit, truncation,
  extension, reordering, splice or foreign header raises
  :class:`IntegrityError` instead (the last chunk is checked whenever a
  read reaches the end, so a truncated file never reads as complete);
- memory stays at about one chunk per reader or writer, whatever the file
  size, and seeking costs one chunk decryption, not a scan.

Not guaranteed: that a file is the one its path should hold. Whole files
encrypted under these keys can be swapped or rolled back by someone who can
write the data root; the header's file id exists so that the storage layer
can check it against its index.

The byte layout is described in ``fileformat``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from contextlib import suppress
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import IntegrityError
from .fileformat import DEFAULT_CHUNK_SIZE
from .fileformat import FILE_ID_SIZE
from .fileformat import FILE_SECRET_SIZE
from .fileformat import MAX_CHUNK_SIZE
from .fileformat import MIN_CHUNK_SIZE
from .fileformat import TAG_SIZE
from .fileformat import Buffer
from .fileformat import Header
from .fileformat import chunk_nonce
from .fileformat import file_cipher
from .fileformat import open_chunk
from .fileformat import open_header
from .fileformat import plaintext_size_of
from .fileformat import read_exact
from .fileformat import read_header
from .fileformat import readinto_exact
from .fileformat import write_all
from .keyring import Keyring
from .keyring import validate_round_name

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DecryptingReader",
    "EncryptingWriter",
    "Header",
    "plaintext_size_of",
    "read_header",
]

logger = logging.getLogger(__name__)

_MAX_REUSED_OUTPUT = 4 * 1024 * 1024


# Whole chunks encrypted into one buffer and written at once, at most.
SEAL_BATCH_CHUNKS = 32


class EncryptingWriter:
    """Encrypt a stream of plaintext into ``raw``, chunk by chunk.

    ``raw`` is a binary file open for writing at offset 0 (or, through
    :meth:`resume`, for reading and writing). The header is written at
    once. Options:

    - ``chunk_size`` (65536): plaintext bytes per chunk; the memory held
      is about one chunk;
    - ``file_id`` (random): the id to put in the header; given only when a
      file is re-encrypted under another round key and must keep its id
      (a fresh secret is drawn all the same, so no key and nonce repeat).

    :meth:`finish` writes the last chunk and flushes ``raw``; the caller
    fsyncs, closes and publishes it. After an exception from ``write`` or
    ``finish`` the writer refuses further use: :meth:`resume` from the
    file instead. Not thread-safe.
    """

    def __init__(
        self,
        raw: BinaryIO,
        keyring: Keyring,
        round_name: str,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        file_id: bytes | None = None,
    ) -> None:
        validate_round_name(round_name)
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(
                f"chunk_size must be within {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}"
            )
        if file_id is None:
            file_id = secrets.token_bytes(FILE_ID_SIZE)
        elif len(file_id) != FILE_ID_SIZE:
            raise ValueError(f"file_id must be {FILE_ID_SIZE} bytes")
        secret = secrets.token_bytes(FILE_SECRET_SIZE)
        draft = Header(chunk_size, file_id, round_name, b"")
        wrapped = keyring.wrap_file_key(round_name, secret, draft.wrapped_aad)
        header = Header(chunk_size, file_id, round_name, wrapped)

        write_all(raw, header.encoded)
        self._start(raw, header, file_cipher(secret, header))

    @classmethod
    def resume(cls, raw: BinaryIO, keyring: Keyring) -> EncryptingWriter:
        """Reopen an interrupted file (``raw`` open ``r+b``) for appending.

        Every complete chunk is authenticated and re-hashed (IntegrityError
        if one fails); a partial trailing chunk is cut off. A trailing last
        chunk that authenticates (the file was finished) is taken back into
        the buffer, so nothing is lost. ``plaintext_size`` is then the
        offset the upload may resume at.
        """
        header, cipher = open_header(raw, keyring)
        raw_size = raw.seek(0, os.SEEK_END)
        full, tail = divmod(raw_size - header.length, header.stride)
        hasher = hashlib.sha256()
        raw.seek(header.length)
        for index in range(full):
            sealed = read_exact(raw, header.stride)
            hasher.update(open_chunk(cipher, header, index, False, sealed))

        pending = bytearray()
        if tail >= TAG_SIZE:
            sealed = read_exact(raw, tail)
            with suppress(IntegrityError):
                pending = bytearray(open_chunk(cipher, header, full, True, sealed))
        hasher.update(pending)
        raw.seek(header.length + full * header.stride)
        raw.truncate()

        writer = cls.__new__(cls)
        writer._start(raw, header, cipher, index=full, hasher=hasher)
        writer._pending = pending
        writer._plaintext_size = full * header.chunk_size + len(pending)
        logger.info(
            "encrypted file resumed file_id=%s offset=%d cut_bytes=%d",
            header.file_id.hex(),
            writer._plaintext_size,
            tail,
        )
        return writer

    def _start(
        self,
        raw: BinaryIO,
        header: Header,
        cipher: AESGCM,
        *,
        index: int = 0,
        hasher: hashlib._Hash | None = None,
    ) -> None:
        self._raw = raw
        self._header = header
        self._cipher = cipher
        self._index = index
        self._hasher = hasher if hasher is not None else hashlib.sha256()
        self._pending = bytearray()
        # Reused output buffers: no allocation per chunk or per write.
        self._sealed = memoryview(bytearray(header.stride))
        self._batch = self._sealed
        self._plaintext_size = 0
        self._is_finished = False
        self._is_broken = False

    @property
    def header(self) -> Header:
        return self._header

    @property
    def file_id(self) -> bytes:
        return self._header.file_id

    @property
    def plaintext_size(self) -> int:
        """Plaintext bytes accepted so far (buffered ones included)."""
        return self._plaintext_size

    @property
    def is_finished(self) -> bool:
        return self._is_finished

    def sha256_hex(self) -> str:
        """SHA-256 of the plaintext accepted so far, as hex."""
        return self._hasher.hexdigest()

    def write(self, data: Buffer) -> int:
        """Accept plaintext; full chunks are encrypted and written at once,
        in one write to ``raw`` for all of them."""
        self._check_usable()
        view = memoryview(data).cast("B")
        count = len(view)
        try:
            self._hasher.update(view)
            self._plaintext_size += count
            view = self._fill_pending(view)
            chunk_size = self._header.chunk_size
            step = SEAL_BATCH_CHUNKS * chunk_size
            while len(view) >= chunk_size:
                whole = min(len(view) // chunk_size * chunk_size, step)
                self._seal_all(view[:whole])
                view = view[whole:]
            self._pending += view
        except BaseException:
            self._is_broken = True
            raise
        return count

    def finish(self) -> None:
        """Write the last chunk and flush ``raw`` (not closed, not fsynced)."""
        if self._is_finished:
            return
        self._check_usable()
        try:
            self._seal(self._pending, last=True)
            self._pending = bytearray()
            self._raw.flush()
        except BaseException:
            self._is_broken = True
            raise
        self._is_finished = True

    def _check_usable(self) -> None:
        if self._is_finished:
            raise ValueError("the encrypted file is already finished")
        if self._is_broken:
            raise ValueError("an earlier write failed; resume from the file")

    def _fill_pending(self, view: memoryview) -> memoryview:
        """Top up a partly filled chunk; seal it once full."""
        if not self._pending:
            return view
        room = self._header.chunk_size - len(self._pending)
        self._pending += view[:room]
        if len(self._pending) == self._header.chunk_size:
            self._seal(self._pending, last=False)
            self._pending = bytearray()
        return view[room:]

    def _seal(self, plaintext: Buffer, *, last: bool) -> None:
        nonce = chunk_nonce(self._index, last)
        sealed = self._sealed[: len(plaintext) + TAG_SIZE]
        self._cipher.encrypt_into(nonce, plaintext, self._header.digest, sealed)
        write_all(self._raw, sealed)
        self._index += 1

    def _seal_all(self, plaintext: memoryview) -> None:
        """Encrypt whole chunks (none the last) into one buffer, written at
        once: fewer system calls, and fewer times a writing thread has to
        take the GIL back."""
        chunk_size, stride = self._header.chunk_size, self._header.stride
        count = len(plaintext) // chunk_size
        if len(self._batch) < count * stride:
            self._batch = memoryview(bytearray(count * stride))
        encrypt, aad, index = (
            self._cipher.encrypt_into,
            self._header.digest,
            self._index,
        )
        for number in range(count):
            encrypt(
                chunk_nonce(index + number, False),
                plaintext[number * chunk_size : (number + 1) * chunk_size],
                aad,
                self._batch[number * stride : (number + 1) * stride],
            )
        write_all(self._raw, self._batch[: count * stride])
        self._index += count


class DecryptingReader:
    """A read-only, seekable file of the plaintext of an encrypted ``raw``.

    The header is read and the file key unwrapped at once (IntegrityError,
    KeyDestroyed or MasterKeyError here); a chunk is decrypted when a read
    reaches it (IntegrityError then). It has no ``fileno``, on purpose: a
    sendfile path would send ciphertext. ``close`` closes ``raw``.
    """

    def __init__(self, raw: BinaryIO, keyring: Keyring) -> None:
        header, cipher = open_header(raw, keyring)
        raw_size = raw.seek(0, os.SEEK_END)
        self._raw = raw
        self._raw_position = raw_size
        self._header = header
        self._cipher = cipher
        self._size = header.plaintext_size(raw_size)
        self._last_index, self._last_length = divmod(self._size, header.chunk_size)
        self._position = 0
        self._cached_index = -1
        self._cached = b""
        self._sealed = memoryview(bytearray(header.stride))
        self._output = memoryview(bytearray())
        self._is_end_verified = False
        self._closed = False

    @property
    def header(self) -> Header:
        return self._header

    @property
    def size(self) -> int:
        """Plaintext size, from the file size; authenticated at the end."""
        return self._size

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def name(self) -> str:
        name = getattr(self._raw, "name", "")
        return name if isinstance(name, str) else ""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        self._check_open()
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move to a plaintext offset; no decryption happens here."""
        self._check_open()
        if whence == os.SEEK_SET:
            target = offset
        elif whence == os.SEEK_CUR:
            target = self._position + offset
        elif whence == os.SEEK_END:
            target = self._size + offset
        else:
            raise ValueError(f"whence must be 0, 1 or 2, not {whence}")
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        self._position = target
        return target

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` authenticated bytes (all remaining if negative)."""
        self._check_open()
        remaining = max(self._size - self._position, 0)
        wanted = remaining if size is None or size < 0 else min(size, remaining)
        index, offset = divmod(self._position, self._header.chunk_size)
        if offset + wanted <= self._header.chunk_size:
            data = self._read_within(index, offset, wanted)
        else:
            data = self._read_across(wanted)

        # Reaching the end must prove the end: the last chunk carries the
        # flag that a truncated file cannot forge.
        if self._position >= self._size and not self._is_end_verified:
            self._chunk(self._last_index)
        return data

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cached = b""
            self._output = memoryview(bytearray())
            self._raw.close()

    def __enter__(self) -> DecryptingReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("I/O operation on closed file")

    def _read_within(self, index: int, offset: int, wanted: int) -> bytes:
        """A read inside one chunk: served from the chunk cache."""
        if wanted == 0:
            return b""
        chunk = self._chunk(index)
        self._position += wanted
        if offset == 0 and wanted == len(chunk):
            return chunk
        return chunk[offset : offset + wanted]

    def _read_across(self, wanted: int) -> bytes:
        """A read over several chunks, decrypted straight into one buffer.

        The buffer is reused across reads (up to a bound): a fresh large
        allocation per read costs more in page faults than the decryption.
        """
        view = self._output_buffer(wanted)
        filled = 0
        while filled < wanted:
            index, offset = divmod(self._position, self._header.chunk_size)
            length = self._chunk_length(index)
            if offset == 0 and wanted - filled >= length:
                self._decrypt_into(index, view[filled : filled + length])
                take = length
            else:
                chunk = self._chunk(index)
                take = min(length - offset, wanted - filled)
                view[filled : filled + take] = chunk[offset : offset + take]
            filled += take
            self._position += take
        # A failed chunk leaves unauthenticated bytes in ``view``; they are
        # never returned, and the next read overwrites what it returns.
        return bytes(view)

    def _output_buffer(self, size: int) -> memoryview:
        if size > _MAX_REUSED_OUTPUT:
            return memoryview(bytearray(size))
        if len(self._output) < size:
            self._output = memoryview(bytearray(size))
        return self._output[:size]

    def _chunk_length(self, index: int) -> int:
        if index == self._last_index:
            return self._last_length
        return self._header.chunk_size

    def _chunk(self, index: int) -> bytes:
        """The plaintext of chunk ``index``, decrypted once and cached."""
        if index != self._cached_index:
            last, sealed = self._read_sealed(index)
            self._cached = open_chunk(self._cipher, self._header, index, last, sealed)
            self._cached_index = index
            self._is_end_verified = self._is_end_verified or last
        return self._cached

    def _decrypt_into(self, index: int, target: memoryview) -> None:
        last, sealed = self._read_sealed(index)
        nonce = chunk_nonce(index, last)
        try:
            self._cipher.decrypt_into(nonce, sealed, self._header.digest, target)
        except InvalidTag:
            raise IntegrityError() from None
        self._is_end_verified = self._is_end_verified or last

    def _read_sealed(self, index: int) -> tuple[bool, memoryview]:
        """Whether chunk ``index`` is the last, and its bytes on disk.

        The bytes live in a buffer reused by the next call.
        """
        last = index == self._last_index
        length = self._chunk_length(index) + TAG_SIZE
        start = self._header.length + index * self._header.stride
        if self._raw_position != start:
            self._raw_position = -1  # unknown until the seek returns
            self._raw.seek(start)
        sealed = self._sealed[:length]
        count = readinto_exact(self._raw, sealed)
        self._raw_position = start + count
        if count != length:
            raise IntegrityError()  # the file shrank since it was opened
        return last, sealed
