"""Gathering what the audit report shows, from the audit log.

``gather`` reads the events of the period once, the download ledger of the
period (``query.downloads``), and two summaries of the history up to the
end of the period: when each account was first seen from each address, and
which files each prefecture had. Everything it returns is plain data in
UTC; ``report_stats`` counts it and ``report_html`` shows it.

Where an access belongs: a prefecture account's paths lie in its own area
(the event names the prefecture); a reviewer's paths start with the folder
of a prefecture (its name, as the FTP server shows it), which the list of
prefectures turns into the prefecture's code.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from collections.abc import Iterable

import sqlalchemy as sa

from censusdrop.config.prefectures import PrefectureError
from censusdrop.config.prefectures import PrefectureList

from . import events as ev
from .locking import read_connection
from .query import DownloadRecord
from .query import EventFilter
from .query import StoredEvent
from .query import downloads
from .query import find_events
from .report_text import CHANGE_NAMES
from .report_text import reason_text
from .schema import audit_events

# What each recorded action becomes in the report (refusals aside).
_KINDS = {
    ev.LOGIN: "login",
    ev.UPLOAD_END: "upload",
    ev.LIST: "list",
    ev.DELETE: "change",
    ev.RENAME: "change",
    ev.MKDIR: "change",
    ev.RMDIR: "change",
}
_HISTORY_ACTIONS = (ev.UPLOAD_END, ev.DOWNLOAD_START, ev.DELETE)


@dataclasses.dataclass(frozen=True, slots=True)
class Period:
    """The span the report covers, ``start <= at < end``, in UTC."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("period: start and end must be timezone-aware")
        if not self.start < self.end:
            raise ValueError("period: start must be before end")


@dataclasses.dataclass(frozen=True, slots=True)
class Mark:
    """One access: a login, transfer, listing, change or refusal.

    ``prefecture`` is the code of the area it touched (None for logins of
    reviewers and refusals outside any area); ``file`` its path inside that
    area, or the recorded path when no area is known.
    """

    at: dt.datetime
    account: str | None
    kind: str
    prefecture: str | None = None
    file: str | None = None
    session: str | None = None
    address: str | None = None
    bytes: int | None = None
    status: str | None = None
    note: str = ""


@dataclasses.dataclass(slots=True)
class AccountInfo:
    """An account as the period's events show it."""

    name: str
    role: str | None = None
    prefecture: str | None = None


@dataclasses.dataclass(slots=True)
class ReportData:
    """Everything the report shows, in UTC, marks in time order."""

    period: Period
    names: dict[str, str]
    accounts: dict[str, AccountInfo]
    marks: list[Mark]
    # account -> address -> first time seen (whole log up to the period end)
    first_seen: dict[str, dict[str, dt.datetime]]
    # prefecture code -> distinct files known at the end of the period
    files: dict[str, int]

    def marks_of(self, *kinds: str) -> list[Mark]:
        return [mark for mark in self.marks if mark.kind in kinds]

    def prefecture_name(self, code: str | None) -> str:
        if code is None:
            return "—"
        name = self.names.get(code)
        return f"{name}（{code}）" if name and name != code else code


class Locator:
    """Turns an event's own prefecture and path into (area code, file)."""

    def __init__(self, prefectures: PrefectureList | None) -> None:
        self._prefectures = prefectures
        self._codes: dict[str, str] = {}

    def locate(
        self, own: str | None, path: str | None
    ) -> tuple[str | None, str | None]:
        parts = [part for part in (path or "").split("/") if part]
        if own is not None:
            return own, "/".join(parts) or None
        if not parts:
            return None, path
        return self.code(parts[0]), "/".join(parts[1:]) or None

    def code(self, folder: str) -> str:
        if folder not in self._codes:
            self._codes[folder] = self._lookup(folder)
        return self._codes[folder]

    def _lookup(self, folder: str) -> str:
        if self._prefectures is None:
            return folder
        try:
            return self._prefectures.find(folder).code
        except PrefectureError:
            return folder  # not a known prefecture: show the folder as it is


def gather(
    engine: sa.Engine, period: Period, prefectures: PrefectureList | None = None
) -> ReportData:
    """Read the report's data for ``period`` from the audit log."""
    locator = Locator(prefectures)
    accounts: dict[str, AccountInfo] = {}
    marks: list[Mark] = []
    window = EventFilter(since=period.start, until=period.end)
    for event in find_events(engine, window):
        if event.account is not None:
            _note_account(accounts, event.account, event)
        mark = _mark(event, locator)
        if mark is not None:
            marks.append(mark)
    marks.extend(_download_marks(engine, window, accounts, locator))
    marks.sort(key=lambda mark: mark.at)
    names = {p.code: p.name for p in prefectures} if prefectures else {}
    return ReportData(
        period=period,
        names=names,
        accounts=accounts,
        marks=marks,
        first_seen=first_seen(engine, period.end),
        files=known_files(engine, period.end, locator),
    )


