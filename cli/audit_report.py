"""What ``censusdrop audit report`` needs besides the report itself: the
period (from ``--from``/``--to``, a round's windows, or the whole log), the
list of prefectures, and the rules' settings from the options.

Times without an offset are in the configured zone; a bare date given as
the end (``--to 2020-10-11``) means the end of that day, as in the
``round`` commands.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import zoneinfo
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa

from censusdrop.audit.events import AuditEvent
from censusdrop.audit.events import AuditUnavailable
from censusdrop.audit.events import DurableCallback
from censusdrop.audit.locking import read_connection
from censusdrop.audit.report import BulkRule
from censusdrop.audit.report import Period
from censusdrop.audit.report import ReportOptions
from censusdrop.audit.report import WorkingHours
from censusdrop.audit.schema import audit_events
from censusdrop.config.prefectures import PrefectureError
from censusdrop.config.prefectures import PrefectureList
from censusdrop.config.prefectures import load_prefectures
from censusdrop.server.roundmodel import RoundError
from censusdrop.server.rounds import RoundStore

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
WINDOW_LABELS = {"submission": "提交期", "review": "审核期"}


@dataclasses.dataclass(frozen=True, slots=True)
class RoundSpan:
    """A round's name and its windows, as the report shows them."""

    name: str
    windows: tuple[tuple[str, Period], ...]

    @property
    def period(self) -> Period:
        return Period(
            min(window.start for _, window in self.windows),
            max(window.end for _, window in self.windows),
        )


def report_choices(func: Any) -> Any:
    """The options choosing the report's period and its rules' settings."""
    options = [
        click.option("--round", "round_name", help="Cover this round's windows."),
        click.option("--from", "start", help="From this time (default: local zone)."),
        click.option("--to", "end", help="Until this time; a bare date means its end."),
        click.option(
            "--working-hours", default="08:30-18:00", show_default=True,
            help="Working hours on the official calendar's working days.",
        ),
        click.option(
            "--bulk-share", type=click.FloatRange(0, 1, min_open=True),
            default=0.5, show_default=True,
            help="Share of a prefecture's files that is a bulk take...",
        ),
        click.option(
            "--bulk-minutes", type=click.IntRange(min=1), default=60,
            show_default=True, help="...within this many minutes...",
        ),
        click.option(
            "--bulk-min-files", type=click.IntRange(min=1), default=3,
            show_default=True, help="...and at least this many files.",
        ),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def parse_instant(
    text: str | None, zone: zoneinfo.ZoneInfo, option: str, *, end: bool = False
) -> dt.datetime | None:
    """A time from an option, in UTC; a bare date as an end means the end
    of that day."""
    if text is None:
        return None
    text = text.strip()
    try:
        if _DATE.match(text):
            day = dt.date.fromisoformat(text) + dt.timedelta(days=1 if end else 0)
            return dt.datetime.combine(day, dt.time(), zone).astimezone(dt.UTC)
        value = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter(
            "expected a date or time such as 2020-10-01 or 2020-10-01T08:30",
            param_hint=option,
        ) from exc
    return (value if value.tzinfo else value.replace(tzinfo=zone)).astimezone(dt.UTC)


def choose_period(
    engine: sa.Engine,
    start: dt.datetime | None,
    end: dt.datetime | None,
    span: RoundSpan | None,
    at: dt.datetime,
) -> Period:
    """The period: explicit times win, then the round's windows, then the
    whole log up to ``at``."""
    if span is not None:
        start = start or span.period.start
        end = end or span.period.end
    end = end or at
    start = start or _first_event(engine)
    if start is None:
        raise click.ClickException("the audit log is empty: give --from and --to")
    if not start < end:
        raise click.BadParameter("--from must be before --to", param_hint="--from")
    return Period(start, end)


def round_span(engine: sa.Engine, prefectures: PrefectureList, name: str) -> RoundSpan:
    """The windows of round ``name`` (and its rectification deadlines)."""
    store = RoundStore(engine, prefectures, _ReadOnlyAudit())
    try:
        found = store.get(name)
    except RoundError as exc:
        raise click.ClickException(str(exc)) from exc
    windows = [
        (WINDOW_LABELS[which], Period(window.start, window.end))
        for which in ("submission", "review")
        if (window := found.window(which)) is not None and window.start < window.end
    ]
    deadlines = [e.rectify_until for e in found.entries if e.rectify_until]
    if windows and deadlines and max(deadlines) > max(w.end for _, w in windows):
        last = max(w.end for _, w in windows)
        windows.append(("整改期", Period(last, max(deadlines))))
    if not windows:
        raise click.ClickException(
            f"round {name!r} has no windows yet: give --from and --to as well"
        )
    return RoundSpan(name, tuple(windows))


def prefectures_of(app: Any) -> PrefectureList:
    """The configured list of prefectures (the bundled one without settings)."""
    settings = getattr(app, "settings", None)
    name = settings.reference.prefectures if settings is not None else "hubei"
    try:
        return load_prefectures(name)
    except PrefectureError as exc:
        raise click.ClickException(str(exc)) from exc


def working_hours(text: str, zone: str) -> WorkingHours:
    try:
        return WorkingHours.parse(text, zone)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--working-hours") from exc


def bulk_rule(share: float, minutes: int, min_files: int) -> BulkRule:
    return BulkRule(share, dt.timedelta(minutes=minutes), min_files)


def _first_event(engine: sa.Engine) -> dt.datetime | None:
    query = sa.select(sa.func.min(audit_events.c.at))
    with read_connection(engine) as conn:
        first: dt.datetime | None = conn.execute(query).scalar()
    return first


class _ReadOnlyAudit:
    """The audit sink a ``RoundStore`` needs for the changes it records.
    The report only reads rounds, so recording anything is refused."""

    def emit(self, event: AuditEvent) -> None:
        raise AuditUnavailable("the audit report does not change rounds")

    def emit_durable(self, event: AuditEvent, timeout: float = 10.0) -> None:
        raise AuditUnavailable("the audit report does not change rounds")

    def submit_durable(self, event: AuditEvent, done: DurableCallback) -> None:
        done(AuditUnavailable("the audit report does not change rounds"))


def report_options(
    engine: sa.Engine,
    app: Any,
    zone: zoneinfo.ZoneInfo,
    at: dt.datetime,
    **choices: Any,
) -> ReportOptions:
    """The report's options from the command's ``choices``."""
    prefectures = prefectures_of(app)
    name = choices["round_name"]
    span = round_span(engine, prefectures, name) if name else None
    start = parse_instant(choices["start"], zone, "--from")
    end = parse_instant(choices["end"], zone, "--to", end=True)
    return ReportOptions(
        period=choose_period(engine, start, end, span, at),
        zone=zone.key,
        hours=working_hours(choices["working_hours"], zone.key),
        bulk=bulk_rule(
            choices["bulk_share"], choices["bulk_minutes"], choices["bulk_min_files"]
        ),
        prefectures=prefectures,
        round_name=name,
        windows=span.windows if span else (),
    )


def request_details(path: Path, options: ReportOptions) -> dict[str, Any]:
    """What the admin event of a report records."""
    return {
        "file": str(path.resolve()),
        "from": options.period.start.isoformat(),
        "to": options.period.end.isoformat(),
        "round": options.round_name,
    }
