"""Filtered events, the download ledger and session summaries."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from censusdrop.audit import events as ev
from censusdrop.audit.events import AuditEvent
from censusdrop.audit.query import EventFilter
from censusdrop.audit.query import downloads
from censusdrop.audit.query import find_events
from censusdrop.audit.query import sessions
from censusdrop.audit.schema import metadata
from censusdrop.audit.store import AuditLog

T0 = dt.datetime(2020, 6, 15, 1, 0, tzinfo=dt.UTC)
FILE_A = "/420100/01 验收申请/申请表.pdf"
FILE_B = "/420100/02 工作报告/100%_final.docx"


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def expert(action: str, minute: int, **fields: Any) -> AuditEvent:
    base: dict[str, Any] = {
        "account": "expert",
        "role": "reviewer",
        "session": "s1",
        "remote": "10.0.0.8:5000",
    }
    return AuditEvent(action, at=at(minute), **{**base, **fields})


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database_url)
    metadata.create_all(engine)
    AuditLog(engine).append(
        [
            AuditEvent(ev.CONNECT, at=at(0), session="s1", remote="10.0.0.8:5000"),
            expert(ev.LOGIN, 1),
            expert(ev.LIST, 2, path="/420100", details={"entries": 2}),
            expert(ev.DOWNLOAD_START, 3, path=FILE_A, version="1"),
            expert(ev.DOWNLOAD_END, 4, path=FILE_A, bytes=500, digest="aa" * 32),
            expert(ev.DOWNLOAD_START, 5, path=FILE_B, version="2"),
            expert(ev.DOWNLOAD_END, 6, path=FILE_B, bytes=20, outcome=ev.ABORTED),
            expert(ev.DOWNLOAD_START, 7, path=FILE_A, version="1"),
            expert(ev.REFUSED, 8, path="/421300", outcome=ev.DENIED),
            AuditEvent(
                ev.UPLOAD_END,
                at=at(9),
                account="wuhan",
                role="prefecture",
                prefecture="420100",
                session="s2",
                path=FILE_B,
                bytes=4096,
            ),
            AuditEvent(ev.LOGIN_FAILED, at=at(10), account="wuhan", session="s3"),
        ]
    )
    yield engine
    engine.dispose()


def seqs(engine: sa.Engine, **criteria: Any) -> list[int]:
    return [e.seq for e in find_events(engine, EventFilter(**criteria))]


def test_events_can_be_filtered_by_each_criterion(engine: sa.Engine) -> None:
    assert seqs(engine) == list(range(1, 12))
    assert seqs(engine, account="wuhan") == [10, 11]
    assert seqs(engine, prefecture="420100") == [10]
    assert seqs(engine, actions=(ev.DOWNLOAD_END, ev.REFUSED)) == [5, 7, 9]
    assert seqs(engine, outcome=ev.DENIED) == [9]
    assert seqs(engine, session="s3") == [11]
    assert seqs(engine, since=at(3), until=at(5)) == [4, 5]
    assert seqs(engine, account="expert", limit=2) == [2, 3]


def test_path_filters_match_substrings_literally(engine: sa.Engine) -> None:
    assert seqs(engine, path="验收申请") == [4, 5, 8]
    assert seqs(engine, path="100%_") == [6, 7, 10]
    assert seqs(engine, path="100_%") == []


def test_details_come_back_as_data(engine: sa.Engine) -> None:
    (listing,) = find_events(engine, EventFilter(actions=(ev.LIST,)))
    assert listing.details == {"entries": 2}


def test_the_download_ledger_pairs_starts_and_ends(engine: sa.Engine) -> None:
    ledger = downloads(engine, EventFilter())

    assert [(d.path, d.status) for d in ledger] == [
        (FILE_A, "complete"),
        (FILE_B, "aborted"),
        (FILE_A, "open"),
    ]
    complete = ledger[0]
    assert complete.is_complete and not ledger[1].is_complete
    assert (complete.account, complete.version, complete.bytes) == ("expert", "1", 500)
    assert (complete.started_at, complete.ended_at) == (at(3), at(4))
    assert complete.digest == "aa" * 32
    assert ledger[2].ended_at is None


def test_a_download_started_in_the_window_finds_its_later_end(
    engine: sa.Engine,
) -> None:
    ledger = downloads(engine, EventFilter(until=at(4)))
    assert [(d.path, d.status, d.bytes) for d in ledger] == [(FILE_A, "complete", 500)]


def test_a_download_whose_start_is_before_the_window_shows_its_end(
    engine: sa.Engine,
) -> None:
    ledger = downloads(engine, EventFilter(since=at(4), until=at(5)))
    assert [(d.path, d.status, d.started_at) for d in ledger] == [
        (FILE_A, "complete", None)
    ]


def test_sessions_are_summarised_one_line_each(engine: sa.Engine) -> None:
    summaries = {s.session: s for s in sessions(engine, EventFilter())}

    assert list(summaries) == ["s1", "s2", "s3"]
    s1 = summaries["s1"]
    assert (s1.account, s1.role, s1.remote) == ("expert", "reviewer", "10.0.0.8:5000")
    assert (s1.started_at, s1.ended_at, s1.events) == (at(0), at(8), 9)
    assert (s1.downloads, s1.bytes_down, s1.refusals) == (1, 500, 1)
    assert (summaries["s2"].uploads, summaries["s2"].bytes_up) == (1, 4096)
    assert summaries["s3"].refusals == 1


def test_sessions_of_an_account_include_events_before_its_login(
    engine: sa.Engine,
) -> None:
    (only,) = sessions(engine, EventFilter(account="expert"))
    assert only.session == "s1" and only.events == 9
    assert [s.session for s in sessions(engine, EventFilter(prefecture="420100"))] == [
        "s2"
    ]
