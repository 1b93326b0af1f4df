"""``censusdrop audit``: the auditor's commands.

A thin layer over ``censusdrop.audit``: it parses options, converts times
between the configured zone (display, ``--since``/``--until`` without an
offset) and UTC (storage), and prints. Every domain error becomes one line
and a non-zero exit. ``ctx.obj`` must provide ``database_url``,
``audit_key_path`` (the Ed25519 signing key), ``timezone`` and ``engine()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import getpass
import json
import os
import sys
import time
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from typing import Protocol
from typing import cast

import click
import sqlalchemy as sa

from censusdrop.audit import events as ev
from censusdrop.audit.checkpoint import Checkpoint
from censusdrop.audit.checkpoint import VerifyKey
from censusdrop.audit.checkpoint import load_signing_key
from censusdrop.audit.checkpoint import load_verify_key
from censusdrop.audit.checkpoint import make_checkpoint
from censusdrop.audit.checkpoint import read_checkpoint_file
from censusdrop.audit.checkpoint import write_checkpoint_file
from censusdrop.audit.events import AuditError
from censusdrop.audit.events import AuditEvent
from censusdrop.audit.export import export_log
from censusdrop.audit.export import verify_export
from censusdrop.audit.query import EventFilter
from censusdrop.audit.query import StoredEvent
from censusdrop.audit.query import downloads
from censusdrop.audit.query import find_events
from censusdrop.audit.query import sessions
from censusdrop.audit.report import build_report
from censusdrop.audit.report import write_report
from censusdrop.audit.store import AuditLog
from censusdrop.audit.verify import VerifyResult
from censusdrop.audit.verify import verify_database
from censusdrop.cli.audit_output import DOWNLOAD_COLUMNS
from censusdrop.cli.audit_output import FORMATS
from censusdrop.cli.audit_output import LOG_COLUMNS
from censusdrop.cli.audit_output import SESSION_COLUMNS
from censusdrop.cli.audit_output import Printer
from censusdrop.cli.audit_report import report_choices
from censusdrop.cli.audit_report import report_options
from censusdrop.cli.audit_report import request_details

# A verification shows a progress bar once it has run this long.
PROGRESS_AFTER_S = 3.0


class AuditContext(Protocol):
    """What the ``audit`` group needs from ``ctx.obj``."""

    database_url: str
    audit_key_path: Path
    timezone: str

    def engine(self) -> sa.Engine: ...


@click.group("audit")
def audit() -> None:
    """Read, verify and export the tamper-evident audit log."""


def filter_options(func: Any) -> Any:
    """The filters shared by log, downloads and sessions."""
    options = [
        click.option("--account", help="Only this account."),
        click.option("--prefecture", help="Only this prefecture."),
        click.option("--since", help="From this time (local zone unless given)."),
        click.option("--until", help="Before this time (local zone unless given)."),
        click.option(
            "--limit", type=int, default=1000, show_default=True,
            help="At most this many lines; 0 for all.",
        ),
        click.option(
            "--format", "fmt", type=click.Choice(FORMATS), default="table",
            show_default=True, help="Output format.",
        ),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


@audit.command("log")
@filter_options
@click.option("--action", "actions", multiple=True, help="Only this action (repeat).")
@click.option("--path", help="Only paths containing this text.")
@click.option("--outcome", help="Only this outcome (ok, denied, failed, aborted).")
@click.option("--session", help="Only this session id.")
@click.pass_context
def log_command(
    ctx: click.Context, /, actions: tuple[str, ...], fmt: str, **fields: Any
) -> None:
    """Show audit events, oldest first.

    Example: censusdrop audit log --account expert --action download_start
    --since 2020-06-01 --format csv
    """
    app = _app(ctx)
    where = _filter(app, fields, actions)
    with _domain_errors():
        found = find_events(app.engine(), where)
        rows = (_event_row(event) for event in found)
        Printer(_zone(app), fmt, where.limit).show(rows, "Audit events", LOG_COLUMNS)


@audit.command("downloads")
@filter_options
@click.option("--path", help="Only paths containing this text.")
@click.pass_context
def downloads_command(ctx: click.Context, /, fmt: str, **fields: Any) -> None:
    """Show who downloaded which file and version, when, and whether the
    transfer completed.

    Example: censusdrop audit downloads --prefecture 420100 --since 2020-06-01
    """
    app = _app(ctx)
    where = _filter(app, fields)
    with _domain_errors():
        records = downloads(app.engine(), where)
    rows = (
        {
            "account": r.account, "path": r.path, "version": r.version,
            "started": r.started_at, "ended": r.ended_at, "bytes": r.bytes,
            "status": r.status, "sha256": r.digest, "session": r.session,
            "remote": r.remote,
        }
        for r in records
    )  # fmt: skip
    Printer(_zone(app), fmt, where.limit).show(rows, "Downloads", DOWNLOAD_COLUMNS)


@audit.command("sessions")
@filter_options
@click.pass_context
def sessions_command(ctx: click.Context, /, fmt: str, **fields: Any) -> None:
    """Show one line per FTP session with what happened in it.

    Example: censusdrop audit sessions --account expert --since 2020-06-01
    """
    app = _app(ctx)
    where = _filter(app, fields)
    with _domain_errors():
        summaries = sessions(app.engine(), where)
    rows = (dataclasses.asdict(s) for s in summaries)
    Printer(_zone(app), fmt, where.limit).show(rows, "Sessions", SESSION_COLUMNS)


@audit.command("verify")
@click.option(
    "--file", "export_path", type=click.Path(exists=True, path_type=Path),
    help="Verify an export (its directory or events.jsonl) instead of the DB.",
)  # fmt: skip
@click.option(
    "--checkpoint", "checkpoint_path", type=click.Path(exists=True, path_type=Path),
    help="Also check against this checkpoint file (one you kept).",
)  # fmt: skip
@click.option(
    "--public-key", "public_key_path", type=click.Path(exists=True, path_type=Path),
    help="Trust this public key (default: the configured signing key).",
)  # fmt: skip
@click.option(
    "--jobs", "-j", type=click.IntRange(min=1),
    help="Worker processes; 1 checks in this process (default: one per CPU "
    "for chains over 200,000 entries).",
)  # fmt: skip
@click.pass_context
def verify_command(
    ctx: click.Context,
    export_path: Path | None,
    checkpoint_path: Path | None,
    public_key_path: Path | None,
    jobs: int | None,
) -> None:
    """Recompute the hash chain and check it against signed checkpoints.

    Exit code 0: intact; 1: tampering found (the first bad seq is named) or
    verification impossible. A progress bar appears on a terminal when it
    takes more than a few seconds.

    Example: censusdrop audit verify --checkpoint kept/checkpoint-0612.json
    """
    app = _app(ctx)
    with _domain_errors():
        extra = read_checkpoint_file(checkpoint_path)[0] if checkpoint_path else None
        if export_path is not None:
            key = load_verify_key(public_key_path) if public_key_path else None
            result = verify_export(export_path, key, extra)
        else:
            key = _trusted_key(app, public_key_path)
            with _ProgressBar() as progress:
                result = verify_database(
                    app.engine(), key, extra=extra, jobs=jobs, progress=progress
                )
    _print_verification(result, app.timezone)
    ctx.exit(result.exit_code)


@audit.command("checkpoint")
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the checkpoint (with the public key) to this file.",
)  # fmt: skip
@click.pass_context
def checkpoint_command(ctx: click.Context, output: Path | None) -> None:
    """Sign the current head of the chain and store the checkpoint.

    Keep the --output file away from the server: with it, a later verify
    detects a cut-off or re-hashed chain even if the database was rewritten.

    Example: censusdrop audit checkpoint --output /media/usb/checkpoint.json
    """
    app = _app(ctx)
    with _domain_errors():
        key = load_signing_key(app.audit_key_path)
        checkpoint = make_checkpoint(app.engine(), key)
        if output is not None:
            write_checkpoint_file(checkpoint, output, key.public)
    click.echo(_describe_checkpoint(checkpoint, app.timezone))


@audit.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
def export_command(ctx: click.Context, directory: Path) -> None:
    """Export the whole log, a fresh signed checkpoint and the public key
    into DIRECTORY, for offline verification with 'audit verify --file'.

    Example: censusdrop audit export /media/usb/audit-2020-06-15
    """
    app = _app(ctx)
    with _domain_errors():
        key = load_signing_key(app.audit_key_path)
        engine = app.engine()
        _record_admin(engine, "audit export", {"directory": str(directory)})
        summary = export_log(engine, key, directory)
    click.echo(f"exported {summary.events} entries to {summary.directory}")
    click.echo(_describe_checkpoint(summary.checkpoint, app.timezone))


@audit.command("report")
@click.option(
    "--html", "html_path", required=True,
    type=click.Path(dir_okay=False, path_type=Path), help="Write the page here.",
)  # fmt: skip
@click.option(
    "--public-key", "public_key_path", type=click.Path(exists=True, path_type=Path),
    help="Trust this public key (default: the configured signing key).",
)  # fmt: skip
@report_choices
@click.pass_context
def report_command(
    ctx: click.Context, /, html_path: Path, public_key_path: Path | None, **choices: Any
) -> None:
    """Write the auditors' report: one self-contained HTML page (Chinese,
    printable, no network needed) with the chain verification, who accessed
    what and when, downloads, refusals and lockouts, and what deserves a
    look. Without --round or --from, it covers the whole log. Exit code 1:
    not written, or written but the chain failed verification.

    Example: censusdrop audit report --from 2020-09-28 --to 2020-10-11
    --html audit-report.html
    """
    app = _app(ctx)
    at = dt.datetime.now(dt.UTC)
    with _domain_errors():
        engine = app.engine()
        options = report_options(engine, app, _zone(app), at, **choices)
        key = _trusted_key(app, public_key_path)
        _record_admin(engine, "audit report", request_details(html_path, options))
        report = build_report(engine, key, options, at=at, operator=_os_user())
        write_report(report, html_path)
    found = report.findings.total
    click.echo(f"report written to {html_path} ({found} findings to look at)")
    if not report.verification.ok:
        problem = report.verification.problem
        click.echo(f"Error: chain verification FAILED: {problem}", err=True)
        ctx.exit(1)


@audit.command("public-key")
@click.pass_context
def public_key_command(ctx: click.Context) -> None:
    """Print the public half of the signing key, to hand to auditors.

    Example: censusdrop audit public-key > censusdrop-audit.pem
    """
    app = _app(ctx)
    with _domain_errors():
        key = load_verify_key(app.audit_key_path)
    click.echo(key.public_pem(), nl=False)
    click.echo(f"key id {key.key_id}", err=True)


def _app(ctx: click.Context) -> AuditContext:
    app = ctx.obj
    if app is None or not callable(getattr(app, "engine", None)):
        raise click.ClickException("audit commands need the censusdrop settings")
    return cast(AuditContext, app)


@contextlib.contextmanager
def _domain_errors() -> Iterator[None]:
    try:
        yield
    except AuditError as exc:
        raise click.ClickException(str(exc)) from exc
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise click.ClickException(f"audit database: {reason}") from exc


def _filter(
    app: AuditContext, fields: dict[str, Any], actions: tuple[str, ...] = ()
) -> EventFilter:
    zone = _zone(app)
    return EventFilter(
        account=fields.get("account"),
        prefecture=fields.get("prefecture"),
        actions=actions,
        path=fields.get("path"),
        outcome=fields.get("outcome"),
        session=fields.get("session"),
        since=_parse_time(fields.get("since"), zone, "--since"),
        until=_parse_time(fields.get("until"), zone, "--until"),
        limit=fields.get("limit") or None,
    )


def _zone(app: AuditContext) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(app.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise click.ClickException(f"unknown time zone {app.timezone!r}") from exc


def _parse_time(text: str | None, zone: dt.tzinfo, option: str) -> dt.datetime | None:
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter(
            "expected a date or time such as 2020-06-01 or 2020-06-01T08:30",
            param_hint=option,
        ) from exc
    return value if value.tzinfo else value.replace(tzinfo=zone)


def _show_time(value: dt.datetime | None, zone_name: str) -> str | None:
    if value is None:
        return None
    return value.astimezone(zoneinfo.ZoneInfo(zone_name)).isoformat(sep=" ")


def _event_row(event: StoredEvent) -> dict[str, Any]:
    row = dataclasses.asdict(event)
    row["details"] = json.dumps(event.details, ensure_ascii=False, sort_keys=True)
    return row


def _trusted_key(app: AuditContext, path: Path | None) -> VerifyKey:
    try:
        return load_verify_key(path or app.audit_key_path)
    except AuditError as exc:
        raise click.ClickException(
            f"{exc} (pass --public-key with the audit public key)"
        ) from exc


class _ProgressBar:
    """A progress bar on stderr for a long verification: it appears only on
    a terminal, and only once ``PROGRESS_AFTER_S`` have passed, so short
    runs and scripts see nothing."""

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._bar: Any = None
        self._shown = 0
        self._is_terminal = sys.stderr.isatty()

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            waited = time.monotonic() - self._started
            if not self._is_terminal or waited < PROGRESS_AFTER_S:
                return
            bar = click.progressbar(length=total, label="verifying", file=sys.stderr)
            self._bar = bar.__enter__()
        self._bar.update(done - self._shown)
        self._shown = done


def _print_verification(result: VerifyResult, zone_name: str) -> None:
    if result.problem is None:
        click.echo(
            f"OK: {result.events} entries verified, head seq {result.head_seq} "
            f"(hash {result.head_hash[:16]}…)"
        )
    else:
        click.echo(f"FAILED: {result.problem}")
        click.echo(f"{result.events} entries verified before it")
    if result.checkpoint is not None:
        click.echo("latest " + _describe_checkpoint(result.checkpoint, zone_name))
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)


def _describe_checkpoint(checkpoint: Checkpoint, zone_name: str) -> str:
    made = _show_time(checkpoint.made_at, zone_name)
    return (
        f"checkpoint: seq {checkpoint.seq}, head {checkpoint.head_hash[:16]}…, "
        f"made {made}, key id {checkpoint.key_id}"
    )


def _record_admin(engine: sa.Engine, act: str, details: dict[str, Any]) -> None:
    """Record an administrative act before doing it (fail closed), in the
    form the other admin commands use: ``act`` and ``operator`` (the
    operating-system user) in the details."""
    event = AuditEvent(
        action=ev.ADMIN, details={"act": act, "operator": _os_user(), **details}
    )
    AuditLog(engine).append([event])


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"
