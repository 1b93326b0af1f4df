"""Fail closed: no transfer happens that the audit trail cannot record."""

from __future__ import annotations

import ftplib
import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import PG_ADMIN_URL
from conftest import TEST_PASSWORD
from conftest import Instance
from conftest import RunningServer
from ftpclient import download
from ftpclient import login
from ftpclient import upload


@pytest.fixture
def pg_server(tmp_path: Path, postgres_server_url: str) -> Iterator[RunningServer]:
    engine = sa.create_engine(postgres_server_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
    instance = Instance(tmp_path / "i", postgres_server_url)
    instance.add_account("wuhan", "prefecture", "420100")
    running = RunningServer(instance)
    try:
        yield running
    finally:
        _allow(postgres_server_url, True)
        running.stop()


def _allow(url: str, allowed: bool) -> None:
    name = sa.engine.make_url(url).database
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        )
        if not allowed:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
    admin.dispose()


def test_download_is_refused_while_the_database_is_down_and_works_after(
    pg_server, postgres_server_url: str
) -> None:
    client = login(pg_server.address, pg_server.cafile, "wuhan", TEST_PASSWORD)
    upload(client, "机密.pdf", b"secret content")
    _allow(postgres_server_url, False)
    received = io.BytesIO()
    with pytest.raises(ftplib.error_temp, match="^451"):
        client.retrbinary("RETR 机密.pdf", received.write)
    assert received.getvalue() == b""
    with pytest.raises(ftplib.error_temp, match="^451"):
        upload(client, "新.pdf", b"x")
    _allow(postgres_server_url, True)
    deadline = time.monotonic() + 30
    while True:
        try:
            assert download(client, "机密.pdf") == b"secret content"
            break
        except ftplib.error_temp:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    client.quit()
