"""Faults of the database: PostgreSQL restarted under load, and a database
that turns read-only.

These run against a private PostgreSQL cluster (``pgcluster``), never the
shared one, because they stop and restart it.
"""

from __future__ import annotations

import ftplib
import io
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from censusdrop.audit.query import EventFilter
from censusdrop.audit.query import find_events
from censusdrop.audit.verify import verify_database
from conftest import TEST_PASSWORD
from conftest import Instance
from conftest import RunningServer
from conftest import skip_or_fail
from ftpclient import connect
from ftpclient import download
from ftpclient import login
from ftpclient import upload
from pgcluster import ClusterUnavailable
from pgcluster import PrivateCluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

AREA = "420100"
CLIENTS = 3  # sessions transferring at once during the restart


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    try:
        private = PrivateCluster()
    except ClusterUnavailable as exc:
        skip_or_fail(str(exc))
    with private:
        yield private


@pytest.fixture
def pg_server(tmp_path: Path, cluster: PrivateCluster) -> Iterator[RunningServer]:
    url = cluster.create_database(f"censusdrop_{uuid.uuid4().hex[:12]}")
    instance = Instance(tmp_path / "i", url)
    instance.add_account("wuhan", "prefecture", AREA)
    running = RunningServer(instance)
    try:
        yield running
    finally:
        running.stop()


class TransferLoad:
    """One client uploading and downloading in a loop on its own thread.

    Every outcome is kept: the name and content of each upload answered
    226, and the reply of each refusal. Anything else (a dropped
    connection, a 5xx reply, a download that differs) is an error the test
    reports.
    """

    def __init__(self, server: RunningServer, prefix: str) -> None:
        self.server = server
        self.prefix = prefix
        self.stored: dict[str, bytes] = {}
        self.refusals: list[str] = []
        self.errors: list[str] = []
        self.done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "load thread did not stop"

    def wait_for(self, transfers: int, timeout: float = 60.0) -> None:
        """Wait until ``transfers`` more transfers succeeded."""
        target = self.done + transfers
        deadline = time.monotonic() + timeout
        while self.done < target:
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, (
                f"only {self.done} of {target} transfers; refusals: "
                f"{self.refusals[-3:]}"
            )
            time.sleep(0.05)

    def _run(self) -> None:
        client = None
        for number in range(100_000):  # bounded; stopped long before
            if self._stop.is_set():
                break
            try:
                if client is None:
                    client = login(
                        self.server.address, self.server.cafile, "wuhan", TEST_PASSWORD
                    )
                self._round_trip(client, number)
            except ftplib.error_temp as exc:
                self.refusals.append(str(exc))
                self._stop.wait(0.1)  # a client retrying, not a flood
            except (ftplib.Error, OSError, EOFError, AssertionError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                break
        if client is not None:
            client.close()

    def _round_trip(self, client: ftplib.FTP, number: int) -> None:
        name = f"{self.prefix}-{number}.bin"
        data = f"transfer {number} ".encode() * 100
        upload(client, name, data)
        self.stored[name] = data
        assert download(client, name) == data
        self.done += 1


def _events(server: RunningServer, action: str) -> list:  # type: ignore[type-arg]
    assert server.services.audit.flush(30)
    where = EventFilter(actions=(action,))
    return list(find_events(server.services.engine, where))


def _login_refused(server: RunningServer, password: str) -> None:
    client = connect(server.address, server.cafile)
    client.auth()
    with pytest.raises(ftplib.error_temp, match="^421"):
        client.login("wuhan", password)
    client.close()


def _assert_operator_log_is_clear(caplog: pytest.LogCaptureFixture) -> None:
    ours = [r for r in caplog.records if r.name.startswith("censusdrop")]
    outage = [r for r in ours if "database" in r.getMessage().lower()]
    assert outage, "no operator log line about the database"
    tracebacks = [
        r.getMessage()
        for r in caplog.records  # pyftpdlib's too
        if r.exc_info or "Traceback" in r.getMessage()
    ]
    assert not tracebacks, tracebacks


def test_postgresql_restarted_under_load_reconnects_by_itself(
    pg_server: RunningServer,
    cluster: PrivateCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    loads = [TransferLoad(pg_server, f"load{n}") for n in range(CLIENTS)]
    for each in loads:
        each.start()
    load = loads[0]
    try:
        load.wait_for(5)
        cluster.restart()
        for each in loads:
            each.wait_for(5)  # back without restarting censusdrop

        probe = login(pg_server.address, pg_server.cafile, "wuhan", TEST_PASSWORD)
        cluster.halt()  # a longer outage, to refuse transfers in it
        _login_refused(pg_server, TEST_PASSWORD)
        received = io.BytesIO()
        with pytest.raises(ftplib.error_temp, match="^4"):
            probe.retrbinary("RETR load0-0.bin", received.write)
        assert received.getvalue() == b""
        with pytest.raises(ftplib.error_temp, match="^4"):
            upload(probe, "during-outage.bin", b"never stored")
        cluster.start()
        for each in loads:
            each.wait_for(5)
        assert download(probe, "load0-0.bin") == load.stored["load0-0.bin"]
        probe.quit()
    finally:
        for each in loads:
            each.stop()

    assert pg_server.thread.is_alive()  # never restarted
    ended = {e.path: e for e in _events(pg_server, "upload_end") if e.outcome == "ok"}
    for each in loads:
        assert not each.errors, each.errors
        assert all(reply.startswith("4") for reply in each.refusals), each.refusals
        for name in each.stored:
            assert f"/{name}" in ended, f"{name} answered 226 without a record"
    assert "/during-outage.bin" not in ended
    result = verify_database(pg_server.services.engine, None)
    assert result.ok, result.problem
    _assert_operator_log_is_clear(caplog)


def _set_read_only(cluster: PrivateCluster, database: str, read_only: bool) -> None:
    """Make new sessions of ``database`` read-only (or not); on the way in,
    end the open ones, as a failover to a standby would."""
    admin = sa.create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
    value = "on" if read_only else "off"
    try:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    f'ALTER DATABASE "{database}"'
                    f" SET default_transaction_read_only = {value}"
                )
            )
            if read_only:
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": database},
                )
    finally:
        admin.dispose()


