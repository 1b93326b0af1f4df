"""Load test: many concurrent FTPS sessions against one censusdrop server.

One command, from the project's virtualenv::

    python bench/load.py              # 200 sessions for 5 minutes, SQLite
    python bench/load.py --quick      # 200 sessions for 45 seconds
    python bench/load.py --postgres   # state and audit on a throwaway PostgreSQL
    python bench/load.py --sessions 20 --duration 5 --json out.json

It makes an instance in a temporary folder (everything on: encryption at
rest, audit log, pre-review, Argon2id at the default cost), starts
``censusdrop serve`` on 127.0.0.1 as a child process, and runs the sessions
as threads spread over a few client processes. Each session logs in (TLS
1.2 on control and data, the data connections resuming the control
session), uploads a file, downloads it and compares it, a few times, then
quits and logs in again, until the time is up.

It prints the sessions, logins, transfers, failures and throughput; the
server's open descriptors, threads and resident memory before the load, at
its peak, a quarter of the way in, at its end and after the sessions are
gone (from ``/proc/PID``); then, with the server stopped by its PID, the
result of ``censusdrop audit verify`` and the audit events per action
beside what the clients counted. Exit status 1 when a transfer failed, the
chain does not verify, an action's events differ from the clients' count,
or descriptors were left open.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import ftplib
import json
import multiprocessing
import os
import re
import resource
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from peers.clients import SessionReusingFTPS
from peers.loadreport import print_report
from peers.loadreport import problems_of
from peers.process import ProcessError
from peers.process import ServerProcess
from peers.process import cpu_seconds
from peers.servers import CIPHER
from peers.watch import Sample
from peers.watch import kinds_changed
from peers.watch import sample_until
from peers.watch import series
from peers.watch import settled

from censusdrop.audit.schema import audit_events
from censusdrop.config.prefectures import load_prefectures
from censusdrop.config.settings import Settings
from censusdrop.config.settings import load_settings
from censusdrop.server.app import open_services
from censusdrop.server.db import make_engine

PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
FULL_SECONDS = 300.0
QUICK_SECONDS = 45.0
TRANSFERS_PER_LOGIN = 5
SOCKET_TIMEOUT = 60.0
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:")


@dataclass
class Counts:
    """What the clients did and saw."""

    logins: int = 0
    logouts: int = 0
    uploads: int = 0
    downloads: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: Counts) -> None:
        for name in ("logins", "logouts", "uploads", "downloads", "failures"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.bytes_up += other.bytes_up
        self.bytes_down += other.bytes_down
        self.errors.extend(other.errors[: 20 - len(self.errors)])

    def expected_events(self) -> dict[str, int]:
        return {
            "login": self.logins,
            "logout": self.logouts,
            "upload_start": self.uploads,
            "upload_end": self.uploads,
            "download_start": self.downloads,
            "download_end": self.downloads,
        }


@dataclass(frozen=True)
class Target:
    port: int
    cafile: str
    accounts: tuple[tuple[str, str], ...]


def main() -> int:
    args = parse_args()
    duration = args.duration or (QUICK_SECONDS if args.quick else FULL_SECONDS)
    workdir = Path(tempfile.mkdtemp(prefix="censusdrop-load-", dir=args.tmpdir))
    database: str | None = None
    try:
        env = _environment(args)
        if args.postgres:
            database = _create_database(args.postgres)
            env["CENSUSDROP_DATABASE_URL"] = _database_url(args.postgres, database)
        return run(args, duration, workdir, env)
    finally:
        if database is not None and args.postgres:
            _drop_database(args.postgres, database)
        shutil.rmtree(workdir, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="FTPS load test: concurrent sessions against censusdrop."
    )
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--duration", type=float, help="seconds (default 300)")
    parser.add_argument("--quick", action="store_true", help="45 seconds")
    parser.add_argument("--size", type=int, default=32 * 1024, help="bytes a file")
    parser.add_argument("--accounts", type=int, default=10, help="prefectures")
    parser.add_argument(
        "--client-processes", type=int, default=2, help="processes for the clients"
    )
    parser.add_argument(
        "--postgres",
        nargs="?",
        const=PG_URL,
        metavar="URL",
        help=f"state and audit on a throwaway database (default {PG_URL})",
    )
    parser.add_argument(
        "--waves",
        type=int,
        default=3,
        help="the load in this many waves, to compare memory after each",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=30.0,
        help="seconds to wait for descriptors to return after the load",
    )
    parser.add_argument("--port", type=int, default=24000)
    parser.add_argument("--tmpdir", type=Path, help="where the run's folder goes")
    parser.add_argument("--json", type=Path, help="write the figures here")
    return parser.parse_args()


def run(
    args: argparse.Namespace, duration: float, workdir: Path, env: dict[str, str]
) -> int:
    config = workdir / "instance" / "censusdrop.toml"
    _cli(["init", str(config.parent)], env)
    settings = load_settings(config, environ=env)
    target = Target(
        port=args.port,
        cafile=str(settings.path(settings.tls.certificate)),
        accounts=_make_accounts(settings, args.accounts),
    )
    server = ServerProcess(
        "censusdrop",
        [_command(), "--config", str(config), "serve", "--port", str(args.port)],
        workdir / "server.log",
    )
    server.start(env, workdir, None)
    try:
        server.wait_ready(args.port, 60)
        report = _load(server.pid, target, args, duration)
    except ProcessError as exc:
        print(f"cannot run: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
    report["server_errors"] = _log_errors(workdir / "server.log")
    report["audit"] = _audit(config, settings, env, report["clients"])
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0 if not problems_of(report) else 1


def _load(
    pid: int, target: Target, args: argparse.Namespace, duration: float
) -> dict[str, Any]:
    started = time.monotonic()
    before = Sample.of(pid, started)
    cpu_before = cpu_seconds(pid)
    samples: list[Sample] = []
    stop = threading.Event()
    sampler = threading.Thread(
        target=sample_until, args=(pid, started, samples, stop), daemon=True
    )
    sampler.start()
    # The load comes in waves, every session logging out at the end of
    # each: what the server holds once a wave is over and its sessions are
    # gone should not grow from one wave to the next.
    counts, wall, client_cpu = Counts(), 0.0, 0.0
    waves: list[Sample] = []
    for _ in range(args.waves):
        wave_counts, wave_wall, wave_cpu = _run_clients(
            target, args, duration / args.waves
        )
        counts.add(wave_counts)
        wall, client_cpu = wall + wave_wall, client_cpu + wave_cpu
        end = Sample.of(pid, started)
        waves.append(settled(pid, started, before, args.settle))
    stop.set()
    sampler.join(5)
    after = waves[-1]
    quarter = next((s for s in samples if s.at >= end.at - wall * 3 / 4), end)
    peak = max(samples, key=lambda s: (s.fds, s.rss_mib), default=end)
    return {
        "sessions": args.sessions,
        "seconds": round(wall, 1),
        "file_bytes": args.size,
        "clients": asdict(counts),
        "server_cpu_seconds": round(cpu_seconds(pid) - cpu_before, 1),
        "client_cpu_seconds": round(client_cpu, 1),
        "server": {
            "before": asdict(before),
            "peak": asdict(peak),
            "quarter": asdict(quarter),
            "end_of_load": asdict(end),
            "after": asdict(after),
            "peak_rss_mib": max((s.rss_mib for s in samples), default=end.rss_mib),
            "fds_changed": kinds_changed(before, after),
            "after_waves": [asdict(wave) for wave in waves],
            "rss_series": series(samples),
        },
    }


def _run_clients(
    target: Target, args: argparse.Namespace, duration: float
) -> tuple[Counts, float, float]:
    """Every session's counts, the seconds from the first to the last, and
    the CPU seconds the client processes used."""
    processes = max(1, min(args.client_processes, args.sessions))
    shares = [args.sessions // processes] * processes
    for index in range(args.sessions % processes):
        shares[index] += 1
    cpu_before = _children_cpu()
    context = multiprocessing.get_context("spawn")
    # Every process is up and imported before the clock starts.
    barrier = context.Barrier(processes + 1)
    queue: multiprocessing.Queue[dict[str, Any]] = context.Queue()
    workers = [
        context.Process(
            target=client_process,
            args=(target, index, share, duration, args.size, barrier, queue),
            daemon=True,  # an aborted run does not wait for them
        )
        for index, share in enumerate(shares)
    ]
    for worker in workers:
        worker.start()
    barrier.wait(120)
    started = time.monotonic()
    results = [queue.get(timeout=duration + 600) for _ in workers]
    seconds = time.monotonic() - started
    for worker in workers:
        worker.join(60)
    cpu = _children_cpu() - cpu_before
    total = Counts()
    for result in results:
        total.add(Counts(**result))
    return total, seconds, cpu


def client_process(
    target: Target,
    index: int,
    sessions: int,
    duration: float,
    size: int,
    barrier: threading.Barrier,
    queue: multiprocessing.Queue[dict[str, Any]],
) -> None:
    """One client process: ``sessions`` threads for ``duration`` seconds."""
    barrier.wait(120)
    deadline = time.time() + duration
    counts = [Counts() for _ in range(sessions)]
    threads = [
        threading.Thread(
            target=_session,
            args=(target, f"p{index}s{number}", deadline, size, counts[number]),
        )
        for number in range(sessions)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = Counts()
    for one in counts:
        total.add(one)
    queue.put(asdict(total))


def _session(
    target: Target, name: str, deadline: float, size: int, counts: Counts
) -> None:
    user, password = target.accounts[hash(name) % len(target.accounts)]
    blob = name.encode() + os.urandom(size - len(name))
    number = 0
    while time.time() < deadline:
        try:
            client = _login(target, user, password)
        except (OSError, EOFError, ftplib.Error) as exc:
            _failed(counts, f"login {user}: {exc}")
            continue
        counts.logins += 1
        try:
            for _ in range(TRANSFERS_PER_LOGIN):
                if time.time() >= deadline:
                    break
                path = f"{name}-{number % 20}.bin"
                number += 1
                _store(client, path, blob)
                counts.uploads += 1
                counts.bytes_up += len(blob)
                got = _retrieve(client, path)
                counts.downloads += 1
                counts.bytes_down += len(got)
                if got != blob:
                    _failed(counts, f"{path}: {len(got)} bytes came back, not these")
            client.quit()
            counts.logouts += 1
        except (OSError, EOFError, ftplib.Error) as exc:
            _failed(counts, f"{user} {name}: {exc}")
        finally:
            client.close()


def _failed(counts: Counts, error: str) -> None:
    counts.failures += 1
    if len(counts.errors) < 5:
        counts.errors.append(error)
    time.sleep(0.5)  # bounded: a refusing server is not hammered


def _login(target: Target, user: str, password: str) -> SessionReusingFTPS:
    context = ssl.create_default_context(cafile=target.cafile)
    context.check_hostname = False  # the certificate names the host, not 127.0.0.1
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHER)
    client = SessionReusingFTPS(context=context, timeout=SOCKET_TIMEOUT)
    try:
        client.connect("127.0.0.1", target.port)
        client.auth()
        client.login(user, password)
        client.prot_p()
        client.voidcmd("TYPE I")
    except BaseException:
        client.close()
        raise
    return client


def _store(client: ftplib.FTP, path: str, blob: bytes) -> None:
    with client.transfercmd(f"STOR {path}") as conn:
        conn.sendall(blob)
        _close_tls(conn)
    client.voidresp()


def _retrieve(client: ftplib.FTP, path: str) -> bytes:
    parts = []
    with client.transfercmd(f"RETR {path}") as conn:
        while chunk := conn.recv(65536):
            parts.append(chunk)
        _close_tls(conn)
    client.voidresp()
    return b"".join(parts)


def _close_tls(conn: object) -> None:
    if isinstance(conn, ssl.SSLSocket):
        with contextlib.suppress(ssl.SSLError, OSError):
            conn.unwrap()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _log_errors(log: Path) -> list[str]:
    """The server's ERROR lines, each with the last line of its traceback."""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    found = []
    for number, line in enumerate(lines):
        if " ERROR " not in line:
            continue
        cause = ""
        for text in lines[number + 1 : number + 200]:
            if LOG_LINE.match(text):
                break  # the next log line: the traceback has ended
            if text and not text[0].isspace() and not text.startswith("Traceback"):
                cause = f" <- {text}"
        found.append(line + cause)
    more = [f"... {len(found) - 20} more"] if len(found) > 20 else []
    return found[:20] + more


