"""The rounds: every test on every server, in alternation, with settling.

Order: for each round, for each test, each server in turn (A B C D E, then
the next test), so that slow drifts of the machine fall on every server
alike. After each test (and once before the first) the harness waits until
the server's CPU time stands still for its ``settle_quiet`` seconds (at most
``SETTLE_LIMIT``), so work a server defers (forked sessions ending,
censusdrop's pre-review) is charged to it and does not run during another
server's test; the page cache is flushed to disk (``sync``) after each test
for the same reason.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .clients import ClientError
from .clients import Target
from .clients import curl_crowd
from .clients import curl_download
from .clients import curl_upload
from .clients import small_files
from .clients import write_netrc
from .process import MemorySampler
from .process import cpu_seconds
from .report import MB
from .report import MIB
from .report import Results
from .report import Row
from .servers import Server

SETTLE_LIMIT = 60.0
SETTLE_CPU = 0.03  # CPU seconds within the quiet window that count as still
SMALL_BYTES = 20 * 1024
CROWD_BYTES = MIB
_CHUNK = 16 * MIB

# Called before a test with (server, test name, round); returns a function
# to call after it, or None (the profiler uses it).
Hook = Callable[[Server, str, int], Callable[[], None] | None]


@dataclasses.dataclass(frozen=True)
class Plan:
    big_bytes: int
    small_count: int
    crowd: int
    rounds: int

    @property
    def big_text(self) -> str:
        if self.big_bytes % (1024 * MIB) == 0:
            return f"{self.big_bytes // (1024 * MIB)} GiB"
        return f"{self.big_bytes // MIB} MiB"

    def rows(self) -> list[Row]:
        return [
            Row("big_up", f"{self.big_text} upload, MB/s", True),
            Row("big_down", f"{self.big_text} download, MB/s", True),
            Row("small_up", f"{self.small_count:,} × 20 KiB uploads, files/s", True),
            Row(
                "small_down", f"{self.small_count:,} × 20 KiB downloads, files/s", True
            ),
            Row(
                "crowd",
                f"{self.crowd} clients × 1 MiB upload at once, wall s",
                False,
                digits=1,
            ),
        ]


FULL = Plan(big_bytes=1024 * MIB, small_count=2000, crowd=200, rounds=3)
QUICK = Plan(big_bytes=128 * MIB, small_count=300, crowd=50, rounds=1)


@dataclasses.dataclass(frozen=True)
class Inputs:
    big: Path
    crowd: Path
    blobs: list[bytes]


class Runner:
    """Runs the plan against the started servers and fills ``results``."""

    def __init__(
        self,
        plan: Plan,
        servers: list[Server],
        curl: Path,
        workdir: Path,
        results: Results,
        hook: Hook | None = None,
    ) -> None:
        self.plan = plan
        self.servers = servers
        self.curl = curl
        self.results = results
        self.inputs = make_inputs(plan, workdir / "input")
        self.targets = {s.key: target_for(s, workdir) for s in servers}
        self.hook = hook
        self._settled: set[str] = set()

    def run(self) -> None:
        tests: list[tuple[str, Callable[[Server, int], None]]] = [
            ("big upload", self._big_up),
            ("big download", self._big_down),
            ("small files", self._small),
            ("crowd", self._crowd),
        ]
        with MemorySampler() as sampler:
            for number in range(1, self.plan.rounds + 1):
                for name, test in tests:
                    for server in self.servers:
                        self._one(sampler, server, name, number, test)
                        sampler.watch(None)
        for server in self.servers:
            if server.process is not None:
                self.results.peak_rss[server.key] = sampler.peak(server.pid)

    def _one(
        self,
        sampler: MemorySampler,
        server: Server,
        name: str,
        number: int,
        test: Callable[[Server, int], None],
    ) -> None:
        problem = None
        if not server.running():
            problem = f"{server.label} is not running ({server.exit_text()})"
        else:
            if server.key not in self._settled:
                settle(server.pid, server.settle_quiet)
                self._settled.add(server.key)
            sampler.watch(server.pid)
            stop_hook = self.hook(server, name, number) if self.hook else None
            try:
                test(server, number)
            except ClientError as exc:
                problem = str(exc)
            finally:
                if stop_hook is not None:
                    stop_hook()
        if problem is not None:
            self.results.failures.append(f"round {number}, {name}: {problem}")
            for row in _rows_of(name):
                self.results.failed.add((row, server.key))

    def _measure(
        self, server: Server, rows: list[str], run: Callable[[], list[float]]
    ) -> None:
        before = cpu_seconds(server.pid)
        try:
            values = run()
        finally:
            # Written data still in the page cache would be flushed during
            # the next server's test; flush it now, outside any timing.
            os.sync()
            settle(server.pid, server.settle_quiet)  # a failed test too
        cpu = (cpu_seconds(server.pid) - before) / len(rows)
        for row, value in zip(rows, values, strict=True):
            self.results.add(row, server.key, value, cpu)
            _progress(f"{server.label:>13} {row:<10} {value:10.1f}")

    def _big_up(self, server: Server, number: int) -> None:
        size = self.plan.big_bytes
        limit = 30 + size / (5 * MB)
        target = self.targets[server.key]

        def run() -> list[float]:
            seconds = curl_upload(
                self.curl, target, self.inputs.big, f"big-{number}.bin", limit
            )
            return [size / MB / seconds]

        self._measure(server, ["big_up"], run)

    def _big_down(self, server: Server, number: int) -> None:
        size = self.plan.big_bytes
        limit = 30 + size / (5 * MB)
        target = self.targets[server.key]

        def run() -> list[float]:
            seconds = curl_download(self.curl, target, f"big-{number}.bin", size, limit)
            return [size / MB / seconds]

        self._measure(server, ["big_down"], run)

    def _small(self, server: Server, number: int) -> None:
        target = self.targets[server.key]
        blobs = self.inputs.blobs
        limit = 60 + len(blobs) * 0.2

        def run() -> list[float]:
            up, down = small_files(target, blobs, f"small-{number}-", limit)
            return [len(blobs) / up, len(blobs) / down]

        self._measure(server, ["small_up", "small_down"], run)

    def _crowd(self, server: Server, number: int) -> None:
        target = self.targets[server.key]
        names = [f"crowd-{number}-{i:03d}.bin" for i in range(self.plan.crowd)]

        def run() -> list[float]:
            return [curl_crowd(self.curl, target, self.inputs.crowd, names, 180.0)]

        self._measure(server, ["crowd"], run)


def settle(pid: int, quiet: float) -> float:
    """Wait until the tree's CPU time stands still for ``quiet`` seconds."""
    started = time.monotonic()
    window_start, window_cpu = started, cpu_seconds(pid)
    while time.monotonic() - started < SETTLE_LIMIT:
        time.sleep(0.25)
        now, cpu = time.monotonic(), cpu_seconds(pid)
        if cpu - window_cpu > SETTLE_CPU:
            window_start, window_cpu = now, cpu
        elif now - window_start >= quiet:
            break
    return time.monotonic() - started


def make_inputs(plan: Plan, folder: Path) -> Inputs:
    """Random (incompressible) files and blobs, made once per run."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    big = folder / "big.bin"
    with big.open("wb") as handle:
        left = plan.big_bytes
        while left:
            piece = min(left, _CHUNK)
            handle.write(os.urandom(piece))
            left -= piece
    crowd = folder / "crowd.bin"
    crowd.write_bytes(os.urandom(CROWD_BYTES))
    blobs = [os.urandom(SMALL_BYTES) for _ in range(plan.small_count)]
    return Inputs(big, crowd, blobs)


def target_for(server: Server, workdir: Path) -> Target:
    netrc = write_netrc(workdir / f"{server.key}.netrc", server.user, server.password)
    return Target(
        server.label,
        server.ports.control,
        server.user,
        server.password,
        netrc,
        server.setting.certificate.cert,
    )


def _rows_of(name: str) -> list[str]:
    return {
        "big upload": ["big_up"],
        "big download": ["big_down"],
        "small files": ["small_up", "small_down"],
        "crowd": ["crowd"],
    }[name]


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
