"""One pre-review run: judge an area, store the report, write it, record it.

``Prereviewer.run`` is the one path for every trigger (the watcher after a
quiet period, ``censusdrop validate``, later ``censusdrop import``), so the
report a prefecture reads, the row in ``prereview_reports`` and the audit
event always agree.

What it guarantees: a fault while judging never yields a pass. The
validator already turns a bad file into a finding; any exception that still
escapes it is logged and becomes a failing report (退回补充完善) with a
finding that asks the prefecture to contact the office. The report files are
written through the storage layer, so each run keeps the previous report as
a version.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import zoneinfo
from pathlib import Path
from typing import Any

from censusdrop.audit import events
from censusdrop.audit.events import AuditEvent
from censusdrop.config import prefectures as config_prefectures
from censusdrop.config.checklist import Checklist
from censusdrop.config.checklist import bundled_checklist_path
from censusdrop.config.checklist import load_checklist
from censusdrop.config.settings import Settings
from censusdrop.server.services import Services
from censusdrop.server.validation import ContentCache
from censusdrop.server.validation import Prefecture
from censusdrop.server.validation import Report
from censusdrop.server.validation import TreeChanged
from censusdrop.server.validation import listed_digest
from censusdrop.server.validation import render_html
from censusdrop.server.validation import render_text
from censusdrop.server.validation import to_json
from censusdrop.server.validation import tree_digest
from censusdrop.server.validation import validate
from censusdrop.server.validation.messages import finding

from . import records
from .records import Declaration
from .records import ReportRecord
from .source import HTML_REPORT
from .source import MARKER_NAME
from .source import TEXT_REPORT
from .source import StorageSource

logger = logging.getLogger(__name__)

# A run that finds files replaced under it starts over, this many times at
# most, before it reports the tree as unreadable (uploads keep coming).
JUDGE_ATTEMPTS = 3

# Where a run came from, as stored with its report: the watcher, the
# command line, or a catch-up on uploads the watcher did not see (made while
# the server was down, or lost in an overflowing event queue).
UPLOAD = "upload"
COMMAND = "command"
CATCH_UP = "catch_up"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one run produced: the report, its stored row, its renderings."""

    report: Report
    record: ReportRecord
    text: str
    document: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.report.passed


def configured_checklist(settings: Settings) -> Checklist:
    """The checklist named by ``reference.checklist``: a bundled name such
    as ``checklist-hubei-2020``, or a path to a TOML file."""
    name = settings.reference.checklist
    if name.endswith(".toml") or "/" in name:
        return load_checklist(settings.path(Path(name)))
    return load_checklist(bundled_checklist_path(name.removeprefix("checklist-")))


def as_validated(prefecture: config_prefectures.Prefecture) -> Prefecture:
    return Prefecture(
        prefecture.code, prefecture.name, prefecture.short_name, prefecture.aliases
    )


