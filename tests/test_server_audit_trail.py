"""One FTPS session produces exactly the audit events it should."""

from __future__ import annotations

import ftplib
import hashlib

import pytest

from censusdrop.audit.query import EventFilter
from censusdrop.audit.query import find_events
from censusdrop.audit.verify import verify_database
from conftest import TEST_PASSWORD
from ftpclient import download
from ftpclient import login
from ftpclient import upload


def _session_events(server, session: str | None = None):  # type: ignore[no-untyped-def]
    server.services.audit.flush(10)
    return list(find_events(server.services.engine, EventFilter(session=session)))


def test_a_session_leaves_exactly_the_expected_events(server) -> None:
    data = "普查公报".encode() * 1000
    digest = hashlib.sha256(data).hexdigest()
    client = login(server.address, server.cafile, "wuhan", TEST_PASSWORD)
    client.mkd("18.普查成果")
    client.cwd("18.普查成果")
    assert client.nlst() == []
    upload(client, "公报.docx", data)
    assert download(client, "公报.docx") == data
    client.rename("公报.docx", "武汉市普查公报.docx")
    client.delete("武汉市普查公报.docx")
    with pytest.raises(ftplib.error_perm):
        client.rmd("/")
    client.quit()

    events = [e for e in _session_events(server) if e.account == "wuhan"]
    session = events[0].session
    assert all(e.session == session for e in events)
    assert all(e.prefecture == "420100" and e.role == "prefecture" for e in events)
    assert all(e.remote and e.remote.startswith("127.0.0.1:") for e in events)
    actions = [e.action for e in events]
    expected = [
        "login",
        "mkdir",
        "chdir",
        "list",
        "upload_start",
        "upload_end",
        "download_start",
        "download_end",
        "rename",
        "delete",
        "rmdir",
        "logout",
        "disconnect",
    ]
    assert actions == expected, actions
    by_action = {e.action: e for e in events}
    assert by_action["upload_end"].digest == digest
    assert by_action["upload_end"].bytes == len(data)
    assert by_action["upload_end"].outcome == "ok"
    assert by_action["upload_end"].version
    assert by_action["download_end"].digest == digest
    assert by_action["download_end"].version == by_action["upload_end"].version
    assert by_action["download_end"].bytes == len(data)
    assert by_action["rename"].path.endswith("武汉市普查公报.docx")
    assert by_action["delete"].path.endswith("武汉市普查公报.docx")
    assert by_action["rmdir"].outcome == "denied"
    assert by_action["rmdir"].details["reply"] == 550
    everything = _session_events(server, session)
    assert [e.action for e in everything][:2] == ["connect", "tls"]
    assert everything[1].details["version"] == "TLSv1.2"
    assert everything[-1].action == "disconnect"


def test_a_failed_login_records_the_real_reason_but_not_the_name(sqlite_server) -> None:
    client = login.__globals__["connect"](sqlite_server.address, sqlite_server.cafile)
    client.auth()
    with pytest.raises(ftplib.error_perm):
        client.login("wuhan", "wrong-password!")
    with pytest.raises(ftplib.error_perm):
        client.login("nobody-known", "wrong-password!")
    client.close()
    failures = [e for e in _session_events(sqlite_server) if e.action == "login_failed"]
    assert [e.details["reason"] for e in failures] == [
        "bad_password",
        "unknown_account",
    ]
    assert failures[0].account == "wuhan"
    assert failures[1].account is None
    assert "nobody-known" not in repr(failures[1])


def test_the_chain_verifies_after_a_busy_session(sqlite_server) -> None:
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    for index in range(20):
        upload(client, f"文件{index}.pdf", b"%PDF" * index)
    client.quit()
    sqlite_server.services.audit.flush(10)
    result = verify_database(sqlite_server.services.engine, None)
    assert result.events > 40
    assert result.problem is None
