"""``round archive``: a self-verifying copy of everything a round produced.

Layout of an archive directory::

    manifest.json             signed list of every file below (see manifest)
    manifest.sig              Ed25519 signature of manifest.json
    public-key.pem            the audit signing key's public half
    files/<area>/current/<path>      each current file, in plaintext
    files/<area>/versions/<id>       each earlier version, by version id
    reports/<area>/<report id>.json  each pre-review report of the area
    custody/ledger.json       custody items of the round's prefectures and
                              the confirmations that closed them
    custody/statements/<path> those confirmations' signed statements
    audit/events.jsonl        the audit chain up to a signed checkpoint,
    audit/checkpoint.json     as ``audit export`` writes it (a chain can
    audit/public-key.pem      only be checked whole)
    audit/round-events.jsonl  the lines of events.jsonl about this round

Every file is read through the storage layer, so each byte was
authenticated, and its SHA-256 is checked against the version index before
it is listed. The archive is written first; only then are the record (in
the database and the audit trail) and the prefectures' move to
``archived`` made. Before it is written, files of areas that belong to the
round but are not under its key (written after it was archived, or by an
upload that began before the round existed) are re-keyed.

Trusts: the storage layer, the database and the audit signing key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from typing import BinaryIO

import sqlalchemy as sa

from censusdrop.audit import events
from censusdrop.audit.chain import format_time
from censusdrop.audit.checkpoint import SigningKey
from censusdrop.audit.events import AuditEvent
from censusdrop.audit.export import EVENTS_FILE
from censusdrop.audit.export import export_log
from censusdrop.server.custody import CUSTODY_AREA
from censusdrop.server.custody import Confirmation
from censusdrop.server.custody import Item
from censusdrop.server.roundmodel import Round
from censusdrop.server.roundmodel import RoundError
from censusdrop.server.schema import prereview_reports
from censusdrop.server.schema import round_purges
from censusdrop.server.services import Services
from censusdrop.server.storage.streams import COPY_CHUNK
from censusdrop.server.storage.streams import Download
from censusdrop.server.storage.streams import VersionInfo

from . import manifest
from . import records
from .keys import RekeyReport
from .keys import area_versions
from .keys import owned_areas
from .keys import rekey_area
from .keys import round_key_name

ARCHIVE_ACTION = "round_archive"

Progress = Callable[[int], None]


@dataclasses.dataclass(frozen=True)
class ArchiveResult:
    archive_id: int
    directory: Path
    files: int
    bytes: int
    manifest_sha256: str
    rekeyed: RekeyReport
    archived: tuple[str, ...]


def planned_bytes(services: Services, round_: Round) -> int:
    """About how many bytes an archive of the round copies (for progress)."""
    return sum(
        version.size
        for entry in round_.entries
        for version in area_versions(services.engine, entry.prefecture)
    )


def write_archive(
    services: Services,
    round_: Round,
    dest: Path,
    *,
    key: SigningKey,
    at: dt.datetime,
    operator: str,
    forced_reason: str | None = None,
    progress: Progress | None = None,
) -> ArchiveResult:
    """Write the archive of ``round_`` into ``dest`` (new or empty), record
    it and move the round's prefectures to ``archived``."""
    _check_archivable(services, round_, forced_reason)
    _prepare(dest)
    codes = [entry.prefecture for entry in round_.entries]
    owned = owned_areas(services.engine, round_.id, codes)
    rekeyed = _rekey(services, round_, owned)

    # What is copied is what the content digest describes: a write made
    # meanwhile shows as a difference when a purge compares them.
    listed = {area: area_versions(services.engine, area) for area in codes}
    content_sha256 = records.content_digest(
        version for area in owned for version in listed[area]
    )
    described: dict[str, manifest.FileEntry] = {}
    for area in codes:
        described.update(_copy_area(services, listed[area], dest, progress))
    _write_reports(services, codes, dest)
    _write_custody(services, codes, dest, progress)
    _write_audit(services, round_, key, dest, at)
    entries = _describe(dest, described)
    content = _content(round_, entries, at, operator, forced_reason, key)
    manifest_sha256 = _seal(dest, content | {"content_sha256": content_sha256}, key)

    size = sum(entry.size for entry in entries)
    archive_id = _record(
        services,
        round_,
        round_id=round_.id,
        path=str(dest.resolve()),
        manifest_sha256=manifest_sha256,
        content_sha256=content_sha256,
        files=len(entries),
        bytes=size,
        created_at=at,
        operator=operator,
        forced_reason=forced_reason,
    )
    moved = services.rounds.archive(
        round_.name, at=at, actor=operator, forced_reason=forced_reason
    )
    return ArchiveResult(
        archive_id,
        dest,
        len(entries),
        size,
        manifest_sha256,
        rekeyed,
        tuple(t.prefecture for t in moved),
    )


