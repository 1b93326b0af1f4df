"""Counting the audit report's marks: per prefecture, account and session.

Every figure the report prints comes from ``Counts``, so the tables agree
with each other: a download is counted once, with the bytes its end
recorded (the part sent, for an aborted one), under its account, its
prefecture and its session.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import zoneinfo
from collections.abc import Callable
from collections.abc import Hashable
from collections.abc import Iterable
from typing import TypeVar

from .report_data import Mark
from .report_data import ReportData
from .report_rules import AFTER_HOURS
from .report_rules import BULK
from .report_rules import NEW_ADDRESS
from .report_rules import BulkRule
from .report_rules import Finding
from .report_rules import Take
from .report_rules import WorkingHours
from .report_rules import after_hours
from .report_rules import bulk_takes
from .report_rules import new_addresses

UNKNOWN_ACCOUNT = ""

K = TypeVar("K", bound=Hashable)


@dataclasses.dataclass(slots=True)
class Counts:
    """What one account did (in one prefecture, session, or overall)."""

    first: dt.datetime | None = None
    last: dt.datetime | None = None
    logins: int = 0
    lists: int = 0
    downloads: int = 0
    complete: int = 0
    aborted: int = 0
    unfinished: int = 0
    bytes_down: int = 0
    bytes_complete: int = 0
    uploads: int = 0
    bytes_up: int = 0
    changes: int = 0
    refusals: int = 0
    lockouts: int = 0
    files: set[tuple[str | None, str | None]] = dataclasses.field(default_factory=set)
    addresses: set[str] = dataclasses.field(default_factory=set)

    def add(self, mark: Mark) -> None:
        self.first = mark.at if self.first is None else min(self.first, mark.at)
        self.last = mark.at if self.last is None else max(self.last, mark.at)
        if mark.address:
            self.addresses.add(mark.address)
        size = mark.bytes or 0
        if mark.kind == "download":
            self._download(mark, size)
        elif mark.kind == "upload":
            self.uploads += mark.status == "complete"
            self.bytes_up += size if mark.status == "complete" else 0
        else:
            field = {
                "login": "logins",
                "list": "lists",
                "change": "changes",
                "refusal": "refusals",
                "lockout": "lockouts",
            }[mark.kind]
            setattr(self, field, getattr(self, field) + 1)

    def _download(self, mark: Mark, size: int) -> None:
        self.downloads += 1
        self.bytes_down += size
        self.files.add((mark.prefecture, mark.file))
        if mark.status == "complete":
            self.complete += 1
            self.bytes_complete += size
        elif mark.status == "aborted":
            self.aborted += 1
        else:
            self.unfinished += 1


@dataclasses.dataclass(frozen=True, slots=True)
class Findings:
    """The report's findings by rule, and the rules' settings."""

    hours: WorkingHours
    bulk: BulkRule
    by_rule: dict[str, list[Finding]]

    @property
    def total(self) -> int:
        return sum(len(found) for found in self.by_rule.values())


def by_account(marks: Iterable[Mark]) -> dict[str, Counts]:
    """Counts per account (``UNKNOWN_ACCOUNT`` for failed logins by an
    unknown name), in order of first appearance."""
    return _grouped(marks, lambda mark: mark.account or UNKNOWN_ACCOUNT)


def by_prefecture(marks: Iterable[Mark]) -> dict[str, dict[str, Counts]]:
    """Counts per prefecture code, then per account."""
    grouped: dict[str, list[Mark]] = collections.defaultdict(list)
    for mark in marks:
        if mark.prefecture is not None:
            grouped[mark.prefecture].append(mark)
    return {code: by_account(found) for code, found in sorted(grouped.items())}


def by_session(marks: Iterable[Mark]) -> dict[str, dict[str, Counts]]:
    """Counts per account, then per session, sessions in time order."""
    grouped: dict[str, list[Mark]] = collections.defaultdict(list)
    for mark in marks:
        grouped[mark.account or UNKNOWN_ACCOUNT].append(mark)
    return {
        account: _grouped(found, lambda mark: mark.session or "")
        for account, found in grouped.items()
    }


def downloads_by_prefecture(marks: Iterable[Mark]) -> dict[tuple[str, str], Counts]:
    """Download counts per (account, prefecture code)."""
    return _grouped(
        (mark for mark in marks if mark.kind == "download"),
        lambda mark: (mark.account or UNKNOWN_ACCOUNT, mark.prefecture or ""),
    )


def total(counts: Iterable[Counts]) -> Counts:
    """The sum of ``counts`` (files and addresses as unions)."""
    result = Counts()
    for part in counts:
        for field in dataclasses.fields(Counts):
            value = getattr(part, field.name)
            if isinstance(value, set):
                getattr(result, field.name).update(value)
            elif isinstance(value, int):
                setattr(result, field.name, getattr(result, field.name) + value)
        firsts = [t for t in (result.first, part.first) if t is not None]
        lasts = [t for t in (result.last, part.last) if t is not None]
        result.first, result.last = min(firsts, default=None), max(lasts, default=None)
    return result


def find(
    data: ReportData, hours: WorkingHours, bulk: BulkRule, zone: zoneinfo.ZoneInfo
) -> Findings:
    """Apply the three rules to the period's data."""
    takes = [
        Take(mark.account, mark.prefecture, mark.file, mark.at, mark.bytes or 0)
        for mark in data.marks_of("download")
        if mark.account is not None
    ]
    period = data.period
    return Findings(
        hours=hours,
        bulk=bulk,
        by_rule={
            AFTER_HOURS: after_hours(takes, hours),
            BULK: bulk_takes(takes, data.files, bulk, zone, data.names),
            NEW_ADDRESS: new_addresses(data.first_seen, period.start, period.end, zone),
        },
    )


def _grouped(marks: Iterable[Mark], key: Callable[[Mark], K]) -> dict[K, Counts]:
    counts: dict[K, Counts] = {}
    for mark in marks:
        counts.setdefault(key(mark), Counts()).add(mark)
    return counts
