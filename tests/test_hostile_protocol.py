"""Hostile clients: fuzzed command lines, floods, pre-login probing, and
secrets that must never reach a log."""

from __future__ import annotations

import io
import logging
import re
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from conftest import TEST_PASSWORD
from ftpclient import login
from ftpclient import tls_context

REPLY = re.compile(r"^[1-5]\d\d[ -]")


def _tls_control(server) -> ssl.SSLSocket:
    raw = socket.create_connection(server.address, timeout=10)
    assert raw.recv(1024).startswith(b"220")
    raw.sendall(b"AUTH TLS\r\n")
    assert raw.recv(1024).startswith(b"234")
    context = tls_context(server.cafile, maximum=ssl.TLSVersion.TLSv1_2)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def _reply(sock: ssl.SSLSocket) -> str:
    data = b""
    while True:
        chunk = sock.recv(4096)
        assert chunk, "server closed the connection"
        data += chunk
        lines = data.split(b"\r\n")
        last = [line for line in lines if line][-1] if data.endswith(b"\r\n") else b""
        if last[:3].isdigit() and last[3:4] == b" ":
            return data.decode("utf-8", "replace")


@pytest.mark.parametrize("command", ["SYST", "HELP", "STAT", "PWD", "LIST", "CWD /"])
def test_commands_outside_the_login_sequence_are_refused_before_login(
    sqlite_server, command: str
) -> None:
    sock = _tls_control(sqlite_server)
    sock.sendall(command.encode() + b"\r\n")
    assert _reply(sock).startswith("530")
    sock.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(line=st.binary(min_size=0, max_size=600).filter(lambda b: b"\r\n" not in b))
def test_fuzzed_command_lines_get_a_reply_and_the_session_survives(
    sqlite_server, line: bytes
) -> None:
    client = _fuzz_client(sqlite_server)
    client.sock.sendall(line.replace(b"\n", b"") + b"\r\n")
    reply = client.getline()
    while reply[3:4] == "-":
        reply = client.getline()
    assert REPLY.match(reply), reply
    assert client.voidcmd("NOOP").startswith("200")


_clients: dict[int, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_fuzz_clients() -> Iterator[None]:
    yield
    _drop_fuzz_clients()


def _drop_fuzz_clients() -> None:
    for client in _clients.values():
        client.close()
    _clients.clear()


def _fuzz_client(server):  # type: ignore[no-untyped-def]
    """One logged-in client per server, reused across examples (bounded)."""
    client = _clients.get(id(server))
    if client is None:
        _drop_fuzz_clients()
        # latin-1 reads any reply, whatever encoding the fuzz switched to
        client = login(
            server.address, server.cafile, "wuhan", TEST_PASSWORD, encoding="latin-1"
        )
        _clients[id(server)] = client
    return client


def test_a_flood_of_pipelined_commands_is_answered_in_order(sqlite_server) -> None:
    sock = _tls_control(sqlite_server)
    sock.sendall(b"NOOP\r\n" * 5000)
    received = b""
    while received.count(b"\r\n") < 5000:
        chunk = sock.recv(65536)
        assert chunk
        received += chunk
    assert received.count(b"200 ") == 5000
    sock.close()


def test_a_password_typed_as_a_user_name_reaches_no_log(
    sqlite_server, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Sup3r-Secret-Pw!"
    caplog.set_level(logging.DEBUG)
    for user in (secret, "wuhan"):
        client = _tls_control(sqlite_server)
        client.sendall(f"USER {user}\r\n".encode())
        _reply(client)
        client.sendall(f"PASS {secret}\r\n".encode())
        _reply(client)
        client.close()
    sqlite_server.services.audit.flush(10)
    assert secret not in caplog.text
    with sqlite_server.services.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM audit_events")).all()
    assert rows
    assert all(secret not in repr(row) for row in rows)


@pytest.mark.parametrize("name", ["a\u2028b.txt", "a\u2029b.txt", "a\ue000b.txt"])
def test_names_that_could_forge_log_lines_are_refused(sqlite_server, name) -> None:
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    with pytest.raises(Exception, match="^5"):
        client.mkd(name)
    client.quit()


def test_debug_lines_describe_the_session_only_while_debug_is_logged(
    sqlite_server, caplog: pytest.LogCaptureFixture
) -> None:
    # pyftpdlib formats a handler into each debug line, logged or not: the
    # long form (address, account, transfer) only while it is logged.
    from censusdrop.server.handler import CensusHandler

    caplog.set_level(logging.INFO, logger="pyftpdlib")
    quiet = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    handlers = [
        h
        for h in list(sqlite_server.server.ioloop.socket_map.values())
        if isinstance(h, CensusHandler)
    ]
    assert handlers
    assert all(repr(h) == f"<{type(h).__name__} {h.session_id}>" for h in handlers)
    quiet.quit()

    caplog.set_level(logging.DEBUG, logger="pyftpdlib")
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    client.storbinary("STOR debug.txt", io.BytesIO(b"x" * 100))
    client.quit()
    lines = [r.getMessage() for r in caplog.records]
    described = [line for line in lines if line.startswith("[debug]")]
    assert any("user='wuhan'" in line and "addr=" in line for line in described)
