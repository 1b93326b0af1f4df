"""Pre-review in the database: stored reports, declarations, upload times.

Reports live in ``prereview_reports`` (one row per run, never updated).
Declarations of completion and upload times are not stored twice: they are
read from the version index (``file_versions``), where every committed
upload already has its row, its time and its account.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from censusdrop.server.filesystem import REPORT_NAMES
from censusdrop.server.schema import file_versions
from censusdrop.server.schema import prereview_reports

from .source import MARKER_STEM
from .source import TEXT_REPORT
from .source import is_marker


@dataclasses.dataclass(frozen=True)
class ReportRecord:
    """A stored report, without its JSON body."""

    id: int
    prefecture: str
    judged_at: dt.datetime
    verdict: str
    errors: int
    warnings: int
    digest: str
    final: bool
    declared_at: dt.datetime | None
    origin: str


@dataclasses.dataclass(frozen=True)
class Declaration:
    """The completion marker currently in an area: who put it there, when."""

    path: str
    version: str
    at: dt.datetime
    account: str | None


def save_report(engine: sa.Engine, record: ReportRecord, body: dict[str, Any]) -> int:
    """Store a report; ``record.id`` is ignored and the new id returned."""
    values = dataclasses.asdict(record)
    del values["id"]
    with engine.begin() as conn:
        insert = prereview_reports.insert().values(**values, report=body)
        key = conn.execute(insert).inserted_primary_key
    if key is None:
        raise RuntimeError("the database gave no id for the stored report")
    return int(key[0])


def latest_report(engine: sa.Engine, prefecture: str) -> ReportRecord | None:
    query = (
        _columns()
        .where(prereview_reports.c.prefecture == prefecture)
        .order_by(prereview_reports.c.id.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return None if row is None else ReportRecord(**row._mapping)


def latest_reports(engine: sa.Engine) -> dict[str, ReportRecord]:
    """The newest report of every prefecture that has one."""
    newest = (
        sa.select(sa.func.max(prereview_reports.c.id))
        .group_by(prereview_reports.c.prefecture)
        .scalar_subquery()
    )
    query = _columns().where(prereview_reports.c.id.in_(newest))
    with engine.connect() as conn:
        records = [ReportRecord(**row._mapping) for row in conn.execute(query)]
    return {record.prefecture: record for record in records}


def report_body(engine: sa.Engine, report_id: int) -> dict[str, Any] | None:
    query = sa.select(prereview_reports.c.report).where(
        prereview_reports.c.id == report_id
    )
    with engine.connect() as conn:
        body = conn.execute(query).scalar()
    return dict(body) if body is not None else None


def find_declaration(engine: sa.Engine, area: str) -> Declaration | None:
    """The newest completion marker at the root of ``area``, if any."""
    query = sa.select(
        file_versions.c.path,
        file_versions.c.id,
        file_versions.c.created_at,
        file_versions.c.account,
    ).where(
        file_versions.c.area == area,
        file_versions.c.state == "current",
        file_versions.c.path.startswith(MARKER_STEM, autoescape=True),
    )
    with engine.connect() as conn:
        found = [
            Declaration(path, version, at, account)
            for path, version, at, account in conn.execute(query)
            if is_marker(path)
        ]
    return max(found, key=lambda d: d.at, default=None)


def last_uploads(engine: sa.Engine) -> dict[str, dt.datetime]:
    """Per area, when a prefecture last committed a file (reports excluded)."""
    return _latest_versions(engine, file_versions.c.path.not_in(sorted(REPORT_NAMES)))


def stale_areas(engine: sa.Engine, areas: Collection[str]) -> list[str]:
    """Areas with uploads newer than their last written report (or with no
    report at all), such as uploads made while the server was down.

    Both times are the storage layer's commit times, so a test clock
    (``Services.clock``) that judges reports "in 2020" does not make every
    area look stale.
    """
    uploads = last_uploads(engine)
    reports = _latest_versions(engine, file_versions.c.path == TEXT_REPORT)
    stale = []
    for area in sorted(areas):
        uploaded, reported = uploads.get(area), reports.get(area)
        if uploaded is not None and (reported is None or uploaded > reported):
            stale.append(area)
    return stale


def _latest_versions(
    engine: sa.Engine, which: sa.ColumnElement[bool]
) -> dict[str, dt.datetime]:
    query = (
        sa.select(file_versions.c.area, sa.func.max(file_versions.c.created_at))
        .where(which)
        .group_by(file_versions.c.area)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    # max() may come back as text on SQLite: read the value back by hand.
    return {area: _aware(value) for area, value in rows if value is not None}


def _columns() -> sa.Select[Any]:
    names: Iterable[str] = (f.name for f in dataclasses.fields(ReportRecord))
    return sa.select(*(prereview_reports.c[name] for name in names))


def _aware(value: object) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        raise TypeError(f"not a timestamp: {value!r}")
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)
