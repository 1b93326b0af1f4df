"""The auditors' report: one self-contained HTML page for the archive.

Most auditors will not live in a terminal; this page shows them, for a
period (a round's windows, or times they choose): whether the audit chain
verifies and its latest signed checkpoint; who accessed which prefecture's
materials and when, on timeline charts; downloads per account with totals;
refusals and lockouts; and what deserves a look (``report_rules``).

Usage::

    options = ReportOptions(Period(start, end), zone="Asia/Shanghai")
    report = build_report(engine, key, options, at=now, operator="auditor")
    write_report(report, Path("审计报告.html"))

The modules behind it: ``report_data`` reads the log, ``report_stats``
counts, ``report_rules`` finds, ``report_html`` and ``report_access`` write
the sections, ``report_svg`` the charts and ``report_page`` the page.

Trusts: the database for the events (the verification result at the top
says how far that trust is earned) and ``key`` for the checkpoints.
Guarantees: text from the log is escaped, the page loads nothing from
anywhere, and a file is replaced only by a complete report.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import tempfile
import zoneinfo
from pathlib import Path

import sqlalchemy as sa

from censusdrop.config.prefectures import PrefectureList

from .checkpoint import VerifyKey
from .events import AuditError
from .report_access import accounts_section
from .report_access import prefectures_section
from .report_access import timeline_section
from .report_data import Period
from .report_data import ReportData
from .report_data import gather
from .report_html import cover_section
from .report_html import downloads_section
from .report_html import findings_section
from .report_html import notes_section
from .report_html import refusals_section
from .report_page import page
from .report_rules import BulkRule
from .report_rules import WorkingHours
from .report_stats import Findings
from .report_stats import find
from .verify import VerifyResult
from .verify import verify_database

__all__ = [
    "BulkRule",
    "Period",
    "Report",
    "ReportError",
    "ReportOptions",
    "WorkingHours",
    "build_report",
    "render",
    "write_report",
]


class ReportError(AuditError):
    """The report cannot be written."""


@dataclasses.dataclass(frozen=True, slots=True)
class ReportOptions:
    """What the report covers and how it judges.

    Options (default): ``period`` (required); ``zone`` for display
    (Asia/Shanghai); ``hours`` and ``bulk``, the rules' settings (see
    ``report_rules``); ``prefectures``, to name the prefectures and to
    find them in reviewers' paths (None: codes and folder names as
    recorded); ``round_name`` and ``windows`` (named periods to show, such
    as a round's submission and review windows); ``row_limit`` (300), the
    most rows of any detail table.
    """

    period: Period
    zone: str = "Asia/Shanghai"
    hours: WorkingHours = dataclasses.field(default_factory=WorkingHours)
    bulk: BulkRule = dataclasses.field(default_factory=BulkRule)
    prefectures: PrefectureList | None = None
    round_name: str | None = None
    windows: tuple[tuple[str, Period], ...] = ()
    row_limit: int = 300

    def __post_init__(self) -> None:
        try:
            zoneinfo.ZoneInfo(self.zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"zone: unknown time zone {self.zone!r}") from exc
        if self.row_limit < 1:
            raise ValueError("row_limit: must be at least 1")


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    """A made report: its options, the verification, data and findings."""

    options: ReportOptions
    made_at: dt.datetime
    made_by: str
    database: str
    verification: VerifyResult
    data: ReportData
    findings: Findings

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.options.zone)


def build_report(
    engine: sa.Engine,
    key: VerifyKey | None,
    options: ReportOptions,
    *,
    at: dt.datetime,
    operator: str,
) -> Report:
    """Verify the chain with ``key``, then read and judge the period."""
    verification = verify_database(engine, key)
    data = gather(engine, options.period, options.prefectures)
    zone = zoneinfo.ZoneInfo(options.zone)
    return Report(
        options=options,
        made_at=at,
        made_by=operator,
        database=engine.dialect.name,
        verification=verification,
        data=data,
        findings=find(data, options.hours, options.bulk, zone),
    )


def render(report: Report) -> str:
    """The report as one HTML document."""
    title = "censusdrop 审计报告"
    if report.options.round_name:
        title += f"（{report.options.round_name}）"
    sections = [
        cover_section(report, title),
        findings_section(report),
        timeline_section(report),
        prefectures_section(report),
        accounts_section(report),
        downloads_section(report),
        refusals_section(report),
        notes_section(report),
    ]
    return page(title, sections)


def write_report(report: Report, path: Path) -> None:
    """Write the page to ``path``, replacing it only once complete."""
    text = render(report)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ReportError(f"cannot write report {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise ReportError(f"cannot write report {path}: {exc.strerror}") from exc
