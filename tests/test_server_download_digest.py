"""The SHA-256 a download's end record gives for what was served.

A complete binary download from offset 0 takes the version's digest from
the index (``digest_source`` "index"); a resumed, aborted, damaged or ASCII
download records the digest of exactly what it sent ("computed").
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from censusdrop.audit.query import EventFilter
from censusdrop.audit.query import StoredEvent
from censusdrop.audit.query import find_events
from conftest import TEST_PASSWORD
from ftpclient import download
from ftpclient import login
from roundkit import REVIEWING
from roundkit import WUHAN
from roundkit import distribute
from roundkit import fixed_clock
from roundkit import make_round
from roundkit import wait_for

BIG = 24 * 1024 * 1024  # far more than socket buffers hold
WAIT = 10.0


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stored(running: Any, path: str, data: bytes) -> None:
    storage = running.services.storage
    storage.ensure_area(WUHAN)
    storage.write_bytes(WUHAN, path, data, "wuhan")


def _download_ends(running: Any, count: int) -> list[StoredEvent]:
    """The first ``count`` download_end records, once they are written (a
    download cut short is recorded after its bytes are read again)."""
    deadline = time.monotonic() + WAIT
    while True:
        running.services.audit.flush(WAIT)
        ends = list(
            find_events(running.services.engine, EventFilter(actions=("download_end",)))
        )
        if len(ends) >= count or time.monotonic() > deadline:
            assert len(ends) == count, ends
            return ends
        time.sleep(0.05)


def _abort_mid_download(client: ftplib.FTP, path: str, rest: int = 0) -> bytes:
    """Start a binary download, take its first bytes, then ABOR it."""
    client.voidcmd("TYPE I")
    conn = client.transfercmd(f"RETR {path}", rest or None)
    first = conn.recv(64 * 1024)
    client.putcmd("ABOR")
    assert client.getline().startswith("426")
    assert client.getline().startswith("226")
    conn.close()
    return bytes(first)


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("size", [700_000, BIG], ids=["read-in-line", "read-ahead"])
def test_a_complete_download_records_the_index_digest(sqlite_server, size: int) -> None:
    # A large file is sent from views of the blocks decrypted ahead: the
    # bytes counted are still exactly those sent.
    data = os.urandom(size)
    _stored(sqlite_server, "扫描件.pdf", data)
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    received = download(client, "扫描件.pdf")
    client.quit()

    (end,) = _download_ends(sqlite_server, 1)
    current = sqlite_server.services.storage.current_version(WUHAN, "扫描件.pdf")
    assert received == data
    assert end.outcome == "ok" and end.bytes == len(data)
    assert end.digest == _sha256(received) == current.sha256
    assert end.version == current.id
    assert end.details["digest_source"] == "index"


def test_an_empty_file_records_the_digest_of_nothing(sqlite_server) -> None:
    _stored(sqlite_server, "空.txt", b"")
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    assert download(client, "空.txt") == b""
    client.quit()

    (end,) = _download_ends(sqlite_server, 1)
    assert (end.outcome, end.bytes, end.digest) == ("ok", 0, _sha256(b""))
    assert end.details["digest_source"] == "index"


def test_a_resumed_download_records_the_digest_of_what_it_sent(
    sqlite_server,
) -> None:
    data = os.urandom(500_000)
    _stored(sqlite_server, "大文件.pdf", data)
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    client.voidcmd("TYPE I")
    received = io.BytesIO()
    client.retrbinary("RETR 大文件.pdf", received.write, rest=123_456)
    client.quit()

    (end,) = _download_ends(sqlite_server, 1)
    assert received.getvalue() == data[123_456:]
    assert end.outcome == "ok" and end.bytes == len(data) - 123_456
    assert end.digest == _sha256(data[123_456:])
    assert end.details["digest_source"] == "computed"


@pytest.mark.parametrize("rest", [0, 1_000_000])
def test_an_aborted_download_records_the_digest_of_exactly_the_bytes_sent(
    sqlite_server, rest: int
) -> None:
    data = os.urandom(BIG)
    _stored(sqlite_server, "big.bin", data)
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    first = _abort_mid_download(client, "big.bin", rest)
    assert download(client, "big.bin") == data  # the session goes on
    client.quit()

    aborted, complete = _download_ends(sqlite_server, 2)
    assert data[rest:].startswith(first)
    assert aborted.outcome == "aborted" and 0 < aborted.bytes < BIG - rest
    assert aborted.digest == _sha256(data[rest : rest + aborted.bytes])
    assert aborted.details["digest_source"] == "computed"
    assert complete.details["digest_source"] == "index"


def test_a_damaged_file_stops_with_451_and_records_only_what_was_sent(
    sqlite_server,
) -> None:
    data = os.urandom(1024 * 1024)
    _stored(sqlite_server, "受损.pdf", data)
    local = sqlite_server.services.storage.layout.local(WUHAN, "受损.pdf")
    _flip(local, 600_000)
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    received = io.BytesIO()
    with pytest.raises((ftplib.Error, ssl.SSLError, OSError)) as stopped:
        client.retrbinary("RETR 受损.pdf", received.write)
    assert str(stopped.value).startswith("451"), stopped.value
    client.quit()

    (end,) = _download_ends(sqlite_server, 1)
    assert end.outcome == "aborted" and end.bytes < 600_000
    assert data.startswith(received.getvalue())
    assert end.digest == _sha256(data[: end.bytes]) != _sha256(data)
    assert end.details["digest_source"] == "computed"


def test_an_ascii_download_records_the_digest_of_the_stored_text(
    sqlite_server,
) -> None:
    data = "第一行\n第二行\n".encode() * 5000
    _stored(sqlite_server, "名单.txt", data)
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    lines: list[str] = []
    client.retrlines("RETR 名单.txt", lines.append)
    client.quit()

    (end,) = _download_ends(sqlite_server, 1)
    assert lines == ["第一行", "第二行"] * 5000
    assert end.outcome == "ok" and end.bytes > len(data)  # CR before each LF
    assert end.digest == _sha256(data)
    assert end.details["digest_source"] == "computed"


def test_custody_items_of_complete_and_aborted_downloads_are_unchanged(
    sqlite_server,
) -> None:
    running = sqlite_server
    fixed_clock(running, REVIEWING)
    data = os.urandom(BIG)
    _stored(running, "big.bin", data)
    make_round(running.services)
    distribute(running.services, WUHAN)
    version = running.services.storage.current_version(WUHAN, "big.bin")

    expert = login(running.address, running.cafile, "expert", TEST_PASSWORD)
    _abort_mid_download(expert, "/武汉市/big.bin")
    assert download(expert, "/武汉市/big.bin") == data
    expert.quit()

    aborted, complete = _download_ends(running, 2)
    wait_for(lambda: len(running.services.custody.items()) == 2)
    first, second = running.services.custody.items()
    assert (first.complete, first.bytes) == (False, aborted.bytes)
    assert (second.complete, second.bytes) == (True, complete.bytes) == (True, BIG)
    for item in (first, second):
        assert (item.version, item.sha256) == (version.id, version.sha256)
        assert (item.reviewer, item.prefecture, item.path) == (
            "expert",
            WUHAN,
            "big.bin",
        )


def test_a_large_download_to_a_slow_reader_is_whole(sqlite_server) -> None:
    # The reader is slow at first: many of the server's writes of views
    # are cut short by a full socket, and the rest of each is sent later.
    data = os.urandom(BIG)
    _stored(sqlite_server, "慢读.bin", data)
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    received = bytearray()

    def slowly(block: bytes) -> None:
        if len(received) < 4 * 1024 * 1024:
            time.sleep(0.002)
        received.extend(block)

    client.voidcmd("TYPE I")
    assert client.retrbinary("RETR 慢读.bin", slowly).startswith("226")
    client.quit()

    (end,) = _download_ends(sqlite_server, 1)
    assert bytes(received) == data
    assert end.outcome == "ok" and end.bytes == BIG
    assert end.details["digest_source"] == "index"
