"""Encrypted storage throughput: censusdrop beside stock pyftpdlib FTPS.

Asserts nothing. Run from the project's virtualenv::

    python bench/storage_bench.py                 # 1 GiB up and down, 3 rounds
    python bench/storage_bench.py --mib 256 --rounds 1

Both servers run as child processes on 127.0.0.1 with TLS 1.2 required on
the control and data connections, and are stopped by their PIDs. The
client is the same curl with the same options for both (passive mode,
TLS 1.2, ECDHE-RSA-AES256-GCM-SHA384, the same RSA certificate). censusdrop
stores through its storage layer (AES-256-GCM, fsync, versions; pre-review
is switched off, so only storage is measured); stock pyftpdlib's
``TLS_FTPHandler`` writes the plain file. Printed: MB/s (10^6 bytes per
second, wall clock, login included) for upload and download, the median
over the rounds, censusdrop's ratio to stock, and each server's RSS at
start and at its peak (VmHWM).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from censusdrop.server.app import open_services
from censusdrop.server.bootstrap import example_config
from censusdrop.server.bootstrap import init_instance
from censusdrop.server.passwords import generate_password

MIB = 1024 * 1024
USER = "bench"
CIPHER = "ECDHE-RSA-AES256-GCM-SHA384"
PORT_LINE = re.compile(r"(?:^port |listening on [0-9.]+:)(\d+)")

STOCK_SERVER = """
import sys
from OpenSSL import SSL
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import TLS_FTPHandler
from pyftpdlib.servers import FTPServer

class Handler(TLS_FTPHandler):
    tls_control_required = True
    tls_data_required = True

cert, key, home, low, high = sys.argv[1:6]
authorizer = DummyAuthorizer()
authorizer.add_user("bench", sys.stdin.readline().strip(), home, perm="elradfmw")
Handler.authorizer = authorizer
Handler.certfile, Handler.keyfile = cert, key
Handler.passive_ports = list(range(int(low), int(high) + 1))
Handler.get_ssl_context().set_max_proto_version(SSL.TLS1_2_VERSION)
server = FTPServer(("127.0.0.1", 0), Handler)
print("port", server.socket.getsockname()[1], flush=True)
server.serve_forever()
"""


class Child:
    """A server process, its announced port, and its memory."""

    def __init__(self, name: str, command: list[str], stdin: str = "") -> None:
        self.name = name
        self.process = subprocess.Popen(  # noqa: S603 - our own servers
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdin is not None
        self.process.stdin.write(stdin + "\n")
        self.process.stdin.close()
        self.port = 0
        self.lines: list[str] = []
        ready = threading.Event()
        threading.Thread(target=self._read, args=(ready,), daemon=True).start()
        if not ready.wait(60):
            self.stop()
            raise SystemExit(f"{name} did not start:\n{''.join(self.lines)}")
        self.start_rss = self.memory("VmRSS")

    def memory(self, field: str) -> int:
        """VmRSS or VmHWM (peak) of the process, in KiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
        return int(match.group(1)) if match else 0

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)

    def _read(self, ready: threading.Event) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            match = PORT_LINE.search(line)
            if match and not ready.is_set():
                self.port = int(match.group(1))
                ready.set()


def main() -> None:
    options = _parse_args()
    root = Path(tempfile.mkdtemp(prefix="storage-bench-", dir=options.dir))
    servers: list[Child] = []
    try:
        source = _make_source(root / "scan.bin", options.mib)
        password = generate_password()
        config, cert, key = _censusdrop_instance(root / "instance", password)
        servers.append(_start_stock(root, cert, key, password))
        censusdrop = str(Path(sys.executable).with_name("censusdrop"))
        servers.append(
            Child("censusdrop", [censusdrop, "--config", str(config), "serve"])
        )
        results = _measure(servers, source, cert, password, options.rounds)
        _print(options, servers, results)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="file size in MiB")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median)")
    parser.add_argument("--dir", type=Path, help="where to put the temporary files")
    return parser.parse_args()


def _make_source(path: Path, mib: int) -> Path:
    piece = bytearray(os.urandom(MIB))
    with path.open("wb") as out:
        for index in range(mib):
            piece[:8] = index.to_bytes(8, "big")  # no two MiB alike
            out.write(piece)
    return path


