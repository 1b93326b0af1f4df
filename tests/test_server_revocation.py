"""Access stops at once: at the end of the review window and on revocation,
open reviewer sessions are closed (421) and a running download is aborted
(426), all on the record. Only the clock or an administrator reopens it."""

from __future__ import annotations

import ftplib
import json
import os
import ssl
from typing import Any

import pytest
from click.testing import CliRunner

from censusdrop.cli.main import cli
from conftest import TEST_PASSWORD
from ftpclient import download
from ftpclient import login
from ftpclient import upload
from roundkit import AFTER
from roundkit import WUHAN
from roundkit import audit_events
from roundkit import china
from roundkit import distribute
from roundkit import fixed_clock
from roundkit import make_round
from roundkit import wait_for

BIG = 24 * 1024 * 1024  # far more than socket buffers hold


def _as(running: Any, user: str) -> ftplib.FTP_TLS:
    return login(running.address, running.cafile, user, TEST_PASSWORD)


def _cli(running: Any, *args: str) -> tuple[int, str]:
    config = str(running.instance.config)
    result = CliRunner().invoke(cli, ["--config", config, *args])
    return result.exit_code, result.output


def _drain(conn: ssl.SSLSocket) -> int:
    """Read a data connection to its end, however it ends."""
    received = 0
    try:
        while chunk := conn.recv(1024 * 1024):
            received += len(chunk)
    except (ssl.SSLError, OSError):
        pass
    conn.close()
    return received


def _details(running: Any, action: str) -> list[dict[str, Any]]:
    return [json.loads(row.details) for row in audit_events(running, action)]


def test_window_end_closes_the_session_and_aborts_its_download(
    sqlite_server,
) -> None:
    running = sqlite_server
    running.server.guard.stop()  # the test decides when the check runs
    clock = fixed_clock(running, china(2020, 6, 30, 23, 50))
    storage = running.services.storage
    storage.ensure_area(WUHAN)
    storage.write_bytes(WUHAN, "big.bin", os.urandom(BIG), "wuhan")
    make_round(running.services)
    distribute(running.services, WUHAN)

    expert = _as(running, "expert")
    conn = expert.transfercmd("RETR /武汉市/big.bin")
    first = conn.recv(64 * 1024)  # then stop reading, as a slow client would
    assert first

    clock.set(AFTER)
    assert running.server.guard.check_now() == 1
    received = len(first) + _drain(conn)
    assert received < BIG
    with pytest.raises(ftplib.error_temp, match="^426 访问权限已终止"):
        expert.getresp()
    with pytest.raises(ftplib.error_temp, match="^421 当前不在验收审核期内"):
        expert.getresp()
    with pytest.raises((EOFError, OSError)):
        expert.voidcmd("NOOP")
    expert.close()

    (ended,) = _details(running, "access_ended")
    assert ended == {"reason": "outside_review_window", "aborted_download": True}
    (end,) = audit_events(running, "download_end")
    assert end.outcome == "aborted" and 0 < end.bytes < BIG
    (item,) = wait_for(lambda: running.services.custody.items("expert"))
    assert not item.complete and item.bytes == end.bytes
    assert (item.prefecture, item.path) == (WUHAN, "big.bin")


def test_revocation_closes_open_sessions_within_seconds_and_refuses_logins(
    server,
) -> None:
    wuhan = _as(server, "wuhan")
    upload(wuhan, "材料.txt", b"data")
    wuhan.quit()
    expert = _as(server, "expert")
    assert download(expert, "/武汉市/材料.txt") == b"data"

    code, out = _cli(server, "account", "revoke", "expert", "--reason", "验收结束")
    assert code == 0, out
    expert.sock.settimeout(10)  # the periodic check runs every 2 seconds
    with pytest.raises(ftplib.error_temp, match="^421 您的访问权限已被管理员收回"):
        expert.getresp()
    expert.close()
    with pytest.raises(ftplib.error_perm, match="^530 登录失败"):
        _as(server, "expert")
    assert _as(server, "wuhan").quit()  # prefectures are not affected

    code, out = _cli(server, "account", "reinstate", "expert", "--reason", "误操作")
    assert code == 0, out
    _as(server, "expert").quit()

    assert _details(server, "access_ended") == [
        {"reason": "revoked", "aborted_download": False}
    ]
    reasons = [d["reason"] for d in _details(server, "login_failed")]
    assert reasons == ["revoked"]
    acts = [d["act"] for d in _details(server, "admin")]
    assert acts[-2:] == ["account.revoke", "account.reinstate"]


def test_revoke_and_reinstate_refuse_what_makes_no_sense(sqlite_server) -> None:
    code, out = _cli(sqlite_server, "account", "revoke", "wuhan", "--reason", "x")
    assert code == 1 and "account disable" in out
    code, out = _cli(sqlite_server, "account", "reinstate", "expert", "--reason", "x")
    assert code == 1 and "not revoked" in out
    assert _cli(sqlite_server, "account", "revoke", "expert", "--reason", "x")[0] == 0
    code, out = _cli(sqlite_server, "account", "revoke", "expert", "--reason", "x")
    assert code == 1 and "already revoked" in out
    code, out = _cli(sqlite_server, "account", "revoke", "nobody", "--reason", "x")
    assert code == 1 and "no account" in out


def test_only_a_new_window_or_an_administrator_reopens_access(sqlite_server) -> None:
    running = sqlite_server
    clock = fixed_clock(running, AFTER)
    make_round(running.services)
    distribute(running.services, WUHAN)
    with pytest.raises(ftplib.error_perm, match="^530"):
        _as(running, "expert")
    running.services.rounds.open_window(
        "2020-hubei", "review", at=AFTER, until=china(2020, 7, 3)
    )
    _as(running, "expert").quit()
    clock.set(china(2020, 7, 3))
    with pytest.raises(ftplib.error_perm, match="^530"):
        _as(running, "expert")
