"""A private PostgreSQL cluster for fault tests that stop or restart it.

The shared server at 127.0.0.1:5432 serves every other test and must never
be restarted. ``PrivateCluster`` runs ``initdb`` and ``pg_ctl`` from the
installed PostgreSQL binaries into a temporary folder, on a free port of
127.0.0.1, with trust authentication for local connections. When the tests
run as root, the commands run as the ``postgres`` system user (PostgreSQL
refuses to run as root), which is given the folder. ``halt`` and ``start``
make an outage; ``close`` ends the postmaster through ``pg_ctl`` and, if
that fails, by the PID it wrote, then removes the folder.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

START_TIMEOUT = 60


class ClusterUnavailable(Exception):
    """The PostgreSQL binaries or the system user needed are missing."""


def find_binaries() -> Path:
    """The bin folder of the newest installed PostgreSQL."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda path: (
            int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return found[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        raise ClusterUnavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
            " (apt-get install postgresql)"
        )
    return Path(pg_ctl).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateCluster:
    """One throwaway cluster; use as a context manager."""

    def __init__(self) -> None:
        self.bin = find_binaries()
        self._owner = _run_as_user()
        self.folder = Path(tempfile.mkdtemp(prefix="censusdrop-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.port = free_port()
        if self._owner is not None:
            os.chown(self.folder, self._owner.pw_uid, self._owner.pw_gid)

    def __enter__(self) -> PrivateCluster:
        try:
            self._pg(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self._pg_ctl("start", "-l", str(self.log), "-o", self._options())

    def restart(self) -> None:
        """Stop fast (open connections are cut) and start again."""
        self._pg_ctl(
            "restart", "-m", "fast", "-l", str(self.log), "-o", self._options()
        )

    def halt(self) -> None:
        """Stop fast, keeping the data, until ``start``."""
        self._pg_ctl("stop", "-m", "fast")

    def close(self) -> None:
        """Stop the postmaster, by pg_ctl or else by its PID; remove the folder."""
        try:
            if (self.data / "postmaster.pid").exists():
                try:
                    self._pg_ctl("stop", "-m", "immediate")
                except subprocess.CalledProcessError:
                    self._kill_by_pid()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def create_database(self, name: str) -> str:
        self._pg(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f'CREATE DATABASE "{name}"',
        )
        return self.url(name)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    # --- private

    def _options(self) -> str:
        # No Unix socket in a shared folder; durability is not under test.
        return (
            f"-p {self.port} -c listen_addresses=127.0.0.1"
            f" -c unix_socket_directories={self.folder} -c fsync=off"
        )

    def _pg_ctl(self, *args: str) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-w", "-t", str(START_TIMEOUT), *args)

    def _pg(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self._owner is not None:
            command = ["runuser", "-u", self._owner.pw_name, "--", *command]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT + 30,
            check=False,
        )
        if result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, command, result.stdout, result.stderr
            )

    def _kill_by_pid(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            first = (self.data / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first)
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                os.kill(pid, 0)  # raises once it is gone
                time.sleep(0.1)


def _run_as_user() -> pwd.struct_passwd | None:
    """The system user to run PostgreSQL as when we are root, else None."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise ClusterUnavailable(
            "running as root and there is no 'postgres' system user to run"
            " PostgreSQL as"
        ) from None
