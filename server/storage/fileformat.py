"""The on-disk layout of an encrypted file, and its building blocks.

The STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár, 2015) over
AES-256-GCM. ``crypto`` builds the reader and writer on these parts.

Trusts: the keyring to unwrap file secrets and to fail loudly.

Guarantees: a header that parses is well-formed, not yet authentic; it is
authenticated when its secret is unwrapped (:func:`open_header`), which
binds every field before the wrapped secret, and again by every chunk,
whose AAD is the digest of the whole header.

Layout (integers big-endian)::

    offset  size  field
    0       8     magic b"CDROPAE\\x1a"
    8       1     format version, 1
    9       1     flags, 0 (reserved)
    10      4     chunk size C: plaintext bytes per chunk, 16 B .. 16 MiB
    14      16    file id, random
    30      1     round name length n, 1..64
    31      n     round name, ASCII
    31+n    2     wrapped secret length w
    33+n    w     file secret wrapped by the round key (AES-256-GCM,
                  AAD = header bytes [0, 31+n))
    H=33+n+w      chunk 0, chunk 1, ... chunk k

    file key  = HKDF-SHA256(file secret, info = label || version || file id)
    chunk i   = AES-256-GCM(file key, nonce_i, plaintext_i,
                            AAD = SHA-256(header bytes [0, H)))
    nonce_i   = i as 11 bytes || 0x01 for the last chunk, else 0x00

Every chunk but the last holds exactly C plaintext bytes; the last holds
0 to C-1 (it is empty when the plaintext is empty or a multiple of C), so
the plaintext size follows from the file size alone.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from functools import cached_property
from typing import BinaryIO
from typing import TypeAlias

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import FormatError
from .errors import IntegrityError
from .errors import KeyNotFound
from .keyring import Keyring
from .keyring import validate_round_name

MAGIC = b"CDROPAE\x1a"
FORMAT_VERSION = 1
DEFAULT_CHUNK_SIZE = 64 * 1024
MIN_CHUNK_SIZE = 16
MAX_CHUNK_SIZE = 16 * 1024 * 1024
TAG_SIZE = 16
FILE_ID_SIZE = 16
FILE_SECRET_SIZE = 32
MAX_WRAPPED_SIZE = 1024

_FIXED = struct.Struct(">8sBBI16sB")
_WRAPPED_LENGTH = struct.Struct(">H")
_KEY_LABEL = b"censusdrop stream file key"
_COUNTER_SIZE = 11

Buffer: TypeAlias = bytes | bytearray | memoryview


@dataclass(frozen=True)
class Header:
    """The clear-text header of an encrypted file."""

    chunk_size: int
    file_id: bytes
    round_name: str
    wrapped_secret: bytes
    version: int = FORMAT_VERSION

    @cached_property
    def wrapped_aad(self) -> bytes:
        """The fields the wrapped secret is bound to (all that precede it)."""
        name = self.round_name.encode("ascii")
        fixed = _FIXED.pack(
            MAGIC, self.version, 0, self.chunk_size, self.file_id, len(name)
        )
        return fixed + name

    @cached_property
    def encoded(self) -> bytes:
        length = _WRAPPED_LENGTH.pack(len(self.wrapped_secret))
        return self.wrapped_aad + length + self.wrapped_secret

    @property
    def length(self) -> int:
        return len(self.encoded)

    @cached_property
    def digest(self) -> bytes:
        """SHA-256 of the encoded header: every chunk's AAD."""
        return hashlib.sha256(self.encoded).digest()

    @property
    def stride(self) -> int:
        """Bytes on disk of one full chunk."""
        return self.chunk_size + TAG_SIZE

    def plaintext_size(self, raw_size: int) -> int:
        """Plaintext size of a file of ``raw_size`` bytes with this header.

        Raises IntegrityError when no valid file has that size (truncated
        at a chunk boundary or inside the header).
        """
        body = raw_size - self.length
        full, tail = divmod(body, self.stride)
        if body < 0 or tail < TAG_SIZE:
            raise IntegrityError()
        return full * self.chunk_size + tail - TAG_SIZE

    def ciphertext_size(self, plaintext_size: int) -> int:
        """Bytes on disk for ``plaintext_size`` bytes of plaintext."""
        full, tail = divmod(plaintext_size, self.chunk_size)
        return self.length + full * self.stride + tail + TAG_SIZE


