"""Transfers over FTPS: complete uploads commit, broken ones never do."""

from __future__ import annotations

import ftplib
import os
import socket

import pytest

from conftest import TEST_PASSWORD
from ftpclient import download
from ftpclient import login
from ftpclient import upload


def _drop_mid_upload(client: ftplib.FTP_TLS, path: str, data: bytes) -> str:
    """Send part of an upload, then cut the TCP connection without TLS
    close_notify, as a crashed client or a broken network would."""
    conn = client.transfercmd(f"STOR {path}")
    conn.sendall(data)
    raw = socket.socket(fileno=os.dup(conn.fileno()))
    raw.setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
    )
    raw.close()
    conn.close()
    return client.getline()


def test_dropped_upload_is_not_committed_and_not_answered_226(sqlite_server) -> None:
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    upload(client, "扫描件.pdf", b"first version")
    reply = _drop_mid_upload(client, "扫描件.pdf", os.urandom(300_000))
    assert reply.startswith("426"), reply
    assert download(client, "扫描件.pdf") == b"first version"
    assert client.nlst() == ["扫描件.pdf"]
    client.quit()


def test_dropped_first_upload_leaves_no_file(sqlite_server) -> None:
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    reply = _drop_mid_upload(client, "新文件.pdf", os.urandom(100_000))
    assert reply.startswith("426"), reply
    assert client.nlst() == []
    with pytest.raises(ftplib.error_perm):
        download(client, "新文件.pdf")
    client.quit()


def test_overwrite_keeps_the_earlier_version(sqlite_server) -> None:
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    upload(client, "报告.docx", b"v1")
    upload(client, "报告.docx", b"v2")
    client.delete("报告.docx")
    client.quit()
    history = sqlite_server.services.storage.history("420100", "报告.docx")
    assert [v.state for v in history] == ["deleted", "superseded"]
    assert [v.size for v in history] == [2, 2]
    storage = sqlite_server.services.storage
    with storage.open_version("420100", "报告.docx", history[1].id) as old:
        assert old.read() == b"v1"


def test_empty_file_round_trips(sqlite_server) -> None:
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    upload(client, "空.txt", b"")
    assert download(client, "空.txt") == b""
    client.quit()


def test_download_resumes_with_rest(sqlite_server) -> None:
    data = os.urandom(500_000)
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    upload(client, "大文件.pdf", data)
    client.voidcmd("TYPE I")
    chunks: list[bytes] = []
    client.retrbinary("RETR 大文件.pdf", chunks.append, rest=123_456)
    assert b"".join(chunks) == data[123_456:]
    client.quit()
