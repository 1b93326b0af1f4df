"""Resuming interrupted uploads over FTPS (REST + STOR, APPE, SIZE)."""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import io
import os
import socket
import time

import pytest

from conftest import TEST_PASSWORD
from ftpclient import download
from ftpclient import login
from ftpclient import upload

CHUNK = 64 * 1024


def _drop_mid_upload(
    client: ftplib.FTP_TLS, command: str, data: bytes, rest: int | None = None
) -> str:
    """Send part of an upload, then end the TCP connection without a TLS
    close_notify, as a killed client does (the kernel still delivers what
    was sent, then FIN)."""
    client.voidcmd("TYPE I")
    conn = client.transfercmd(command, rest)
    conn.sendall(data)
    raw = socket.socket(fileno=os.dup(conn.fileno()))
    raw.shutdown(socket.SHUT_WR)
    raw.close()
    conn.close()
    return client.getline()


def _size(client: ftplib.FTP, path: str) -> int | None:
    client.voidcmd("TYPE I")
    return client.size(path)


def _store(client: ftplib.FTP, command: str, data: bytes, rest: int | None) -> str:
    return client.storbinary(command, io.BytesIO(data), rest=rest)


def _wuhan(server) -> ftplib.FTP_TLS:  # type: ignore[no-untyped-def]
    return login(server.address, server.cafile, "wuhan", TEST_PASSWORD)


def test_dropped_upload_resumes_with_rest_and_stor(server) -> None:
    data = os.urandom(5 * CHUNK + 12_345)
    client = _wuhan(server)
    reply = _drop_mid_upload(client, "STOR 扫描件.pdf", data[: 3 * CHUNK + 999])
    assert reply.startswith("426") and "REST" in reply, reply
    offset = _size(client, "扫描件.pdf")
    assert offset == 3 * CHUNK
    assert client.nlst() == []  # a partial is never listed

    reply = _store(client, "STOR 扫描件.pdf", data[offset:], rest=offset)
    assert reply.startswith("226"), reply
    assert download(client, "扫描件.pdf") == data
    assert _size(client, "扫描件.pdf") == len(data)
    client.quit()

    [version] = server.services.storage.history("420100", "扫描件.pdf")
    assert version.sha256 == hashlib.sha256(data).hexdigest()
    assert version.size == len(data)
    assert list((server.instance.folder / "data" / "staging").iterdir()) == []


def test_a_resumed_upload_becomes_a_new_version(sqlite_server) -> None:
    old, new = os.urandom(1000), os.urandom(4 * CHUNK + 7)
    client = _wuhan(sqlite_server)
    upload(client, "报告.pdf", old)
    _drop_mid_upload(client, "STOR 报告.pdf", new[: 2 * CHUNK + 5])
    assert download(client, "报告.pdf") == old  # the earlier version stays
    assert client.nlst() == ["报告.pdf"]
    offset = _size(client, "报告.pdf")
    assert offset == 2 * CHUNK
    _store(client, "STOR 报告.pdf", new[offset:], rest=offset)
    assert download(client, "报告.pdf") == new
    client.quit()
    history = sqlite_server.services.storage.history("420100", "报告.pdf")
    assert [v.state for v in history] == ["current", "superseded"]
    assert history[0].sha256 == hashlib.sha256(new).hexdigest()


def test_rest_at_another_offset_is_refused_naming_the_offset(sqlite_server) -> None:
    data = os.urandom(3 * CHUNK)
    client = _wuhan(sqlite_server)
    _drop_mid_upload(client, "STOR 表.xlsx", data[: 2 * CHUNK + 1])
    with pytest.raises(ftplib.error_perm) as refused:
        _store(client, "STOR 表.xlsx", data[1000:], rest=1000)
    message = str(refused.value)
    assert message.startswith("554") and str(2 * CHUNK) in message, message
    assert "续传" in message
    assert _size(client, "表.xlsx") == 2 * CHUNK  # the partial is still there
    client.quit()


def test_rest_without_a_partial_is_refused(sqlite_server) -> None:
    client = _wuhan(sqlite_server)
    upload(client, "完整.pdf", b"x" * 5000)
    with pytest.raises(ftplib.error_perm) as refused:
        _store(client, "STOR 完整.pdf", b"tail", rest=5000)
    assert str(refused.value).startswith("554"), refused.value
    assert "没有可续传" in str(refused.value)
    assert download(client, "完整.pdf") == b"x" * 5000
    client.quit()


def test_appe_continues_the_partial_as_curl_does(sqlite_server) -> None:
    data = os.urandom(6 * CHUNK + 3)
    client = _wuhan(sqlite_server)
    _drop_mid_upload(client, "STOR 影像.tif", data[: 4 * CHUNK + 100])
    offset = _size(client, "影像.tif")
    assert offset == 4 * CHUNK
    reply = _store(client, "APPE 影像.tif", data[offset:], rest=None)
    assert reply.startswith("226"), reply
    assert download(client, "影像.tif") == data
    client.quit()


def test_appe_without_a_partial_still_appends(sqlite_server) -> None:
    client = _wuhan(sqlite_server)
    upload(client, "日志.txt", b"first ")
    _store(client, "APPE 日志.txt", b"second", rest=None)
    assert download(client, "日志.txt") == b"first second"
    client.quit()


