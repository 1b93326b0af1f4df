"""The audit writer thread: group commit, durability, failing closed,
recovery, and a bounded queue that never loses an event silently."""

from __future__ import annotations

import logging
import selectors
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from censusdrop.audit import events as ev
from censusdrop.audit.events import AuditEvent
from censusdrop.audit.events import AuditUnavailable
from censusdrop.audit.query import EventFilter
from censusdrop.audit.query import find_events
from censusdrop.audit.schema import metadata
from censusdrop.audit.store import AuditWriter
from censusdrop.audit.verify import verify_database

CLOSED_PORT_URL = "postgresql+psycopg://postgres@127.0.0.1:1/censusdrop"


@pytest.fixture(autouse=True)
def no_writer_thread_left() -> Iterator[None]:
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith("censusdrop")]
    assert not left, f"threads left running: {left}"


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database_url)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def stored(engine: sa.Engine) -> list[str]:
    return [e.action for e in find_events(engine, EventFilter())]


def durable_when_back(writer: AuditWriter, event: AuditEvent) -> None:
    """Retry like a client would: a transfer refused just before the
    database came back may be refused once more."""
    deadline = time.monotonic() + 5
    while True:
        try:
            writer.emit_durable(event, timeout=2)
            return
        except AuditUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_emitted_events_are_committed_in_order_by_group_commit(
    engine: sa.Engine,
) -> None:
    writer = AuditWriter(engine, max_batch=50)
    try:
        for number in range(300):
            writer.emit(AuditEvent(ev.LIST, path=f"/{number}"))
        assert writer.flush(10)
    finally:
        writer.close()

    paths = [e.path for e in find_events(engine, EventFilter())]
    assert paths == [f"/{n}" for n in range(300)]
    assert verify_database(engine, None).ok


def test_emit_durable_returns_once_the_event_is_committed(engine: sa.Engine) -> None:
    writer = AuditWriter(engine)
    try:
        writer.emit_durable(AuditEvent(ev.DOWNLOAD_START, path="/a"), timeout=5)
        assert stored(engine) == [ev.DOWNLOAD_START]
    finally:
        writer.close()


def test_submit_durable_reports_success_from_the_writer_thread(
    engine: sa.Engine,
) -> None:
    outcome: list[tuple[BaseException | None, str]] = []
    done = threading.Event()

    def callback(exc: BaseException | None) -> None:
        outcome.append((exc, threading.current_thread().name))
        done.set()

    writer = AuditWriter(engine)
    try:
        writer.submit_durable(AuditEvent(ev.UPLOAD_START), callback)
        assert done.wait(5)
    finally:
        writer.close()
    assert outcome == [(None, "censusdrop-audit-writer")]


def test_close_writes_what_is_queued(engine: sa.Engine) -> None:
    writer = AuditWriter(engine)
    for _ in range(20):
        writer.emit(AuditEvent(ev.CHDIR))
    writer.close()
    assert len(stored(engine)) == 20