def first_seen(
    engine: sa.Engine, until: dt.datetime
) -> dict[str, dict[str, dt.datetime]]:
    """For each account, when it was first seen from each address (IP
    without the port) before ``until``."""
    t = audit_events
    query = (
        sa.select(t.c.account, t.c.remote, sa.func.min(t.c.at).label("first"))
        .where(t.c.account.is_not(None), t.c.remote.is_not(None), t.c.at < until)
        .group_by(t.c.account, t.c.remote)
    )
    seen: dict[str, dict[str, dt.datetime]] = collections.defaultdict(dict)
    with read_connection(engine) as conn:
        for account, remote, first in conn.execute(query):
            address = host_of(remote)
            known = seen[account].get(address)
            if known is None or first < known:
                seen[account][address] = first
    return dict(seen)


def known_files(
    engine: sa.Engine, until: dt.datetime, locator: Locator
) -> dict[str, int]:
    """Each prefecture's distinct files uploaded or downloaded before
    ``until`` and not deleted since."""
    files: dict[str, set[str]] = collections.defaultdict(set)
    history = EventFilter(actions=_HISTORY_ACTIONS, outcome=ev.OK, until=until)
    for event in find_events(engine, history):
        code, file = locator.locate(event.prefecture, event.path)
        if code is None or file is None:
            continue
        if event.action == ev.DELETE:
            files[code].discard(file)
        else:
            files[code].add(file)
    return {code: len(found) for code, found in files.items()}


def host_of(remote: str) -> str:
    """``10.0.0.8`` from ``10.0.0.8:5000``, ``::1`` from ``[::1]:5000``."""
    host = remote.rsplit(":", 1)[0] if ":" in remote else remote
    return host.strip("[]")


def _note_account(
    accounts: dict[str, AccountInfo], name: str, event: StoredEvent
) -> None:
    info = accounts.setdefault(name, AccountInfo(name))
    info.role = info.role or event.role
    info.prefecture = info.prefecture or event.prefecture


def _mark(event: StoredEvent, locator: Locator) -> Mark | None:
    kind = _kind(event)
    if kind is None:
        return None
    code, file = locator.locate(event.prefecture, event.path)
    note = ""
    if kind in ("refusal", "lockout"):
        note = reason_text(event.action, event.details)
    elif kind == "change":
        note = CHANGE_NAMES.get(event.action, event.action)
    status = None
    if kind == "upload":
        status = "complete" if event.outcome == ev.OK else "aborted"
    return Mark(
        at=event.at,
        account=event.account,
        kind=kind,
        prefecture=code,
        file=file,
        session=event.session,
        address=host_of(event.remote) if event.remote else None,
        bytes=event.bytes,
        status=status,
        note=note,
    )


def _kind(event: StoredEvent) -> str | None:
    if event.action == ev.LOCKOUT:
        return "lockout"
    if event.action in (ev.REFUSED, ev.LOGIN_FAILED) or event.outcome == ev.DENIED:
        return "refusal"
    if event.action == ev.DOWNLOAD_START and event.outcome != ev.OK:
        return "refusal"
    if event.account is None:
        return None
    return _KINDS.get(event.action)


def _download_marks(
    engine: sa.Engine,
    window: EventFilter,
    accounts: dict[str, AccountInfo],
    locator: Locator,
) -> Iterable[Mark]:
    for record in downloads(engine, window):
        if record.status == "refused":
            continue  # shown with the refusals, from the event itself
        yield _download_mark(record, accounts, locator)


def _download_mark(
    record: DownloadRecord, accounts: dict[str, AccountInfo], locator: Locator
) -> Mark:
    info = accounts.get(record.account or "")
    own = info.prefecture if info is not None else None
    code, file = locator.locate(own, record.path)
    at = record.started_at or record.ended_at
    assert at is not None  # a ledger record has a start or an end
    return Mark(
        at=at,
        account=record.account,
        kind="download",
        prefecture=code,
        file=file,
        session=record.session,
        address=host_of(record.remote) if record.remote else None,
        bytes=record.bytes,
        status=record.status,
    )