def test_a_read_only_database_refuses_writes_clearly_and_recovers(
    pg_server: RunningServer,
    cluster: PrivateCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    database = pg_server.services.engine.url.database
    assert database is not None
    client = login(pg_server.address, pg_server.cafile, "wuhan", TEST_PASSWORD)
    upload(client, "底册.xlsx", b"earlier version")

    _set_read_only(cluster, database, True)
    with pytest.raises(ftplib.error_temp, match="^451"):
        upload(client, "底册.xlsx", b"must not replace it")
    received = io.BytesIO()
    with pytest.raises(ftplib.error_temp, match="^451"):
        client.retrbinary("RETR 底册.xlsx", received.write)
    assert received.getvalue() == b""
    # A failed login must be counted; when it cannot be, none is allowed.
    _login_refused(pg_server, "wrong password")

    # Writable again: the server's pooled sessions were read-only too, and
    # it must renew them by itself.
    _set_read_only(cluster, database, False)
    deadline = time.monotonic() + 30
    while True:
        try:
            assert download(client, "底册.xlsx") == b"earlier version"
            break
        except ftplib.error_temp:
            assert time.monotonic() < deadline, "service did not come back"
            time.sleep(0.2)
    upload(client, "底册.xlsx", b"new version")
    assert download(client, "底册.xlsx") == b"new version"
    client.quit()

    refused = [
        e
        for e in _events(pg_server, "refused")
        if e.details.get("rule") == "database_unavailable"
    ]
    assert len(refused) == 1  # recorded once the database took writes again
    history = pg_server.services.storage.history(AREA, "底册.xlsx")
    assert [v.state for v in history] == ["current", "superseded"]
    result = verify_database(pg_server.services.engine, None)
    assert result.ok, result.problem
    _assert_operator_log_is_clear(caplog)
    assert any("read-only" in r.getMessage() for r in caplog.records)
