"""Benchmark of the audit trail: sustained write rate through AuditWriter,
durable-event latency, and verification rate, on SQLite and PostgreSQL.

Usage::

    python bench/audit_bench.py [--events 200000] [--skip-postgres]

PostgreSQL: ``CENSUSDROP_BENCH_PG`` names the database (a full URL, or a
database name on the local server); otherwise a throwaway database is
created on postgresql+psycopg://postgres@127.0.0.1:5432/postgres and dropped
afterwards. The engines are built like the server builds them (WAL and full
sync on SQLite) when ``censusdrop.server.db`` is available.

It prints figures and asserts nothing. Targets: at least 5,000 events/s
written on SQLite, at least 200,000 events/s verified.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from censusdrop.audit import events as ev
from censusdrop.audit.events import AuditEvent
from censusdrop.audit.schema import metadata
from censusdrop.audit.store import AuditWriter
from censusdrop.audit.verify import verify_database

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DURABLE_SAMPLES = 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        run("SQLite", f"sqlite:///{Path(folder) / 'bench.db'}", args.events)
    if not args.skip_postgres:
        with postgres_database() as url:
            run("PostgreSQL", url, args.events)


def run(name: str, url: str, count: int) -> None:
    engine = make_engine(url)
    metadata.create_all(engine)
    try:
        print(f"== {name}: {count} events")
        write_rate(engine, count)
        durable_latency(engine)
        for workers in (1, 2):
            verify_rate(engine, workers)
    finally:
        engine.dispose()


def write_rate(engine: sa.Engine, count: int) -> None:
    writer = AuditWriter(engine, max_queue=count + 1)
    started = time.perf_counter()
    for number, event in enumerate(sample_events(count)):
        writer.emit(event)
        if number % 50_000 == 49_999:
            print(f"   queued {number + 1}, backlog {writer.backlog}")
    writer.flush()
    elapsed = time.perf_counter() - started
    writer.close()
    print(f"write   : {count / elapsed:10,.0f} events/s through AuditWriter")


def durable_latency(engine: sa.Engine) -> None:
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
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"durable : median {statistics.median(latencies):.2f} ms, "
        f"p99 {p99:.2f} ms per emit_durable (idle writer)"
    )


def verify_rate(engine: sa.Engine, workers: int) -> None:
    started = time.perf_counter()
    result = verify_database(engine, None, workers=workers)
    elapsed = time.perf_counter() - started
    state = "ok" if result.ok else f"FAILED {result.problem}"
    print(
        f"verify  : {result.events / elapsed:10,.0f} events/s "
        f"({workers} process{'es' if workers > 1 else ''}, {state})"
    )


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
