"""Round archives in the database: written, verified, and what they cover.

An archive row holds the SHA-256 of the archive's signed manifest and of
the round's *content* when it was written: every version (area, path,
number, id, SHA-256, state) of the areas that belong to the round. A purge
compares that content digest with the index as it is now, so an archive
covers the round only while nothing was written, deleted or restored
since.

Trusts: the database.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterable

import sqlalchemy as sa

from censusdrop.audit.events import AuditEvent
from censusdrop.audit.events import AuditSink
from censusdrop.server.schema import round_archives
from censusdrop.server.schema import rounds
from censusdrop.server.storage.streams import VersionInfo

VERIFIED_ACTION = "round_archive_verified"


@dataclasses.dataclass(frozen=True)
class ArchiveRecord:
    id: int
    round_id: int
    path: str
    manifest_sha256: str
    content_sha256: str
    files: int
    bytes: int
    created_at: dt.datetime
    operator: str
    forced_reason: str | None
    verified_at: dt.datetime | None


def content_digest(versions: Iterable[VersionInfo]) -> str:
    """SHA-256 over what the index says the round holds."""
    rows = sorted((v.area, v.path, v.number, v.id, v.sha256, v.state) for v in versions)
    text = json.dumps(rows, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def add(conn: sa.Connection, **values: object) -> int:
    """Record a written archive; its id."""
    return int(
        conn.execute(
            round_archives.insert().values(**values).returning(round_archives.c.id)
        ).scalar_one()
    )


def of_round(engine: sa.Engine, round_id: int) -> list[ArchiveRecord]:
    """The round's archives, oldest first."""
    query = (
        sa.select(round_archives)
        .where(round_archives.c.round_id == round_id)
        .order_by(round_archives.c.id)
    )
    with engine.connect() as conn:
        return [_record(row) for row in conn.execute(query)]


def by_manifest(engine: sa.Engine, manifest_sha256: str) -> list[ArchiveRecord]:
    query = sa.select(round_archives).where(
        round_archives.c.manifest_sha256 == manifest_sha256
    )
    with engine.connect() as conn:
        return [_record(row) for row in conn.execute(query)]


def mark_verified(engine: sa.Engine, archive_id: int, at: dt.datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            round_archives.update()
            .where(round_archives.c.id == archive_id)
            .values(verified_at=at)
        )


def _round_name(engine: sa.Engine, round_id: int) -> str | None:
    query = sa.select(rounds.c.name).where(rounds.c.id == round_id)
    with engine.connect() as conn:
        name = conn.execute(query).scalar()
    return None if name is None else str(name)


def _record(row: sa.Row[tuple[object, ...]]) -> ArchiveRecord:
    fields = (field.name for field in dataclasses.fields(ArchiveRecord))
    return ArchiveRecord(**{name: row._mapping[name] for name in fields})


def record_verification(
    engine: sa.Engine,
    audit: AuditSink,
    manifest_sha256: str,
    *,
    at: dt.datetime,
    operator: str,
) -> list[int]:
    """Mark the archives whose manifest has this digest as verified at
    ``at`` (audited); the ids marked, none if the archive is unknown."""
    marked = []
    for record in by_manifest(engine, manifest_sha256):
        mark_verified(engine, record.id, at)
        audit.emit_durable(
            AuditEvent(
                action=VERIFIED_ACTION,
                at=at,
                account=operator,
                details={
                    "round": _round_name(engine, record.round_id),
                    "archive": record.id,
                    "path": record.path,
                    "manifest_sha256": manifest_sha256,
                },
            )
        )
        marked.append(record.id)
    return marked
