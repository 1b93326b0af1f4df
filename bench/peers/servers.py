"""The servers under test: what they share, and stock pyftpdlib.

Each server listens on 127.0.0.1 only, on its own control port and its own
passive range (below the kernel's ephemeral range, so clients' outgoing
ports never take them), requires TLS 1.2 on the control connection before
login and on every data connection, uses the run's certificate, and keeps
its files in its own folder under the run's temporary folder. Connection
limits are raised on every server so that 200 clients from one address are
served: each gets room for ``MAX_SESSIONS`` sessions.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from .accounts import Certificate
from .accounts import HashCost
from .debian import PeerFiles
from .process import ProcessError
from .process import ServerProcess

MAX_SESSIONS = 512
# The one TLS 1.2 suite the clients offer, so every server runs the same one.
CIPHER = "ECDHE-RSA-AES256-GCM-SHA384"
START_TIMEOUT = 60.0
STOCK_SCRIPT = Path(__file__).with_name("stock_pyftpdlib.py")


class ServerError(Exception):
    """A server could not be set up or started; the message says why."""


@dataclasses.dataclass(frozen=True)
class Ports:
    control: int
    passive: range

    @property
    def passive_text(self) -> str:
        return f"{self.passive.start}-{self.passive.stop - 1}"


@dataclasses.dataclass(frozen=True)
class Setting:
    """What every server of one run shares."""

    workdir: Path
    certificate: Certificate
    hash_cost: HashCost
    peers: dict[str, PeerFiles]


class Server:
    """One server: prepared, started as a child, stopped by PID."""

    key = ""
    label = ""
    settle_quiet = 0.5  # seconds without CPU use that end a test

    def __init__(self, setting: Setting, ports: Ports) -> None:
        self.setting = setting
        self.ports = ports
        self.folder = setting.workdir / self.key
        self.user = ""
        self.password = ""
        self.notes: list[str] = []
        self.process: ServerProcess | None = None
        self.stdin_file: Path | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServerError(f"{self.label}: not running")
        return self.process.pid

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        argv, env = self.prepare()
        self.process = ServerProcess(self.label, argv, self.folder / "server.log")
        self.process.start(env, self.folder, stdin=self.stdin_file)
        try:
            self.process.wait_ready(self.ports.control, START_TIMEOUT)
        except ProcessError as exc:
            raise ServerError(str(exc)) from exc

    def stop(self) -> None:
        try:
            if self.process is not None:
                self.process.stop()
        finally:
            self.cleanup()

    def running(self) -> bool:
        return self.process is not None and self.process.exit_code() is None

    def exit_text(self) -> str:
        if self.process is None:
            return "never started"
        return f"exit {self.process.exit_code()}: {self.process.log_tail()}"

    def prepare(self) -> tuple[list[str], dict[str, str]]:
        """Write the configuration; return the command and its environment."""
        raise NotImplementedError

    def cleanup(self) -> None:
        """Undo what ``prepare`` did outside the run's folder."""


class StockPyftpdlib(Server):
    key = "pyftpdlib"
    label = "pyftpdlib"

    def prepare(self) -> tuple[list[str], dict[str, str]]:
        home = self.folder / "home"
        home.mkdir(exist_ok=True)
        self.user = "bench"
        self.password = os.urandom(12).hex()
        secret = self.folder / "password"
        secret.write_text(self.password + "\n", encoding="utf-8")
        secret.chmod(0o600)
        self.stdin_file = secret  # the password is not put in argv
        cert = self.setting.certificate
        argv = [
            sys.executable,
            str(STOCK_SCRIPT),
            "--port",
            str(self.ports.control),
            "--passive",
            self.ports.passive_text,
            "--cert",
            str(cert.cert),
            "--key",
            str(cert.key),
            "--home",
            str(home),
        ]
        self.notes.append("DummyAuthorizer (plaintext password), max_cons 2048")
        return argv, base_env()


def base_env() -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "HOME", "VIRTUAL_ENV", "PYTHONPATH", "TZ")
    return {name: os.environ[name] for name in keep if name in os.environ}
