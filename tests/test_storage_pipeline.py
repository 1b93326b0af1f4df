"""A large upload hashed, encrypted and written on a thread of its own
(censusdrop.server.storage.pipeline), over real files and over FTPS."""

from __future__ import annotations

import errno
import ftplib
import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

from censusdrop.server.storage import pipeline
from censusdrop.server.storage.crypto import DecryptingReader
from censusdrop.server.storage.crypto import EncryptingWriter
from censusdrop.server.storage.crypto import read_header
from censusdrop.server.storage.errors import IntegrityError
from censusdrop.server.storage.keyring import Keyring
from censusdrop.server.storage.pipeline import EarlyWriteback
from censusdrop.server.storage.pipeline import PipelinedWriter
from censusdrop.server.storage.pipeline import ReadAhead
from censusdrop.server.storage.pipeline import RecentUploads
from conftest import TEST_PASSWORD
from ftpclient import download
from ftpclient import login
from ftpclient import upload

ROUND = "2020-hubei"
MIB = 1024 * 1024
PIECE = 256 * 1024  # what the data channel hands over at a time


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    keyring = Keyring.create(tmp_path / "keys")
    keyring.ensure_round_key(ROUND)
    return keyring


def _pieces(data: bytes) -> list[bytes]:
    return [data[at : at + PIECE] for at in range(0, len(data), PIECE)]


def _threads() -> int:
    return sum(t.name == "censusdrop-upload" for t in threading.enumerate())


def test_a_large_file_is_written_on_a_thread_and_reads_back(
    tmp_path: Path, keyring: Keyring
) -> None:
    data = os.urandom(pipeline.INLINE_BYTES + 9 * MIB + 4321)
    path = tmp_path / "big.enc"
    with path.open("wb") as raw:
        writer = PipelinedWriter(EncryptingWriter(EarlyWriteback(raw), keyring, ROUND))
        seen_thread = False
        for piece in _pieces(data):
            writer.write(piece)
            seen_thread = seen_thread or _threads() > 0
        assert writer.plaintext_size == len(data)  # counted before written
        assert writer.sha256_hex() == hashlib.sha256(data).hexdigest()
        writer.finish()
    assert seen_thread
    assert _threads() == 0  # joined by sha256_hex
    with DecryptingReader(path.open("rb"), keyring) as reader:
        assert reader.read() == data


def test_a_small_file_never_starts_a_thread(tmp_path: Path, keyring: Keyring) -> None:
    data = os.urandom(pipeline.INLINE_BYTES)
    path = tmp_path / "small.enc"
    with path.open("wb") as raw:
        writer = PipelinedWriter(EncryptingWriter(raw, keyring, ROUND))
        for piece in _pieces(data):
            writer.write(piece)
            assert _threads() == 0
        writer.finish()
    with DecryptingReader(path.open("rb"), keyring) as reader:
        assert reader.read() == data


