"""TLS is required on the control and data channels, and strict."""

from __future__ import annotations

import ftplib
import socket
import ssl
import warnings

import pytest

from conftest import TEST_PASSWORD
from ftpclient import connect
from ftpclient import download
from ftpclient import login
from ftpclient import tls_context
from ftpclient import upload


def _plain(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=10)
    assert sock.recv(1024).startswith(b"220 ")
    return sock


def _exchange(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line)
    return sock.recv(4096)


def test_banner_reveals_no_version(sqlite_server) -> None:
    sock = socket.create_connection(sqlite_server.address, timeout=10)
    banner = sock.recv(1024).decode()
    sock.close()
    assert banner.startswith("220 ")
    assert "pyftpdlib" not in banner and "2.2" not in banner


def test_user_before_auth_is_refused(sqlite_server) -> None:
    client = connect(sqlite_server.address, sqlite_server.cafile)
    with pytest.raises(ftplib.error_perm, match="^530"):
        client.sendcmd("USER wuhan")
    client.close()


def test_plain_client_cannot_log_in(sqlite_server) -> None:
    client = ftplib.FTP(timeout=10)
    client.connect(*sqlite_server.address)
    with pytest.raises(ftplib.error_perm, match="^530"):
        client.login("wuhan", TEST_PASSWORD)
    client.close()


def test_prot_c_is_refused(sqlite_server) -> None:
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    with pytest.raises(ftplib.error_perm, match="^536"):
        client.sendcmd("PROT C")
    client.quit()


def test_passive_without_prot_p_is_refused(sqlite_server) -> None:
    client = connect(sqlite_server.address, sqlite_server.cafile)
    client.auth()
    client.login("wuhan", TEST_PASSWORD)
    with pytest.raises(ftplib.error_perm, match="^521"):
        client.sendcmd("PASV")
    client.quit()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_versions_are_refused(sqlite_server, version: ssl.TLSVersion) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = tls_context(sqlite_server.cafile, maximum=version)
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.set_ciphers("ALL:@SECLEVEL=0")
    client = connect(sqlite_server.address, sqlite_server.cafile, context=context)
    with pytest.raises((ssl.SSLError, OSError)):
        client.auth()
    client.close()


def _login_with(server, version: ssl.TLSVersion) -> str:
    context = tls_context(server.cafile, minimum=version, maximum=version)
    client = connect(server.address, server.cafile, context=context)
    try:
        client.auth()
        client.login("wuhan", TEST_PASSWORD)
        return str(client.sock.version())
    finally:
        client.close()


def test_tls_12_is_accepted_and_13_is_off_by_default(sqlite_server) -> None:
    assert _login_with(sqlite_server, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    with pytest.raises((ssl.SSLError, OSError)):
        _login_with(sqlite_server, ssl.TLSVersion.TLSv1_3)


def test_tls_13_is_accepted_when_configured(tmp_path) -> None:
    from conftest import configured_server

    with configured_server(tmp_path, max_version='"1.3"') as running:
        assert _login_with(running, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
        # Data connections resume the session and move files.
        context = tls_context(running.cafile, minimum=ssl.TLSVersion.TLSv1_3)
        client = login(
            running.address, running.cafile, "wuhan", TEST_PASSWORD, context=context
        )
        assert upload(client, "一点三.txt", b"tls 1.3").startswith("226")
        assert download(client, "一点三.txt") == b"tls 1.3"
        client.quit()


def test_commands_pipelined_behind_auth_are_not_executed(sqlite_server) -> None:
    sock = _plain(sqlite_server.address)
    reply = _exchange(
        sock, b"AUTH TLS\r\nUSER wuhan\r\nPASS " + TEST_PASSWORD.encode() + b"\r\n"
    )
    assert reply.startswith(b"503 ")
    assert sock.recv(1024) == b""  # closed, nothing else answered
    sock.close()


def test_auth_alone_then_tls_works(sqlite_server) -> None:
    sock = _plain(sqlite_server.address)
    assert _exchange(sock, b"AUTH TLS\r\n").startswith(b"234 ")
    context = tls_context(sqlite_server.cafile)
    tls = context.wrap_socket(sock, server_hostname="127.0.0.1")
    assert _exchange(tls, b"NOOP\r\n").startswith(b"200")
    tls.close()


def test_unknown_and_unsafe_commands_are_not_implemented(sqlite_server) -> None:
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    for command in (
        "SITE CHMOD 777 x",
        "STOU",
        "MFMT 20200101000000 x",
        "PORT 127,0,0,1,4,1",
    ):
        with pytest.raises(ftplib.error_perm, match="^502"):
            client.sendcmd(command)
    client.quit()