def is_purged(engine: sa.Engine, round_id: int) -> bool:
    query = sa.select(round_purges.c.round_id).where(
        round_purges.c.round_id == round_id
    )
    with engine.connect() as conn:
        return conn.execute(query).first() is not None


# --- steps


def _check_archivable(
    services: Services, round_: Round, forced_reason: str | None
) -> None:
    if is_purged(services.engine, round_.id):
        raise RoundError(f"round {round_.name} was purged: nothing left to archive")
    pending = [e.prefecture for e in round_.entries if e.state not in _DONE]
    if pending and not forced_reason:
        raise RoundError(
            f"not passed yet: {', '.join(pending)}; "
            "give --force with --reason to archive anyway"
        )


_DONE = ("passed", "archived")


def _rekey(services: Services, round_: Round, owned: list[str]) -> RekeyReport:
    """Bring files of the round's areas under another key under its own."""
    rekeyed = RekeyReport()
    for area in owned:
        rekeyed.add(rekey_area(services.storage, area, round_key_name(round_.id)))
    if rekeyed.problems:
        raise RoundError("cannot re-key: " + "; ".join(rekeyed.problems[:5]))
    return rekeyed


def _seal(dest: Path, content: dict[str, Any], key: SigningKey) -> str:
    """Write and sign the manifest; its SHA-256."""
    body = manifest.encode(content)
    _write(dest / manifest.MANIFEST_FILE, body)
    _write(dest / manifest.SIGNATURE_FILE, manifest.sign(key, body))
    _write(dest / manifest.PUBLIC_KEY_FILE, key.public.public_pem().encode())
    _fsync_tree(dest)
    return hashlib.sha256(body).hexdigest()


def _record(services: Services, round_: Round, **values: Any) -> int:
    """The archive's row and audit event, once it is complete on disk."""
    with services.engine.begin() as conn:
        archive_id = records.add(conn, **values)
    details = {"round": round_.name, "archive": archive_id} | {
        name: value
        for name, value in values.items()
        if name not in ("round_id", "created_at", "operator")
    }
    services.audit.emit_durable(
        AuditEvent(
            action=ARCHIVE_ACTION,
            at=values["created_at"],
            account=values["operator"],
            details=details,
        )
    )
    return archive_id


def _prepare(dest: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise RoundError(f"{dest} exists and is not an empty folder")
    try:
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise RoundError(f"cannot create {dest}: {exc.strerror}") from exc


def _copy_area(
    services: Services,
    versions: list[VersionInfo],
    dest: Path,
    progress: Progress | None,
) -> dict[str, manifest.FileEntry]:
    """Versions of one area into the archive, checked against the index."""
    storage = services.storage
    described = {}
    for version in versions:
        area = version.area
        if version.state == "current":
            name = f"files/{area}/current/{version.path}"
            reader = storage.open_read(area, version.path)
        else:
            name = f"files/{area}/versions/{version.id}"
            reader = storage.open_version(area, version.path, version.id)
        digest = _copy(reader, dest / name, progress)
        if digest != version.sha256:
            raise RoundError(f"{area}/{version.path} does not match its index entry")
        described[name] = _entry_of(name, version)
    return described


def _entry_of(name: str, version: VersionInfo) -> manifest.FileEntry:
    return manifest.FileEntry(
        file=name,
        size=version.size,
        sha256=version.sha256,
        area=version.area,
        path=version.path,
        version=version.id,
        number=version.number,
        state=version.state,
    )


def _write_reports(services: Services, codes: list[str], dest: Path) -> None:
    query = (
        sa.select(prereview_reports)
        .where(prereview_reports.c.prefecture.in_(codes))
        .order_by(prereview_reports.c.id)
    )
    with services.engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(query)]
    for row in rows:
        name = f"reports/{row['prefecture']}/{row['id']}.json"
        _write(dest / name, _json_bytes(row))


