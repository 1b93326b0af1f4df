"""Logins: one generic reply, lockout that survives restarts, throttling."""

from __future__ import annotations

import ftplib

import pytest

from conftest import TEST_PASSWORD
from conftest import RunningServer
from ftpclient import connect
from ftpclient import login


def _attempt(server, user: str, password: str) -> str:
    client = connect(server.address, server.cafile)
    client.auth()
    try:
        client.login(user, password)
    except ftplib.error_perm as exc:
        return str(exc)
    finally:
        client.close()
    return "ok"


def test_wrong_password_and_unknown_user_get_the_same_reply(sqlite_server) -> None:
    wrong = _attempt(sqlite_server, "wuhan", "not-the-password")
    unknown = _attempt(sqlite_server, "nobody-here", "not-the-password")
    assert wrong == unknown
    assert wrong.startswith("530 ")


def test_a_correct_login_works(server) -> None:
    assert _attempt(server, "wuhan", TEST_PASSWORD) == "ok"


def test_lockout_survives_a_restart(server) -> None:
    threshold = server.instance.settings.security.lockout_threshold
    for _ in range(threshold):
        assert _attempt(server, "wuhan", "wrong-password").startswith("530")
    assert _attempt(server, "wuhan", TEST_PASSWORD).startswith("530")
    server.stop()
    restarted = RunningServer(server.instance)
    try:
        assert _attempt(restarted, "wuhan", TEST_PASSWORD).startswith("530")
        services = server.instance.services()
        services.accounts.unlock("wuhan")
        services.engine.dispose()
        assert _attempt(restarted, "wuhan", TEST_PASSWORD) == "ok"
    finally:
        restarted.stop()
        server.server = restarted.server  # already stopped; keep teardown quiet
        server.thread = restarted.thread


def test_disabled_account_cannot_log_in(sqlite_server) -> None:
    services = sqlite_server.instance.services()
    services.accounts.set_disabled("wuhan", True)
    services.engine.dispose()
    assert _attempt(sqlite_server, "wuhan", TEST_PASSWORD).startswith("530")


def test_admin_accounts_have_no_ftp_login(sqlite_server) -> None:
    sqlite_server.instance.add_account("boss", "admin")
    assert _attempt(sqlite_server, "boss", TEST_PASSWORD).startswith("530")


def test_allow_list_refuses_other_networks(sqlite_server) -> None:
    services = sqlite_server.instance.services()
    services.accounts.set_networks("wuhan", "10.0.0.0/8")
    services.engine.dispose()
    assert _attempt(sqlite_server, "wuhan", TEST_PASSWORD).startswith("530")
    services = sqlite_server.instance.services()
    services.accounts.set_networks("wuhan", "127.0.0.0/8")
    services.engine.dispose()
    assert _attempt(sqlite_server, "wuhan", TEST_PASSWORD) == "ok"


def test_third_failure_in_a_session_disconnects(sqlite_server) -> None:
    client = connect(sqlite_server.address, sqlite_server.cafile)
    client.auth()
    for _ in range(2):
        with pytest.raises(ftplib.error_perm):
            client.login("nobody-here", "x")
    with pytest.raises(ftplib.error_perm):
        client.login("nobody-here", "x")
    with pytest.raises((EOFError, OSError, ftplib.Error)):
        client.sendcmd("NOOP")
    client.close()


def test_address_is_throttled_after_many_failures(sqlite_server) -> None:
    limit = sqlite_server.instance.settings.security.ip_failure_limit
    services = sqlite_server.instance.services()
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    for index in range(limit):
        services.accounts.authenticate(f"guess{index}", "x", "127.0.0.1", at=now)
    services.engine.dispose()
    assert _attempt(sqlite_server, "enshi", TEST_PASSWORD).startswith("530")


def test_login_then_quit(sqlite_server) -> None:
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    assert client.pwd() == "/"
    client.quit()
