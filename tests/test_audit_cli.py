"""The auditor's commands, run in-process with CliRunner."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from click.testing import Result

from censusdrop.audit import events as ev
from censusdrop.audit.checkpoint import create_signing_key
from censusdrop.audit.events import AuditEvent
from censusdrop.audit.schema import audit_events
from censusdrop.audit.schema import metadata
from censusdrop.audit.store import AuditLog
from censusdrop.cli.audit import audit

T0 = dt.datetime(2020, 6, 15, 1, 0, tzinfo=dt.UTC)  # 09:00 in Shanghai
PATH = "/420100/01 验收申请/申请表.pdf"


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


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Iterator[FakeSettings]:
    settings = FakeSettings(database_url, tmp_path / "audit-signing.key")
    create_signing_key(settings.audit_key_path)
    engine = settings.engine()
    metadata.create_all(engine)
    AuditLog(engine).append(
        [
            AuditEvent(ev.LOGIN, at=T0, account="expert", session="s1"),
            AuditEvent(
                ev.DOWNLOAD_START, at=T0 + dt.timedelta(minutes=1),
                account="expert", session="s1", path=PATH, version="1",
            ),
            AuditEvent(
                ev.DOWNLOAD_END, at=T0 + dt.timedelta(minutes=2), account="expert",
                session="s1", path=PATH, bytes=500, digest="ab" * 32,
            ),
        ]
    )  # fmt: skip
    yield settings
    engine.dispose()


def run(settings: FakeSettings, *args: str) -> Result:
    runner = CliRunner(env={"COLUMNS": "250"})
    return runner.invoke(audit, list(args), obj=settings, catch_exceptions=False)


def test_log_shows_a_table_in_the_local_time_zone(settings: FakeSettings) -> None:
    result = run(settings, "log")
    assert result.exit_code == 0, result.output
    assert "times in Asia/Shanghai" in result.stdout
    assert "2020-06-15 09:00:00" in result.stdout
    assert "申请表.pdf" in result.stdout and "download_end" in result.stdout


def test_log_writes_json_lines(settings: FakeSettings) -> None:
    result = run(settings, "log", "--format", "jsonl", "--action", "download_end")
    (line,) = result.stdout.splitlines()
    event = json.loads(line)
    assert (event["seq"], event["path"], event["bytes"]) == (3, PATH, 500)
    assert event["at"] == "2020-06-15T09:02:00+08:00"


def test_log_writes_csv_with_a_header(settings: FakeSettings) -> None:
    result = run(settings, "log", "--format", "csv", "--account", "expert")
    table = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["action"] for row in table] == [
        "login",
        "download_start",
        "download_end",
    ]


def test_log_reads_times_without_a_zone_as_local(settings: FakeSettings) -> None:
    result = run(
        settings, "log", "--format", "jsonl", "--since", "2020-06-15T09:01",
        "--until", "2020-06-15 09:02",
    )  # fmt: skip
    assert [json.loads(x)["seq"] for x in result.stdout.splitlines()] == [2]


def test_a_bad_time_is_a_usage_error(settings: FakeSettings) -> None:
    result = run(settings, "log", "--since", "yesterday")
    assert result.exit_code == 2
    assert "--since" in result.output


def test_downloads_lists_who_downloaded_what(settings: FakeSettings) -> None:
    result = run(settings, "downloads", "--format", "jsonl")
    (line,) = result.stdout.splitlines()
    record = json.loads(line)
    assert (record["account"], record["path"], record["version"]) == (
        "expert",
        PATH,
        "1",
    )
    assert (record["status"], record["bytes"]) == ("complete", 500)
    assert record["started"] == "2020-06-15T09:01:00+08:00"
    assert "complete" in run(settings, "downloads").stdout


def test_sessions_prints_one_line_per_session(settings: FakeSettings) -> None:
    result = run(settings, "sessions", "--format", "csv")
    (row,) = csv.DictReader(io.StringIO(result.stdout))
    assert (row["session"], row["downloads"], row["bytes_down"]) == ("s1", "1", "500")


def test_verify_exits_zero_for_an_intact_log(settings: FakeSettings) -> None:
    run(settings, "checkpoint")
    result = run(settings, "verify")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("OK: 3 entries verified")
    assert "checkpoint: seq 3" in result.stdout


def test_verify_exits_one_and_names_the_entry_when_tampered(
    settings: FakeSettings,
) -> None:
    with settings.engine().begin() as conn:
        conn.execute(
            sa.update(audit_events).where(audit_events.c.seq == 2).values(path="/x")
        )
    result = run(settings, "verify")
    assert result.exit_code == 1
    assert "FAILED: seq 2: modified" in result.stdout


def test_verify_in_worker_processes_gives_the_same_report(
    settings: FakeSettings,
) -> None:
    with settings.engine().begin() as conn:
        conn.execute(
            sa.update(audit_events).where(audit_events.c.seq == 3).values(bytes=1)
        )
    one = run(settings, "verify", "--jobs", "1")
    two = run(settings, "verify", "--jobs", "2")
    assert one.exit_code == two.exit_code == 1
    assert "FAILED: seq 3: modified" in one.stdout
    assert two.stdout == one.stdout


def test_verify_refuses_a_job_count_below_one(settings: FakeSettings) -> None:
    result = run(settings, "verify", "--jobs", "0")
    assert result.exit_code == 2
    assert "'--jobs'" in result.stderr and "0 is not in the range" in result.stderr


def test_a_kept_checkpoint_file_catches_a_cut_tail(
    settings: FakeSettings, tmp_path: Path
) -> None:
    kept = tmp_path / "kept.json"
    assert run(settings, "checkpoint", "--output", str(kept)).exit_code == 0
    with settings.engine().begin() as conn:
        conn.execute(sa.delete(audit_events).where(audit_events.c.seq == 3))
        conn.execute(sa.text("DELETE FROM audit_checkpoints"))
    assert run(settings, "verify").exit_code == 0

    result = run(settings, "verify", "--checkpoint", str(kept))
    assert result.exit_code == 1
    assert "seq 3: truncated" in result.stdout


def test_export_records_the_act_and_verifies_offline(
    settings: FakeSettings, tmp_path: Path
) -> None:
    target = tmp_path / "export"
    result = run(settings, "export", str(target))
    assert result.exit_code == 0, result.output
    assert "exported 4 entries" in result.stdout

    admin = run(settings, "log", "--format", "jsonl", "--action", "admin").stdout
    details = json.loads(admin)["details"]
    assert '"act": "audit export"' in details and '"operator"' in details

    pem = tmp_path / "audit.pem"
    pem.write_text(run(settings, "public-key").stdout)
    verified = run(settings, "verify", "--file", str(target), "--public-key", str(pem))
    assert verified.exit_code == 0, verified.output

    events = target / "events.jsonl"
    events.write_bytes(events.read_bytes().replace(b"500", b"501"))
    assert run(settings, "verify", "--file", str(target)).exit_code == 1


def test_a_missing_key_is_one_clear_line(settings: FakeSettings) -> None:
    settings.audit_key_path.unlink()
    result = run(settings, "checkpoint")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: no key file at {settings.audit_key_path}"
    ]


def test_an_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    settings = FakeSettings(
        "postgresql+psycopg://postgres@127.0.0.1:1/censusdrop", tmp_path / "k"
    )
    result = run(settings, "log")
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: audit database:")


@pytest.mark.parametrize(
    "command",
    ["log", "downloads", "sessions", "verify", "checkpoint", "export", "public-key"],
)
def test_every_command_has_an_example_in_its_help(command: str) -> None:
    result = CliRunner().invoke(audit, [command, "--help"])
    assert result.exit_code == 0
    assert f"Example: censusdrop audit {command}" in result.output