def test_emit_does_not_wait_for_a_locked_database(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    writer = AuditWriter(engine)
    try:
        started = time.monotonic()
        for _ in range(100):
            writer.emit(AuditEvent(ev.LIST))
        assert time.monotonic() - started < 0.5
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        writer.close()
        engine.dispose()
    assert len(stored(sa.create_engine(f"sqlite:///{path}"))) == 100


def test_emit_durable_fails_within_its_timeout_when_postgres_is_down() -> None:
    engine = sa.create_engine(CLOSED_PORT_URL)
    writer = AuditWriter(engine, retry_max=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(AuditUnavailable):
            writer.emit_durable(AuditEvent(ev.DOWNLOAD_START), timeout=3)
        assert time.monotonic() - started < 3
        assert not writer.is_healthy
        started = time.monotonic()
        with pytest.raises(AuditUnavailable):
            writer.emit_durable(AuditEvent(ev.DOWNLOAD_START), timeout=3)
        assert time.monotonic() - started < 1, "refused at once while known down"
    finally:
        writer.close(timeout=5)
        engine.dispose()


def test_writer_fails_closed_on_sqlite_and_recovers_when_the_file_can_be_opened(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a regular file where the database folder should be")
    url = f"sqlite:///{blocker / 'audit.db'}"
    engine = sa.create_engine(url)
    writer = AuditWriter(engine, retry_max=0.2)
    try:
        writer.emit(AuditEvent(ev.CONNECT))
        with pytest.raises(AuditUnavailable):
            writer.emit_durable(AuditEvent(ev.DOWNLOAD_START), timeout=3)

        blocker.unlink()
        blocker.mkdir()
        metadata.create_all(engine)

        assert writer.flush(10)
        durable_when_back(writer, AuditEvent(ev.DOWNLOAD_START, path="/ok"))
        assert writer.is_healthy
    finally:
        writer.close()
        engine.dispose()
    assert stored(sa.create_engine(url)) == [ev.CONNECT, ev.DOWNLOAD_START]


@pytest.mark.postgres
def test_writer_recovers_after_postgres_goes_away_and_comes_back(
    postgres_server_url: str,
) -> None:
    target = sa.engine.make_url(postgres_server_url)
    setup = sa.create_engine(postgres_server_url)
    metadata.drop_all(setup)
    metadata.create_all(setup)
    proxy = TcpProxy((target.host or "127.0.0.1", target.port or 5432))
    engine = sa.create_engine(target.set(port=proxy.port), pool_pre_ping=True)
    writer = AuditWriter(engine, retry_max=0.2)
    try:
        writer.emit_durable(AuditEvent(ev.LOGIN), timeout=5)
        proxy.cut()
        writer.emit(AuditEvent(ev.LIST))
        with pytest.raises(AuditUnavailable):
            writer.emit_durable(AuditEvent(ev.DOWNLOAD_START), timeout=3)
        proxy.restore()
        durable_when_back(writer, AuditEvent(ev.DOWNLOAD_START, path="/b"))
        assert writer.flush(5)
    finally:
        writer.close()
        engine.dispose()
        proxy.close()
    actions = stored(setup)
    setup.dispose()
    assert actions[0] == ev.LOGIN
    assert sorted(actions[1:]) == sorted([ev.LIST, ev.DOWNLOAD_START])


@pytest.mark.postgres
def test_a_durable_submitter_gets_an_answer_even_when_the_database_hangs(
    postgres_server_url: str,
) -> None:
    target = sa.engine.make_url(postgres_server_url)
    proxy = TcpProxy((target.host or "127.0.0.1", target.port or 5432))
    proxy.hang()
    engine = sa.create_engine(target.set(port=proxy.port))
    writer = AuditWriter(engine, durable_timeout=0.5)
    answers: list[BaseException | None] = []
    answered = threading.Event()

    def done(exc: BaseException | None) -> None:
        answers.append(exc)
        answered.set()

    try:
        started = time.monotonic()
        writer.submit_durable(AuditEvent(ev.DOWNLOAD_START), done)
        assert answered.wait(3)
        assert time.monotonic() - started < 2
        assert len(answers) == 1 and isinstance(answers[0], AuditUnavailable)
    finally:
        proxy.cut()  # the stalled connection attempt now fails
        writer.close()
        engine.dispose()
        proxy.close()
    assert len(answers) == 1, "the callback must run exactly once"


def test_a_full_queue_drops_with_an_error_and_the_loss_goes_on_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("not a folder")
    url = f"sqlite:///{blocker / 'audit.db'}"
    engine = sa.create_engine(url)
    writer = AuditWriter(engine, max_queue=5, retry_max=0.2)
    caplog.set_level(logging.ERROR, logger="censusdrop.audit.store")
    try:
        for number in range(50):
            writer.emit(AuditEvent(ev.LIST, path=f"/lost-{number}"))
        # The database appears whole, tables and all, so the writer's retries
        # never race with the creation of its tables.
        ready = tmp_path / "ready"
        ready.mkdir()
        prepared = sa.create_engine(f"sqlite:///{ready / 'audit.db'}")
        metadata.create_all(prepared)
        prepared.dispose()
        blocker.unlink()
        ready.rename(blocker)
        assert writer.flush(10)
    finally:
        writer.close()
        engine.dispose()

    events = list(find_events(sa.create_engine(url), EventFilter()))
    kept = [e for e in events if e.action == ev.LIST]
    (lost,) = [e for e in events if e.action == ev.EVENTS_LOST]
    assert lost.details["count"] >= 40
    assert len(kept) + lost.details["count"] == 50
    dropped = [r for r in caplog.records if "audit event dropped" in r.getMessage()]
    assert len(dropped) == lost.details["count"]
    assert "/lost-49" in dropped[-1].getMessage()


def test_after_close_events_are_refused_or_logged_not_lost_silently(
    engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    writer = AuditWriter(engine)
    writer.close()
    caplog.set_level(logging.ERROR, logger="censusdrop.audit.store")

    writer.emit(AuditEvent(ev.LIST, path="/late"))
    with pytest.raises(AuditUnavailable):
        writer.emit_durable(AuditEvent(ev.DOWNLOAD_START))
    assert any("/late" in r.getMessage() for r in caplog.records)


def test_a_malformed_event_fails_in_the_caller_not_in_the_writer(
    engine: sa.Engine,
) -> None:
    writer = AuditWriter(engine)
    try:
        with pytest.raises(ValueError):
            writer.emit(AuditEvent(ev.LIST, details={"x": object()}))
        writer.emit(AuditEvent(ev.LIST))
        assert writer.flush(5)
    finally:
        writer.close()
    assert stored(engine) == [ev.LIST]


class TcpProxy:
    """A TCP forwarder to PostgreSQL that can be cut and restored, to take
    the database away from a running writer and give it back."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._up = True
        self._hanging = False
        self._held: list[socket.socket] = []
        self._running = True
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def cut(self) -> None:
        with self._lock:
            self._up = self._hanging = False
            for sock in list(self._pairs):
                self._drop(sock)
            for sock in self._held:
                sock.close()
            self._held.clear()

    def hang(self) -> None:
        """Accept connections but never answer, like a stalled server."""
        self.cut()
        with self._lock:
            self._hanging = True

    def restore(self) -> None:
        with self._lock:
            self._up = True

    def close(self) -> None:
        self.cut()
        self._running = False
        self._thread.join(5)
        self._selector.close()
        self._listener.close()

    def _run(self) -> None:
        while self._running:
            for key, _ in self._selector.select(timeout=0.05):
                with self._lock:
                    self._handle(key.fileobj)  # type: ignore[arg-type]

    def _handle(self, sock: Any) -> None:
        if sock is self._listener:
            client, _ = self._listener.accept()
            if self._hanging:
                self._held.append(client)
                return
            if not self._up:
                client.close()
                return
            server = socket.create_connection(self._target)
            for one, other in ((client, server), (server, client)):
                self._pairs[one] = other
                self._selector.register(one, selectors.EVENT_READ, None)
            return
        if sock not in self._pairs:
            return
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if data:
            self._pairs[sock].sendall(data)
        else:
            self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        if sock not in self._pairs:
            return
        other = self._pairs.pop(sock)
        self._pairs.pop(other, None)
        for one in (sock, other):
            self._selector.unregister(one)
            one.close()


def test_the_writer_counts_the_events_it_commits_and_its_commits(
    engine: sa.Engine,
) -> None:
    writer = AuditWriter(engine, max_batch=40)
    try:
        for number in range(100):
            writer.emit(AuditEvent(ev.LIST, path=f"/{number}"))
        assert writer.flush(10)
        writer.emit_durable(AuditEvent(ev.DOWNLOAD_START, path="/f"), timeout=5)
        stats = writer.stats
    finally:
        writer.close()

    assert stats.events == 101
    assert 4 <= stats.commits <= 101
    assert writer.stats.events == len(stored(engine))


def test_an_ordinary_event_and_the_durable_one_after_it_share_a_commit(
    engine: sa.Engine,
) -> None:
    """A transfer's end event and the next transfer's start record: one
    commit, and the durable event does not wait out the window."""
    writer = AuditWriter(engine, group_window=30.0)
    try:
        writer.emit(AuditEvent(ev.UPLOAD_END, path="/a"))
        deadline = time.monotonic() + 10
        while writer.backlog:  # until the writer has taken it
            assert time.monotonic() < deadline, "the writer took nothing"
            time.sleep(0.001)
        started = time.monotonic()
        writer.emit_durable(AuditEvent(ev.UPLOAD_START, path="/b"), timeout=20)
        waited = time.monotonic() - started
        stats = writer.stats
    finally:
        writer.close()
    assert (stats.commits, stats.events) == (1, 2)
    assert waited < 15.0
    assert stored(engine) == [ev.UPLOAD_END, ev.UPLOAD_START]