class FillsUp(io.BytesIO):
    """A file on a disk that is full once ``room`` bytes are written."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def write(self, data: object) -> int:
        if self.tell() >= self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)  # type: ignore[arg-type]


def test_a_full_disk_on_the_thread_is_raised_to_the_caller(keyring: Keyring) -> None:
    raw = FillsUp(pipeline.INLINE_BYTES + 2 * MIB)
    writer = PipelinedWriter(EncryptingWriter(raw, keyring, ROUND))
    with pytest.raises(OSError) as raised:
        for piece in _pieces(bytes(pipeline.INLINE_BYTES + 40 * MIB)):
            writer.write(piece)
        writer.join()
    assert raised.value.errno == errno.ENOSPC
    written = raw.tell()
    with pytest.raises(OSError):  # stays failed; nothing more is written
        writer.finish()
    writer.close()  # quiet: the upload is being thrown away
    assert raw.tell() == written
    assert _threads() == 0


def test_early_writeback_keeps_every_byte_in_order(tmp_path: Path) -> None:
    data = os.urandom(3 * pipeline.WRITEBACK_BYTES + 777)
    path = tmp_path / "plain.bin"
    with path.open("wb") as raw:
        file = EarlyWriteback(raw)
        for at in range(0, len(data), 300_000):
            file.write(data[at : at + 300_000])
        file.flush()
        os.fsync(file.fileno())
    assert path.read_bytes() == data


def _drop_mid_upload(client: ftplib.FTP_TLS, path: str, data: bytes) -> str:
    """Send part of an upload, then end the connection without a TLS
    close_notify, as a killed client does."""
    client.voidcmd("TYPE I")
    conn = client.transfercmd(f"STOR {path}")
    conn.sendall(data)
    conn.shutdown(2)
    conn.close()
    return client.getline()


def test_a_large_upload_dropped_mid_way_resumes_over_ftps(server) -> None:
    data = os.urandom(pipeline.INLINE_BYTES + 12 * MIB + 99)
    client = login(server.address, server.cafile, "wuhan", TEST_PASSWORD)
    cut = pipeline.INLINE_BYTES + 7 * MIB + 5000
    reply = _drop_mid_upload(client, "扫描件.tif", data[:cut])
    assert reply.startswith("426"), reply
    offset = client.size("扫描件.tif")
    assert offset is not None and 0 < offset <= cut
    assert offset % (64 * 1024) == 0
    reply = client.storbinary("STOR 扫描件.tif", io.BytesIO(data[offset:]), rest=offset)
    assert reply.startswith("226"), reply
    assert download(client, "扫描件.tif") == data
    client.quit()
    [version] = server.services.storage.history("420100", "扫描件.tif")
    assert version.sha256 == hashlib.sha256(data).hexdigest()


def _encrypted(path: Path, keyring: Keyring, data: bytes) -> None:
    with path.open("wb") as raw:
        writer = EncryptingWriter(raw, keyring, ROUND)
        writer.write(data)
        writer.finish()


@pytest.mark.parametrize("views", [False, True], ids=["copies", "views"])
def test_read_ahead_returns_every_byte_in_order(
    tmp_path: Path, keyring: Keyring, views: bool
) -> None:
    data = os.urandom(5 * pipeline.BATCH_BYTES + 12345)
    path = tmp_path / "big.enc"
    _encrypted(path, keyring, data)
    reader = DecryptingReader(path.open("rb"), keyring)
    reader.seek(1000)
    ahead = ReadAhead(reader)

    def take(size: int) -> bytes:
        if not views:
            return ahead.read(size)
        view = ahead.read_view(size)  # not copied out of the block
        assert isinstance(view, memoryview) and len(view) <= size
        return bytes(view)

    pieces = []
    while piece := take(300_000):  # across block boundaries
        pieces.append(piece)
    assert b"".join(pieces) == data[1000:]
    assert take(10) == b""
    ahead.close()
    reader.close()


def test_read_ahead_raises_a_damaged_chunk_after_the_blocks_before_it(
    tmp_path: Path, keyring: Keyring
) -> None:
    data = os.urandom(4 * pipeline.BATCH_BYTES)
    path = tmp_path / "damaged.enc"
    _encrypted(path, keyring, data)
    with path.open("rb") as raw:
        header = read_header(raw)
    # Flip a bit in the first chunk of the third block.
    damaged = header.length + 2 * 16 * header.stride + 100
    content = bytearray(path.read_bytes())
    content[damaged] ^= 1
    path.write_bytes(bytes(content))

    reader = DecryptingReader(path.open("rb"), keyring)
    ahead = ReadAhead(reader)
    received = bytearray()
    with pytest.raises(IntegrityError):
        while piece := ahead.read(65536):
            received += piece
    assert bytes(received) == data[: 2 * pipeline.BATCH_BYTES]
    ahead.close()
    reader.close()


def test_read_ahead_stops_when_closed_early(tmp_path: Path, keyring: Keyring) -> None:
    path = tmp_path / "big.enc"
    _encrypted(path, keyring, os.urandom(8 * pipeline.BATCH_BYTES))
    reader = DecryptingReader(path.open("rb"), keyring)
    ahead = ReadAhead(reader)
    ahead.read(10)
    ahead.close()  # the thread was waiting to hand over a block
    assert not any(t.name == "censusdrop-download" for t in threading.enumerate())
    reader.close()


def test_a_large_download_is_read_ahead_and_resumes_mid_way(server) -> None:
    data = os.urandom(pipeline.INLINE_BYTES + 6 * MIB + 5)
    client = login(server.address, server.cafile, "wuhan", TEST_PASSWORD)
    upload(client, "大文件.pdf", data)
    assert download(client, "大文件.pdf") == data
    client.voidcmd("TYPE I")
    tail = bytearray()
    client.retrbinary("RETR 大文件.pdf", tail.extend, rest=3 * MIB + 17)
    assert bytes(tail) == data[3 * MIB + 17 :]
    client.quit()


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_the_newest_large_upload_is_kept_until_the_next_begins(
    tmp_path: Path,
) -> None:
    recent = RecentUploads()
    first, second = tmp_path / "first.bin", tmp_path / "second.bin"
    first.write_bytes(b"1" * 1000)
    second.write_bytes(b"2" * 1000)
    with first.open("rb") as a, second.open("rb") as b:
        kept_a, kept_b = os.dup(a.fileno()), os.dup(b.fileno())
    recent.keep(kept_a)
    assert _is_open(kept_a)
    recent.keep(kept_b)  # the newer one replaces it
    assert not _is_open(kept_a) and _is_open(kept_b)
    recent.let_go()  # a large upload begins
    assert not _is_open(kept_b)
    assert first.read_bytes() == b"1" * 1000  # only memory was let go


def test_a_discarded_upload_is_not_kept(tmp_path: Path) -> None:
    recent = RecentUploads()
    path = tmp_path / "gone.bin"
    path.write_bytes(b"x" * 1000)
    with path.open("rb") as raw:
        kept = os.dup(raw.fileno())
    path.unlink()
    recent.keep(kept)
    assert not _is_open(kept)


def test_a_large_upload_file_is_kept_when_closed(tmp_path: Path) -> None:
    path = tmp_path / "large.bin"
    raw = path.open("wb")
    file = EarlyWriteback(raw)
    file.write(os.urandom(pipeline.WRITEBACK_BYTES + 10))
    fd_before = raw.fileno()
    file.close()
    assert raw.closed
    assert pipeline.RECENT._kept  # a descriptor of its own, still open
    kept = pipeline.RECENT._kept[-1]
    assert kept != fd_before and _is_open(kept)
    assert os.fstat(kept).st_ino == path.stat().st_ino
    pipeline.RECENT.let_go()
    assert not _is_open(kept)


def test_discarding_a_read_ahead_closes_the_reader_without_waiting(
    tmp_path: Path, keyring: Keyring
) -> None:
    path = tmp_path / "big.enc"
    _encrypted(path, keyring, os.urandom(8 * pipeline.BATCH_BYTES))
    reader = DecryptingReader(path.open("rb"), keyring)
    ahead = ReadAhead(reader)
    ahead.read(10)
    ahead.discard()  # the thread may still be reading: it closes the reader
    for _ in range(200):
        if reader.closed:
            break
        threading.Event().wait(0.01)
    assert reader.closed

    finished = DecryptingReader(path.open("rb"), keyring)
    finished.seek(8 * pipeline.BATCH_BYTES - 5)
    done = ReadAhead(finished)
    assert len(done.read(100)) == 5
    assert done.read(100) == b""  # the thread has handed over the end
    done.discard()  # its thread has ended, or is ending: it is closed either way
    for _ in range(200):
        if finished.closed:
            break
        threading.Event().wait(0.01)
    assert finished.closed


class Stalled(io.BytesIO):
    """A file on a disk that stops taking writes until ``go`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()

    def write(self, data: object) -> int:
        if self.tell() > pipeline.INLINE_BYTES:
            self.go.wait(30)
        return super().write(data)  # type: ignore[arg-type]


def test_a_writer_behind_the_network_says_so_instead_of_blocking(
    keyring: Keyring,
) -> None:
    raw = Stalled()
    writer = PipelinedWriter(EncryptingWriter(raw, keyring, ROUND))
    accepted = 0
    for piece in _pieces(bytes(pipeline.INLINE_BYTES + 40 * MIB)):
        if not writer.has_room():
            break
        writer.write(piece)  # never waits: there was room
        accepted += len(piece)
    assert not writer.has_room()
    # Held: at most the queue and the thread's batch, beyond what was written.
    held = accepted - raw.tell()
    assert held <= (pipeline.QUEUE_BATCHES + 2) * pipeline.BATCH_BYTES + PIECE
    room = threading.Event()
    writer.when_room(room.set)
    assert not room.is_set()  # still behind: told later, by the thread
    raw.go.set()
    assert room.wait(30)
    writer.join()
    assert writer.has_room()
    assert writer.plaintext_size == accepted