# --- instance, accounts, audit ---------------------------------------------


def _environment(args: argparse.Namespace) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "HOME", "VIRTUAL_ENV", "PYTHONPATH", "TZ")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    limit = str(4 * args.sessions + 64)
    env.update(
        {
            "CENSUSDROP_SERVER_PORT": str(args.port),
            "CENSUSDROP_SERVER_PASSIVE_PORTS": f"{args.port + 1}-{args.port + 999}",
            "CENSUSDROP_SERVER_MAX_CONNECTIONS": limit,
            "CENSUSDROP_SERVER_MAX_CONNECTIONS_PER_IP": limit,
            "CENSUSDROP_TLS_MAX_VERSION": "1.2",
        }
    )
    return env


def _make_accounts(settings: Settings, wanted: int) -> tuple[tuple[str, str], ...]:
    prefectures = list(load_prefectures(settings.reference.prefectures))
    services = open_services(settings, with_tls=False)
    made = []
    try:
        for prefecture in prefectures[: max(1, wanted)]:
            name, password = f"load{prefecture.code}", uuid.uuid4().hex
            services.accounts.create(
                name,
                "prefecture",
                password,
                at=dt.datetime.now(dt.UTC),
                prefecture=prefecture.code,
            )
            made.append((name, password))
    finally:
        services.audit.close()
        services.engine.dispose()
    return tuple(made)


