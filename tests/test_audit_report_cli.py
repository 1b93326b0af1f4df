"""``censusdrop audit report``, run in-process with CliRunner."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from click.testing import Result

import reportkit as kit
from censusdrop.audit.checkpoint import create_signing_key
from censusdrop.audit.checkpoint import load_signing_key
from censusdrop.audit.checkpoint import make_checkpoint
from censusdrop.audit.events import AuditEvent
from censusdrop.audit.events import DurableCallback
from censusdrop.audit.schema import audit_events
from censusdrop.audit.schema import metadata
from censusdrop.audit.store import AuditLog
from censusdrop.cli.audit import audit
from censusdrop.config.prefectures import load_prefectures
from censusdrop.server.roundmodel import Window
from censusdrop.server.rounds import RoundStore
from censusdrop.server.schema import metadata as server_metadata


@dataclasses.dataclass
class FakeSettings:
    """What the CLI's real context object provides to ``audit``."""

    database_url: str
    audit_key_path: Path
    timezone: str = "Asia/Shanghai"

    @cached_property
    def _engine(self) -> sa.Engine:
        return sa.create_engine(self.database_url)

    def engine(self) -> sa.Engine:
        return self._engine


class Recorded:
    """An audit sink for the round store in tests: keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def emit(self, event: AuditEvent) -> None:
        self.events.append(event)

    def emit_durable(self, event: AuditEvent, timeout: float = 10.0) -> None:
        self.events.append(event)

    def submit_durable(self, event: AuditEvent, done: DurableCallback) -> None:
        self.events.append(event)
        done(None)


def settings_for(url: str, folder: Path) -> FakeSettings:
    settings = FakeSettings(url, folder / "audit-signing.key")
    key = create_signing_key(settings.audit_key_path)
    engine = settings.engine()
    metadata.create_all(engine)
    AuditLog(engine).append(kit.realistic_log())
    make_checkpoint(engine, key, at=kit.china("10-12", "09:00"))
    return settings


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Iterator[FakeSettings]:
    settings = settings_for(database_url, tmp_path)
    yield settings
    settings.engine().dispose()


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Iterator[FakeSettings]:
    settings = settings_for(f"sqlite:///{tmp_path / 'audit.db'}", tmp_path)
    yield settings
    settings.engine().dispose()


def run(settings: FakeSettings, *args: str) -> Result:
    runner = CliRunner()
    return runner.invoke(audit, list(args), obj=settings, catch_exceptions=False)


def test_report_writes_the_page_and_records_the_act(
    settings: FakeSettings, tmp_path: Path
) -> None:
    target = tmp_path / "审计报告.html"
    result = run(
        settings, "report", "--from", "2020-09-28", "--to", "2020-10-11",
        "--html", str(target),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == f"report written to {target} (4 findings to look at)\n"

    shown = kit.Page(target.read_text(encoding="utf-8"))
    about = shown.one(id="about")
    # A bare date as the end means the end of that day.
    assert about["data-to"] == kit.PERIOD_END.isoformat()
    assert about["data-from"] == kit.PERIOD_START.isoformat()
    box = shown.one(id="verification")
    # The act is recorded before the report is made, and verified with it.
    assert box["data-verify"] == "ok"
    assert box["data-events"] == str(len(kit.realistic_log()) + 1)

    (line,) = run(
        settings, "log", "--format", "jsonl", "--action", "admin"
    ).stdout.splitlines()
    details = json.loads(json.loads(line)["details"])
    assert details["act"] == "audit report" and details["operator"]
    assert details["file"] == str(target.resolve())
    assert details["to"] == kit.PERIOD_END.isoformat()


def test_a_round_gives_the_period(settings: FakeSettings, tmp_path: Path) -> None:
    engine = settings.engine()
    server_metadata.create_all(engine)
    submission = Window(kit.china("09-21", "00:00"), kit.china("09-28", "00:00"))
    review = Window(kit.china("09-28", "00:00"), kit.china("10-12", "00:00"))
    RoundStore(engine, load_prefectures(), Recorded()).create(
        "r2020", at=kit.china("09-20", "12:00"), submission=submission, review=review
    )
    target = tmp_path / "round.html"

    result = run(settings, "report", "--round", "r2020", "--html", str(target))

    assert result.exit_code == 0, result.output
    shown = kit.Page(target.read_text(encoding="utf-8"))
    about = shown.one(id="about")
    assert about["data-from"] == submission.start.isoformat()
    assert about["data-to"] == review.end.isoformat()
    assert "r2020：提交期 2020-09-21 00:00 至 2020-09-28 00:00（不含）" in shown.text


def test_an_unknown_round_is_one_clear_line(sqlite_settings: FakeSettings) -> None:
    server_metadata.create_all(sqlite_settings.engine())
    result = run(sqlite_settings, "report", "--round", "nope", "--html", "x.html")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == ["Error: no round named 'nope'"]


def test_without_times_the_report_covers_the_whole_log(
    sqlite_settings: FakeSettings, tmp_path: Path
) -> None:
    target = tmp_path / "all.html"
    assert run(sqlite_settings, "report", "--html", str(target)).exit_code == 0
    about = kit.Page(target.read_text(encoding="utf-8")).one(id="about")
    first = min(event.at for event in kit.realistic_log())
    assert about["data-from"] == first.isoformat()


def test_a_tampered_chain_is_written_up_and_exits_one(
    sqlite_settings: FakeSettings, tmp_path: Path
) -> None:
    with sqlite_settings.engine().begin() as conn:
        conn.execute(
            sa.update(audit_events).where(audit_events.c.seq == 7).values(path="/x")
        )
    target = tmp_path / "tampered.html"
    result = run(sqlite_settings, "report", "--html", str(target))
    assert result.exit_code == 1
    assert "chain verification FAILED: seq 7: modified" in result.output
    assert (
        kit.Page(target.read_text(encoding="utf-8")).one(id="verification")[
            "data-verify"
        ]
        == "failed"
    )


@pytest.mark.parametrize(
    "args",
    [
        ("--from", "yesterday"),
        ("--from", "2020-10-11", "--to", "2020-10-01"),
        ("--working-hours", "18:00-08:00"),
        ("--bulk-share", "0"),
        ("--bulk-minutes", "0"),
    ],
)
def test_bad_options_are_usage_errors(
    sqlite_settings: FakeSettings, args: tuple[str, ...]
) -> None:
    result = run(sqlite_settings, "report", "--html", "x.html", *args)
    assert result.exit_code == 2, result.output


def test_an_unwritable_file_is_one_clear_line(
    sqlite_settings: FakeSettings, tmp_path: Path
) -> None:
    target = tmp_path / "missing" / "report.html"
    result = run(sqlite_settings, "report", "--html", str(target))
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: cannot write report {target}:")


def test_a_missing_key_is_one_clear_line(sqlite_settings: FakeSettings) -> None:
    sqlite_settings.audit_key_path.unlink()
    result = run(sqlite_settings, "report", "--html", "x.html")
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: no key file at")


def test_a_public_key_is_enough(sqlite_settings: FakeSettings, tmp_path: Path) -> None:
    pem = tmp_path / "audit.pem"
    pem.write_text(load_signing_key(sqlite_settings.audit_key_path).public.public_pem())
    target = tmp_path / "r.html"
    result = run(
        sqlite_settings, "report", "--public-key", str(pem), "--html", str(target)
    )
    assert result.exit_code == 0, result.output


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(audit, ["report", "--help"])
    assert result.exit_code == 0
    assert "Example: censusdrop audit report --from" in result.output


def test_report_times_are_shown_in_the_configured_zone(
    sqlite_settings: FakeSettings, tmp_path: Path
) -> None:
    utc = dataclasses.replace(sqlite_settings, timezone="UTC")
    target = tmp_path / "utc.html"
    result = run(utc, "report", "--from", "2020-09-28", "--html", str(target))
    assert result.exit_code == 0, result.output
    text = kit.Page(target.read_text(encoding="utf-8")).text
    start = kit.china("10-01", "10:16").astimezone(dt.UTC)
    assert f"{start:%Y-%m-%d %H:%M}" in text and "时区UTC" in text
