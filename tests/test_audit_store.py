"""Appending to the chain: round trip, linearity, fork-proofing, locking."""

from __future__ import annotations

import datetime as dt
import itertools
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from censusdrop.audit import events as ev
from censusdrop.audit.append import insert_rows
from censusdrop.audit.chain import GENESIS_HASH
from censusdrop.audit.chain import seal
from censusdrop.audit.events import AuditEvent
from censusdrop.audit.locking import lookup_connection
from censusdrop.audit.query import EventFilter
from censusdrop.audit.query import find_events
from censusdrop.audit.schema import audit_events
from censusdrop.audit.schema import metadata
from censusdrop.audit.store import AuditLog
from censusdrop.audit.verify import verify_database

AT = dt.datetime(2020, 6, 15, 8, 30, 0, 123456, tzinfo=dt.UTC)
PROCESSES = 4
EVENTS_EACH = 500


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database_url)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def full_event(**changes: Any) -> AuditEvent:
    fields: dict[str, Any] = {
        "action": ev.DOWNLOAD_END,
        "outcome": ev.OK,
        "at": AT,
        "account": "专家甲",
        "role": "reviewer",
        "prefecture": "420100",
        "session": "5f2c9a",
        "remote": "10.0.0.8:51234",
        "path": "/420100/01 验收申请/申请表.pdf",
        "version": "3",
        "bytes": 2**40 + 7,
        "digest": "ab" * 32,
        "details": {"reply": 226, "tls": ["TLSv1.3", "AES"], "note": None},
    }
    fields.update(changes)
    return AuditEvent(**fields)


def test_an_event_round_trips_with_all_its_fields(engine: sa.Engine) -> None:
    event = full_event()

    AuditLog(engine).append([event])
    (stored,) = find_events(engine, EventFilter())

    assert stored.seq == 1
    assert stored.prev_hash == GENESIS_HASH
    for name in ("action", "outcome", "at", "account", "role", "prefecture"):
        assert getattr(stored, name) == getattr(event, name), name
    for name in ("session", "remote", "path", "version", "bytes", "digest"):
        assert getattr(stored, name) == getattr(event, name), name
    assert stored.details == event.details
    assert stored.at.tzinfo is not None


def test_times_in_other_zones_are_stored_as_the_same_instant(engine: sa.Engine) -> None:
    shanghai = dt.timezone(dt.timedelta(hours=8))
    AuditLog(engine).append([full_event(at=AT.astimezone(shanghai))])

    (stored,) = find_events(engine, EventFilter())
    assert stored.at == AT
    assert stored.at.utcoffset() == dt.timedelta(0)


def test_appends_get_consecutive_seqs_and_form_one_chain(engine: sa.Engine) -> None:
    log = AuditLog(engine)

    first = log.append([full_event(), full_event(action=ev.LIST)])
    second = log.append([full_event(action=ev.LOGOUT)])

    assert first == [1, 2]
    assert second == [3]
    assert log.append([]) == []
    stored = list(find_events(engine, EventFilter()))
    assert [e.prev_hash for e in stored[1:]] == [e.hash for e in stored[:-1]]
    assert log.head().seq == 3 and log.head().hash == stored[-1].hash
    assert verify_database(engine, None).ok


def test_the_schema_refuses_a_second_entry_after_the_same_predecessor(
    engine: sa.Engine,
) -> None:
    AuditLog(engine).append([full_event()])
    with engine.connect() as conn:
        row = dict(conn.execute(sa.select(audit_events)).mappings().one())
    fork = {**row, "seq": 2, "hash": "f" * 64}

    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(audit_events.insert(), [fork])


def test_text_that_bulk_inserts_must_escape_is_stored_as_it_was_hashed(
    engine: sa.Engine,
) -> None:
    tricky = "a\tb\nc\\N\\.\r\x7f\"'\\"
    event = full_event(
        account="\\N", path=tricky, version="", details={"k": tricky, "\\N": None}
    )

    AuditLog(engine).append([event, full_event(account=None, digest=None)])
    first, second = find_events(engine, EventFilter())

    assert (first.account, first.path, first.version) == ("\\N", tricky, "")
    assert first.details == event.details
    assert second.account is None and second.digest is None
    assert verify_database(engine, None).ok


def test_a_bulk_insert_the_schema_refuses_raises_an_integrity_error(
    engine: sa.Engine,
) -> None:
    log = AuditLog(engine)
    log.append([full_event()])
    fork = seal(full_event(action=ev.LIST), 2, GENESIS_HASH)

    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        insert_rows(conn, [fork], [AT])
    assert log.append([full_event()]) == [2]


def test_sqlite_transactions_stay_atomic_after_the_store_takes_over_begin(
    tmp_path: Path,
) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'early.db'}")
    metadata.create_all(engine)  # pools a connection in sqlite3's own mode
    try:
        log = AuditLog(engine)
        log.append([full_event()])
        with engine.connect() as conn, conn.begin() as transaction:
            conn.execute(sa.delete(audit_events))
            transaction.rollback()
        assert log.head().seq == 1
    finally:
        engine.dispose()


def _append_in_process(url: str, worker: int, start: Any) -> None:
    engine = sa.create_engine(url)
    log = AuditLog(engine)
    start.wait()
    for number in range(EVENTS_EACH):
        log.append([AuditEvent(ev.LIST, account=f"w{worker}", path=f"/{number}")])
    engine.dispose()


@pytest.mark.slow
def test_four_processes_appending_at_once_make_one_valid_chain(
    engine: sa.Engine, database_url: str
) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES)
    workers = [
        context.Process(target=_append_in_process, args=(database_url, n, start))
        for n in range(PROCESSES)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(90)
    assert [p.exitcode for p in workers] == [0] * PROCESSES

    result = verify_database(engine, None)
    assert result.ok, result.problem
    assert result.events == result.head_seq == PROCESSES * EVENTS_EACH
    accounts = [e.account for e in find_events(engine, EventFilter())]
    for n in range(PROCESSES):
        assert accounts.count(f"w{n}") == EVENTS_EACH
    # Interleaved, not one process after the other (which would switch
    # accounts only PROCESSES - 1 times).
    switches = sum(a != b for a, b in itertools.pairwise(accounts))
    assert switches >= PROCESSES, switches


def test_a_lookup_reads_committed_rows_and_leaves_no_transaction_open(
    engine: sa.Engine,
) -> None:
    # On PostgreSQL a lookup runs outside any transaction (one round trip,
    # not BEGIN, statement, ROLLBACK); on SQLite inside a plain one.
    AuditLog(engine).append([full_event()])
    with lookup_connection(engine) as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(audit_events)).scalar()
            == 1
        )
        if engine.dialect.name == "postgresql":
            psycopg_connection: Any = conn.connection.dbapi_connection
            status = psycopg_connection.info.transaction_status
            assert status == 0  # psycopg's IDLE: no transaction block open
        else:
            assert conn.in_transaction()
    with lookup_connection(engine) as conn:  # the pooled connection, reused
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(audit_events)).scalar()
            == 1
        )
