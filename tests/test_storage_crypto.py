"""The encrypted file format: round trips, random access, resume, tampering.

Real files in tmp_path and a real keyring. Most tests use 64-byte chunks so
that a few hundred bytes span several chunks; the round trips around the
chunk boundary use the default 64 KiB.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
from pathlib import Path

import pytest

from censusdrop.server.storage.crypto import DEFAULT_CHUNK_SIZE
from censusdrop.server.storage.crypto import DecryptingReader
from censusdrop.server.storage.crypto import EncryptingWriter
from censusdrop.server.storage.crypto import plaintext_size_of
from censusdrop.server.storage.crypto import read_header
from censusdrop.server.storage.errors import INTEGRITY_MESSAGE
from censusdrop.server.storage.errors import FormatError
from censusdrop.server.storage.errors import IntegrityError
from censusdrop.server.storage.errors import KeyDestroyed
from censusdrop.server.storage.errors import KeyNotFound
from censusdrop.server.storage.fileformat import TAG_SIZE
from censusdrop.server.storage.keyring import Keyring

CHUNK = 64
ROUND = "2020-hubei"
# Four full chunks and a last one of 10 bytes.
PLAINTEXT = random.Random(1).randbytes(4 * CHUNK + 10)
MARKER = "机密：武汉市第二次全国污染源普查验收材料 CENSUS-MARKER-7f3a".encode()


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    keyring = Keyring.create(tmp_path / "keys")
    keyring.ensure_round_key(ROUND)
    return keyring


@pytest.fixture
def encrypted(tmp_path: Path, keyring: Keyring) -> Path:
    path = tmp_path / "data" / "a.enc"
    path.parent.mkdir()
    encrypt_to(path, keyring, PLAINTEXT)
    return path


def encrypt_to(
    path: Path, keyring: Keyring, data: bytes, *, chunk_size: int = CHUNK
) -> EncryptingWriter:
    with open(path, "wb") as raw:
        writer = EncryptingWriter(raw, keyring, ROUND, chunk_size=chunk_size)
        writer.write(data)
        writer.finish()
    return writer


def decrypt(path: Path, keyring: Keyring) -> bytes:
    with open(path, "rb") as raw:
        data: bytes = DecryptingReader(raw, keyring).read()
    return data


def split(path: Path) -> tuple[bytes, list[bytes]]:
    """The header bytes and the sealed chunks of an encrypted file."""
    data = path.read_bytes()
    with open(path, "rb") as raw:
        header = read_header(raw)
    body = data[header.length :]
    chunks = [body[i : i + header.stride] for i in range(0, len(body), header.stride)]
    return data[: header.length], chunks


def join(path: Path, header: bytes, chunks: list[bytes]) -> None:
    path.write_bytes(header + b"".join(chunks))


def assert_rejected(path: Path, keyring: Keyring) -> None:
    with pytest.raises(IntegrityError) as caught:
        decrypt(path, keyring)
    if type(caught.value) is IntegrityError:
        assert str(caught.value) == INTEGRITY_MESSAGE


class SpyRaw(io.BytesIO):
    """An in-memory file that counts the bytes read from it."""

    bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data

    def readinto(self, buffer: object) -> int:
        count = super().readinto(buffer)  # type: ignore[arg-type]
        self.bytes_read += count
        return count


# -- round trips ---------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        DEFAULT_CHUNK_SIZE - 1,
        DEFAULT_CHUNK_SIZE,
        DEFAULT_CHUNK_SIZE + 1,
        3 * DEFAULT_CHUNK_SIZE,
        5 * 1024 * 1024 + 3,
    ],
)
def test_round_trip_at_and_around_chunk_boundaries(
    tmp_path: Path, keyring: Keyring, size: int
) -> None:
    data = random.Random(size).randbytes(size)
    path = tmp_path / "f.enc"
    writer = encrypt_to(path, keyring, data, chunk_size=DEFAULT_CHUNK_SIZE)

    assert decrypt(path, keyring) == data
    assert writer.plaintext_size == size
    assert writer.sha256_hex() == hashlib.sha256(data).hexdigest()


def test_round_trip_of_chinese_text_written_in_odd_pieces(
    tmp_path: Path, keyring: Keyring
) -> None:
    text = (
        "湖北省第二次全国污染源普查验收材料，黄冈市、恩施州、神农架林区。\n" * 500
    ).encode()
    path = tmp_path / "报告.enc"
    with open(path, "wb") as raw:
        writer = EncryptingWriter(raw, keyring, ROUND, chunk_size=1000)
        for start in range(0, len(text), 777):
            writer.write(memoryview(text)[start : start + 777])
        writer.finish()

    assert decrypt(path, keyring).decode() == text.decode()
    assert writer.sha256_hex() == hashlib.sha256(text).hexdigest()


def test_header_names_the_round_and_the_file_id(
    encrypted: Path, keyring: Keyring
) -> None:
    with open(encrypted, "rb") as raw:
        header = read_header(raw)
    assert header.round_name == ROUND
    assert header.chunk_size == CHUNK
    assert len(header.file_id) == 16
    assert header.ciphertext_size(len(PLAINTEXT)) == encrypted.stat().st_size


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 10 * CHUNK])
def test_plaintext_size_comes_from_the_file_size_without_a_key(
    tmp_path: Path, keyring: Keyring, size: int
) -> None:
    path = tmp_path / "f.enc"
    encrypt_to(path, keyring, bytes(size))
    with open(path, "rb") as raw:
        header = read_header(raw)

    assert plaintext_size_of(path, header) == size
    assert plaintext_size_of(path.stat().st_size, header) == size


def test_bytes_on_disk_contain_no_plaintext(tmp_path: Path, keyring: Keyring) -> None:
    data = MARKER * 2000
    path = tmp_path / "f.enc"
    encrypt_to(path, keyring, data, chunk_size=DEFAULT_CHUNK_SIZE)
    on_disk = path.read_bytes()

    assert MARKER not in on_disk
    assert b"CENSUS-MARKER" not in on_disk
    assert "普查".encode() not in on_disk
    assert "普查".encode("gbk") not in on_disk


# -- random access -------------------------------------------------------


def test_seek_and_read_at_arbitrary_offsets_match_the_plaintext(
    tmp_path: Path, keyring: Keyring
) -> None:
    data = random.Random(2).randbytes(50 * CHUNK + 17)
    path = tmp_path / "f.enc"
    encrypt_to(path, keyring, data)
    chooser = random.Random(3)

    with DecryptingReader(open(path, "rb"), keyring) as reader:
        assert reader.size == len(data)
        for _ in range(300):
            offset = chooser.randrange(len(data) + 10)
            length = chooser.choice([0, 1, 5, CHUNK - 1, CHUNK, CHUNK + 1, 333, -1])
            assert reader.seek(offset) == offset
            expected = data[offset:] if length < 0 else data[offset : offset + length]
            assert reader.read(length) == expected
            assert reader.tell() == offset + len(expected)


def test_seek_relative_to_current_position_and_end(
    encrypted: Path, keyring: Keyring
) -> None:
    with DecryptingReader(open(encrypted, "rb"), keyring) as reader:
        reader.seek(-20, os.SEEK_END)
        assert reader.read(5) == PLAINTEXT[-20:-15]
        reader.seek(3, os.SEEK_CUR)
        assert reader.read() == PLAINTEXT[-12:]
        assert reader.read() == b""
        with pytest.raises(ValueError):
            reader.seek(-1)


def test_seek_to_the_middle_does_not_decrypt_from_the_start(keyring: Keyring) -> None:
    buffer = io.BytesIO()
    writer = EncryptingWriter(buffer, keyring, ROUND)
    writer.write(random.Random(4).randbytes(64 * DEFAULT_CHUNK_SIZE))
    writer.finish()
    raw = SpyRaw(buffer.getvalue())

    reader = DecryptingReader(raw, keyring)
    before = raw.bytes_read
    reader.seek(40 * DEFAULT_CHUNK_SIZE + 5)
    reader.read(100)

    assert raw.bytes_read - before == DEFAULT_CHUNK_SIZE + TAG_SIZE


def test_reader_has_no_fileno_so_sendfile_cannot_send_ciphertext(
    encrypted: Path, keyring: Keyring
) -> None:
    with DecryptingReader(open(encrypted, "rb"), keyring) as reader:
        assert not hasattr(reader, "fileno")
        assert reader.readable() and reader.seekable() and not reader.writable()


def test_close_closes_the_raw_file_and_later_reads_fail(
    encrypted: Path, keyring: Keyring
) -> None:
    with open(encrypted, "rb") as raw:
        reader = DecryptingReader(raw, keyring)
        reader.close()

    assert raw.closed and reader.closed
    with pytest.raises(ValueError):
        reader.read()


# -- resume --------------------------------------------------------------


def test_resume_after_a_kill_mid_chunk_gives_the_right_content_and_digest(
    tmp_path: Path, keyring: Keyring
) -> None:
    data = random.Random(5).randbytes(10 * CHUNK + 30)
    path = tmp_path / "upload.part"
    with open(path, "wb") as raw:
        writer = EncryptingWriter(raw, keyring, ROUND, chunk_size=CHUNK)
        writer.write(data[: 7 * CHUNK + 40])  # 7 chunks sealed, 40 bytes held
        raw.flush()
        header_length = writer.header.length
    # The process died while writing chunk 7: half of it reached the disk.
    with open(path, "r+b") as raw:
        raw.truncate(header_length + 6 * (CHUNK + TAG_SIZE) + 50)

    with open(path, "r+b") as raw:
        resumed = EncryptingWriter.resume(raw, keyring)
        assert resumed.plaintext_size == 6 * CHUNK
        assert path.stat().st_size == header_length + 6 * (CHUNK + TAG_SIZE)
        resumed.write(data[resumed.plaintext_size :])
        resumed.finish()

    assert decrypt(path, keyring) == data
    assert resumed.sha256_hex() == hashlib.sha256(data).hexdigest()
    assert resumed.file_id == writer.file_id


def test_resume_of_a_file_with_only_a_header_starts_at_zero(
    tmp_path: Path, keyring: Keyring
) -> None:
    path = tmp_path / "upload.part"
    with open(path, "wb") as raw:
        EncryptingWriter(raw, keyring, ROUND, chunk_size=CHUNK)

    with open(path, "r+b") as raw:
        resumed = EncryptingWriter.resume(raw, keyring)
        assert resumed.plaintext_size == 0
        resumed.write(b"abc")
        resumed.finish()
    assert decrypt(path, keyring) == b"abc"


def test_resume_of_a_finished_file_keeps_its_last_chunk(
    encrypted: Path, keyring: Keyring
) -> None:
    with open(encrypted, "r+b") as raw:
        resumed = EncryptingWriter.resume(raw, keyring)
        assert resumed.plaintext_size == len(PLAINTEXT)
        resumed.write(b"more")
        resumed.finish()

    assert decrypt(encrypted, keyring) == PLAINTEXT + b"more"
    assert resumed.sha256_hex() == hashlib.sha256(PLAINTEXT + b"more").hexdigest()


def test_resume_refuses_a_file_with_a_damaged_complete_chunk(
    encrypted: Path, keyring: Keyring
) -> None:
    header, chunks = split(encrypted)
    chunks[1] = bytes([chunks[1][0] ^ 1]) + chunks[1][1:]
    join(encrypted, header, chunks)

    with open(encrypted, "r+b") as raw, pytest.raises(IntegrityError):
        EncryptingWriter.resume(raw, keyring)


def test_writer_refuses_use_after_a_failed_write(
    tmp_path: Path, keyring: Keyring
) -> None:
    class FullDisk(io.BytesIO):
        def write(self, data: object) -> int:
            if self.tell() > 200:
                raise OSError(28, "No space left on device")
            return super().write(data)  # type: ignore[arg-type]

    writer = EncryptingWriter(FullDisk(), keyring, ROUND, chunk_size=CHUNK)
    with pytest.raises(OSError):  # the disk fills on the second write
        writer.write(bytes(10 * CHUNK))
        writer.write(bytes(10 * CHUNK))
    with pytest.raises(ValueError):
        writer.write(b"x")
    with pytest.raises(ValueError):
        writer.finish()


def test_writer_misuse_raises_value_errors(keyring: Keyring) -> None:
    with pytest.raises(ValueError):
        EncryptingWriter(io.BytesIO(), keyring, ROUND, chunk_size=8)
    with pytest.raises(ValueError):
        EncryptingWriter(io.BytesIO(), keyring, "../etc")
    with pytest.raises(KeyNotFound):
        EncryptingWriter(io.BytesIO(), keyring, "no-such-round")

    writer = EncryptingWriter(io.BytesIO(), keyring, ROUND)
    writer.finish()
    writer.finish()  # a second finish is harmless
    with pytest.raises(ValueError):
        writer.write(b"late")


# -- tampering -----------------------------------------------------------


def test_truncation_at_a_chunk_boundary_is_rejected(
    encrypted: Path, keyring: Keyring
) -> None:
    header, chunks = split(encrypted)
    join(encrypted, header, chunks[:-1])
    assert_rejected(encrypted, keyring)


def test_truncation_in_the_middle_of_a_chunk_is_rejected(
    encrypted: Path, keyring: Keyring
) -> None:
    header, chunks = split(encrypted)
    join(encrypted, header, [*chunks[:2], chunks[2][:40]])
    assert_rejected(encrypted, keyring)


def test_truncation_right_after_the_header_is_rejected(
    encrypted: Path, keyring: Keyring
) -> None:
    header, _ = split(encrypted)
    join(encrypted, header, [])
    assert_rejected(encrypted, keyring)


def test_truncation_inside_the_header_is_rejected(
    encrypted: Path, keyring: Keyring
) -> None:
    header, _ = split(encrypted)
    join(encrypted, header[:40], [])
    assert_rejected(encrypted, keyring)


def test_an_empty_file_is_rejected(encrypted: Path, keyring: Keyring) -> None:
    encrypted.write_bytes(b"")
    with pytest.raises(FormatError):
        decrypt(encrypted, keyring)


def test_a_forged_empty_last_chunk_is_caught_by_a_read_of_exact_size(
    tmp_path: Path, keyring: Keyring
) -> None:
    path = tmp_path / "f.enc"
    data = bytes(4 * CHUNK)
    encrypt_to(path, keyring, data)
    header, chunks = split(path)
    join(path, header, [*chunks[:-1], os.urandom(TAG_SIZE)])

    with open(path, "rb") as raw, pytest.raises(IntegrityError):
        DecryptingReader(raw, keyring).read(len(data))


def test_swapped_chunks_are_rejected(encrypted: Path, keyring: Keyring) -> None:
    header, chunks = split(encrypted)
    chunks[1], chunks[2] = chunks[2], chunks[1]
    join(encrypted, header, chunks)
    assert_rejected(encrypted, keyring)


def test_a_duplicated_chunk_is_rejected(encrypted: Path, keyring: Keyring) -> None:
    header, chunks = split(encrypted)
    join(encrypted, header, [*chunks[:2], chunks[1], *chunks[2:]])
    assert_rejected(encrypted, keyring)


def test_a_dropped_chunk_is_rejected(encrypted: Path, keyring: Keyring) -> None:
    header, chunks = split(encrypted)
    join(encrypted, header, [chunks[0], *chunks[2:]])
    assert_rejected(encrypted, keyring)


def test_a_chunk_spliced_from_another_file_under_the_same_key_is_rejected(
    tmp_path: Path, encrypted: Path, keyring: Keyring
) -> None:
    other = tmp_path / "b.enc"
    encrypt_to(other, keyring, PLAINTEXT)
    header, chunks = split(encrypted)
    _, foreign = split(other)
    chunks[2] = foreign[2]
    join(encrypted, header, chunks)
    assert_rejected(encrypted, keyring)


def test_a_foreign_header_is_rejected(
    tmp_path: Path, encrypted: Path, keyring: Keyring
) -> None:
    other = tmp_path / "b.enc"
    encrypt_to(other, keyring, PLAINTEXT)
    _, chunks = split(encrypted)
    foreign_header, _ = split(other)
    join(encrypted, foreign_header, chunks)
    assert_rejected(encrypted, keyring)


def test_a_flipped_bit_anywhere_is_rejected(encrypted: Path, keyring: Keyring) -> None:
    original = encrypted.read_bytes()
    for position in range(len(original)):
        damaged = bytearray(original)
        damaged[position] ^= 1 << (position % 8)
        encrypted.write_bytes(damaged)
        assert_rejected(encrypted, keyring)


def test_bytes_read_before_damage_is_found_are_authentic(
    encrypted: Path, keyring: Keyring
) -> None:
    header, chunks = split(encrypted)
    chunks[3] = chunks[3][:-1] + bytes([chunks[3][-1] ^ 0x80])
    join(encrypted, header, chunks)

    served = b""
    with open(encrypted, "rb") as raw, pytest.raises(IntegrityError):
        reader = DecryptingReader(raw, keyring)
        while data := reader.read(7):
            served += data
    assert PLAINTEXT.startswith(served)
    assert len(served) <= 3 * CHUNK


@pytest.mark.parametrize("extra", [1, TAG_SIZE, CHUNK + TAG_SIZE])
def test_trailing_bytes_after_the_last_chunk_are_rejected(
    encrypted: Path, keyring: Keyring, extra: int
) -> None:
    with open(encrypted, "ab") as raw:
        raw.write(os.urandom(extra))
    assert_rejected(encrypted, keyring)


def test_a_file_from_another_keyring_is_rejected(
    tmp_path: Path, encrypted: Path
) -> None:
    stranger = Keyring.create(tmp_path / "other-keys")
    stranger.ensure_round_key(ROUND)
    assert_rejected(encrypted, stranger)


def test_a_file_of_an_unknown_round_is_rejected(
    tmp_path: Path, encrypted: Path
) -> None:
    stranger = Keyring.create(tmp_path / "other-keys")
    assert_rejected(encrypted, stranger)


def test_a_plain_file_is_not_taken_for_an_encrypted_one(
    tmp_path: Path, keyring: Keyring
) -> None:
    path = tmp_path / "plain.txt"
    path.write_bytes(MARKER)
    with pytest.raises(FormatError, match="not a censusdrop encrypted file"):
        decrypt(path, keyring)


def test_a_destroyed_round_makes_earlier_copies_unreadable(
    tmp_path: Path, encrypted: Path, keyring: Keyring
) -> None:
    copy_of_data_root = tmp_path / "backup.enc"
    shutil.copy(encrypted, copy_of_data_root)
    keyring.destroy_round_key(ROUND)
    reopened = Keyring.open(keyring.keys_dir)

    for path in (encrypted, copy_of_data_root):
        with pytest.raises(KeyDestroyed):
            decrypt(path, reopened)


def test_master_rotation_keeps_files_readable(
    encrypted: Path, keyring: Keyring
) -> None:
    old_id = keyring.master_key_id
    new_id = keyring.rotate_master()

    assert new_id != old_id
    assert decrypt(encrypted, keyring) == PLAINTEXT
    assert decrypt(encrypted, Keyring.open(keyring.keys_dir)) == PLAINTEXT
