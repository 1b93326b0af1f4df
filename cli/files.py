"""``censusdrop files`` (history, restore) and ``censusdrop import``.

Thin over the storage layer: versions are read and restored through
``Storage``, and an import goes through ``censusdrop.server.storage.intake``,
so files from a carrier are encrypted and versioned like any upload. Every
change is recorded in the audit log, with the operating-system user, before
success is reported.
"""

from __future__ import annotations

import zoneinfo
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn
from rich.progress import DownloadColumn
from rich.progress import Progress
from rich.progress import TextColumn
from rich.progress import TimeRemainingColumn
from rich.progress import TransferSpeedColumn
from rich.table import Table

from censusdrop.cli.accounts import AdminSession
from censusdrop.cli.accounts import record
from censusdrop.cli.context import AppContext
from censusdrop.cli.context import operator
from censusdrop.cli.context import print_json
from censusdrop.config.prefectures import Prefecture
from censusdrop.config.prefectures import PrefectureError
from censusdrop.server import names
from censusdrop.server.filesystem import REPORT_NAMES
from censusdrop.server.services import Services
from censusdrop.server.storage import intake
from censusdrop.server.storage.errors import StorageError
from censusdrop.server.storage.store import VersionInfo

pass_app = click.make_pass_decorator(AppContext)


@click.group("files")
def files_group() -> None:
    """Versions of the files in a prefecture's area."""


@files_group.command("history")
@click.argument("prefecture")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def history(app: AppContext, prefecture: str, path: str, as_json: bool) -> None:
    """List every version of a file, newest first.

    \b
    Example:
      censusdrop files history 武汉市 18.普查成果/普查公报.docx
    """
    with AdminSession(app) as services:
        area = _prefecture(services, prefecture)
        path = _path(path)
        versions = services.storage.history(area.code, path)
    if not versions:
        raise click.ClickException(f"{area.name}: no version of {path} is known")
    if as_json:
        print_json([_as_dict(version) for version in versions])
        return
    _print_history(f"{area.name} {path}", versions, app.timezone)


@files_group.command("restore")
@click.argument("prefecture")
@click.argument("path")
@click.argument("version")
@pass_app
def restore(app: AppContext, prefecture: str, path: str, version: str) -> None:
    """Make an earlier version current again (as a new version).

    VERSION is a version number from ``files history`` or a version id (or
    a unique start of one). The version it replaces is kept.

    \b
    Example:
      censusdrop files restore 武汉市 18.普查成果/普查公报.docx 2
    """
    with AdminSession(app) as services:
        area = _prefecture(services, prefecture)
        path = _path(path)
        chosen = _choose(services.storage.history(area.code, path), version, path)
        try:
            restored = services.storage.restore(
                area.code, path, chosen.id, f"admin:{operator()}"
            )
        except StorageError as exc:
            raise click.ClickException(f"{path}: {exc}") from exc
        record(
            services,
            "files.restore",
            area.code,
            path=path,
            restored=chosen.id,
            version=restored.id,
            sha256=restored.sha256,
        )
    click.echo(
        f"{area.name} {path}: version {chosen.number} restored"
        f" as version {restored.number} ({restored.id})"
    )


@click.command("import")
@click.argument("prefecture")
@click.argument(
    "source_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@pass_app
def import_command(app: AppContext, prefecture: str, source_dir: Path) -> None:
    """Bring a folder tree (a USB drive, a decrypted carrier) into an area.

    Files are encrypted and versioned like uploads; a file whose content
    equals the current version is left alone, so running it again is safe.
    Links, special files, unreadable files and names the server refuses are
    skipped and listed.

    \b
    Example:
      censusdrop import 恩施州 /media/usb/恩施州验收材料
    """
    with AdminSession(app) as services:
        area = _prefecture(services, prefecture)
        items, skipped = intake.survey(source_dir, REPORT_NAMES)
        services.storage.prepare(sweep=False)
        services.storage.ensure_area(area.code)
        report = intake.IntakeReport()
        try:
            report = _bring_in(services, area, items)
        finally:
            report.skipped[:0] = skipped
            record(services, "files.import", area.code, **_summary(source_dir, report))
    _print_report(area, report)


def _bring_in(
    services: Services, area: Prefecture, items: list[intake.Item]
) -> intake.IntakeReport:
    total = sum(item.size for item in items)
    columns = (
        TextColumn("importing"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("import", total=total)
        return intake.bring_in(
            services.storage,
            area.code,
            items,
            f"import:{operator()}",
            progress=lambda count: bar.advance(task, count),
        )


def _print_history(title: str, versions: list[VersionInfo], timezone: str) -> None:
    zone = zoneinfo.ZoneInfo(timezone)
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("version", overflow="fold")  # ids are copied: never cut
    table.add_column("size", justify="right")
    table.add_column("sha256")
    table.add_column(f"time ({timezone})", no_wrap=True)
    table.add_column("account")
    table.add_column("state")
    for v in versions:
        local = v.created_at.astimezone(zone)
        table.add_row(
            str(v.number),
            v.id,
            str(v.size),
            v.sha256[:12],
            local.strftime("%Y-%m-%d %H:%M:%S"),
            v.account or "-",
            v.state,
        )
    Console().print(table)


def _print_report(area: Prefecture, report: intake.IntakeReport) -> None:
    size = sum(version.size for version in report.imported)
    click.echo(
        f"{area.name}: {len(report.imported)} files imported ({size} bytes),"
        f" {len(report.unchanged)} unchanged, {report.folders} folders created,"
        f" {len(report.skipped)} skipped"
    )
    for skip in report.skipped:
        click.echo(f"  skipped {skip.source}: {skip.reason}")


def _summary(source: Path, report: intake.IntakeReport) -> dict[str, Any]:
    return {
        "source": str(source),
        "imported": [
            {"path": v.path, "version": v.id, "sha256": v.sha256}
            for v in report.imported
        ],
        "unchanged": len(report.unchanged),
        "folders": report.folders,
        "skipped": [{"source": s.source, "reason": s.reason} for s in report.skipped],
    }


def _prefecture(services: Services, key: str) -> Prefecture:
    try:
        return services.prefectures.find(key)
    except PrefectureError as exc:
        raise click.ClickException(str(exc)) from exc


def _path(text: str) -> str:
    try:
        return names.normalize_path(text).lstrip("/")
    except names.NameRefused as exc:
        raise click.ClickException(f"{text!r}: {exc.rule}: {exc.reason}") from exc


def _choose(versions: list[VersionInfo], wanted: str, path: str) -> VersionInfo:
    if wanted.isdigit():
        for version in versions:
            if version.number == int(wanted):
                return version
    matches = [v for v in versions if v.id.startswith(wanted.lower())]
    if len(wanted) >= 6 and len(matches) == 1:
        return matches[0]
    if len(matches) > 1 and len(wanted) >= 6:
        raise click.ClickException(f"{wanted!r} matches several versions of {path}")
    raise click.ClickException(
        f"no version {wanted!r} of {path} (see 'censusdrop files history')"
    )


def _as_dict(version: VersionInfo) -> dict[str, Any]:
    return {
        "number": version.number,
        "id": version.id,
        "size": version.size,
        "sha256": version.sha256,
        "created_at": version.created_at.isoformat(),
        "account": version.account,
        "state": version.state,
    }
