"""``round purge``: destroy a round's material on the server for good.

Order of work, each step safe to repeat if the process dies:

1. checks: the round has an archive that was verified and still covers it
   (the version index of its areas has not changed since: see
   ``censusdrop.server.archive.records``), and no custody item of its
   prefectures is still open. ``force`` with a reason overrides these two,
   and the reason is recorded;
2. what a crash left in staging is dealt with first (the storage sweep:
   a committed upload goes into its area, an interrupted one becomes a
   partial or, too small to resume, is removed), so that nothing of the
   round's stays behind in staging;
3. the round key ``round-<id>`` is destroyed (tombstone, overwrite,
   unlink: ``Keyring.destroy_round_key``). From here on no file encrypted
   under it can be decrypted, from the data root or from any copy of it
   and of the database taken earlier;
4. the files are removed: current files, earlier versions and partial
   uploads of every area that belongs to the round;
5. the index rows of those versions are kept, marked ``purged``: path,
   size, SHA-256, account and time stay as the record of what was
   destroyed; a ``round_purges`` row closes the round;
6. the destruction record: an audit event (``round_purge``) and, right
   after it, a checkpoint signed with the audit key.

An area whose prefecture joined a newer round belongs to that round (its
files were re-keyed to that round's key) and is left alone. What stays on
purpose: the custody ledger and the reviewers' signed statements (area
``_custody``, under the default key: they are the record of the round's
end), the pre-review reports in the database, and the audit trail.

Trusts: the database, the keyring and the storage layer.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import shutil
from pathlib import Path

from censusdrop.audit.checkpoint import Checkpoint
from censusdrop.audit.checkpoint import SigningKey
from censusdrop.audit.checkpoint import make_checkpoint
from censusdrop.audit.events import AuditEvent
from censusdrop.server.archive import records
from censusdrop.server.archive.keys import LIVE_STATES
from censusdrop.server.archive.keys import area_versions
from censusdrop.server.archive.keys import discard_partials
from censusdrop.server.archive.keys import owned_areas
from censusdrop.server.archive.keys import round_key_name
from censusdrop.server.archive.writer import is_purged
from censusdrop.server.roundmodel import Round
from censusdrop.server.roundmodel import RoundError
from censusdrop.server.schema import file_versions
from censusdrop.server.schema import round_purges
from censusdrop.server.services import Services
from censusdrop.server.storage.errors import KeyNotFound
from censusdrop.server.storage.layout import header_round

logger = logging.getLogger(__name__)

PURGE_ACTION = "round_purge"


class PurgeRefused(RoundError):
    """The round may not be purged now; the message lists every reason."""


@dataclasses.dataclass(frozen=True)
class PurgeResult:
    round: str
    key_name: str
    key_destroyed: bool
    areas: tuple[str, ...]
    left_to_newer_rounds: tuple[str, ...]
    versions: int
    files_removed: int
    not_under_round_key: int
    forced_reason: str | None
    checkpoint: Checkpoint


def purge_refusals(services: Services, round_: Round) -> list[str]:
    """Why the round may not be purged now (empty: it may)."""
    reasons = []
    codes = [entry.prefecture for entry in round_.entries]
    archive = _covering_archive(services, round_)
    if archive is None:
        reasons.append(_archive_problem(services, round_))
    open_items = [
        i for i in services.custody.items(open_only=True) if i.prefecture in codes
    ]
    if open_items:
        reviewers = sorted({item.reviewer for item in open_items})
        reasons.append(
            f"{len(open_items)} custody item(s) not yet confirmed returned or "
            f"deleted (reviewers: {', '.join(reviewers)})"
        )
    return reasons


def purge_round(
    services: Services,
    name: str,
    *,
    key: SigningKey,
    at: dt.datetime,
    operator: str,
    forced_reason: str | None = None,
) -> PurgeResult:
    """Destroy the round's key, then its files; record it, signed."""
    round_ = services.rounds.get(name)
    if is_purged(services.engine, round_.id):
        raise PurgeRefused(f"round {name} was already purged")
    reasons = purge_refusals(services, round_)
    if reasons and not forced_reason:
        raise PurgeRefused(
            "refused: " + "; ".join(reasons) + " (--force with --reason overrides)"
        )
    codes = [entry.prefecture for entry in round_.entries]
    areas = owned_areas(services.engine, round_.id, codes)
    archive = _covering_archive(services, round_)
    key_name = round_key_name(round_.id)
    stray = sum(_not_under(services, area, key_name) for area in areas)

    # What a crash left in staging first: a committed upload goes into its
    # area (and with it below), an interrupted one with a sidecar becomes
    # a partial (discarded below), one without (a small one) is removed.
    removed = services.storage.sweep(at=at, grace=dt.timedelta(0))
    destroyed = _destroy_key(services, key_name)
    removed += sum(_remove_area(services, area) for area in areas)
    versions = _mark_purged(
        services,
        areas,
        round_id=round_.id,
        purged_at=at,
        operator=operator,
        key_name=key_name,
        archive_id=None if archive is None else archive.id,
        forced_reason=forced_reason,
        files_removed=removed,
    )
    result_details = {
        "round": name,
        "key": key_name,
        "key_destroyed": destroyed,
        "areas": areas,
        "left_to_newer_rounds": [c for c in codes if c not in areas],
        "versions": versions,
        "files_removed": removed,
        "not_under_round_key": stray,
        "archive": None if archive is None else archive.id,
        "manifest_sha256": None if archive is None else archive.manifest_sha256,
        "forced_reason": forced_reason,
        "refusals_overridden": reasons if forced_reason else [],
    }
    services.audit.emit_durable(
        AuditEvent(action=PURGE_ACTION, at=at, account=operator, details=result_details)
    )
    checkpoint = make_checkpoint(services.engine, key, at)
    logger.warning(
        "round purged round=%s key=%s versions=%d files=%d forced=%s",
        name,
        key_name,
        versions,
        removed,
        forced_reason is not None,
    )
    return PurgeResult(
        round=name,
        key_name=key_name,
        key_destroyed=destroyed,
        areas=tuple(areas),
        left_to_newer_rounds=tuple(c for c in codes if c not in areas),
        versions=versions,
        files_removed=removed,
        not_under_round_key=stray,
        forced_reason=forced_reason,
        checkpoint=checkpoint,
    )


