"""Data connections must resume the control connection's TLS session."""

from __future__ import annotations

import ftplib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import TEST_PASSWORD
from conftest import RunningServer
from conftest import configured_server
from ftpclient import download
from ftpclient import login
from ftpclient import upload


def _fresh_handshake_client(server) -> ftplib.FTP_TLS:
    client = login(server.address, server.cafile, "wuhan", TEST_PASSWORD)
    client.reuse_session = False
    return client


def _expect_522(client: ftplib.FTP_TLS, transfer) -> None:  # type: ignore[no-untyped-def]
    """The server closes the data connection at once; depending on timing
    the client's handshake fails or its read ends, then 522 arrives."""
    try:
        transfer()
    except ftplib.Error as exc:
        assert str(exc).startswith("522"), exc
    except OSError:
        assert client.getline().startswith("522")
    else:
        raise AssertionError("transfer without session reuse succeeded")


def test_download_without_session_reuse_gets_522_and_no_bytes(sqlite_server) -> None:
    good = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    upload(good, "机密.pdf", b"secret bytes")
    good.quit()
    client = _fresh_handshake_client(sqlite_server)
    received = io.BytesIO()
    _expect_522(client, lambda: client.retrbinary("RETR 机密.pdf", received.write))
    assert received.getvalue() == b""
    client.close()


def test_listing_without_session_reuse_gets_522(sqlite_server) -> None:
    client = _fresh_handshake_client(sqlite_server)
    _expect_522(client, client.nlst)
    client.close()


def test_upload_without_session_reuse_gets_522_and_stores_nothing(
    sqlite_server,
) -> None:
    client = _fresh_handshake_client(sqlite_server)
    _expect_522(client, lambda: upload(client, "新.pdf", b"x" * 100_000))
    client.close()
    check = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    assert check.nlst() == []
    check.quit()


@pytest.fixture
def lenient(tmp_path: Path) -> Iterator[RunningServer]:
    with configured_server(tmp_path, tls_session_reuse_required="false") as running:
        yield running


def test_reuse_can_be_switched_off_for_clients_that_cannot(lenient) -> None:
    client = _fresh_handshake_client(lenient)
    upload(client, "文件.pdf", b"data")
    assert download(client, "文件.pdf") == b"data"
    client.quit()


def test_after_a_dropped_data_connection_the_session_resumes(sqlite_server) -> None:
    # OpenSSL forgets a cached session when a connection that used it ends
    # without a TLS close; the data connections after it must still resume.
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    client.voidcmd("TYPE I")
    conn = client.transfercmd("STOR 中断.bin")
    conn.sendall(b"x" * 100_000)
    conn.shutdown(2)  # no close_notify, as a killed client
    conn.close()
    assert client.getline().startswith("426")
    assert upload(client, "完整.bin", b"y" * 1000).startswith("226")
    assert download(client, "完整.bin") == b"y" * 1000
    client.quit()
