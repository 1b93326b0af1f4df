"""Reading the audit log: filtered events, the download ledger, sessions.

All times are timezone-aware UTC; the caller chooses how to display them.
``since`` is inclusive and ``until`` exclusive.

The download ledger pairs each ``download_start`` with the next
``download_end`` of the same session and path. A start without an end is
``open``: the transfer is still running, or the server stopped before it
could record the end. The server records a download's end with outcome
``ok`` (complete, with the bytes sent and their SHA-256) or ``aborted``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections import defaultdict
from collections import deque
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from . import events as ev
from .locking import read_connection
from .schema import audit_events

_REFUSAL_ACTIONS = (ev.REFUSED, ev.LOGIN_FAILED, ev.LOCKOUT)


@dataclasses.dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events to read; every given criterion must hold."""

    account: str | None = None
    prefecture: str | None = None
    actions: tuple[str, ...] = ()
    path: str | None = None  # substring
    outcome: str | None = None
    session: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limit: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as recorded, with its place in the chain."""

    seq: int
    at: dt.datetime
    action: str
    outcome: str
    account: str | None
    role: str | None
    prefecture: str | None
    session: str | None
    remote: str | None
    path: str | None
    version: str | None
    bytes: int | None
    digest: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


@dataclasses.dataclass(slots=True)
class DownloadRecord:
    """One download: who, what, when, how much, and how it ended."""

    account: str | None
    session: str | None
    remote: str | None
    path: str | None
    version: str | None
    started_at: dt.datetime | None
    ended_at: dt.datetime | None = None
    bytes: int | None = None
    digest: str | None = None
    # complete, aborted, refused (start not allowed), open (no end yet);
    # started_at is None when the start lies before the filter's window.
    status: str = "open"

    @property
    def is_complete(self) -> bool:
        return self.status == "complete"


@dataclasses.dataclass(frozen=True, slots=True)
class SessionSummary:
    """One FTP session and what happened in it."""

    session: str
    account: str | None
    role: str | None
    prefecture: str | None
    remote: str | None
    started_at: dt.datetime
    ended_at: dt.datetime
    events: int
    downloads: int
    bytes_down: int
    uploads: int
    bytes_up: int
    refusals: int


def find_events(engine: sa.Engine, where: EventFilter) -> Iterator[StoredEvent]:
    """Matching events in seq order, streamed."""
    query = sa.select(audit_events).where(*_conditions(where))
    query = query.order_by(audit_events.c.seq)
    if where.limit is not None:
        query = query.limit(where.limit)
    with read_connection(engine) as conn:
        result = conn.execution_options(yield_per=2_000).execute(query)
        for row in result:
            yield _stored_event(row)


def downloads(engine: sa.Engine, where: EventFilter) -> list[DownloadRecord]:
    """The download ledger for the filter (its actions and limit ignored)."""
    # Ends are read past ``until`` so that a download started in the window
    # still finds its end.
    window = dataclasses.replace(
        where, actions=(ev.DOWNLOAD_START, ev.DOWNLOAD_END), until=None, limit=None
    )
    ledger: list[DownloadRecord] = []
    running: dict[tuple[str | None, str | None], deque[DownloadRecord]]
    running = defaultdict(deque)
    for event in find_events(engine, window):
        key = (event.session, event.path)
        if event.action == ev.DOWNLOAD_START:
            if where.until is not None and event.at >= where.until:
                continue
            record = _started(event)
            ledger.append(record)
            if record.status == "open":
                running[key].append(record)
        elif running[key]:
            _ended(running[key].popleft(), event)
        elif where.until is None or event.at < where.until:
            ledger.append(_unmatched_end(event))
    return ledger[: where.limit] if where.limit is not None else ledger


def sessions(engine: sa.Engine, where: EventFilter) -> list[SessionSummary]:
    """One summary per session with events matching the filter's time
    range; account and prefecture select the sessions they appear in."""
    t = audit_events
    scope = dataclasses.replace(where, account=None, prefecture=None, actions=())
    query = (
        sa.select(*_session_columns())
        .where(t.c.session.is_not(None), *_conditions(scope))
        .group_by(t.c.session)
        .order_by(sa.func.min(t.c.seq))
    )
    for column, value in (("account", where.account), ("prefecture", where.prefecture)):
        if value is not None:
            members = sa.select(t.c.session).where(t.c[column] == value)
            query = query.where(t.c.session.in_(members))
    if where.limit is not None:
        query = query.limit(where.limit)
    with read_connection(engine) as conn:
        return [SessionSummary(**row._mapping) for row in conn.execute(query)]


def _conditions(where: EventFilter) -> list[sa.ColumnElement[bool]]:
    t = audit_events
    conditions: list[sa.ColumnElement[bool]] = []
    for column, value in (
        (t.c.account, where.account),
        (t.c.prefecture, where.prefecture),
        (t.c.outcome, where.outcome),
        (t.c.session, where.session),
    ):
        if value is not None:
            conditions.append(column == value)
    if where.actions:
        conditions.append(t.c.action.in_(where.actions))
    if where.path:
        conditions.append(t.c.path.contains(where.path, autoescape=True))
    if where.since is not None:
        conditions.append(t.c.at >= where.since)
    if where.until is not None:
        conditions.append(t.c.at < where.until)
    return conditions


def _session_columns() -> list[sa.ColumnElement[Any]]:
    t = audit_events
    action, outcome = t.c.action, t.c.outcome

    def count_if(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

    def bytes_if(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, t.c.bytes))), 0)

    down = (action == ev.DOWNLOAD_END) & (outcome == ev.OK)
    up = (action == ev.UPLOAD_END) & (outcome == ev.OK)
    refused = action.in_(_REFUSAL_ACTIONS) | (outcome == ev.DENIED)
    return [
        t.c.session.label("session"),
        sa.func.max(t.c.account).label("account"),
        sa.func.max(t.c.role).label("role"),
        sa.func.max(t.c.prefecture).label("prefecture"),
        sa.func.min(t.c.remote).label("remote"),
        sa.func.min(t.c.at).label("started_at"),
        sa.func.max(t.c.at).label("ended_at"),
        sa.func.count().label("events"),
        count_if(down).label("downloads"),
        bytes_if(down).label("bytes_down"),
        count_if(up).label("uploads"),
        bytes_if(up).label("bytes_up"),
        count_if(refused).label("refusals"),
    ]


def _stored_event(row: sa.Row[Any]) -> StoredEvent:
    content = dict(row._mapping)
    try:
        content["details"] = json.loads(content["details"])
    except (TypeError, ValueError):
        # Tampered or damaged text: show it rather than fail the query.
        content["details"] = {"unreadable": content["details"]}
    return StoredEvent(**content)


def _started(event: StoredEvent) -> DownloadRecord:
    status = "open" if event.outcome == ev.OK else "refused"
    return DownloadRecord(
        account=event.account,
        session=event.session,
        remote=event.remote,
        path=event.path,
        version=event.version,
        started_at=event.at,
        status=status,
    )


def _ended(record: DownloadRecord, event: StoredEvent) -> None:
    record.ended_at = event.at
    record.bytes = event.bytes
    record.digest = event.digest
    record.version = record.version or event.version
    record.status = "complete" if event.outcome == ev.OK else "aborted"


def _unmatched_end(event: StoredEvent) -> DownloadRecord:
    record = DownloadRecord(
        account=event.account,
        session=event.session,
        remote=event.remote,
        path=event.path,
        version=event.version,
        started_at=None,
    )
    _ended(record, event)
    return record
