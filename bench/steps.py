"""Small transfers step by step: censusdrop beside stock pyftpdlib.

Asserts nothing. Run from the project's virtualenv::

    python bench/steps.py                  # 300 files of 20 KiB, 2 rounds
    python bench/steps.py --files 1000 --rounds 3 --postgres

One ftplib session per server uploads then downloads every file, as the
small-file rows of ``run.py`` do, with a clock between the steps of each
transfer: ``PASV`` and the data connection's TCP connect, the command to
its 1xx reply, the data connection's TLS handshake (resuming the control
session), the bytes and the TLS close, and the wait for the 226. Printed:
the median of each step over every transfer of every round, the whole
transfer, and the server's CPU per transfer (user and system, its whole
process tree). The servers run as children on 127.0.0.1 with TLS 1.2
required on both connections, in alternating order from round to round,
and are stopped by their PIDs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from peers.accounts import calibrate_hash_cost
from peers.accounts import make_certificate
from peers.bench import SMALL_BYTES
from peers.bench import settle
from peers.bench import target_for
from peers.censusdrop_server import Censusdrop
from peers.clients import STEPS
from peers.clients import stepwise
from peers.process import cpu_seconds
from peers.servers import Ports
from peers.servers import Server
from peers.servers import ServerError
from peers.servers import Setting
from peers.servers import StockPyftpdlib

PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LIMIT = 600.0  # seconds for one server's uploads and downloads


def main() -> int:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="censusdrop-steps-"))
    workdir.chmod(0o711)
    servers: list[Server] = []
    try:
        setting = Setting(workdir, make_certificate(workdir), calibrate_hash_cost(), {})
        base = args.base_port
        candidates: list[Server] = [Censusdrop(setting, Ports(base, _passive(base)))]
        if args.postgres:
            port = base + 1000
            candidates.append(
                Censusdrop(setting, Ports(port, _passive(port)), args.postgres)
            )
        port = base + 2000
        candidates.append(StockPyftpdlib(setting, Ports(port, _passive(port))))
        for server in candidates:
            servers.append(server)  # stopped below even if its start fails
            server.start()
        results = measure(servers, args.files, args.rounds, workdir)
    except (ServerError, OSError) as exc:
        print(f"cannot run: {exc}", file=sys.stderr)
        return 1
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(report(servers, results, args.files, args.rounds))
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300, help="files each way")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--postgres",
        nargs="?",
        const=PG_URL,
        metavar="URL",
        help=f"also censusdrop on a throwaway database (default {PG_URL})",
    )
    parser.add_argument("--base-port", type=int, default=47000)
    args = parser.parse_args()
    if args.files < 1 or args.rounds < 1:
        parser.error("--files and --rounds must be at least 1")
    return args


@dataclasses.dataclass
class Samples:
    """One server's step timings (seconds) and CPU per transfer, by round."""

    up: list[list[float]] = dataclasses.field(default_factory=list)
    down: list[list[float]] = dataclasses.field(default_factory=list)
    cpu: list[float] = dataclasses.field(default_factory=list)


def measure(
    servers: list[Server], files: int, rounds: int, workdir: Path
) -> dict[str, Samples]:
    blobs = [os.urandom(SMALL_BYTES) for _ in range(files)]
    samples = {s.key: Samples() for s in servers}
    for number in range(rounds):
        for server in servers if number % 2 == 0 else servers[::-1]:
            settle(server.pid, server.settle_quiet)
            before = cpu_seconds(server.pid)
            target = target_for(server, workdir)
            ups, downs = stepwise(target, blobs, f"s{number}-", LIMIT)
            spent = cpu_seconds(server.pid) - before
            mine = samples[server.key]
            mine.up += ups
            mine.down += downs
            mine.cpu.append(spent / (2 * files))
            print(f"round {number + 1}: {server.label} done", file=sys.stderr)
    return samples


def report(
    servers: list[Server], samples: dict[str, Samples], files: int, rounds: int
) -> str:
    stock = samples[servers[-1].key]
    lines = [
        f"{files} files of {SMALL_BYTES // 1024} KiB each way, {rounds} round(s);"
        " medians in ms; × = the server's time ÷ stock pyftpdlib's",
        "",
    ]
    for title, rows_of in (("upload", _ups), ("download", _downs)):
        lines.append(f"| {title} step | " + " | ".join(s.label for s in servers) + " |")
        lines.append("| --- |" + " ---: |" * len(servers))
        for index, step in enumerate([*STEPS, "whole transfer"]):
            base = _median(rows_of(stock), index)
            cells = []
            for server in servers:
                value = _median(rows_of(samples[server.key]), index)
                ratio = f" · {value / base:.1f}×" if server is not servers[-1] else ""
                cells.append(f"{value * 1000:.2f}{ratio if base > 0 else ''}")
            lines.append(f"| {step} | " + " | ".join(cells) + " |")
        lines.append("")
    cpu = ", ".join(
        f"{s.label} {statistics.median(samples[s.key].cpu) * 1000:.2f}" for s in servers
    )
    lines.append(f"server CPU per transfer (up and down), ms: {cpu}")
    return "\n".join(lines)


def _ups(samples: Samples) -> list[list[float]]:
    return samples.up


def _downs(samples: Samples) -> list[list[float]]:
    return samples.down


def _median(rows: list[list[float]], index: int) -> float:
    if index < len(STEPS):
        return statistics.median(row[index] for row in rows)
    return statistics.median(sum(row) for row in rows)


def _passive(port: int) -> range:
    return range(port + 1, port + 900)


if __name__ == "__main__":
    sys.exit(main())
