"""Server memory: idle sessions, and one large upload and download.

Asserts nothing. Run from the project's virtualenv::

    python bench/memory_bench.py                  # 200 sessions, 4 GiB
    python bench/memory_bench.py --sessions 50 --gib 1 --dir /var/tmp

One censusdrop server runs as a child process on 127.0.0.1, started and
stopped as ``storage_bench.py`` does (its helpers are reused: the same
instance, with pre-review off, and the same curl options). Measured, from
the server's ``VmRSS`` in ``/proc/PID/status``:

1. idle sessions: RSS before and after opening ``--sessions`` sessions, each
   logged in over TLS with ``PROT P`` (Python ftplib, TLS 1.2) and left
   idle; printed as MiB per session;
2. a ``--gib`` GiB file of random data uploaded with curl, then downloaded
   to ``/dev/null``: RSS at the start of each transfer, its peak (sampled
   every 0.2 s on a thread) and the growth.

The source file needs ``--gib`` GiB under ``--dir`` and the server stores
one encrypted copy beside it (a little larger); the run refuses to start
unless there is room for the source and two stored copies.
"""

from __future__ import annotations

import argparse
import contextlib
import ftplib
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from peers.clients import SessionReusingFTPS
from peers.clients import Target
from peers.clients import _login
from storage_bench import MIB
from storage_bench import USER
from storage_bench import Child
from storage_bench import _censusdrop_instance
from storage_bench import _curl
from storage_bench import _make_source

from censusdrop.server.passwords import generate_password

GIB = 1024 * MIB
SAMPLE_SECONDS = 0.2
SETTLE_SECONDS = 2.0


class PeakSampler:
    """Samples a server's VmRSS on a thread; keeps the largest."""

    def __init__(self, server: Child) -> None:
        self._server = server
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.start_kib = server.memory("VmRSS")
        self.peak_kib = self.start_kib

    def __enter__(self) -> PeakSampler:
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
        self.peak_kib = max(self.peak_kib, self._server.memory("VmRSS"))


def main() -> None:
    options = _parse_args()
    folder = options.dir or Path(tempfile.gettempdir())
    _check_room(folder, options.gib)
    # One client address for every session: lift the per-address limit.
    os.environ["CENSUSDROP_SERVER_MAX_CONNECTIONS_PER_IP"] = str(options.sessions + 8)
    os.environ["CENSUSDROP_SERVER_MAX_CONNECTIONS"] = str(options.sessions + 16)
    root = Path(tempfile.mkdtemp(prefix="memory-bench-", dir=folder))
    server: Child | None = None
    try:
        password = generate_password()
        config, cert, _ = _censusdrop_instance(root / "instance", password)
        censusdrop = str(Path(sys.executable).with_name("censusdrop"))
        server = Child("censusdrop", [censusdrop, "--config", str(config), "serve"])
        target = Target(  # ftplib logs in with the password: no netrc
            "censusdrop", server.port, USER, password, Path(os.devnull), cert
        )
        idle = _idle_sessions(server, target, options.sessions)
        source = _make_source(root / "scan.bin", options.gib * 1024)
        transfers = _transfers(server, source, cert, password)
        _print(options, server, idle, transfers)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200, help="idle sessions")
    parser.add_argument("--gib", type=int, default=4, help="file size in GiB")
    parser.add_argument("--dir", type=Path, help="where to put the temporary files")
    return parser.parse_args()


def _check_room(folder: Path, gib: int) -> None:
    # The source, the stored copy (slightly larger: chunk tags) and room for
    # a second stored copy (the staging file of a next version).
    needed = 3 * gib * GIB + 256 * MIB
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise SystemExit(
            f"not enough room under {folder}: {free / GIB:.1f} GiB free,"
            f" {needed / GIB:.1f} GiB needed for a {gib} GiB source and two"
            " stored copies; use a smaller --gib or another --dir"
        )


def _idle_sessions(server: Child, target: Target, count: int) -> tuple[int, int]:
    """RSS in KiB before and after ``count`` idle logged-in sessions."""
    _close(_login(target))  # the first login warms caches; not counted
    time.sleep(SETTLE_SECONDS)
    before = server.memory("VmRSS")
    sessions: list[SessionReusingFTPS] = []
    try:
        for _ in range(count):
            sessions.append(_login(target))
        time.sleep(SETTLE_SECONDS)
        after = server.memory("VmRSS")
    finally:
        for session in sessions:
            _close(session)
    return before, after


def _close(session: SessionReusingFTPS) -> None:
    with contextlib.suppress(OSError, ftplib.Error, EOFError):
        session.quit()
    session.close()


def _transfers(
    server: Child, source: Path, cert: Path, password: str
) -> dict[str, tuple[float, int, int]]:
    """Per direction: (seconds, RSS at start, peak RSS), RSS in KiB."""
    results = {}
    for direction, args in (
        ("upload", ("-T", str(source))),
        ("download", ("-o", os.devnull)),
    ):
        time.sleep(SETTLE_SECONDS)
        with PeakSampler(server) as sampler:
            seconds = _curl(server.port, cert, password, *args)
        results[direction] = (seconds, sampler.start_kib, sampler.peak_kib)
    return results


def _print(
    options: argparse.Namespace,
    server: Child,
    idle: tuple[int, int],
    transfers: dict[str, tuple[float, int, int]],
) -> None:
    before, after = idle
    per_session = (after - before) / 1024 / options.sessions
    print(
        f"censusdrop, python {sys.version.split()[0]}, {os.cpu_count()} CPUs;"
        f" RSS at start {server.start_rss / 1024:.1f} MiB"
    )
    print(
        f"{options.sessions} idle TLS sessions: RSS {before / 1024:.1f} ->"
        f" {after / 1024:.1f} MiB, {per_session * 1024:.0f} KiB per session"
    )
    size = options.gib * GIB
    print(f"{'':<22}{'MB/s':>7}{'start':>10}{'peak':>10}{'growth':>10}  (RSS MiB)")
    for direction, (seconds, start, peak) in transfers.items():
        label = f"{options.gib} GiB {direction}"
        print(
            f"{label:<22}{size / seconds / 1e6:>7.0f}{start / 1024:>10.1f}"
            f"{peak / 1024:>10.1f}{(peak - start) / 1024:>10.1f}"
        )


if __name__ == "__main__":
    main()