def _censusdrop_instance(folder: Path, password: str) -> tuple[Path, Path, Path]:
    text = example_config()
    for old, new in (
        ("port = 2121 ", "port = 0 "),
        ('passive_ports = "50000-50199"', 'passive_ports = "42000-42099"'),
        ("argon2_memory_kib = 19456", "argon2_memory_kib = 1024"),
        ("[prereview]\nenabled = true", "[prereview]\nenabled = false"),
    ):
        text = text.replace(old, new)
    settings = init_instance(folder, at=dt.datetime.now(dt.UTC), config_text=text)
    services = open_services(settings, with_tls=False)
    try:
        services.accounts.create(
            USER,
            "prefecture",
            password,
            at=dt.datetime.now(dt.UTC),
            prefecture="420100",
        )
    finally:
        services.audit.close()  # type: ignore[attr-defined]
        services.engine.dispose()
    cert = settings.path(settings.tls.certificate)
    key = settings.path(settings.tls.private_key)
    return folder / "censusdrop.toml", cert, key


def _start_stock(root: Path, cert: Path, key: Path, password: str) -> Child:
    home = root / "stock-home"
    home.mkdir()
    command = [sys.executable, "-c", STOCK_SERVER, str(cert), str(key), str(home)]
    return Child("stock pyftpdlib", [*command, "42100", "42199"], stdin=password)


def _curl(port: int, cert: Path, password: str, *args: str) -> float:
    """Run one transfer; return its wall-clock seconds."""
    command = [
        "curl",
        "--silent",
        "--show-error",
        "--fail",
        "--ssl-reqd",
        "--tls-max",
        "1.2",
        "--ciphers",
        CIPHER,
        "--cacert",
        str(cert),
        "--user",
        f"{USER}:{password}",
        *args,
        f"ftp://127.0.0.1:{port}/scan.bin",
    ]
    started = time.perf_counter()
    result = subprocess.run(  # noqa: S603 - curl with fixed options
        command, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"curl failed on port {port}: {result.stderr.strip()}")
    return elapsed


def _measure(
    servers: list[Child], source: Path, cert: Path, password: str, rounds: int
) -> dict[str, dict[str, list[float]]]:
    size = source.stat().st_size
    results: dict[str, dict[str, list[float]]] = {
        server.name: {"upload": [], "download": []} for server in servers
    }
    for round_number in range(rounds):
        # Each round in the other order, so that neither server always
        # follows the other's large transfer.
        for server in servers if round_number % 2 == 0 else servers[::-1]:
            up = _curl(server.port, cert, password, "-T", str(source))
            down = _curl(server.port, cert, password, "-o", os.devnull)
            results[server.name]["upload"].append(size / up / 1e6)
            results[server.name]["download"].append(size / down / 1e6)
    return results


def _print(
    options: argparse.Namespace,
    servers: list[Child],
    results: dict[str, dict[str, list[float]]],
) -> None:
    stock, ours = (server.name for server in servers)
    print(
        f"{options.mib} MiB file, {options.rounds} round(s), curl, TLS 1.2 {CIPHER},"
        f" python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(f"{'':<10}{stock:>18}{ours:>14}{'ratio':>8}")
    for direction in ("upload", "download"):
        a = statistics.median(results[stock][direction])
        b = statistics.median(results[ours][direction])
        print(f"{direction:<10}{a:>13.0f} MB/s{b:>9.0f} MB/s{b / a:>8.2f}")
    if options.rounds > 1:
        print("each round, MB/s (stock / censusdrop):")
        for direction in ("upload", "download"):
            ours_each = results[ours][direction]
            pairs = zip(results[stock][direction], ours_each, strict=True)
            rounds = "  ".join(f"{a:.0f}/{b:.0f}" for a, b in pairs)
            print(f"  {direction:<10}{rounds}")
    for server in servers:
        print(
            f"{server.name}: RSS {server.start_rss / 1024:.1f} MiB at start,"
            f" peak {server.memory('VmHWM') / 1024:.1f} MiB"
        )


if __name__ == "__main__":
    main()