# --- checks


def _covering_archive(
    services: Services, round_: Round
) -> records.ArchiveRecord | None:
    """The newest verified archive whose content is the round's content now."""
    current = _content_now(services, round_)
    for archive in reversed(records.of_round(services.engine, round_.id)):
        if archive.verified_at is not None and archive.content_sha256 == current:
            return archive
    return None


def _archive_problem(services: Services, round_: Round) -> str:
    archives = records.of_round(services.engine, round_.id)
    if not archives:
        return f"round {round_.name} has no archive (censusdrop round archive)"
    if all(archive.verified_at is None for archive in archives):
        return (
            f"the archive of {round_.name} was not verified "
            "(censusdrop round verify-archive)"
        )
    return f"the files of {round_.name} changed since its verified archive"


def _content_now(services: Services, round_: Round) -> str:
    codes = [entry.prefecture for entry in round_.entries]
    areas = owned_areas(services.engine, round_.id, codes)
    return records.content_digest(
        version for area in areas for version in area_versions(services.engine, area)
    )


# --- destruction


def _destroy_key(services: Services, key_name: str) -> bool:
    """Destroy the round key; False if it never existed."""
    try:
        services.storage.keyring.destroy_round_key(key_name)
    except KeyNotFound:
        logger.warning("round key never existed key=%s", key_name)
        return False
    return True


def _not_under(services: Services, area: str, key_name: str) -> int:
    """How many files of the area are under another key than the round's
    (not crypto-shredded by the purge, only removed)."""
    layout = services.storage.layout
    count = 0
    for folder in (layout.area_dir(area), layout.root / "versions" / area):
        count += sum(header_round(path) != key_name for path in _files(folder))
    return count


def _remove_area(services: Services, area: str) -> int:
    """Remove every file of ``area`` (current, versions, partials)."""
    storage = services.storage
    layout = storage.layout
    removed = 0
    for folder in (layout.area_dir(area), layout.root / "versions" / area):
        removed += sum(1 for _ in _files(folder))
        shutil.rmtree(folder, ignore_errors=True)
    storage.ensure_area(area)
    removed += discard_partials(storage, area, keep_key=None)
    return removed


def _mark_purged(services: Services, areas: list[str], **purge: object) -> int:
    """Mark the areas' versions ``purged`` and close the round; returns
    how many versions were marked."""
    with services.engine.begin() as conn:
        versions = conn.execute(
            file_versions.update()
            .where(
                file_versions.c.area.in_(areas),
                file_versions.c.state.in_(LIVE_STATES),
            )
            .values(state="purged")
        ).rowcount
        conn.execute(round_purges.insert().values(versions=versions, **purge))
    return int(versions)


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [path for path in folder.rglob("*") if path.is_file()]