class Prereviewer:
    """Runs pre-review for one prefecture at a time (the caller serialises).

    ``cache`` (a new one by default) keeps what the validator learnt from
    file contents, so that the next run opens only new and changed files;
    a long-lived prereviewer (the server's) makes every run after the first
    cheap. It may be shared with other prereviewers.
    """

    def __init__(
        self,
        services: Services,
        checklist: Checklist,
        cache: ContentCache | None = None,
    ) -> None:
        self.services = services
        self.checklist = checklist
        self.zone = zoneinfo.ZoneInfo(checklist.census.timezone)
        self.cache = cache if cache is not None else ContentCache()

    def run(self, code: str, *, at: dt.datetime, origin: str) -> Outcome:
        """Judge area ``code`` now (``at``) and publish the report."""
        prefecture = self.services.prefectures.by_code(code)
        engine = self.services.engine
        declaration = records.find_declaration(engine, code)
        previous = records.latest_report(engine, code)

        report = self._judge(prefecture, at)
        notes = self._notes(declaration)
        record, document = self._store(report, declaration, at, origin)
        version = self._publish(code, report, notes)

        is_new = declaration is not None and (
            previous is None or previous.declared_at != declaration.at
        )
        if declaration is not None and is_new:
            self._record_declaration(code, declaration)
        self._record_report(record, report, version)
        if declaration is not None:
            self._tell_rounds(code, is_new, report.passed, at)
        logger.info(
            "prereview prefecture=%s verdict=%s errors=%d warnings=%d final=%s"
            " origin=%s",
            code,
            record.verdict,
            record.errors,
            record.warnings,
            record.final,
            origin,
        )
        return Outcome(report, record, render_text(report, notes=notes), document)

    def is_judged(self, code: str) -> bool:
        """Whether the latest stored report judged area ``code`` as it is
        now: the same tree digest and the same declaration. Another server
        sharing the database and the data root may have made that report.
        Reads the listing and the index; opens no file."""
        engine = self.services.engine
        previous = records.latest_report(engine, code)
        if previous is None:
            return False
        declaration = records.find_declaration(engine, code)
        if previous.declared_at != (declaration.at if declaration else None):
            return False
        source = StorageSource(self.services.storage, code)
        return listed_digest(source, self.checklist).sha256 == previous.digest

    def warm(self, code: str, *, at: dt.datetime) -> int:
        """Open what is new in area ``code`` so the next run finds it in the
        cache; publish and record nothing. Returns the files opened.

        Called while uploads are still coming in (see ``PrereviewService``),
        so that the run after the quiet period has little left to open.
        A failure here is of no consequence: the real run meets it again.
        """
        prefecture = self.services.prefectures.by_code(code)
        others = [as_validated(p) for p in self.services.prefectures if p != prefecture]
        source = StorageSource(self.services.storage, code)
        try:
            validate(
                source,
                self.checklist,
                as_validated(prefecture),
                at=at,
                others=others,
                cache=self.cache,
            )
        except Exception as exc:  # the real run reports it
            logger.debug("prereview warm-up stopped prefecture=%s: %s", code, exc)
        return source.opened

    def _judge(
        self, prefecture: config_prefectures.Prefecture, at: dt.datetime
    ) -> Report:
        own = as_validated(prefecture)
        others = [as_validated(p) for p in self.services.prefectures if p != prefecture]
        for attempt in range(1, JUDGE_ATTEMPTS + 1):
            source = StorageSource(self.services.storage, prefecture.code)
            try:
                report = validate(
                    source, self.checklist, own, at=at, others=others, cache=self.cache
                )
                break
            except TreeChanged as exc:
                logger.info(
                    "prereview judging again prefecture=%s attempt=%d: %s",
                    prefecture.code,
                    attempt,
                    exc,
                )
            except Exception:
                logger.exception("prereview crashed prefecture=%s", prefecture.code)
                return self._crash_report(own, at)
        else:
            logger.warning(
                "prereview gave up prefecture=%s: the tree kept changing",
                prefecture.code,
            )
            return self._crash_report(own, at)
        logger.debug(
            "prereview judged prefecture=%s files=%d opened=%d cached=%d",
            prefecture.code,
            report.digest.files,
            source.opened,
            len(self.cache),
        )
        return report

    def _store(
        self,
        report: Report,
        declaration: Declaration | None,
        at: dt.datetime,
        origin: str,
    ) -> tuple[ReportRecord, dict[str, Any]]:
        """Save the report's row; return it (with its id) and its JSON."""
        document = {
            **to_json(report),
            "final": declaration is not None,
            "declared_at": declaration.at.isoformat() if declaration else None,
            "origin": origin,
        }
        record = ReportRecord(
            id=0,
            prefecture=report.prefecture.code,
            judged_at=at,
            verdict=report.verdict,
            errors=len(report.errors),
            warnings=len(report.warnings),
            digest=report.digest.sha256,
            final=declaration is not None,
            declared_at=declaration.at if declaration else None,
            origin=origin,
        )
        report_id = records.save_report(self.services.engine, record, document)
        return dataclasses.replace(record, id=report_id), document

    def _crash_report(self, prefecture: Prefecture, at: dt.datetime) -> Report:
        failure = finding("check.failed", None, "", scope="全部资料")
        return Report(
            prefecture=prefecture,
            checklist=self.checklist.name,
            judged_at=at.astimezone(self.zone),
            digest=tree_digest([]),
            findings=(failure,),
            items=(),
        )

    def _notes(self, declaration: Declaration | None) -> list[tuple[str, str]]:
        if declaration is None:
            return [
                (
                    "报告性质",
                    "临时报告（尚未声明提交完成）。资料全部上传并改正后，"
                    f"请在根目录上传名为“{MARKER_NAME}”的文件（内容不限）"
                    "声明提交完成，系统将出具正式报告。",
                )
            ]
        when = declaration.at.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S")
        return [
            ("报告性质", "正式报告（已声明提交完成）"),
            ("提交时间", f"{when}（根目录“{declaration.path}”的上传时间）"),
        ]

    def _publish(self, code: str, report: Report, notes: list[tuple[str, str]]) -> str:
        """Write the HTML, then the text report; return the text's version."""
        storage = self.services.storage
        storage.ensure_area(code)
        page = render_html(report, notes=notes).encode("utf-8")
        storage.write_bytes(code, HTML_REPORT, page, None)
        text = render_text(report, bom=True, notes=notes).encode("utf-8")
        return storage.write_bytes(code, TEXT_REPORT, text, None).id

    def _tell_rounds(
        self, code: str, is_new: bool, passed: bool, at: dt.datetime
    ) -> None:
        """A final report moves the prefecture's round: a newly declared
        submission arrived, and this is the validator's verdict on it.
        Provisional reports move nothing; a state the plan does not allow
        from where the prefecture stands is skipped by the round store."""
        rounds = self.services.rounds
        try:
            if is_new:
                rounds.mark_submitted(code, at=at)
            rounds.mark_prereview(code, passed, at=at)
        except Exception:
            # The report stands; an administrator can still move the round.
            logger.exception("prereview could not update rounds prefecture=%s", code)

    def _record_declaration(self, code: str, declaration: Declaration) -> None:
        self.services.audit.emit_durable(
            AuditEvent(
                action=events.SUBMISSION_COMPLETE,
                account=declaration.account,
                role="prefecture",
                prefecture=code,
                path=declaration.path,
                version=declaration.version,
                details={"declared_at": declaration.at.isoformat()},
            )
        )

    def _record_report(
        self, record: ReportRecord, report: Report, version: str
    ) -> None:
        self.services.audit.emit_durable(
            AuditEvent(
                action=events.PREREVIEW,
                outcome=events.OK,
                prefecture=record.prefecture,
                path=TEXT_REPORT,
                version=version,
                digest=record.digest,
                details={
                    "report_id": record.id,
                    "verdict": record.verdict,
                    "errors": record.errors,
                    "warnings": record.warnings,
                    "final": record.final,
                    "origin": record.origin,
                    "digest_kind": report.digest.kind,
                    "files": report.digest.files,
                },
            )
        )