def read_header(raw: BinaryIO) -> Header:
    """Parse the header at the start of ``raw``; leaves raw just after it.

    Checks structure only (FormatError); authenticity is checked when the
    key is unwrapped, by the reader or writer.
    """
    raw.seek(0)
    fixed = read_exact(raw, _FIXED.size)
    if len(fixed) < _FIXED.size:
        raise FormatError("too short for a censusdrop encrypted file")
    magic, version, flags, chunk_size, file_id, name_length = _FIXED.unpack(fixed)
    if magic != MAGIC:
        raise FormatError("not a censusdrop encrypted file")
    if version != FORMAT_VERSION:
        raise FormatError(f"unsupported format version {version}")
    if flags != 0 or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise FormatError("invalid flags or chunk size in header")

    round_name = _read_round_name(raw, name_length)
    (wrapped_length,) = _WRAPPED_LENGTH.unpack(_read_field(raw, _WRAPPED_LENGTH.size))
    if wrapped_length > MAX_WRAPPED_SIZE:
        raise FormatError("invalid wrapped secret length in header")
    wrapped = _read_field(raw, wrapped_length)
    return Header(chunk_size, file_id, round_name, wrapped, version)


def plaintext_size_of(
    path_or_raw_size: int | str | os.PathLike[str], header: Header
) -> int:
    """Plaintext size from the ciphertext size (or file path) and header.

    Constant time: no decryption. The size is authenticated only once the
    last chunk is read; IntegrityError if no valid file has this size.
    """
    if isinstance(path_or_raw_size, int):
        raw_size = path_or_raw_size
    else:
        raw_size = os.stat(path_or_raw_size).st_size
    return header.plaintext_size(raw_size)


def open_header(raw: BinaryIO, keyring: Keyring) -> tuple[Header, AESGCM]:
    """Read the header and unwrap the file key, authenticating the header."""
    header = read_header(raw)
    try:
        secret = keyring.unwrap_file_key(
            header.round_name, header.wrapped_secret, header.wrapped_aad
        )
    except KeyNotFound as exc:
        # A flipped bit can name another round; to the reader this is one
        # more header that does not authenticate.
        raise IntegrityError() from exc
    if len(secret) != FILE_SECRET_SIZE:
        raise IntegrityError()
    return header, file_cipher(secret, header)


def file_cipher(secret: bytes, header: Header) -> AESGCM:
    """The AEAD of one file: its key derived from the secret and file id."""
    info = _KEY_LABEL + bytes([header.version]) + header.file_id
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info)
    return AESGCM(hkdf.derive(secret))


def chunk_nonce(index: int, last: bool) -> bytes:
    """STREAM nonce: the chunk counter, then the last-chunk flag."""
    return index.to_bytes(_COUNTER_SIZE, "big") + (b"\x01" if last else b"\x00")


def open_chunk(
    cipher: AESGCM, header: Header, index: int, last: bool, sealed: Buffer
) -> bytes:
    """Decrypt and authenticate chunk ``index``; IntegrityError if not."""
    if len(sealed) < TAG_SIZE:
        raise IntegrityError()
    try:
        return cipher.decrypt(chunk_nonce(index, last), sealed, header.digest)
    except InvalidTag:
        raise IntegrityError() from None


def read_exact(raw: BinaryIO, length: int) -> bytes:
    """Read ``length`` bytes, fewer only at end of file."""
    data = raw.read(length)
    if len(data) == length or not data:
        return data
    parts = [data]
    missing = length - len(data)
    while missing > 0:
        more = raw.read(missing)
        if not more:
            break
        parts.append(more)
        missing -= len(more)
    return b"".join(parts)


def readinto_exact(raw: BinaryIO, target: memoryview) -> int:
    """Fill ``target`` from ``raw``; the count is short only at end of file."""
    filled = 0
    while filled < len(target):
        count = raw.readinto(target[filled:])  # type: ignore[attr-defined]
        if not count:
            break
        filled += count
    return filled


def write_all(raw: BinaryIO, data: Buffer) -> None:
    """Write everything, even to an unbuffered file that writes short."""
    view = memoryview(data)
    while view:
        view = view[raw.write(view) :]


def _read_round_name(raw: BinaryIO, length: int) -> str:
    try:
        return validate_round_name(_read_field(raw, length).decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise FormatError("invalid round name in header") from None


def _read_field(raw: BinaryIO, length: int) -> bytes:
    data = read_exact(raw, length)
    if len(data) < length:
        raise FormatError("header is truncated")
    return data
