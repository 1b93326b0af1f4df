"""The custody ledger: what each reviewer received, until they give it back.

Every download by a reviewer, complete or partial, is an item: reviewer,
prefecture, path, version, the version's SHA-256, bytes served, time. The
server adds items as downloads end (``add``, called off the event loop).
``confirm`` stores a reviewer's signed return-or-deletion statement through
the storage layer (encrypted and versioned like any upload, in the admin
area ``_custody``) and closes that reviewer's open items.

An open item becomes *outstanding* once the reviewer's access to it has
ended: at the end of the review window it was downloaded in, at the
reviewer's revocation, or at once for a download outside any review window
(as before rounds existed). ``outstanding(at)`` lists who owes what, and
for how many days.

Trusts: the database and the storage layer. The administrative acts are
audited by the commands that call this.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import sqlalchemy as sa

from censusdrop.audit.locking import read_connection
from censusdrop.server import names
from censusdrop.server.revocations import RevocationStore
from censusdrop.server.roundmodel import Round
from censusdrop.server.rounds import RoundStore
from censusdrop.server.schema import custody_confirmations
from censusdrop.server.schema import custody_items
from censusdrop.server.schema import file_versions
from censusdrop.server.storage.store import Storage

logger = logging.getLogger(__name__)

CUSTODY_AREA = "_custody"


class CustodyError(Exception):
    """A custody operation cannot be done; the message says why."""


@dataclasses.dataclass(frozen=True)
class ReviewerDownload:
    """A download by a reviewer, as the server reports it."""

    reviewer: str
    prefecture: str
    path: str
    version: str | None
    bytes: int
    complete: bool
    at: dt.datetime
    session: str | None = None


@dataclasses.dataclass(frozen=True)
class Item:
    id: int
    reviewer: str
    prefecture: str
    path: str
    version: str | None
    sha256: str | None
    bytes: int
    complete: bool
    downloaded_at: dt.datetime
    confirmation: int | None


@dataclasses.dataclass(frozen=True)
class Confirmation:
    id: int
    reviewer: str
    confirmed_at: dt.datetime
    operator: str
    evidence_name: str
    evidence_path: str
    evidence_version: str
    evidence_sha256: str
    evidence_bytes: int
    items: int


@dataclasses.dataclass(frozen=True)
class Debt:
    """What one reviewer owes: open items whose access has ended."""

    reviewer: str
    items: tuple[Item, ...]
    due_since: dt.datetime
    days: int

    @property
    def bytes(self) -> int:
        return sum(item.bytes for item in self.items)


class CustodyLedger:
    """The ledger on the database. Safe to share between threads."""

    def __init__(
        self,
        engine: sa.Engine,
        storage: Storage,
        rounds: RoundStore,
        revocations: RevocationStore,
    ) -> None:
        self.engine = engine
        self.storage = storage
        self.rounds = rounds
        self.revocations = revocations

    def add(self, download: ReviewerDownload) -> int:
        """Record a download; returns the item's id. Slow: off the loop."""
        with self.engine.begin() as conn:
            sha256 = None
            if download.version is not None:
                sha256 = conn.execute(
                    sa.select(file_versions.c.sha256).where(
                        file_versions.c.id == download.version
                    )
                ).scalar()
            return int(
                conn.execute(
                    custody_items.insert()
                    .values(
                        reviewer=download.reviewer,
                        prefecture=download.prefecture,
                        path=download.path,
                        version=download.version,
                        sha256=sha256,
                        bytes=download.bytes,
                        complete=download.complete,
                        downloaded_at=download.at,
                        session=download.session,
                    )
                    .returning(custody_items.c.id)
                ).scalar_one()
            )

    def items(
        self, reviewer: str | None = None, *, open_only: bool = False
    ) -> list[Item]:
        query = sa.select(custody_items).order_by(custody_items.c.id)
        if reviewer is not None:
            query = query.where(custody_items.c.reviewer == reviewer)
        if open_only:
            query = query.where(custody_items.c.confirmation_id.is_(None))
        with read_connection(self.engine) as conn:
            return [_item(row) for row in conn.execute(query)]

    def confirmations(self, reviewer: str | None = None) -> list[Confirmation]:
        query = sa.select(custody_confirmations).order_by(custody_confirmations.c.id)
        if reviewer is not None:
            query = query.where(custody_confirmations.c.reviewer == reviewer)
        with read_connection(self.engine) as conn:
            return [_confirmation(row) for row in conn.execute(query)]

    def confirm(
        self,
        reviewer: str,
        evidence: bytes,
        name: str,
        *,
        at: dt.datetime,
        operator: str,
    ) -> Confirmation:
        """Store the signed statement and close the reviewer's open items."""
        if not evidence:
            raise CustodyError("the evidence file is empty")
        if not self.items(reviewer, open_only=True):
            raise CustodyError(f"{reviewer} has no open custody items to confirm")
        stored = self._store(reviewer, evidence, name, at, operator)
        with self.engine.begin() as conn:
            confirmation_id = conn.execute(
                custody_confirmations.insert()
                .values(
                    reviewer=reviewer,
                    confirmed_at=at,
                    operator=operator,
                    evidence_name=name,
                    evidence_area=CUSTODY_AREA,
                    evidence_path=stored.path,
                    evidence_version=stored.id,
                    evidence_sha256=stored.sha256,
                    evidence_bytes=stored.size,
                    items=0,
                )
                .returning(custody_confirmations.c.id)
            ).scalar_one()
            closed = conn.execute(
                custody_items.update()
                .where(
                    custody_items.c.reviewer == reviewer,
                    custody_items.c.confirmation_id.is_(None),
                )
                .values(confirmation_id=confirmation_id)
            ).rowcount
            conn.execute(
                custody_confirmations.update()
                .where(custody_confirmations.c.id == confirmation_id)
                .values(items=closed)
            )
        return self.confirmations(reviewer)[-1]

    def outstanding(self, at: dt.datetime) -> list[Debt]:
        """Reviewers with open items whose access has ended, longest first."""
        rounds = self.rounds.list()
        revoked = self.revocations.all()
        owed: dict[str, list[tuple[dt.datetime, Item]]] = {}
        for item in self.items(open_only=True):
            due = _due(item, rounds)
            revocation = revoked.get(item.reviewer)
            if revocation is not None:
                due = min(due, max(revocation.revoked_at, item.downloaded_at))
            if due <= at:
                owed.setdefault(item.reviewer, []).append((due, item))
        debts = [
            Debt(
                reviewer=reviewer,
                items=tuple(item for _, item in pairs),
                due_since=min(due for due, _ in pairs),
                days=(at - min(due for due, _ in pairs)).days,
            )
            for reviewer, pairs in owed.items()
        ]
        return sorted(debts, key=lambda debt: (debt.due_since, debt.reviewer))

    def _store(
        self, reviewer: str, evidence: bytes, name: str, at: dt.datetime, by: str
    ) -> _Stored:
        self.storage.ensure_area(CUSTODY_AREA)
        if not self.storage.exists(CUSTODY_AREA, reviewer):
            self.storage.mkdir(CUSTODY_AREA, reviewer)
        path = f"{reviewer}/{_stored_name(name, at)}"
        info = self.storage.write_bytes(CUSTODY_AREA, path, evidence, by)
        return _Stored(path, info.id, info.sha256, info.size)


