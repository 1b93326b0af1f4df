"""``censusdrop round archive | verify-archive | purge``: the end of a round.

``archive`` writes a self-verifying copy of the round (layout in
``censusdrop.server.archive.writer``) and moves its prefectures to
``archived``; ``verify-archive`` checks such a copy offline and, when the
database is reachable, records that it verified; ``purge`` destroys the
round's key, then its files, once a verified archive covers the round and
nobody still holds its material (``censusdrop.server.purge``). Each is
recorded in the audit log with the operator. Registered under the
``round`` group by ``censusdrop.cli.rounds``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn
from rich.progress import DownloadColumn
from rich.progress import Progress
from rich.progress import TextColumn
from rich.progress import TimeRemainingColumn
from rich.progress import TransferSpeedColumn

from censusdrop.audit.checkpoint import KeyFileError
from censusdrop.audit.checkpoint import SigningKey
from censusdrop.audit.checkpoint import VerifyKey
from censusdrop.audit.checkpoint import load_signing_key
from censusdrop.audit.checkpoint import load_verify_key
from censusdrop.audit.events import AuditError
from censusdrop.cli.accounts import AdminSession
from censusdrop.cli.accounts import pass_app
from censusdrop.cli.context import AppContext
from censusdrop.cli.context import now
from censusdrop.cli.context import operator
from censusdrop.server.archive import records
from censusdrop.server.archive.verify import ArchiveCheck
from censusdrop.server.archive.verify import verify_archive
from censusdrop.server.archive.writer import planned_bytes
from censusdrop.server.archive.writer import write_archive
from censusdrop.server.purge import purge_round
from censusdrop.server.roundmodel import RoundError
from censusdrop.server.services import Services
from censusdrop.server.storage.errors import StorageError


@click.command("archive")
@click.argument("name")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Archive prefectures not yet passed.")
@click.option("--reason", help="Why --force (recorded in the audit log).")
@pass_app
def archive(
    app: AppContext, name: str, dest: Path, force: bool, reason: str | None
) -> None:
    """Write a self-verifying archive of a round into DEST (new or empty),
    then move its prefectures to archived.

    Prefectures not yet passed are refused, unless --force with --reason.

    \b
    Example:
      censusdrop round archive 2020-hubei /mnt/archive/2020-hubei
    """
    forced_reason = _forced_reason(force, reason)
    key = _signing_key(app)
    with _session(app) as services:
        round_ = services.rounds.get(name)
        with _bar("archiving", planned_bytes(services, round_)) as advance:
            done = write_archive(
                services,
                round_,
                dest,
                key=key,
                at=now(),
                operator=operator(),
                forced_reason=forced_reason,
                progress=advance,
            )
    click.echo(
        f"{name}: archive written to {done.directory}: {done.files} files, "
        f"{done.bytes} bytes; manifest SHA-256 {done.manifest_sha256}"
    )
    if done.rekeyed.rekeyed:
        click.echo(f"  {done.rekeyed.rekeyed} file(s) re-keyed to the round key first")
    if done.archived:
        click.echo(f"  archived: {' '.join(done.archived)}")
    click.echo(f"  next: censusdrop round verify-archive {done.directory}")


@click.command("verify-archive")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--public-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The audit public key you trust (PEM), to pin it.",
)
@pass_app
def verify_archive_command(
    app: AppContext, dest: Path, public_key: Path | None
) -> None:
    """Check an archive offline: signature, every file's size and SHA-256,
    no missing or extra file, the audit export. Exits 0 only if all is good.

    When the configuration and database are at hand, a good archive that
    the database knows is marked verified (a purge needs that).

    \b
    Example:
      censusdrop round verify-archive /mnt/archive/2020-hubei \\
        --public-key audit-public.pem
    """
    trusted = _verify_key(public_key)
    check = verify_archive(dest, trusted)
    for warning in check.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    for problem in check.problems:
        click.echo(f"problem: {problem}")
    if not check.ok:
        raise SystemExit(1)
    round_name = check.content.get("round", {}).get("name")
    click.echo(f"archive of round {round_name} verified: {check.files} files")
    _record_verification(app, check)


@click.command("purge")
@click.argument("name")
@click.option("--force", is_flag=True, help="Purge despite the refusals.")
@click.option("--reason", help="Why --force (recorded in the audit log).")
@pass_app
def purge(app: AppContext, name: str, force: bool, reason: str | None) -> None:
    """Destroy a round's material on the server: its key first (so no copy
    of the data root and database can be decrypted), then its files.

    Refused until a verified archive covers the round and every custody
    item of its prefectures is confirmed, unless --force with --reason.

    \b
    Example:
      censusdrop round purge 2020-hubei
    """
    forced_reason = _forced_reason(force, reason)
    key = _signing_key(app)
    with _session(app) as services:
        done = purge_round(
            services,
            name,
            key=key,
            at=now(),
            operator=operator(),
            forced_reason=forced_reason,
        )
    state = "destroyed" if done.key_destroyed else "did not exist"
    click.echo(
        f"{name}: round key {done.key_name} {state}; {done.versions} version(s) "
        f"purged, {done.files_removed} file(s) removed from the data root"
    )
    if done.left_to_newer_rounds:
        click.echo(
            "  left in place (now in a newer round): "
            + " ".join(done.left_to_newer_rounds)
        )
    if done.not_under_round_key:
        click.secho(
            f"warning: {done.not_under_round_key} removed file(s) were under "
            "another key: copies taken earlier stay readable",
            fg="yellow",
            err=True,
        )
    click.echo(
        f"  destruction record signed at audit seq {done.checkpoint.seq} "
        f"(key {done.checkpoint.key_id[:16]})"
    )


COMMANDS = (archive, verify_archive_command, purge)


# --- helpers


@contextlib.contextmanager
def _session(app: AppContext) -> Iterator[Services]:
    with AdminSession(app) as services:
        try:
            yield services
        except (RoundError, StorageError, AuditError, OSError) as exc:
            raise click.ClickException(str(exc)) from exc


@contextlib.contextmanager
def _bar(label: str, total: int) -> Iterator[Callable[[int], None]]:
    columns = (
        TextColumn(label),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda count: bar.advance(task, count)


def _forced_reason(force: bool, reason: str | None) -> str | None:
    if reason is not None and not reason.strip():
        raise click.UsageError("--reason must not be empty")
    if force and reason is None:
        raise click.UsageError("--force needs --reason (it is recorded)")
    if reason is not None and not force:
        raise click.UsageError("--reason goes with --force")
    return reason if force else None


def _signing_key(app: AppContext) -> SigningKey:
    try:
        return load_signing_key(app.audit_key_path)
    except KeyFileError as exc:
        raise click.ClickException(f"audit signing key: {exc}") from exc


def _verify_key(path: Path | None) -> VerifyKey | None:
    if path is None:
        return None
    try:
        return load_verify_key(path)
    except KeyFileError as exc:
        raise click.ClickException(f"--public-key: {exc}") from exc


def _record_verification(app: AppContext, check: ArchiveCheck) -> None:
    """Mark the archive verified if the database knows it; say if not."""
    if check.manifest_sha256 is None:
        return
    try:
        with AdminSession(app) as services:
            marked = records.record_verification(
                services.engine,
                services.audit,
                check.manifest_sha256,
                at=now(),
                operator=operator(),
            )
    except click.ClickException as exc:
        click.echo(f"  not recorded (no database at hand: {exc.message})")
        return
    if marked:
        click.echo(f"  recorded as verified (archive #{', #'.join(map(str, marked))})")
    else:
        click.echo("  not recorded: the database knows no archive with this manifest")
