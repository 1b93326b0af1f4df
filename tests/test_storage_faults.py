"""Faults: the server killed mid-upload, the disk full mid-upload."""

from __future__ import annotations

import ftplib
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest

from censusdrop.server.storage.pipeline import BATCH_BYTES
from censusdrop.server.storage.pipeline import INLINE_BYTES
from conftest import TEST_PASSWORD
from conftest import Instance
from conftest import RunningServer
from conftest import skip_or_fail
from ftpclient import download
from ftpclient import login
from ftpclient import upload

AREA = "420100"
LISTENING = re.compile(r"listening on ([0-9.]+):(\d+)")


class ServeProcess:
    """``censusdrop serve`` in a child process, stopped by its PID."""

    def __init__(self, instance: Instance) -> None:
        command = Path(sys.executable).with_name("censusdrop")
        self.process = subprocess.Popen(
            [str(command), "--config", str(instance.config), "serve"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        found = threading.Event()
        self.address: tuple[str, int] = ("", 0)

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.output.append(line)
                match = LISTENING.search(line)
                if match:
                    self.address = (match.group(1), int(match.group(2)))
                    found.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not found.wait(30):
            self.kill()
            raise AssertionError("server did not start:\n" + "".join(self.output))

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
        self.process.wait(timeout=15)
        self._reader.join(10)  # the output ends with the process
        if self.process.stdout is not None:
            self.process.stdout.close()


def _staged(instance: Instance) -> list[str]:
    staging = instance.folder / "data" / "staging"
    return sorted(p.name for p in staging.iterdir()) if staging.is_dir() else []


def _largest_part(instance: Instance) -> int:
    staging = instance.folder / "data" / "staging"
    return max((p.stat().st_size for p in staging.glob("*.part")), default=0)


def _wait_until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def served_instance(tmp_path: Path) -> Instance:
    instance = Instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'db.sqlite'}")
    instance.add_account("wuhan", "prefecture", AREA)
    return instance


@pytest.mark.slow
def test_kill_9_mid_upload_keeps_the_earlier_version_and_restarts_clean(
    served_instance: Instance,
) -> None:
    cafile = served_instance.cafile
    data = os.urandom(INLINE_BYTES + 4 * BATCH_BYTES)
    server = ServeProcess(served_instance)
    try:
        client = login(server.address, cafile, "wuhan", TEST_PASSWORD)
        upload(client, "成果.pdf", b"earlier version")
        client.voidcmd("TYPE I")
        conn = client.transfercmd("STOR 成果.pdf")
        conn.sendall(data[: INLINE_BYTES + 2 * BATCH_BYTES])
        # With a writer thread the upload says whose it is, in a sidecar.
        _wait_until(
            lambda: (
                _largest_part(served_instance) > INLINE_BYTES
                and any(name.endswith(".json") for name in _staged(served_instance))
            ),
            "the upload to reach staging with its sidecar",
        )
        server.kill()  # kill -9, by PID
        conn.close()
        client.close()
    finally:
        server.kill()
    assert any(name.endswith(".part") for name in _staged(served_instance))

    server = ServeProcess(served_instance)
    try:
        leftovers = _staged(served_instance)
        assert all(name.startswith("resume-") for name in leftovers), leftovers
        client = login(server.address, cafile, "wuhan", TEST_PASSWORD)
        assert client.nlst() == ["成果.pdf"]
        assert download(client, "成果.pdf") == b"earlier version"
        # What arrived before the crash was kept for the client to resume.
        client.voidcmd("TYPE I")
        offset = client.size("成果.pdf")
        assert offset is not None and offset >= INLINE_BYTES
        client.storbinary("STOR 成果.pdf", io.BytesIO(data[offset:]), rest=offset)
        assert download(client, "成果.pdf") == data
        client.quit()
    finally:
        server.kill(signal.SIGTERM)
    assert server.process.returncode == 0, "".join(server.output)


# --- disk full -------------------------------------------------------------------


@pytest.fixture(params=["2m", "12m"])
def small_disk(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A small tmpfs to hold the data root, unmounted afterwards: 2 MiB
    fills while an upload is written in line, 12 MiB once it is written
    on a thread of its own (beyond its first 4 MiB)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    options = f"size={request.param},mode=0700"
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs (needs root): {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def full_disk_server(tmp_path: Path, small_disk: Path) -> Iterator[RunningServer]:
    instance = Instance(
        tmp_path / "instance",
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        data_root=f'"{small_disk}"',
    )
    instance.add_account("wuhan", "prefecture", AREA)
    running = RunningServer(instance)
    try:
        yield running
    finally:
        running.stop()


def _send_until_refused(client: ftplib.FTP_TLS, path: str, size: int) -> str:
    client.voidcmd("TYPE I")
    conn = client.transfercmd(f"STOR {path}")
    block = os.urandom(64 * 1024)
    try:
        for _ in range(size // len(block)):
            conn.sendall(block)
        conn.unwrap()
    except OSError:
        pass  # the server closed the data connection on us
    finally:
        conn.close()
    return client.getline()


def test_disk_full_mid_upload_gives_452_and_keeps_the_earlier_version(
    full_disk_server: RunningServer, small_disk: Path
) -> None:
    server = full_disk_server
    client = login(server.address, server.cafile, "wuhan", TEST_PASSWORD)
    upload(client, "清查表.xlsx", b"earlier version" * 1000)
    free_before = os.statvfs(small_disk).f_bavail

    reply = _send_until_refused(client, "清查表.xlsx", 32 * 1024 * 1024)
    assert reply.startswith("452"), reply
    assert download(client, "清查表.xlsx") == b"earlier version" * 1000
    assert list((small_disk / "staging").iterdir()) == []  # the temporary is gone
    assert os.statvfs(small_disk).f_bavail == free_before
    upload(client, "小文件.txt", b"still works")
    assert download(client, "小文件.txt") == b"still works"
    client.quit()
    history = server.services.storage.history(AREA, "清查表.xlsx")
    assert [v.state for v in history] == ["current"]