def test_a_partial_can_be_dropped_and_resumed_again(sqlite_server) -> None:
    data = os.urandom(6 * CHUNK)
    client = _wuhan(sqlite_server)
    _drop_mid_upload(client, "STOR 大.pdf", data[: CHUNK + 10])
    first = _size(client, "大.pdf")
    reply = _drop_mid_upload(
        client, "STOR 大.pdf", data[first : 4 * CHUNK + 10], rest=first
    )
    assert reply.startswith("426"), reply
    second = _size(client, "大.pdf")
    assert second == 4 * CHUNK
    _store(client, "STOR 大.pdf", data[second:], rest=second)
    assert download(client, "大.pdf") == data
    client.quit()


def test_a_new_upload_from_zero_replaces_the_partial(sqlite_server) -> None:
    client = _wuhan(sqlite_server)
    _drop_mid_upload(client, "STOR 重传.pdf", os.urandom(3 * CHUNK))
    assert _size(client, "重传.pdf") == 3 * CHUNK
    upload(client, "重传.pdf", b"whole file")
    assert _size(client, "重传.pdf") == len(b"whole file")
    client.quit()


def test_another_account_cannot_see_or_resume_the_partial(sqlite_server) -> None:
    sqlite_server.instance.add_account("wuhan2", "prefecture", "420100")
    data = os.urandom(3 * CHUNK)
    client = _wuhan(sqlite_server)
    _drop_mid_upload(client, "STOR 共享.pdf", data[: 2 * CHUNK + 1])
    client.quit()
    other = login(sqlite_server.address, sqlite_server.cafile, "wuhan2", TEST_PASSWORD)
    with pytest.raises(ftplib.error_perm):
        _size(other, "共享.pdf")
    with pytest.raises(ftplib.error_perm) as refused:
        _store(other, "STOR 共享.pdf", data[2 * CHUNK :], rest=2 * CHUNK)
    assert "没有可续传" in str(refused.value)
    other.quit()


def test_a_tampered_partial_is_refused_and_removed(sqlite_server) -> None:
    data = os.urandom(4 * CHUNK)
    client = _wuhan(sqlite_server)
    _drop_mid_upload(client, "STOR 篡改.pdf", data[: 3 * CHUNK + 1])
    staging = sqlite_server.instance.folder / "data" / "staging"
    [part] = staging.glob("resume-*.part")
    raw = bytearray(part.read_bytes())
    raw[-100] ^= 0x01
    part.write_bytes(bytes(raw))
    with pytest.raises(ftplib.error_perm) as refused:
        _store(client, "STOR 篡改.pdf", data[3 * CHUNK :], rest=3 * CHUNK)
    assert str(refused.value).startswith("554"), refused.value
    assert "完整性" in str(refused.value)
    with pytest.raises(ftplib.error_perm):
        _size(client, "篡改.pdf")  # gone: the next upload starts from zero
    client.quit()


def test_an_upload_whose_client_leaves_as_it_ends_is_not_committed(
    sqlite_server,
) -> None:
    """curl, giving up mid-upload, closes the data connection cleanly (TLS
    close_notify) and the control connection with it: not a complete file."""
    client = _wuhan(sqlite_server)
    upload(client, "放弃.pdf", b"earlier")
    client.voidcmd("TYPE I")
    conn = client.transfercmd("STOR 放弃.pdf")
    conn.sendall(os.urandom(3 * CHUNK + 5))
    _wait_received(sqlite_server, 3 * CHUNK)
    client.sock.unwrap().close()  # the control connection ends first
    with contextlib.suppress(OSError):
        conn.unwrap()
    conn.close()
    storage = sqlite_server.services.storage
    _wait_for_offset(storage, "放弃.pdf")
    assert storage.read_bytes("420100", "放弃.pdf") == b"earlier"
    assert len(storage.history("420100", "放弃.pdf")) == 1


def test_an_aborted_upload_is_not_committed(sqlite_server) -> None:
    client = _wuhan(sqlite_server)
    client.voidcmd("TYPE I")
    conn = client.transfercmd("STOR 中止.pdf")
    conn.sendall(os.urandom(2 * CHUNK + 5))
    _wait_received(sqlite_server, 2 * CHUNK)
    client.sock.sendall(b"ABOR\r\n")
    with contextlib.suppress(OSError):
        conn.unwrap()
    conn.close()
    client.sock.sendall(b"NOOP\r\n")
    replies = [client.getline()]
    while not replies[-1].startswith("200"):
        replies.append(client.getline())
    assert "226 Transfer complete." not in replies, replies
    assert client.nlst() == []
    assert _size(client, "中止.pdf") == 2 * CHUNK
    client.quit()


def _wait_for_offset(storage, path: str) -> int:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        offset = storage.resumable_offset("420100", path, "wuhan")
        if offset is not None:
            return int(offset)
        time.sleep(0.05)
    raise AssertionError(f"no partial of {path}")


def _wait_received(server, size: int) -> None:  # type: ignore[no-untyped-def]
    """Wait until the server has written ``size`` bytes of an upload."""
    staging = server.instance.folder / "data" / "staging"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        parts = [p for p in staging.glob("*.part") if "resume-" not in p.name]
        if any(p.stat().st_size >= size for p in parts):
            return
        time.sleep(0.02)
    raise AssertionError("the server did not receive the upload")
