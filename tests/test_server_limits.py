"""Connection limits, timeouts, implicit FTPS and active mode."""

from __future__ import annotations

import ftplib
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import TEST_PASSWORD
from conftest import RunningServer
from conftest import configured_server
from ftpclient import login
from ftpclient import tls_context
from ftpclient import upload


def _running(tmp_path: Path, **overrides: str) -> Iterator[RunningServer]:
    with configured_server(tmp_path, **overrides) as running:
        yield running


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[RunningServer]:
    yield from _running(tmp_path, max_connections_per_ip="2")


@pytest.fixture
def impatient(tmp_path: Path) -> Iterator[RunningServer]:
    yield from _running(tmp_path, idle_timeout="1")


@pytest.fixture
def stalling(tmp_path: Path) -> Iterator[RunningServer]:
    yield from _running(tmp_path, data_timeout="1")


@pytest.fixture
def implicit(tmp_path: Path) -> Iterator[RunningServer]:
    port = _free_port()
    yield from _running(tmp_path, implicit_tls_port=str(port))


@pytest.fixture
def active(tmp_path: Path) -> Iterator[RunningServer]:
    yield from _running(tmp_path, allow_active_mode="true")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_reply(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return data.decode()


def test_connections_beyond_the_per_address_cap_get_421(capped) -> None:
    held = [socket.create_connection(capped.address, timeout=10) for _ in range(2)]
    for sock in held:
        assert _read_reply(sock).startswith("220")
    extra = socket.create_connection(capped.address, timeout=10)
    assert _read_reply(extra).startswith("421")
    extra.close()
    held[0].close()
    time.sleep(0.2)
    again = socket.create_connection(capped.address, timeout=10)
    assert _read_reply(again).startswith("220")
    again.close()
    held[1].close()


def test_an_idle_control_connection_is_closed(impatient) -> None:
    client = login(impatient.address, impatient.cafile, "wuhan", TEST_PASSWORD)
    client.sock.settimeout(10)
    started = time.monotonic()
    line = client.getline()
    assert line.startswith("421"), line
    assert time.monotonic() - started < 8
    client.close()


def test_implicit_ftps_speaks_tls_from_the_first_byte(implicit) -> None:
    port = implicit.server.implicit_address[1]
    context = tls_context(implicit.cafile, maximum=ssl.TLSVersion.TLSv1_2)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    assert _read_reply(sock).startswith("220")
    for line, code in (
        ("USER wuhan", "331"),
        (f"PASS {TEST_PASSWORD}", "230"),
        ("PBSZ 0", "200"),
        ("PROT P", "200"),
        ("PWD", "257"),
    ):
        sock.sendall(line.encode() + b"\r\n")
        assert _read_reply(sock).startswith(code), line
    sock.close()


def test_plain_bytes_on_the_implicit_port_get_nothing(implicit) -> None:
    port = implicit.server.implicit_address[1]
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"USER wuhan\r\n")
    try:
        data = sock.recv(1024)
    except (ConnectionResetError, TimeoutError):
        data = b""
    assert not data.startswith(b"331")
    sock.close()


def test_active_mode_refuses_a_third_party_address(active) -> None:
    client = login(active.address, active.cafile, "wuhan", TEST_PASSWORD)
    with pytest.raises(ftplib.error_perm, match="^50"):
        client.sendcmd("PORT 127,0,0,2,195,80")
    client.quit()


def test_active_mode_refuses_a_privileged_port(active) -> None:
    client = login(active.address, active.cafile, "wuhan", TEST_PASSWORD)
    with pytest.raises(ftplib.error_perm, match="^50"):
        client.sendcmd("PORT 127,0,0,1,0,21")
    client.quit()


def test_active_mode_works_back_to_the_client(active) -> None:
    client = login(active.address, active.cafile, "wuhan", TEST_PASSWORD)
    client.set_pasv(False)
    assert client.nlst() == []
    client.quit()


def test_a_stalled_download_is_cut_off(stalling) -> None:
    client = login(stalling.address, stalling.cafile, "wuhan", TEST_PASSWORD)
    upload(client, "大文件.pdf", os.urandom(40 * 1024 * 1024))
    client.voidcmd("TYPE I")
    conn = client.transfercmd("RETR 大文件.pdf")  # and never read from it
    client.sock.settimeout(20)
    started = time.monotonic()
    reply = client.getline()
    while not reply.startswith(("421", "426")):
        reply = client.getline()
    assert time.monotonic() - started < 15
    conn.close()
    client.close()
