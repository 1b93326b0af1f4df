"""The server process seen from ``/proc``: descriptors, threads, memory.

``Sample.of`` reads one moment: open descriptors by kind (listening
sockets, sockets of sessions, sockets to PostgreSQL, pipes, each file by
name), threads and resident memory. The load test samples the server
through a run and compares before and after: database descriptors up to
what the connection pool may hold are expected, anything else left is a
leak.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

PG_PORT = 5432
SAMPLE_SECONDS = 0.5
# Most connections SQLAlchemy's pool holds (pool_size + max_overflow): up
# to that many database descriptors of each kind may stay open after a load.
POOLED = 15
POOLED_KINDS = ("censusdrop.db", "censusdrop.db-wal", "socket to PostgreSQL")


@dataclass
class Sample:
    """The server process at one moment."""

    at: float
    fds: int
    threads: int
    rss_mib: float
    kinds: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, pid: int, started: float) -> Sample:
        status = _status(pid)
        kinds = descriptor_kinds(pid)
        return cls(
            at=round(time.monotonic() - started, 1),
            fds=sum(kinds.values()),
            threads=int(status.get("Threads", "0")),
            rss_mib=round(int(status.get("VmRSS", "0 kB").split()[0]) / 1024, 1),
            kinds=kinds,
        )


def sample_until(
    pid: int, started: float, samples: list[Sample], stop: threading.Event
) -> None:
    while not stop.wait(SAMPLE_SECONDS):
        with contextlib.suppress(OSError):
            samples.append(Sample.of(pid, started))


def settled(pid: int, started: float, before: Sample, limit: float) -> Sample:
    """The server once its descriptors are back where they were (pooled
    database connections aside), or after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    sample = Sample.of(pid, started)
    while leaked(kinds_changed(before, sample)) and time.monotonic() < deadline:
        time.sleep(SAMPLE_SECONDS)
        sample = Sample.of(pid, started)
    return sample


def series(samples: list[Sample], points: int = 12) -> list[tuple[float, float]]:
    """About ``points`` (seconds, RSS MiB) pairs spread over the load."""
    step = max(1, len(samples) // points)
    return [(sample.at, sample.rss_mib) for sample in samples[::step]]


def kinds_changed(before: Sample, after: Sample) -> dict[str, int]:
    names = set(before.kinds) | set(after.kinds)
    changed = {
        name: after.kinds.get(name, 0) - before.kinds.get(name, 0) for name in names
    }
    return {name: delta for name, delta in sorted(changed.items()) if delta}


def descriptor_kinds(pid: int) -> dict[str, int]:
    """Open descriptors by kind: sockets, pipes, each file by its name."""
    kinds: collections.Counter[str] = collections.Counter()
    sockets = _tcp_sockets(pid)
    folder = f"/proc/{pid}/fd"
    for name in os.listdir(folder):
        with contextlib.suppress(OSError):
            target = os.readlink(f"{folder}/{name}")
            if target.startswith("socket:["):
                kind = sockets.get(target[8:-1], "socket")
            elif ":" in target:
                kind = target.split(":", 1)[0]
            else:
                kind = Path(target).name
            kinds[kind] += 1
    return dict(sorted(kinds.items()))


def _tcp_sockets(pid: int) -> dict[str, str]:
    """Socket inode to kind: listening, to PostgreSQL, or a session's."""
    kinds = {}
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
            for line in lines:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if fields[3] == "0A":
                    kinds[fields[9]] = "socket listening"
                elif remote_port == PG_PORT:
                    kinds[fields[9]] = "socket to PostgreSQL"
                else:
                    kinds[fields[9]] = "socket of a session"
    return kinds


def _status(pid: int) -> dict[str, str]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        found[key] = value.strip()
    return found


def leaked(changed: dict[str, int]) -> dict[str, int]:
    """Descriptors beyond the pooled database connections."""
    return {
        kind: delta
        for kind, delta in changed.items()
        if delta > (POOLED if kind in POOLED_KINDS else 0)
    }
