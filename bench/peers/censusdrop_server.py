"""censusdrop through its real command line, with everything on.

``censusdrop init`` makes an instance in the run's folder (encryption at
rest, audit log, pre-review, Argon2id at the configured cost), ``account
add --password-stdin`` makes a prefecture account, and ``serve --port``
runs it. The only settings changed, through ``CENSUSDROP_*`` variables:
the run's certificate, the passive range, connection limits raised for 200
clients from one address, and ``prereview.quiet_seconds = 1`` so that the
pre-review an upload triggers runs before the next server's test starts
rather than during it. TLS stays at its default of 1.2.

With ``postgres_url`` the audit log and state live in a throwaway
PostgreSQL database, created here and dropped on ``cleanup``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from .servers import MAX_SESSIONS
from .servers import Ports
from .servers import Server
from .servers import ServerError
from .servers import Setting
from .servers import base_env

PREFECTURE = "武汉市"
CLI_TIMEOUT = 120.0


class Censusdrop(Server):
    key = "censusdrop"
    label = "censusdrop"
    settle_quiet = 1.5  # longer than prereview.quiet_seconds = 1

    def __init__(
        self, setting: Setting, ports: Ports, postgres_url: str | None = None
    ) -> None:
        if postgres_url is not None:
            self.key = "censusdrop-pg"
            self.label = "censusdrop PG"
        super().__init__(setting, ports)
        self.admin_url = postgres_url
        self.database: str | None = None
        self.env: dict[str, str] = {}

    def prepare(self) -> tuple[list[str], dict[str, str]]:
        instance = self.folder / "instance"
        config = instance / "censusdrop.toml"
        self.env = self._environment()
        self._cli("init", ["init", str(instance)])
        self.user = "bench"
        self.password = uuid.uuid4().hex
        self._cli(
            "account add",
            [
                "--config",
                str(config),
                "account",
                "add",
                self.user,
                "--role",
                "prefecture",
                "--prefecture",
                PREFECTURE,
                "--password-stdin",
            ],
            stdin=self.password + "\n",
        )
        database = "PostgreSQL" if self.database else "SQLite"
        self.notes.append(
            f"audit and state on {database}, files encrypted at rest,"
            " pre-review on, TLS session reuse required"
        )
        argv = [
            _command(),
            "--config",
            str(config),
            "serve",
            "--port",
            str(self.ports.control),
        ]
        return argv, self.env

    def cleanup(self) -> None:
        if self.admin_url is None or self.database is None:
            return
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        self.database = None

    def _environment(self) -> dict[str, str]:
        cert = self.setting.certificate
        env = {
            **base_env(),
            "CENSUSDROP_TLS_CERTIFICATE": str(cert.cert),
            "CENSUSDROP_TLS_PRIVATE_KEY": str(cert.key),
            "CENSUSDROP_TLS_MAX_VERSION": "1.2",
            "CENSUSDROP_SERVER_PASSIVE_PORTS": self.ports.passive_text,
            "CENSUSDROP_SERVER_MAX_CONNECTIONS": str(4 * MAX_SESSIONS),
            "CENSUSDROP_SERVER_MAX_CONNECTIONS_PER_IP": str(4 * MAX_SESSIONS),
            "CENSUSDROP_PREREVIEW_QUIET_SECONDS": "1",
        }
        if self.admin_url is not None:
            env["CENSUSDROP_DATABASE_URL"] = self._create_database(self.admin_url)
        return env

    def _create_database(self, admin_url: str) -> str:
        try:
            import psycopg
        except ImportError as exc:
            raise ServerError(
                "--postgres needs psycopg (censusdrop[postgres])"
            ) from exc
        name = f"censusdrop_bench_{uuid.uuid4().hex[:12]}"
        try:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
        except psycopg.Error as exc:
            raise ServerError(f"PostgreSQL at {admin_url}: {exc}") from exc
        self.database = name
        return admin_url.rsplit("/", 1)[0] + "/" + name

    def _cli(self, what: str, args: list[str], stdin: str = "") -> None:
        try:
            result = subprocess.run(  # noqa: S603 - our own command line
                [_command(), *args],
                input=stdin,
                env=self.env,
                cwd=self.folder,
                capture_output=True,
                text=True,
                timeout=CLI_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServerError(f"censusdrop {what}: no end after 120s") from exc
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise ServerError(f"censusdrop {what}: {' / '.join(lines[-2:])}")


def _command() -> str:
    beside = Path(sys.executable).with_name("censusdrop")
    if beside.exists():
        return str(beside)
    found = shutil.which("censusdrop")
    if found is None:
        raise ServerError("the censusdrop command is not installed (pip install .)")
    return found
