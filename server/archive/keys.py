"""Round keys: which key a prefecture's files are under, and re-keying.

Every round has a round key named after its database id, ``round-<id>``
(round names may hold upper case and dots, key names may not). A
prefecture's area *belongs* to the newest round it is in that has not been
purged. New files of an area are encrypted under that round's key while
the round is under way, under ``default`` once it is archived (and in an
area that belongs to no round); ``RoundKeyResolver`` answers this with one
query per upload.

When a prefecture joins a round, the files it already has (every version)
are re-encrypted under the round's key (``rekey_area``), so that
destroying the key covers them too. The chunks of a file cannot simply be
copied under a new header: every chunk's AAD is the digest of the whole
header, wrapped secret and round name included. A re-key therefore
decrypts and re-encrypts the file with a fresh secret, keeping its file id
(the id of its version) and chunk size, into a new file that is fsynced
and then renamed over the old one.

Trusts: the storage layer and its index. Guarantees: a file is replaced
only by a re-encryption whose plaintext hashed to the digest its index row
records, and only while that row still says the file is where it was
(checked inside a transaction that holds the row, so a commit, rename or
delete of that path waits). A copy of the data root taken before a re-key
still holds the old file, readable with the old key for as long as that
key exists.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import os
import uuid
from collections.abc import Callable
from collections.abc import Iterable
from pathlib import Path

import sqlalchemy as sa

from censusdrop.audit import events
from censusdrop.audit.events import AuditEvent
from censusdrop.audit.events import AuditSink
from censusdrop.audit.locking import lookup_connection
from censusdrop.server import roundmodel as rm
from censusdrop.server.roundmodel import Round
from censusdrop.server.schema import file_versions
from censusdrop.server.schema import round_prefectures
from censusdrop.server.schema import round_purges
from censusdrop.server.schema import rounds
from censusdrop.server.storage import index
from censusdrop.server.storage.crypto import DecryptingReader
from censusdrop.server.storage.crypto import EncryptingWriter
from censusdrop.server.storage.crypto import read_header
from censusdrop.server.storage.errors import StorageError
from censusdrop.server.storage.layout import fsync_dir
from censusdrop.server.storage.layout import header_round
from censusdrop.server.storage.partials import RESUME_PREFIX
from censusdrop.server.storage.partials import lock
from censusdrop.server.storage.store import Storage
from censusdrop.server.storage.streams import COPY_CHUNK
from censusdrop.server.storage.streams import VersionInfo

logger = logging.getLogger(__name__)

KEY_PREFIX = "round-"
REKEY_SUFFIX = ".rekey"
LIVE_STATES = ("current", "superseded", "deleted")
# Audit action of a re-key pass (actions are plain strings).
REKEY_ACTION = "round_rekey"

Progress = Callable[[int], None]


def round_key_name(round_id: int) -> str:
    """The name of a round's key in the keyring."""
    return f"{KEY_PREFIX}{round_id}"


@dataclasses.dataclass
class RekeyReport:
    """What a re-key pass did."""

    rekeyed: int = 0
    unchanged: int = 0
    partials_discarded: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)

    def add(self, other: RekeyReport) -> None:
        self.rekeyed += other.rekeyed
        self.unchanged += other.unchanged
        self.partials_discarded += other.partials_discarded
        self.problems.extend(other.problems)


class RoundKeyResolver:
    """The storage's ``key_resolver``: area -> round key name, or None for
    the default key. One query per call; call it once per upload."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def __call__(self, area: str) -> str | None:
        with lookup_connection(self.engine) as conn:
            owner = owning_round(conn, area)
        if owner is None or owner[1] == rm.ARCHIVED:
            return None
        return round_key_name(owner[0])


# Run for every upload: built once.
_OWNING_ROUND = (
    sa.select(rounds.c.id, round_prefectures.c.state)
    .join(round_prefectures, round_prefectures.c.round_id == rounds.c.id)
    .outerjoin(round_purges, round_purges.c.round_id == rounds.c.id)
    .where(
        round_prefectures.c.prefecture == sa.bindparam("prefecture"),
        round_purges.c.round_id.is_(None),
    )
    .order_by(rounds.c.id.desc())
    .limit(1)
)


def owning_round(conn: sa.Connection, prefecture: str) -> tuple[int, str] | None:
    """The newest round not purged that holds ``prefecture``: its id and
    the prefecture's state there."""
    row = conn.execute(_OWNING_ROUND, {"prefecture": prefecture}).first()
    return None if row is None else (int(row[0]), str(row[1]))


def owned_areas(engine: sa.Engine, round_id: int, areas: Iterable[str]) -> list[str]:
    """Those of ``areas`` that belong to round ``round_id``."""
    with engine.connect() as conn:
        return [
            area
            for area in areas
            if (owner := owning_round(conn, area)) and owner[0] == round_id
        ]


def area_versions(engine: sa.Engine, area: str) -> list[VersionInfo]:
    """Every version of an area not yet purged, by path and number."""
    query = (
        file_versions.select()
        .where(file_versions.c.area == area, file_versions.c.state.in_(LIVE_STATES))
        .order_by(file_versions.c.path, file_versions.c.number)
    )
    with engine.connect() as conn:
        return [_version(row._mapping) for row in conn.execute(query)]


