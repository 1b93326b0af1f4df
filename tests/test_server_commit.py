"""Upload commits off the event loop: the session waits for them, a failed
commit is answered 451 and changes nothing, and big transfers round-trip
through the multi-record reads and sends of the data channel."""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import select
import sqlite3
import threading

import pytest

from conftest import TEST_PASSWORD
from conftest import RunningServer
from ftpclient import download
from ftpclient import login
from ftpclient import upload

AREA = "420100"
REFUSING_TRIGGER = (
    "CREATE TRIGGER refuse_versions BEFORE INSERT ON file_versions"
    " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
)


def _database(server: RunningServer) -> sqlite3.Connection:
    path = server.services.engine.url.database
    assert path is not None
    return sqlite3.connect(path, isolation_level=None, timeout=30)


def _staged(server: RunningServer) -> list[str]:
    staging = server.services.storage.layout.staging
    return sorted(p.name for p in staging.iterdir() if p.suffix != ".tmp")


def test_session_reads_no_command_while_an_upload_commits(
    sqlite_server: RunningServer,
) -> None:
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    upload(client, "名册.xlsx", b"v1")
    client.voidcmd("TYPE I")
    conn = client.transfercmd("STOR 名册.xlsx")  # its start record is durable
    database = _database(sqlite_server)
    database.execute("BEGIN IMMEDIATE")  # the commit's index row must wait
    try:
        conn.sendall(b"v2")
        conn.unwrap()  # the server closed the data connection: committing
        conn.close()
        client.putcmd("NOOP")
        control = client.sock
        assert control is not None
        early, _, _ = select.select([control], [], [], 0.5)
        assert not early, "a reply came while the commit was held back"
    finally:
        database.execute("ROLLBACK")
        database.close()
    assert client.getresp().startswith("226")
    assert client.getresp().startswith("200")  # NOOP ran after the commit
    assert download(client, "名册.xlsx") == b"v2"
    client.quit()


def test_commit_refused_by_the_database_gives_451_and_keeps_the_earlier_version(
    sqlite_server: RunningServer,
) -> None:
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    upload(client, "预算.pdf", b"earlier version")
    database = _database(sqlite_server)
    database.execute(REFUSING_TRIGGER)
    try:
        with pytest.raises(ftplib.error_temp, match="^451"):
            upload(client, "预算.pdf", b"must not replace it")
        assert download(client, "预算.pdf") == b"earlier version"
        assert _staged(sqlite_server) == []
    finally:
        database.execute("DROP TRIGGER refuse_versions")
        database.close()
    history = sqlite_server.services.storage.history(AREA, "预算.pdf")
    assert [(v.state, v.size) for v in history] == [("current", 15)]
    upload(client, "预算.pdf", b"accepted now")  # the session carries on
    assert download(client, "预算.pdf") == b"accepted now"
    client.quit()


def test_concurrent_uploads_of_one_path_leave_one_current_version(
    sqlite_server: RunningServer,
) -> None:
    blobs = [os.urandom(200_000) for _ in range(4)]
    errors: list[BaseException] = []

    def send(blob: bytes) -> None:
        try:
            client = login(
                sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD
            )
            for _ in range(3):
                upload(client, "同一文件.bin", blob)
            client.quit()
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(blob,)) for blob in blobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    served = download(client, "同一文件.bin")  # the file in place is the current
    client.quit()
    history = sqlite_server.services.storage.history(AREA, "同一文件.bin")
    assert [v.state for v in history].count("current") == 1
    assert len(history) == 12
    current = next(v for v in history if v.state == "current")
    assert current.sha256 == hashlib.sha256(served).hexdigest()


def test_large_file_round_trips_through_multi_record_reads(
    sqlite_server: RunningServer,
) -> None:
    data = os.urandom(5 * 1024 * 1024 + 12_345)  # not a whole number of chunks
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    client.storbinary("STOR 影像.tif", io.BytesIO(data), blocksize=1024 * 1024)
    assert hashlib.sha256(download(client, "影像.tif")).digest() == (
        hashlib.sha256(data).digest()
    )
    client.quit()
    current = sqlite_server.services.storage.current_version(AREA, "影像.tif")
    assert current is not None
    assert current.size == len(data)
    assert current.sha256 == hashlib.sha256(data).hexdigest()
