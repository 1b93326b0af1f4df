"""Slow clients: a command line dribbled a byte at a time is cut off.

The idle timeout restarts with every command, so a client that sends one
byte every few seconds would hold its session (and one of the address's
connections) for as long as it likes; ``server.line_timeout`` bounds the
time from a line's first byte to its CRLF.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from censusdrop.audit.query import EventFilter
from censusdrop.audit.query import find_events
from conftest import TEST_PASSWORD
from conftest import RunningServer
from conftest import configured_server
from ftpclient import login
from ftpclient import tls_context

LINE_TIMEOUT = 1
GAP = 0.25  # seconds between two dribbled bytes


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[RunningServer]:
    with configured_server(tmp_path, line_timeout=str(LINE_TIMEOUT)) as running:
        yield running


@pytest.fixture
def lenient(tmp_path: Path) -> Iterator[RunningServer]:
    with configured_server(tmp_path, line_timeout="3") as running:
        yield running


def _read_reply(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return data


def _dribble(sock: socket.socket, payload: bytes) -> tuple[bytes, float]:
    """Send ``payload`` a byte every GAP seconds until the server answers;
    return the answer and the seconds from the first byte to it."""
    started = time.monotonic()
    for index in range(len(payload)):
        sock.sendall(payload[index : index + 1])
        readable, _, _ = select.select([sock], [], [], GAP)
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
        if readable or pending:
            return _read_reply(sock), time.monotonic() - started
    return b"", time.monotonic() - started


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(1024) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True


def _tls_login(server: RunningServer) -> ssl.SSLSocket:
    raw = socket.create_connection(server.address, timeout=10)
    assert _read_reply(raw).startswith(b"220")
    raw.sendall(b"AUTH TLS\r\n")
    assert _read_reply(raw).startswith(b"234")
    context = tls_context(server.cafile, maximum=ssl.TLSVersion.TLSv1_2)
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    for line, code in (("USER wuhan", b"331"), (f"PASS {TEST_PASSWORD}", b"230")):
        sock.sendall(line.encode() + b"\r\n")
        assert _read_reply(sock).startswith(code)
    return sock


def test_a_line_dribbled_a_byte_at_a_time_is_cut_with_421(
    strict: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    sock = socket.create_connection(strict.address, timeout=10)
    assert _read_reply(sock).startswith(b"220")

    reply, seconds = _dribble(sock, b"USER " + b"x" * 60)
    assert reply.startswith(b"421"), reply
    assert LINE_TIMEOUT <= seconds < LINE_TIMEOUT + 3 * GAP + 1
    assert _closed_by_server(sock)
    sock.close()

    strict.services.audit.flush(10)
    refused = [
        e
        for e in find_events(strict.services.engine, EventFilter(actions=("refused",)))
        if e.details.get("rule") == "line_timeout"
    ]
    assert len(refused) == 1
    assert any("command line not finished" in r.getMessage() for r in caplog.records)


def test_a_dribbling_client_does_not_hold_up_others(strict: RunningServer) -> None:
    slow = socket.create_connection(strict.address, timeout=10)
    assert _read_reply(slow).startswith(b"220")
    slow.sendall(b"US")  # and nothing more for now

    other = login(strict.address, strict.cafile, "wuhan", TEST_PASSWORD)
    started = time.monotonic()
    for _ in range(3):
        assert other.voidcmd("NOOP").startswith("200")
    assert time.monotonic() - started < 1

    reply, _ = _dribble(slow, b"ER " + b"y" * 60)
    assert reply.startswith(b"421"), reply
    assert other.voidcmd("NOOP").startswith("200")  # still served after
    other.quit()
    slow.close()


def test_a_line_dribbled_over_tls_after_login_is_cut(strict: RunningServer) -> None:
    sock = _tls_login(strict)
    reply, _ = _dribble(sock, b"CWD " + "很长的目录名".encode() * 10)
    assert reply.startswith(b"421"), reply
    assert _closed_by_server(sock)
    sock.close()


def test_a_tls_handshake_dribbled_after_auth_is_cut(strict: RunningServer) -> None:
    sock = socket.create_connection(strict.address, timeout=10)
    assert _read_reply(sock).startswith(b"220")
    sock.sendall(b"AUTH TLS\r\n")
    assert _read_reply(sock).startswith(b"234")
    # A handshake record announcing 512 bytes, sent a byte at a time.
    answer, seconds = _dribble(sock, b"\x16\x03\x01\x02\x00" + bytes(60))
    assert answer == b""  # closed: there is no TLS channel to reply on yet
    assert seconds < LINE_TIMEOUT + 3 * GAP + 1
    assert _closed_by_server(sock)
    sock.close()


def test_an_over_long_line_dribbled_on_is_cut_too(strict: RunningServer) -> None:
    sock = socket.create_connection(strict.address, timeout=10)
    assert _read_reply(sock).startswith(b"220")
    sock.sendall(b"NOOP " + b"z" * 4096)  # past the line limit: 500, then dropped
    assert _read_reply(sock).startswith(b"500")
    reply, _ = _dribble(sock, b"z" * 40)
    assert reply.startswith(b"421"), reply
    sock.close()


def test_slow_typing_within_the_limit_is_served_line_after_line(
    lenient: RunningServer,
) -> None:
    sock = socket.create_connection(lenient.address, timeout=10)
    assert _read_reply(sock).startswith(b"220")
    started = time.monotonic()
    for _ in range(3):  # 3 lines of about 1.5 s each: longer than one limit
        reply, _ = _dribble(sock, b"NOOP\r\n")
        assert reply.startswith(b"200"), reply
    assert time.monotonic() - started > 3
    sock.sendall(b"QUIT\r\n")
    assert _read_reply(sock).startswith(b"221")
    sock.close()