def rekey_area(
    storage: Storage, area: str, key_name: str, progress: Progress | None = None
) -> RekeyReport:
    """Re-encrypt every version of ``area`` that is under another key, and
    drop idle partial uploads of the area made under another key."""
    storage.keyring.ensure_round_key(key_name)
    report = RekeyReport()
    _sweep_leftovers(storage.layout.staging)
    for version in area_versions(storage.engine, area):
        try:
            if _rekey_version(storage, version, key_name):
                report.rekeyed += 1
            else:
                report.unchanged += 1
        except (OSError, StorageError) as exc:
            report.problems.append(f"{area}/{version.path} ({version.id}): {exc}")
        if progress is not None:
            progress(version.size)
    report.partials_discarded = discard_partials(storage, area, keep_key=key_name)
    logger.info(
        "area re-keyed area=%s key=%s rekeyed=%d unchanged=%d problems=%d",
        area,
        key_name,
        report.rekeyed,
        report.unchanged,
        len(report.problems),
    )
    return report


def discard_partials(storage: Storage, area: str, *, keep_key: str | None) -> int:
    """Remove idle partial uploads of ``area`` (those under ``keep_key``
    stay); a partial being resumed right now is locked and left alone."""
    removed = 0
    staging = storage.layout.staging
    for part in sorted(staging.glob(f"{RESUME_PREFIX}*.part")):
        key = storage.partials.sidecar_key(part)
        if key is None or key.area != area:
            continue
        if keep_key is not None and header_round(part) == keep_key:
            continue
        if _unlink_if_idle(part):
            part.with_suffix(".json").unlink(missing_ok=True)
            removed += 1
    return removed


# --- one file


def _rekey_version(storage: Storage, version: VersionInfo, key_name: str) -> bool:
    """Re-encrypt one version under ``key_name``; False if already there."""
    source = storage.layout.blob(index.blob_of(version))
    if header_round(source) == key_name:
        return False
    staged = storage.layout.staging / f"{uuid.uuid4().hex}{REKEY_SUFFIX}"
    with staged.open("xb") as raw:
        try:
            lock(raw, wait=True)
            digest = _reencrypt(storage, source, raw, key_name)
            if digest != version.sha256:
                raise StorageError("content does not match its recorded SHA-256")
            _swap_in(storage, version, staged)
        finally:
            staged.unlink(missing_ok=True)
    return True


def _reencrypt(storage: Storage, source: Path, raw: object, key_name: str) -> str:
    """Decrypt ``source`` into a new encryption in ``raw``; the SHA-256 of
    the plaintext."""
    hasher = hashlib.sha256()
    with DecryptingReader(source.open("rb"), storage.keyring) as reader:
        header = reader.header
        writer = EncryptingWriter(
            raw,  # type: ignore[arg-type]
            storage.keyring,
            key_name,
            chunk_size=header.chunk_size,
            file_id=header.file_id,
        )
        while chunk := reader.read(COPY_CHUNK):
            hasher.update(chunk)
            writer.write(chunk)
    writer.finish()
    os.fsync(raw.fileno())  # type: ignore[attr-defined]
    return hasher.hexdigest()


def _swap_in(storage: Storage, version: VersionInfo, staged: Path) -> None:
    """Rename ``staged`` over the version's file if it is still where the
    index says, holding the index row meanwhile."""
    with storage.engine.begin() as conn:
        row = conn.execute(
            sa.select(file_versions.c.id)
            .where(file_versions.c.id == version.id)
            .with_for_update()
        ).first()
        now = index.by_id(conn, version.id)
        if row is None or now is None or now.state not in LIVE_STATES:
            raise StorageError("the version is gone")
        target = storage.layout.blob(index.blob_of(now))
        if _header_id(target) != version.id:
            raise StorageError("the file moved meanwhile; run the re-key again")
        os.replace(staged, target)
        fsync_dir(target.parent)


def _header_id(path: Path) -> str | None:
    try:
        with path.open("rb") as raw:
            return read_header(raw).file_id.hex()
    except (OSError, StorageError):
        return None


def _unlink_if_idle(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        if not lock(fd):
            return False
        path.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def _sweep_leftovers(staging: Path) -> None:
    """Remove re-key files a crashed pass left (their lock died with it)."""
    for leftover in staging.glob(f"*{REKEY_SUFFIX}"):
        _unlink_if_idle(leftover)


def _version(row: sa.RowMapping) -> VersionInfo:
    fields = (field.name for field in dataclasses.fields(VersionInfo))
    return VersionInfo(**{name: row[name] for name in fields})


def adopt_round(
    storage: Storage,
    audit: AuditSink,
    round_: Round,
    *,
    at: dt.datetime,
    progress: Progress | None = None,
) -> RekeyReport:
    """Create the round's key and bring the files of the areas that now
    belong to it under that key; recorded in the audit trail."""
    key_name = round_key_name(round_.id)
    storage.keyring.ensure_round_key(key_name)
    codes = [entry.prefecture for entry in round_.entries]
    report = RekeyReport()
    for area in owned_areas(storage.engine, round_.id, codes):
        report.add(rekey_area(storage, area, key_name, progress))
    audit.emit_durable(
        AuditEvent(
            action=REKEY_ACTION,
            at=at,
            outcome=events.OK if not report.problems else events.FAILED,
            details={
                "round": round_.name,
                "key": key_name,
                "rekeyed": report.rekeyed,
                "unchanged": report.unchanged,
                "partials_discarded": report.partials_discarded,
                "problems": report.problems[:50],
            },
        )
    )
    return report
