"""Memory bounds: idle sessions are cheap, and large transfers stream.

The server runs in a thread of the test process (``configured_server``),
so the resident memory measured is this process's ``VmRSS``: the server's
plus the client's share (its TLS sessions, the blocks in flight). That is
an upper bound of the server's own, which is what the bounds are about.
``VmHWM`` would hold every earlier peak of the process and cannot be
reset, so the peak of a transfer is sampled from ``VmRSS`` on a thread.
``bench/memory_bench.py`` measures a server process of its own, with
4 GiB files.
"""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import TEST_PASSWORD
from conftest import RunningServer
from conftest import configured_server
from ftpclient import ReusingFTPS
from ftpclient import login

MIB = 1024 * 1024
IDLE_SESSIONS = 50
TRANSFER_BYTES = 256 * MIB
BLOCK_BYTES = 256 * 1024
SAMPLE_SECONDS = 0.05
SETTLE_SECONDS = 0.5


class StreamedSource:
    """A file-like object of ``size`` random bytes made as they are read,
    never held whole; hashes what it hands out."""

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        count = self.remaining if size < 0 else min(size, self.remaining)
        block = os.urandom(count)
        self.remaining -= count
        self.sha256.update(block)
        return block


class PeakRss:
    """This process's largest ``VmRSS`` while the block runs."""

    def __init__(self) -> None:
        self.before = resident_bytes()
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._sample()

    def _sample(self) -> None:
        self.peak = max(self.peak, resident_bytes())


def resident_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None, "no VmRSS in /proc/self/status"
    return int(match.group(1)) * 1024


@pytest.fixture
def roomy(tmp_path: Path) -> Iterator[RunningServer]:
    """A server that lets every test session in from 127.0.0.1; pre-review
    off, so that only sessions and transfers are measured."""
    with configured_server(
        tmp_path, max_connections_per_ip=str(IDLE_SESSIONS + 8), enabled="false"
    ) as running:
        yield running


def _login(server: RunningServer) -> ReusingFTPS:
    return login(server.address, server.cafile, "wuhan", TEST_PASSWORD)


def _close(client: ftplib.FTP) -> None:
    with contextlib.suppress(OSError, ftplib.Error, EOFError):
        client.quit()
    client.close()


def test_an_idle_session_costs_less_than_one_mib(roomy: RunningServer) -> None:
    _close(_login(roomy))  # the first login fills caches; not counted
    time.sleep(SETTLE_SECONDS)
    before = resident_bytes()
    clients: list[ReusingFTPS] = []
    try:
        for _ in range(IDLE_SESSIONS):
            clients.append(_login(roomy))
        clients[-1].voidcmd("NOOP")  # every session is logged in and served
        time.sleep(SETTLE_SECONDS)
        grown = resident_bytes() - before
    finally:
        for client in clients:
            _close(client)

    assert len(clients) == IDLE_SESSIONS
    assert grown < IDLE_SESSIONS * MIB, (
        f"{IDLE_SESSIONS} idle sessions grew RSS by {grown / MIB:.1f} MiB"
    )


@pytest.mark.slow
def test_a_large_transfer_streams_through_bounded_memory(
    roomy: RunningServer,
) -> None:
    client = _login(roomy)
    source = StreamedSource(TRANSFER_BYTES)
    received = hashlib.sha256()
    try:
        with PeakRss() as memory:
            client.storbinary("STOR 大文件.bin", source, blocksize=BLOCK_BYTES)
            client.retrbinary("RETR 大文件.bin", received.update, blocksize=BLOCK_BYTES)
    finally:
        _close(client)

    assert source.remaining == 0
    assert received.hexdigest() == source.sha256.hexdigest()
    grown = memory.peak - memory.before
    assert grown < 32 * MIB, (
        f"a {TRANSFER_BYTES // MIB} MiB upload and download grew peak RSS"
        f" by {grown / MIB:.1f} MiB"
    )
