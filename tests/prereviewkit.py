"""Helpers for the pre-review tests: a server with a short quiet period,
bounded waits, and ways to put a submission tree into an area.

``quick_server`` runs on SQLite and on PostgreSQL; ``quick_sqlite_server``
on SQLite only, for tests about triggers rather than the database. Both
have the prefecture accounts ``wuhan`` (420100) and ``enshi`` (422800).
"""

from __future__ import annotations

import contextlib
import ftplib
import json
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from typing import TypeVar

import pytest
import sqlalchemy as sa

from censusdrop.server.prereview import TEXT_REPORT
from censusdrop.server.schema import prereview_reports
from censusdrop.server.storage.store import Storage
from conftest import TEST_PASSWORD
from conftest import Instance
from conftest import RunningServer
from ftpclient import login
from ftpclient import upload

QUIET = 0.5
WUHAN = "420100"
ENSHI = "422800"
# A run of a small tree takes well under a second; allow for a slow machine.
REPORT_WAIT = 15.0

T = TypeVar("T")


def make_instance(folder: Path, database_url: str, **overrides: str) -> Instance:
    overrides.setdefault("quiet_seconds", str(QUIET))
    instance = Instance(folder, database_url, **overrides)
    instance.add_account("wuhan", "prefecture", WUHAN)
    instance.add_account("enshi", "prefecture", ENSHI)
    return instance


@contextlib.contextmanager
def running(instance: Instance) -> Iterator[RunningServer]:
    server = RunningServer(instance)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def quick_server(tmp_path: Path, database_url: str) -> Iterator[RunningServer]:
    with running(make_instance(tmp_path / "instance", database_url)) as server:
        yield server


@pytest.fixture
def quick_sqlite_server(tmp_path: Path) -> Iterator[RunningServer]:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with running(make_instance(tmp_path / "instance", url)) as server:
        yield server


def wait_for(check: Callable[[], T], timeout: float = REPORT_WAIT) -> T:
    """Poll ``check`` until it returns something truthy, at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {check}")
        time.sleep(0.05)


def wait_reports(server: RunningServer, area: str, count: int) -> list[dict[str, Any]]:
    """Wait for ``count`` stored reports of ``area`` and a quiet server."""

    def enough() -> list[dict[str, Any]] | None:
        rows = reports(server, area)
        return rows if len(rows) >= count else None

    wait_for(enough)
    assert server.server.prereview is not None
    assert server.server.prereview.wait_idle(REPORT_WAIT)
    return reports(server, area)


def login_as(server: RunningServer, user: str) -> ftplib.FTP_TLS:
    return login(server.address, server.cafile, user, TEST_PASSWORD)


def upload_tree(client: ftplib.FTP, root: Path, skip: str = "") -> int:
    """Upload every folder and file under ``root``; return the file count."""
    files = 0
    for local in sorted(root.rglob("*")):
        relative = local.relative_to(root).as_posix()
        if skip and relative.startswith(skip):
            continue
        if local.is_dir():
            client.mkd(relative)
        else:
            upload(client, relative, local.read_bytes())
            files += 1
    return files


def store_tree(storage: Storage, area: str, root: Path) -> int:
    """Commit a tree through the storage layer, as the import will."""
    storage.ensure_area(area)
    files = 0
    for local in sorted(root.rglob("*")):
        relative = local.relative_to(root).as_posix()
        if local.is_dir():
            storage.mkdir(area, relative)
        else:
            storage.write_bytes(area, relative, local.read_bytes(), "test")
            files += 1
    return files


def reports(server: RunningServer, area: str) -> list[dict[str, Any]]:
    """The stored reports of ``area``, oldest first."""
    query = (
        prereview_reports.select()
        .where(prereview_reports.c.prefecture == area)
        .order_by(prereview_reports.c.id)
    )
    with server.services.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def audit_events(server: RunningServer, action: str) -> list[dict[str, Any]]:
    query = sa.text(
        "SELECT prefecture, account, path, version, digest, details"
        " FROM audit_events WHERE action = :action ORDER BY seq"
    )
    with server.services.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query, {"action": action})]
    for row in rows:
        row["details"] = json.loads(row["details"])
    return rows


def report_text(server: RunningServer, area: str) -> str:
    data = server.services.storage.read_bytes(area, TEXT_REPORT)
    assert data.startswith(b"\xef\xbb\xbf"), "the text report starts with a BOM"
    return data.decode("utf-8-sig")


def rules(row: dict[str, Any]) -> set[str]:
    return {finding["rule"] for finding in row["report"]["findings"]}
