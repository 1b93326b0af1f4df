"""Shared fixtures: real databases (SQLite files, PostgreSQL) and tools.

PostgreSQL tests use a throwaway database created for the test session and
dropped afterwards. Set ``CENSUSDROP_TEST_PG`` to the server's URL (default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``). When the server
cannot be reached, those tests skip, unless ``CENSUSDROP_REQUIRE_ALL`` is set
(as CI does), in which case they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get(
    "CENSUSDROP_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_ALL = bool(os.environ.get("CENSUSDROP_REQUIRE_ALL"))


def skip_or_fail(reason: str) -> None:
    """Skip locally; fail where every external part is required (CI)."""
    if REQUIRE_ALL:
        pytest.fail(f"required but unavailable: {reason}")
    pytest.skip(reason)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        skip_or_fail(f"{name} is not installed (apt-get install {name})")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped after."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        skip_or_fail("psycopg is not installed (pip install 'censusdrop[postgres]')")
    name = f"censusdrop_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        skip_or_fail(f"PostgreSQL unreachable at {PG_ADMIN_URL}: {exc.orig}")
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, once on SQLite and once on PostgreSQL.

    Each PostgreSQL test gets its own schema-free database state: tables left
    by an earlier test are dropped first.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'censusdrop.db'}"
        return
    url: str = request.getfixturevalue("postgres_server_url")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
    yield url


# --- a real censusdrop instance and server -------------------------------------

TEST_PASSWORD = "correct-horse-battery"


_CERTIFICATE: tuple[bytes, bytes] | None = None


def _place_test_certificate(folder: Path) -> None:
    """One RSA key per test run: making one costs about 0.3 s, and each test
    makes an instance. ``init`` keeps a certificate it finds in place."""
    global _CERTIFICATE
    if _CERTIFICATE is None:
        import datetime as dt
        import tempfile

        from censusdrop.server.tls import create_self_signed

        with tempfile.TemporaryDirectory() as scratch:
            cert, key = Path(scratch) / "c.pem", Path(scratch) / "k.pem"
            create_self_signed(
                cert, key, hostname="localhost", at=dt.datetime.now(dt.UTC)
            )
            _CERTIFICATE = cert.read_bytes(), key.read_bytes()
    folder.mkdir(parents=True, mode=0o700)
    (folder / "server.crt").write_bytes(_CERTIFICATE[0])
    key_path = folder / "server.key"
    key_path.touch(mode=0o600)
    key_path.write_bytes(_CERTIFICATE[1])


class Instance:
    """An initialised instance (config, keys, certificate, database)."""

    def __init__(self, folder: Path, database_url: str, **overrides: str) -> None:
        import datetime as dt

        from censusdrop.server.bootstrap import example_config
        from censusdrop.server.bootstrap import init_instance

        text = example_config()
        text = text.replace(
            'url = "sqlite:///censusdrop.db"', f'url = "{database_url}"'
        )
        text = text.replace("port = 2121 ", "port = 0 ")
        text = text.replace(
            'passive_ports = "50000-50199"', 'passive_ports = "41000-41999"'
        )
        text = text.replace("argon2_memory_kib = 19456", "argon2_memory_kib = 1024")
        text = text.replace("failed_login_delay = 1.0", "failed_login_delay = 0.05")
        for key, value in overrides.items():
            text = text.replace(f"\n{key} = ", f"\n{key} = {value}  # ", 1)
        self.folder = folder
        _place_test_certificate(folder / "tls")
        self.settings = init_instance(
            folder, at=dt.datetime.now(dt.UTC), config_text=text
        )
        self.config = folder / "censusdrop.toml"
        self.cafile = self.settings.path(self.settings.tls.certificate)

    def services(self):  # type: ignore[no-untyped-def]
        from censusdrop.server.app import open_services

        return open_services(self.settings)

    def add_account(
        self,
        name: str,
        role: str,
        prefecture: str | None = None,
        password: str = TEST_PASSWORD,
    ) -> None:
        import datetime as dt

        from censusdrop.server.app import open_services

        services = open_services(self.settings, with_tls=False)
        try:
            services.accounts.create(
                name, role, password, at=dt.datetime.now(dt.UTC), prefecture=prefecture
            )
        finally:
            services.engine.dispose()

    def assign(self, name: str, prefecture: str) -> None:
        import datetime as dt

        from censusdrop.server.app import open_services

        services = open_services(self.settings, with_tls=False)
        try:
            services.accounts.assign(name, prefecture, at=dt.datetime.now(dt.UTC))
        finally:
            services.engine.dispose()


@contextlib.contextmanager
def open_storage(instance: Instance, area: str) -> Iterator[Any]:
    """The instance's storage layer, prepared, with ``area`` made."""
    import datetime as dt

    from censusdrop.server.db import make_engine
    from censusdrop.server.storage.keyring import Keyring
    from censusdrop.server.storage.store import Storage

    settings = instance.settings
    engine = make_engine(settings.database_url)
    keyring = Keyring.open(settings.path(settings.storage.keys_dir), None)
    store = Storage(
        settings.path(settings.storage.data_root),
        keyring,
        engine,
        partial_lifetime=dt.timedelta(hours=24),
    )
    try:
        store.prepare()
        store.ensure_area(area)
        yield store
    finally:
        engine.dispose()


class RunningServer:
    """A CensusServer on 127.0.0.1 in a thread of the test process."""

    def __init__(self, instance: Instance) -> None:
        from censusdrop.server.app import CensusServer

        self.instance = instance
        self.services = instance.services()
        self.server = CensusServer(self.services, host="127.0.0.1", port=0)
        self.thread = self.server.start_in_thread()
        self.address = self.server.address
        self.cafile = instance.cafile

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "server thread did not stop"


@pytest.fixture
def instance(tmp_path: Path, database_url: str) -> Instance:
    return Instance(tmp_path / "instance", database_url)


@pytest.fixture
def sqlite_instance(tmp_path: Path) -> Instance:
    return Instance(
        tmp_path / "instance", f"sqlite:///{tmp_path / 'instance' / 'db.sqlite'}"
    )


def _run(instance: Instance) -> Iterator[RunningServer]:
    instance.add_account("wuhan", "prefecture", "420100")
    instance.add_account("enshi", "prefecture", "恩施州")
    instance.add_account("expert", "reviewer")
    instance.assign("expert", "420100")
    running = RunningServer(instance)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def server(instance: Instance) -> Iterator[RunningServer]:
    """A running server with accounts wuhan, enshi (prefectures) and expert
    (reviewer of 420100), on SQLite and on PostgreSQL."""
    yield from _run(instance)


@pytest.fixture
def sqlite_server(sqlite_instance: Instance) -> Iterator[RunningServer]:
    """The same, on SQLite only (for tests about the protocol, not the DB)."""
    yield from _run(sqlite_instance)


@contextlib.contextmanager
def configured_server(
    folder: Path, *, accounts: tuple[tuple[str, str, str], ...] = (), **overrides: str
) -> Iterator[RunningServer]:
    """A server on SQLite with configuration overrides (see ``Instance``) and
    the prefecture account wuhan, plus ``accounts`` (name, role, prefecture)."""
    instance = Instance(folder / "i", f"sqlite:///{folder / 'db.sqlite'}", **overrides)
    for name, role, prefecture in (("wuhan", "prefecture", "420100"), *accounts):
        instance.add_account(name, role, prefecture)
    running = RunningServer(instance)
    try:
        yield running
    finally:
        running.stop()
