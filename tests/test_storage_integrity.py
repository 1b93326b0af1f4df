"""Damaged, swapped and rolled-back files are refused, over FTPS and in the API."""

from __future__ import annotations

import ftplib
import io
import os
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from censusdrop.server.storage.errors import IntegrityError
from censusdrop.server.storage.errors import NotCurrent
from conftest import TEST_PASSWORD
from conftest import require_tool
from ftpclient import download
from ftpclient import login
from ftpclient import upload

AREA = "420100"


def _area_file(server, path: str) -> Path:  # type: ignore[no-untyped-def]
    return server.instance.folder / "data" / "areas" / AREA / path


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))


def _integrity_events(server) -> list[str]:  # type: ignore[no-untyped-def]
    query = sa.text("SELECT path FROM audit_events WHERE action = 'integrity_failure'")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with server.services.engine.connect() as conn:
            paths = [row[0] for row in conn.execute(query)]
        if paths:
            return paths
        time.sleep(0.05)
    return []


def _try_download(client: ftplib.FTP, path: str) -> tuple[bytes, Exception | None]:
    received = io.BytesIO()
    try:
        client.retrbinary(f"RETR {path}", received.write)
    except (ftplib.Error, ssl.SSLError, OSError) as exc:
        return received.getvalue(), exc
    return received.getvalue(), None


def test_download_of_a_file_damaged_mid_way_stops_with_an_error(server) -> None:
    data = os.urandom(1024 * 1024)
    client = login(server.address, server.cafile, "wuhan", TEST_PASSWORD)
    upload(client, "受损.pdf", data)
    _flip(_area_file(server, "受损.pdf"), 600_000)

    received, error = _try_download(client, "受损.pdf")
    assert error is not None, "a damaged file must not download as complete"
    assert "451" in str(error) or "426" in str(error), error
    assert received != data and data.startswith(received)
    assert _integrity_events(server) == ["/受损.pdf"]
    client.quit()


def test_download_of_a_file_with_a_damaged_header_is_refused(sqlite_server) -> None:
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    upload(client, "表头.pdf", b"confidential census forms")
    _flip(_area_file(sqlite_server, "表头.pdf"), 40)
    with pytest.raises(ftplib.error_temp) as refused:
        download(client, "表头.pdf")
    assert str(refused.value).startswith("451"), refused.value
    assert _integrity_events(sqlite_server) == ["/表头.pdf"]
    client.voidcmd("NOOP")  # the session goes on
    client.quit()


def test_an_earlier_version_put_back_on_disk_is_refused(server) -> None:
    client = login(server.address, server.cafile, "wuhan", TEST_PASSWORD)
    upload(client, "预算.xlsx", b"old budget")
    upload(client, "预算.xlsx", b"new budget")
    storage = server.services.storage
    old = storage.history(AREA, "预算.xlsx")[1]
    earlier = server.instance.folder / "data" / "versions" / AREA / old.id
    shutil.copyfile(earlier, _area_file(server, "预算.xlsx"))  # a rollback

    with pytest.raises(ftplib.error_temp) as refused:
        download(client, "预算.xlsx")
    assert str(refused.value).startswith("451"), refused.value
    assert "/预算.xlsx" in _integrity_events(server)
    client.quit()
    with pytest.raises(NotCurrent):
        storage.read_bytes(AREA, "预算.xlsx")
    with storage.open_version(AREA, "预算.xlsx", old.id) as reader:
        assert reader.read() == b"old budget"


def test_a_file_swapped_in_from_another_path_is_refused(sqlite_server) -> None:
    storage = sqlite_server.services.storage
    storage.ensure_area(AREA)
    storage.write_bytes(AREA, "a.pdf", b"file a", "wuhan")
    storage.write_bytes(AREA, "b.pdf", b"file b", "wuhan")
    shutil.copyfile(
        _area_file(sqlite_server, "b.pdf"), _area_file(sqlite_server, "a.pdf")
    )
    with pytest.raises(NotCurrent):
        storage.read_bytes(AREA, "a.pdf")
    assert storage.read_bytes(AREA, "b.pdf") == b"file b"


def test_a_truncated_file_is_an_integrity_failure(sqlite_server) -> None:
    storage = sqlite_server.services.storage
    storage.ensure_area(AREA)
    storage.write_bytes(AREA, "短.pdf", os.urandom(200_000), "wuhan")
    local = _area_file(sqlite_server, "短.pdf")
    os.truncate(local, local.stat().st_size - 70_000)
    with pytest.raises(IntegrityError):
        storage.read_bytes(AREA, "短.pdf")


@pytest.mark.external
def test_curl_download_of_a_damaged_file_fails(sqlite_server, tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024)
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    upload(client, "scan.pdf", data)
    client.quit()
    _flip(_area_file(sqlite_server, "scan.pdf"), 1_500_000)
    host, port = sqlite_server.address
    target = tmp_path / "scan.pdf"
    result = subprocess.run(
        [
            require_tool("curl"),
            "--silent",
            "--show-error",
            "--ssl-reqd",
            "--cacert",
            str(sqlite_server.cafile),
            "--user",
            f"wuhan:{TEST_PASSWORD}",
            "--max-time",
            "30",
            "-o",
            str(target),
            f"ftp://{host}:{port}/scan.pdf",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0, "curl must not report a damaged file as complete"
    assert target.read_bytes() != data
