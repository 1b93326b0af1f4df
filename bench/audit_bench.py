"""Benchmark of the audit trail: sustained write rate through AuditWriter,
group commits under a small-file load, durable-event latency, and
verification rate, on SQLite and PostgreSQL.

Usage::

    python bench/audit_bench.py [--events 1000000] [--skip-sqlite]
        [--skip-postgres] [--verify-runs 3] [--save FILE] [--baseline FILE]
    python bench/audit_bench.py --verify-only URL [--verify-runs 5]

``--save FILE`` writes the figures as JSON; ``--baseline FILE`` prints each
figure beside the one saved by an earlier run (of another version of the
code, say) and their ratio, above 1.0 when this run is better.

PostgreSQL: ``CENSUSDROP_BENCH_PG`` names the database (a full URL, or a
database name on the local server); otherwise a throwaway database is
created on postgresql+psycopg://postgres@127.0.0.1:5432/postgres and dropped
afterwards. The engines are built like the server builds them (WAL and full
sync on SQLite) when ``censusdrop.server.db`` is available.

Verification runs ``--verify-runs`` times in one process (``jobs=1``) and
as many times with one worker process per CPU, alternately, and prints the
median of each; the CPU figure of a parallel run adds up the parent and
its workers. ``--verify-only URL`` measures only that, on the chain already
in that database (one filled by an earlier run, say), and changes nothing.

CPU figures are per event and count only this process (and its verify
workers), not the PostgreSQL server; on a busy machine they are steadier
than the rates. It asserts nothing. Targets: at least 5,000 events/s
written on SQLite, at least 200,000 events/s verified.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import resource
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from censusdrop.audit import events as ev
from censusdrop.audit.events import AuditEvent
from censusdrop.audit.schema import metadata
from censusdrop.audit.store import AuditWriter
from censusdrop.audit.verify import verify_database

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DURABLE_SAMPLES = 300
# The small-file load: sessions at once, files each, and the time one
# small transfer takes between its durable start and its end.
LOAD_SESSIONS = 8
LOAD_FILES = 150
LOAD_TRANSFER_S = 0.005
WRITER_THREAD = "censusdrop-audit-writer"

DATABASE_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
# Figures where lower is better; the others are rates.
LOWER_IS_BETTER = ("cpu", " ms")

Figures = dict[str, float]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--verify-runs", type=int, default=3)
    parser.add_argument("--verify-only", metavar="URL", help="verify this chain")
    parser.add_argument("--save", type=Path, help="write the figures as JSON")
    parser.add_argument("--baseline", type=Path, help="compare with saved figures")
    args = parser.parse_args()
    baseline = json.loads(args.baseline.read_text()) if args.baseline else {}
    runs = args.verify_runs

    results: dict[str, Figures] = {}
    if args.verify_only:
        engine = make_engine(args.verify_only)
        try:
            name = DATABASE_NAMES.get(engine.dialect.name, engine.dialect.name)
            results[name] = verify_rates(engine, runs)
        finally:
            engine.dispose()
    elif not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{Path(folder) / 'bench.db'}"
            results["SQLite"] = run("SQLite", url, args.events, runs)
    if not args.skip_postgres and not args.verify_only:
        with postgres_database() as url:
            results["PostgreSQL"] = run("PostgreSQL", url, args.events, runs)

    for name, figures in results.items():
        print_table(name, figures, baseline.get(name, {}))
    if args.save:
        args.save.write_text(json.dumps(results, indent=2) + "\n")


def run(name: str, url: str, count: int, verify_runs: int) -> Figures:
    engine = make_engine(url)
    metadata.create_all(engine)
    figures: Figures = {}
    try:
        print(f"== {name}: {count} events", flush=True)
        figures |= write_rate(engine, count)
        figures |= small_file_load(engine)
        figures |= durable_latency(engine)
        figures |= verify_rates(engine, verify_runs)
    finally:
        engine.dispose()
    return figures


def write_rate(engine: sa.Engine, count: int) -> Figures:
    writer = AuditWriter(engine, max_queue=count + 1)
    clock = WriterClock()
    started = time.perf_counter()
    for event in sample_events(count):
        writer.emit(event)
    writer.flush()
    elapsed = time.perf_counter() - started
    commits, cpu = commit_count(writer), clock.seconds()
    writer.close()
    figures = {
        "write events/s": count / elapsed,
        "write writer cpu us/event": cpu * 1e6 / count,
    }
    if commits:
        figures["write events/commit"] = count / commits
    return figures


def small_file_load(engine: sa.Engine) -> Figures:
    """Sessions that each download small files one after another: a
    directory listing, a durable start, a short transfer, an end."""
    writer = AuditWriter(engine)
    clock = WriterClock()
    latencies: list[float] = []

    def session(number: int) -> None:
        for index in range(LOAD_FILES):
            common = {"session": f"load{number}", "account": f"expert{number}"}
            path = f"/420100/{index}.pdf"
            writer.emit(AuditEvent(ev.LIST, path="/420100", **common))
            started = time.perf_counter()
            writer.emit_durable(AuditEvent(ev.DOWNLOAD_START, path=path, **common))
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(LOAD_TRANSFER_S)
            writer.emit(AuditEvent(ev.DOWNLOAD_END, path=path, bytes=20480, **common))

    started = time.perf_counter()
    threads = [
        threading.Thread(target=session, args=(n,)) for n in range(LOAD_SESSIONS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.flush()
    elapsed = time.perf_counter() - started
    commits, cpu = commit_count(writer), clock.seconds()
    writer.close()
    events = LOAD_SESSIONS * LOAD_FILES * 3
    figures = {
        "load files/s": LOAD_SESSIONS * LOAD_FILES / elapsed,
        "load writer cpu us/event": cpu * 1e6 / events,
        "load durable median ms": statistics.median(latencies),
    }
    if commits:
        figures["load events/commit"] = events / commits
        figures["load writer cpu us/commit"] = cpu * 1e6 / commits
    return figures


def durable_latency(engine: sa.Engine) -> Figures:
    writer = AuditWriter(engine)
    latencies = []
    try:
        for number in range(DURABLE_SAMPLES):
            event = AuditEvent(ev.DOWNLOAD_START, path=f"/d/{number}", session="b")
            started = time.perf_counter()
            writer.emit_durable(event)
            latencies.append((time.perf_counter() - started) * 1000)
    finally:
        writer.close()
    latencies.sort()
    return {
        "durable median ms": statistics.median(latencies),
        "durable p99 ms": latencies[int(len(latencies) * 0.99) - 1],
    }


def verify_rates(engine: sa.Engine, runs: int) -> Figures:
    """Median rate and CPU of ``runs`` verifications in one process and as
    many with one worker per CPU, taken in turn so that both see the same
    load on the machine."""
    jobs = len(os.sched_getaffinity(0))
    samples: dict[int, list[tuple[float, float]]] = {1: [], jobs: []}
    for _ in range(runs):
        for count in samples:
            samples[count].append(verify_once(engine, count))
    figures: Figures = {}
    for count, taken in samples.items():
        label = f"verify {count}p"
        figures[f"{label} events/s"] = statistics.median(r for r, _ in taken)
        figures[f"{label} cpu us/event"] = statistics.median(c for _, c in taken)
    return figures


def verify_once(engine: sa.Engine, jobs: int) -> tuple[float, float]:
    """Events per second and CPU microseconds per event of one run."""
    cpu_before = process_cpu()
    started = time.perf_counter()
    result = verify_database(engine, None, jobs=jobs)
    elapsed = time.perf_counter() - started
    cpu = process_cpu() - cpu_before
    if not result.ok:
        print(f"   verify FAILED: {result.problem}")
    print(f"   verify jobs={jobs}: {result.events / elapsed:,.0f} events/s", flush=True)
    return result.events / elapsed, cpu * 1e6 / max(result.events, 1)


def print_table(name: str, figures: Figures, baseline: Figures) -> None:
    print(f"\n{name}")
    print(f"| {'figure':28} | {'this run':>12} | {'baseline':>12} | {'ratio':>6} |")
    print(f"| {'-' * 28} | {'-' * 11}: | {'-' * 11}: | {'-' * 5}: |")
    for key, value in figures.items():
        before = baseline.get(key)
        ratio = "" if before is None else f"{better_ratio(key, value, before):.2f}"
        shown = "" if before is None else f"{before:,.2f}"
        print(f"| {key:28} | {value:12,.2f} | {shown:>12} | {ratio:>6} |")


def better_ratio(key: str, value: float, before: float) -> float:
    """How many times better this run is: above 1.0 when it improved."""
    if any(word in key for word in LOWER_IS_BETTER):
        return before / value if value else float("inf")
    return value / before if before else float("inf")


class WriterClock:
    """CPU time of the audit writer thread started last (Linux only)."""

    def __init__(self) -> None:
        found = [t for t in threading.enumerate() if t.name == WRITER_THREAD]
        self._tid = found[-1].native_id if found else None
        self._start = self._read()

    def seconds(self) -> float:
        return self._read() - self._start

    def _read(self) -> float:
        if self._tid is None:
            return float("nan")
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/self/task/{self._tid}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return float("nan")


def process_cpu() -> float:
    """CPU seconds of this process and of its children that have ended."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def commit_count(writer: AuditWriter) -> int | None:
    # Older versions of the writer do not count their commits.
    stats: Any = getattr(writer, "stats", None)
    return None if stats is None else int(stats.commits)


