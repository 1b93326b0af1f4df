"""lftp's and curl's own upload resume, after a client killed mid-transfer."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import TEST_PASSWORD
from ftpclient import curl_command
from ftpclient import download
from ftpclient import lftp_command
from ftpclient import login

pytestmark = [pytest.mark.external, pytest.mark.slow]

SIZE = 50 * 1024 * 1024
NAME = "普查影像.tif"
URL_NAME = "%E6%99%AE%E6%9F%A5%E5%BD%B1%E5%83%8F.tif"
RATE = 8_000_000  # bytes per second while the first attempt runs


def _wait_for(check: Callable[[], object], what: str, timeout: float = 20.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _received(server) -> int:  # type: ignore[no-untyped-def]
    staging = server.instance.folder / "data" / "staging"
    sizes = [
        p.stat().st_size for p in staging.glob("*.part") if "resume-" not in p.name
    ]
    return max(sizes, default=0)


def _kill_mid_upload(server, command: list[str], cwd: Path) -> None:  # type: ignore[no-untyped-def]
    """Start an upload, let about 5 MiB arrive, then kill -9 the client."""
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for(lambda: _received(server) > 5 * 1024 * 1024, "upload to start")
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    storage = server.services.storage
    offset = _wait_for(
        lambda: storage.resumable_offset("420100", NAME, "wuhan"), "the partial"
    )
    assert 0 < int(str(offset)) < SIZE


def _resumed_from(server) -> int:  # type: ignore[no-untyped-def]
    """The offset the last completed upload resumed at (from the audit log)."""
    query = sa.text(
        "SELECT details FROM audit_events WHERE action = 'upload_end'"
        " AND outcome = 'ok' ORDER BY seq DESC"
    )

    def found() -> int:
        with server.services.engine.connect() as conn:
            row = conn.execute(query).first()
        return 0 if row is None else int(json.loads(row[0]).get("resumed_from", 0))

    return int(str(_wait_for(found, "the upload_end event")))


def _curl_command(server, *args: str) -> list[str]:  # type: ignore[no-untyped-def]
    host, port = server.address
    url = f"ftp://{host}:{port}/{URL_NAME}"
    return [*curl_command(server, *args, max_time=60), url]


def _check_stored(server, data: bytes) -> None:  # type: ignore[no-untyped-def]
    versions = server.services.storage.history("420100", NAME)
    assert len(versions) == 1, versions
    [version] = versions
    assert version.sha256 == hashlib.sha256(data).hexdigest()
    client = login(server.address, server.cafile, "wuhan", TEST_PASSWORD)
    assert hashlib.sha256(download(client, NAME)).digest() == (
        hashlib.sha256(data).digest()
    )
    assert client.nlst() == [NAME]
    client.quit()


@pytest.fixture
def scan(tmp_path: Path) -> bytes:
    data = os.urandom(SIZE)
    (tmp_path / NAME).write_bytes(data)
    return data


def test_lftp_put_continue_resumes_a_killed_upload(
    sqlite_server, tmp_path: Path, scan: bytes
) -> None:
    first = lftp_command(
        sqlite_server, f"set net:limit-rate {RATE}; put {NAME} -o {NAME}"
    )
    _kill_mid_upload(sqlite_server, first, tmp_path)

    result = subprocess.run(
        lftp_command(sqlite_server, f"put -c {NAME} -o {NAME}"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert _resumed_from(sqlite_server) > 4 * 1024 * 1024
    _check_stored(sqlite_server, scan)


def test_curl_continue_resumes_a_killed_upload(
    sqlite_server, tmp_path: Path, scan: bytes
) -> None:
    source = str(tmp_path / NAME)
    first = _curl_command(sqlite_server, "--limit-rate", str(RATE), "-T", source)
    _kill_mid_upload(sqlite_server, first, tmp_path)

    result = subprocess.run(
        _curl_command(sqlite_server, "-C", "-", "-T", source),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert _resumed_from(sqlite_server) > 4 * 1024 * 1024
    _check_stored(sqlite_server, scan)