def _audit(
    config: Path, settings: Settings, env: dict[str, str], clients: dict[str, Any]
) -> dict[str, Any]:
    verify = subprocess.run(  # noqa: S603 - our own command line
        [_command(), "--config", str(config), "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    events = _events(settings.database_url)
    expected = Counts(**clients).expected_events()
    return {
        "verify_exit": verify.returncode,
        "verify_output": (verify.stdout + verify.stderr).strip().splitlines()[-3:],
        "events": events,
        "expected_ok": expected,
    }


def _events(url: str) -> dict[str, dict[str, int]]:
    engine = make_engine(url)
    query = sa.select(
        audit_events.c.action, audit_events.c.outcome, sa.func.count()
    ).group_by(audit_events.c.action, audit_events.c.outcome)
    found: dict[str, dict[str, int]] = collections.defaultdict(dict)
    try:
        with engine.connect() as conn:
            for action, outcome, count in conn.execute(query):
                found[action][outcome] = count
    finally:
        engine.dispose()
    return dict(found)


def _create_database(admin_url: str) -> str:
    import psycopg

    name = f"censusdrop_load_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def _drop_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _database_url(admin_url: str, name: str) -> str:
    return admin_url.rsplit("/", 1)[0] + "/" + name


def _cli(args: list[str], env: dict[str, str]) -> None:
    subprocess.run(  # noqa: S603 - our own command line
        [_command(), *args], env=env, check=True, capture_output=True, timeout=300
    )


def _command() -> str:
    beside = Path(sys.executable).with_name("censusdrop")
    found = str(beside) if beside.exists() else shutil.which("censusdrop")
    if found is None:
        raise SystemExit("the censusdrop command is not installed (pip install -e .)")
    return found


if __name__ == "__main__":
    sys.exit(main())