def record_off_loop(ledger: CustodyLedger, item: ReviewerDownload, bridge: Any) -> None:
    """Add ``item`` on one of the server's worker threads (``LoopBridge``);
    called on the event loop when a download ends."""

    def added(future: Future[int]) -> None:
        if future.exception() is not None:
            _lost(item, future.exception())

    try:
        bridge.run(lambda: ledger.add(item), added)
    except RuntimeError:
        # The server is shutting down and its workers are gone: write now.
        try:
            ledger.add(item)
        except Exception as exc:
            _lost(item, exc)


def _lost(item: ReviewerDownload, error: BaseException | None) -> None:
    # The download_end audit event still holds the item for reconciliation.
    logger.error(
        "custody item not recorded reviewer=%s prefecture=%s path=%s error=%s",
        item.reviewer,
        item.prefecture,
        names.escape_for_log(item.path),
        error,
    )


@dataclasses.dataclass(frozen=True)
class _Stored:
    path: str
    id: str
    sha256: str
    size: int


def _due(item: Item, rounds: Sequence[Round]) -> dt.datetime:
    """When the reviewer's access to the item's prefecture ended (or ends)."""
    ends = [
        round_.review.end
        for round_ in rounds
        if round_.review is not None
        and round_.entry(item.prefecture) is not None
        and round_.review.start <= item.downloaded_at < round_.review.end
    ]
    return min(ends, default=item.downloaded_at)


def _stored_name(name: str, at: dt.datetime) -> str:
    stamp = at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    try:
        return names.check_component(f"{stamp}-{name.rsplit('/', 1)[-1]}")
    except names.NameRefused:
        return f"{stamp}-statement"


def _item(row: sa.Row[tuple[object, ...]]) -> Item:
    m = row._mapping
    return Item(
        id=m["id"],
        reviewer=m["reviewer"],
        prefecture=m["prefecture"],
        path=m["path"],
        version=m["version"],
        sha256=m["sha256"],
        bytes=m["bytes"],
        complete=m["complete"],
        downloaded_at=m["downloaded_at"],
        confirmation=m["confirmation_id"],
    )


def _confirmation(row: sa.Row[tuple[object, ...]]) -> Confirmation:
    m = row._mapping
    return Confirmation(
        id=m["id"],
        reviewer=m["reviewer"],
        confirmed_at=m["confirmed_at"],
        operator=m["operator"],
        evidence_name=m["evidence_name"],
        evidence_path=m["evidence_path"],
        evidence_version=m["evidence_version"],
        evidence_sha256=m["evidence_sha256"],
        evidence_bytes=m["evidence_bytes"],
        items=m["items"],
    )
