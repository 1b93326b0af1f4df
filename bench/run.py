"""censusdrop side by side with stock pyftpdlib, vsftpd, ProFTPD and Pure-FTPd.

One command (as root, from the project's virtualenv)::

    python bench/run.py              # 1 GiB, 2,000 small files, 200 clients; 3 rounds
    python bench/run.py --quick      # 128 MiB, 300 files, 50 clients; 1 round
    python bench/run.py --postgres   # adds censusdrop on a throwaway PostgreSQL
    python bench/run.py --workers 2  # adds censusdrop with server.workers = 2

It installs what is missing (see ``peers/debian.py``), starts every server
on 127.0.0.1 with TLS 1.2 required on control and data connections, runs
the same clients against each in alternation, prints one table of medians
with censusdrop's ratio to each peer, each server's CPU seconds and peak
memory, and removes everything it made. It asserts nothing; it exits with
1 when a server could not be started or a client failed, and says why.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from types import FrameType

from peers import bench
from peers import profile
from peers.accounts import AccountError
from peers.accounts import calibrate_hash_cost
from peers.accounts import make_certificate
from peers.censusdrop_server import Censusdrop
from peers.clients import ClientError
from peers.clients import Target
from peers.clients import negotiated
from peers.cservers import Proftpd
from peers.cservers import PureFtpd
from peers.cservers import Vsftpd
from peers.debian import Apt
from peers.debian import InstallError
from peers.debian import PeerFiles
from peers.debian import ensure_curl
from peers.debian import ensure_peer
from peers.process import OtherLoad
from peers.report import Results
from peers.report import table
from peers.servers import CIPHER
from peers.servers import Ports
from peers.servers import Server
from peers.servers import ServerError
from peers.servers import Setting
from peers.servers import StockPyftpdlib

PEERS = {"vsftpd": Vsftpd, "proftpd": Proftpd, "pure-ftpd": PureFtpd}
PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def main() -> int:
    args = parse_args()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)  # even where SIGINT came ignored
    _raise_file_limit()
    plan = bench.QUICK if args.quick else bench.FULL
    if args.rounds:
        plan = bench.Plan(plan.big_bytes, plan.small_count, plan.crowd, args.rounds)
    problems: list[str] = []

    apt = Apt()
    try:
        curl = ensure_curl(apt)
    except InstallError as exc:
        print(f"cannot run: {exc}", file=sys.stderr)
        return 1
    peers = install_peers(apt, args.only, problems)

    load = OtherLoad()
    workdir = Path(tempfile.mkdtemp(prefix="censusdrop-bench-", dir=args.tmpdir))
    workdir.chmod(0o711)  # the C servers' users must reach their homes
    servers: list[Server] = []
    results: Results | None = None
    try:
        setting = Setting(
            workdir, make_certificate(workdir), calibrate_hash_cost(), peers
        )
        start_servers(setting, args, problems, servers)
        print(header(plan, setting, servers), flush=True)
        results = Results(plan.rows(), {s.key: s.label for s in servers})
        hook = profile.Profiler(args.profile).hook if args.profile else None
        bench.Runner(plan, servers, curl, workdir, results, hook).run()
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every server", file=sys.stderr)
        return 130
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)  # let the cleanup finish
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    if results is not None:
        print(table(results))
        print(notes(plan, load))
        problems.extend(results.failures)
        if args.json:
            data = json.dumps(results.as_dict(), indent=1, ensure_ascii=False)
            args.json.write_text(data, encoding="utf-8")
    if problems:
        print("\nProblems (exit status 1):")
        print("\n".join(f"- {p}" for p in problems))
        return 1
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="FTPS benchmark: censusdrop and its peers, side by side."
    )
    parser.add_argument("--quick", action="store_true", help="1-2 minute run")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, quick 1)")
    parser.add_argument(
        "--postgres",
        nargs="?",
        const=PG_URL,
        metavar="URL",
        help=f"also run censusdrop on a throwaway database (default {PG_URL})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="also run censusdrop with N server processes (server.workers)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["pyftpdlib", *PEERS],
        help="peers to run (default: all)",
    )
    parser.add_argument("--base-port", type=int, default=20000)
    parser.add_argument("--tmpdir", type=Path, help="where the run's folder goes")
    parser.add_argument("--json", type=Path, help="write every sample here")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy censusdrop during each test of round 1 (slows it down)",
    )
    return parser.parse_args()


def install_peers(
    apt: Apt, only: list[str] | None, problems: list[str]
) -> dict[str, PeerFiles]:
    found = {}
    for name in PEERS:
        if only and name not in only:
            continue
        try:
            found[name] = ensure_peer(apt, name)
        except InstallError as exc:
            problems.append(f"{name}: not run, cannot install: {exc}")
    return found


def start_servers(
    setting: Setting,
    args: argparse.Namespace,
    problems: list[str],
    started: list[Server],
) -> None:
    """Start each server, appended to ``started`` first so that an interrupt
    during its start still stops it; one that fails is stopped and dropped."""
    candidates: list[Server] = []
    slot = iter(range(100))

    def ports() -> Ports:
        base = args.base_port + 1000 * next(slot)
        return Ports(base, range(base + 1, base + 1000))

    candidates.append(Censusdrop(setting, ports()))
    if args.postgres:
        candidates.append(Censusdrop(setting, ports(), postgres_url=args.postgres))
    if args.workers and args.workers > 1:
        candidates.append(CensusdropWorkers(setting, ports(), args.workers))
        if args.postgres:
            candidates.append(
                CensusdropWorkers(setting, ports(), args.workers, args.postgres)
            )
    if not args.only or "pyftpdlib" in args.only:
        candidates.append(StockPyftpdlib(setting, ports()))
    for name, cls in PEERS.items():
        if name in setting.peers:
            candidates.append(cls(setting, ports()))

    for server in candidates:
        started.append(server)
        try:
            _check_port_free(server.ports.control)
            server.start()
            server.notes.append(negotiated(_probe_target(server, setting)))
        except (ServerError, AccountError, ClientError, OSError) as exc:
            problems.append(f"{server.label}: not run: {exc}")
            started.remove(server)
            with contextlib.suppress(Exception):
                server.stop()


class CensusdropWorkers(Censusdrop):
    """censusdrop with ``server.workers = N``, on SQLite or PostgreSQL."""

    def __init__(
        self,
        setting: Setting,
        ports: Ports,
        workers: int,
        postgres_url: str | None = None,
    ) -> None:
        super().__init__(setting, ports, postgres_url=postgres_url)
        suffix = " PG" if postgres_url else ""
        self.key = f"{self.key}-w{workers}"
        self.label = f"censusdrop ×{workers}{suffix}"
        self.folder = setting.workdir / self.key
        self.workers = workers

    def _environment(self) -> dict[str, str]:
        env = super()._environment()
        env["CENSUSDROP_SERVER_WORKERS"] = str(self.workers)
        return env


def header(plan: bench.Plan, setting: Setting, servers: list[Server]) -> str:
    lines = [
        f"censusdrop benchmark, {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"machine: {len(os.sched_getaffinity(0))} CPUs, {_cpu_model()},"
        f" Linux {platform.release()}, Python {platform.python_version()},"
        f" {ssl.OPENSSL_VERSION}, {_curl_version()}",
        f"plan: {plan.rounds} round(s), medians; TLS 1.2 ({CIPHER})"
        " required on control and data, 127.0.0.1",
        setting.hash_cost.describe(),
    ]
    for server in servers:
        lines.append(
            f"{server.label}: {_version(server, setting)}; {'; '.join(server.notes)}"
        )
    return "\n".join(lines) + "\n"


def notes(plan: bench.Plan, load: OtherLoad) -> str:
    size = "1 GiB, 2,000 files, 200 clients" if plan == bench.FULL else "smaller sizes"
    others, wall = load.seconds()
    share = others / (wall * len(os.sched_getaffinity(0))) * 100
    return "\n".join(
        [
            "",
            f"Medians of {plan.rounds} round(s), {size}. MB = 10^6 bytes.",
            "× = censusdrop speed ÷ peer speed (above 1.0: censusdrop ahead);"
            " with PG, the second ratio is censusdrop on PostgreSQL;"
            " in a censusdrop ×N column (--workers), the ratio is censusdrop"
            " in one process ÷ it.",
            "CPU: user+system seconds of the server's process tree, reaped"
            " children included, over every test and its settling.",
            "Peak RSS: VmHWM of the main process; for forking servers, if larger,"
            " the largest sample (every 0.2 s) of the tree's private resident"
            " memory plus its largest file-backed share once.",
            f"Other load: {others:.0f} CPU s outside the benchmark's processes"
            f" in {wall:.0f} s ({share:.0f}% of the machine); above a few percent"
            " the figures are noisy.",
        ]
    )


def _probe_target(server: Server, setting: Setting) -> Target:
    return Target(
        server.label,
        server.ports.control,
        server.user,
        server.password,
        setting.workdir / "unused.netrc",
        setting.certificate.cert,
    )


def _version(server: Server, setting: Setting) -> str:
    if server.key.startswith("censusdrop"):
        return f"censusdrop {metadata.version('censusdrop')}"
    if server.key == "pyftpdlib":
        return f"pyftpdlib {metadata.version('pyftpdlib')}"
    return setting.peers[server.key].origin


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _curl_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found = shutil.which("curl")
        if found:
            out = subprocess.run(  # noqa: S603 - curl --version
                [found, "--version"], capture_output=True, text=True, timeout=10
            ).stdout
            return " ".join(out.split()[:2])
    return "curl"


def _check_port_free(port: int) -> None:
    with socket.socket() as sock:
        # As the servers do: a connection of an earlier run in TIME_WAIT on
        # this port does not keep a listener from binding it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ServerError(f"port {port} on 127.0.0.1 is in use") from exc


def _raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