def sample_events(count: int) -> Iterator[AuditEvent]:
    """A realistic mix: sessions that log in, list, download and leave."""
    at = dt.datetime(2020, 6, 15, 1, 0, tzinfo=dt.UTC)
    for number in range(count):
        session = f"{number // 8:012x}"
        step = number % 8
        path = f"/420100/02 普查工作报告/工作报告{number % 97}.pdf"
        common = {
            "at": at + dt.timedelta(milliseconds=number),
            "account": f"expert{number % 13}",
            "role": "reviewer",
            "session": session,
            "remote": f"10.12.{number % 200}.7:{50000 + step}",
        }
        if step == 0:
            yield AuditEvent(ev.CONNECT, details={"tls": "TLSv1.3"}, **common)
        elif step == 1:
            yield AuditEvent(ev.LOGIN, **common)
        elif step in (2, 3):
            yield AuditEvent(ev.LIST, path="/420100", details={"entries": 22}, **common)
        elif step in (4, 6):
            yield AuditEvent(ev.DOWNLOAD_START, path=path, version="2", **common)
        elif step == 5:
            yield AuditEvent(
                ev.DOWNLOAD_END, path=path, version="2", bytes=1_048_576,
                digest=f"{number:064x}", **common,
            )  # fmt: skip
        else:
            yield AuditEvent(ev.LOGOUT, **common)


def make_engine(url: str) -> sa.Engine:
    try:
        from censusdrop.server.db import make_engine as server_engine
    except ImportError:
        return sa.create_engine(url)
    return server_engine(url)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    given = os.environ.get("CENSUSDROP_BENCH_PG")
    if given:
        url = given if "://" in given else _on_server(PG_ADMIN_URL, given)
        engine = sa.create_engine(url)
        metadata.drop_all(engine)
        engine.dispose()
        yield url
        return
    name = f"censusdrop_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield _on_server(PG_ADMIN_URL, name)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _on_server(url: str, database: str) -> str:
    return sa.engine.make_url(url).set(database=database).render_as_string(False)


if __name__ == "__main__":
    main()
