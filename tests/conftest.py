"""Shared fixtures: real databases (SQLite files, PostgreSQL) and tools.

PostgreSQL tests use a throwaway database created for the test session and
dropped afterwards. Set ``CENSUSDROP_TEST_PG`` to the server's URL (default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``). When the server
cannot be reached, those tests skip, unless ``CENSUSDROP_REQUIRE_ALL`` is set
(as CI does), in which case they fail.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

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
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[str]:
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