def _write_custody(
    services: Services, codes: list[str], dest: Path, progress: Progress | None
) -> None:
    ledger = services.custody
    items = [item for item in ledger.items() if item.prefecture in codes]
    closing = {item.confirmation for item in items}
    confirmations = [c for c in ledger.confirmations() if c.id in closing]
    _write(dest / "custody" / "ledger.json", _json_bytes(_ledger(items, confirmations)))
    for confirmation in confirmations:
        reader = services.storage.open_version(
            CUSTODY_AREA, confirmation.evidence_path, confirmation.evidence_version
        )
        name = f"custody/statements/{confirmation.evidence_path}"
        _copy(reader, dest / name, progress)


def _ledger(items: list[Item], confirmations: list[Confirmation]) -> dict[str, Any]:
    return {
        "items": [dataclasses.asdict(item) for item in items],
        "confirmations": [dataclasses.asdict(c) for c in confirmations],
    }


def _write_audit(
    services: Services, round_: Round, key: SigningKey, dest: Path, at: dt.datetime
) -> None:
    folder = dest / "audit"
    services.audit.flush(30)  # type: ignore[attr-defined]
    export_log(services.engine, key, folder, at)
    codes = {entry.prefecture for entry in round_.entries}
    since = format_time(round_.created_at)
    with (
        open(folder / EVENTS_FILE, encoding="utf-8", newline="") as lines,
        open(
            folder / manifest.ROUND_EVENTS_FILE, "w", encoding="utf-8", newline=""
        ) as out,
    ):
        for line in lines:
            if _concerns(json.loads(line), round_.name, codes, since):
                out.write(line)


def _concerns(row: dict[str, Any], name: str, codes: set[str], since: str) -> bool:
    """Whether an audit entry is about the round: names it, or acts on one
    of its prefectures since the round was created."""
    try:
        details = json.loads(row.get("details") or "{}")
    except ValueError:
        details = {}
    if isinstance(details, dict) and details.get("round") == name:
        return True
    if row.get("action") == events.ADMIN and row.get("account") == name:
        return True
    return row.get("prefecture") in codes and str(row.get("at")) >= since


def _describe(
    dest: Path, described: dict[str, manifest.FileEntry]
) -> list[manifest.FileEntry]:
    """Every file written, with its size and SHA-256 as it is on disk."""
    entries = []
    for name in sorted(_files_below(dest)):
        digest, size = manifest.sha256_file(dest / name)
        known = described.get(name)
        if known is not None and (known.sha256, known.size) != (digest, size):
            raise RoundError(f"{name} changed while the archive was written")
        entries.append(known or manifest.FileEntry(name, size, digest))
    return entries


def _content(
    round_: Round,
    entries: list[manifest.FileEntry],
    at: dt.datetime,
    operator: str,
    forced_reason: str | None,
    key: SigningKey,
) -> dict[str, Any]:
    return {
        "format": manifest.FORMAT,
        "version": manifest.FORMAT_VERSION,
        "round": {
            "id": round_.id,
            "name": round_.name,
            "created_at": format_time(round_.created_at),
            "prefectures": {e.prefecture: e.state for e in round_.entries},
        },
        "created_at": format_time(at),
        "operator": operator,
        "forced_reason": forced_reason,
        "key_id": key.key_id,
        "files": [entry.as_json() for entry in entries],
    }


# --- files


def _copy(reader: Download, target: Path, progress: Progress | None) -> str:
    """Copy a file out of storage; the SHA-256 of what was written."""
    hasher = hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with reader, target.open("xb") as out:
        while chunk := reader.read(COPY_CHUNK):
            hasher.update(chunk)
            out.write(chunk)
            if progress is not None:
                progress(len(chunk))
        _sync(out)
    return hasher.hexdigest()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with path.open("xb") as out:
        out.write(data)
        _sync(out)


def _sync(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())


def _json_bytes(data: Any) -> bytes:
    text = json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True, default=str)
    return (text + "\n").encode("utf-8")


def _files_below(root: Path) -> Iterator[str]:
    for folder, _dirs, files in os.walk(root):
        for name in files:
            relative = (Path(folder) / name).relative_to(root).as_posix()
            if relative not in manifest.META_FILES:
                yield relative


def _fsync_tree(root: Path) -> None:
    for folder, _dirs, _files in os.walk(root):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
