"""``censusdrop validate`` and ``censusdrop status``: pre-review by hand, and
where every prefecture stands.

``validate`` takes the same path as a pre-review triggered by an upload
(``censusdrop.server.prereview.Prereviewer``): the report is stored, written
into the prefecture's area and recorded in the audit log. ``status`` is one
row per prefecture of the configured list; its columns are data
(``STATUS_COLUMNS``), so later features add a field and a column.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
import zoneinfo
from collections.abc import Callable
from typing import Any

import click

from censusdrop.audit import events
from censusdrop.audit.events import AuditEvent
from censusdrop.cli.accounts import AdminSession
from censusdrop.cli.context import AppContext
from censusdrop.cli.context import now
from censusdrop.cli.context import operator
from censusdrop.cli.context import print_json
from censusdrop.cli.context import print_table
from censusdrop.config.checklist import Checklist
from censusdrop.config.checklist import ChecklistError
from censusdrop.config.prefectures import Prefecture
from censusdrop.config.prefectures import PrefectureError
from censusdrop.server.prereview import COMMAND
from censusdrop.server.prereview import Declaration
from censusdrop.server.prereview import Outcome
from censusdrop.server.prereview import Prereviewer
from censusdrop.server.prereview import ReportRecord
from censusdrop.server.prereview import configured_checklist
from censusdrop.server.prereview import records
from censusdrop.server.services import Services
from censusdrop.server.storage.store import Storage

pass_app = click.make_pass_decorator(AppContext)

# Exit status of ``validate``: 0 for 合格, 1 for 退回补充完善.
EXIT_PASSED = 0
EXIT_RETURNED = 1


@click.command("validate")
@click.argument("prefecture")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_app
def validate_command(app: AppContext, prefecture: str, as_json: bool) -> None:
    """Pre-review PREFECTURE (code or name) now, as an upload would.

    The report is stored, written into the prefecture's area as
    预审报告.txt and 预审报告.html, and recorded in the audit log. Exit
    status: 0 for 合格, 1 for 退回补充完善.

    \b
    Example:
      censusdrop validate 武汉市
      censusdrop validate 420100 --json
    """
    with AdminSession(app) as services:
        target = _find(services, prefecture)
        checklist = _checklist(services)
        _storage_ready(services.storage)
        outcome = Prereviewer(services, checklist).run(
            target.code, at=now(), origin=COMMAND
        )
        _record(services, outcome)
    if as_json:
        print_json({"report_id": outcome.record.id, **outcome.document})
    else:
        click.echo(outcome.text.replace("\r\n", "\n"))
    sys.exit(EXIT_PASSED if outcome.passed else EXIT_RETURNED)


@dataclasses.dataclass(frozen=True)
class PrefectureStatus:
    """Where one prefecture stands; one row of ``censusdrop status``."""

    prefecture: Prefecture
    report: ReportRecord | None
    last_upload: dt.datetime | None
    declaration: Declaration | None

    def as_dict(self) -> dict[str, Any]:
        report = self.report
        return {
            "code": self.prefecture.code,
            "name": self.prefecture.name,
            "verdict": report.verdict if report else None,
            "errors": report.errors if report else None,
            "warnings": report.warnings if report else None,
            "judged_at": _iso(report.judged_at if report else None),
            "final": report.final if report else False,
            "last_upload": _iso(self.last_upload),
            "declared_complete": self.declaration is not None,
            "declared_at": _iso(self.declaration.at if self.declaration else None),
        }


Cell = Callable[[PrefectureStatus, zoneinfo.ZoneInfo], object]

STATUS_COLUMNS: list[tuple[str, Cell]] = [
    ("code", lambda s, z: s.prefecture.code),
    ("prefecture", lambda s, z: s.prefecture.name),
    ("verdict", lambda s, z: s.report.verdict if s.report else "未预审"),
    ("errors", lambda s, z: s.report.errors if s.report else ""),
    ("warnings", lambda s, z: s.report.warnings if s.report else ""),
    ("judged", lambda s, z: _local(s.report.judged_at if s.report else None, z)),
    ("last upload", lambda s, z: _local(s.last_upload, z)),
    (
        "complete",
        lambda s, z: _local(s.declaration.at, z) if s.declaration else "no",
    ),
]


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def status_command(app: AppContext, as_json: bool) -> None:
    """Show every prefecture's latest pre-review, last upload and whether
    its submission is declared complete.

    \b
    Example:
      censusdrop status
      censusdrop status --json
    """
    with AdminSession(app) as services:
        rows = collect_status(services)
    if as_json:
        print_json([row.as_dict() for row in rows])
        return
    zone = zoneinfo.ZoneInfo(app.timezone)
    print_table(
        "Pre-review status",
        [header for header, _ in STATUS_COLUMNS],
        [[cell(row, zone) for _, cell in STATUS_COLUMNS] for row in rows],
    )


def collect_status(services: Services) -> list[PrefectureStatus]:
    """One status per prefecture of the configured list, in its order."""
    engine = services.engine
    reports = records.latest_reports(engine)
    uploads = records.last_uploads(engine)
    return [
        PrefectureStatus(
            prefecture=prefecture,
            report=reports.get(prefecture.code),
            last_upload=uploads.get(prefecture.code),
            declaration=records.find_declaration(engine, prefecture.code),
        )
        for prefecture in services.prefectures
    ]


def _find(services: Services, key: str) -> Prefecture:
    try:
        return services.prefectures.find(key)
    except PrefectureError as exc:
        raise click.BadParameter(str(exc), param_hint="PREFECTURE") from exc


def _checklist(services: Services) -> Checklist:
    try:
        return configured_checklist(services.settings)
    except ChecklistError as exc:
        raise click.ClickException(f"reference.checklist: {exc}") from exc


def _storage_ready(storage: Storage) -> None:
    # The layout may not exist yet (an instance that never served). Never
    # sweep staging here: a running server keeps its uploads there.
    storage.prepare(sweep=False)


def _record(services: Services, outcome: Outcome) -> None:
    """The operator's act; the run itself is recorded by the prereviewer."""
    services.audit.emit_durable(
        AuditEvent(
            action=events.ADMIN,
            prefecture=outcome.record.prefecture,
            details={
                "act": "prereview.validate",
                "operator": operator(),
                "report_id": outcome.record.id,
                "verdict": outcome.record.verdict,
            },
        )
    )


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _local(value: dt.datetime | None, zone: zoneinfo.ZoneInfo) -> str:
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M") if value else ""
