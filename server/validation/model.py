"""What the validator hands back: findings, per-item summaries, the report.

A report is a plain frozen value. Its verdict is derived, never stored: it
is 合格 only when there is no finding of severity error, so no code path can
produce a pass next to an error (a crash while checking a file is itself an
error finding).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum

PASSED = "合格"
RETURNED = "退回补充完善"


class ValidationError(Exception):
    """Base class of every error raised by ``censusdrop.server.validation``."""


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclasses.dataclass(frozen=True, slots=True)
class Prefecture:
    """A prefecture as the validator needs it.

    ``short_name`` is the usual short form: 武汉 for 武汉市, 恩施州 for
    恩施土家族苗族自治州. ``aliases`` are other forms people write (恩施),
    from the prefecture list.
    """

    code: str
    name: str
    short_name: str
    aliases: tuple[str, ...] = ()


def prefecture_names(prefecture: Prefecture) -> tuple[str, ...]:
    """Every form that counts as the prefecture's name (full, short,
    aliases), longest first, then in a fixed order."""
    forms = {prefecture.name, prefecture.short_name, *prefecture.aliases}
    return tuple(sorted((f for f in forms if f), key=lambda f: (-len(f), f)))


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """One problem, with a plain Chinese sentence saying what to do.

    ``path`` is relative to the prefecture's area ("" for the area itself)
    and always valid Unicode, even when the name on disk is not.
    """

    rule: str
    severity: Severity
    item: int | None
    path: str
    message: str

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR


@dataclasses.dataclass(frozen=True, slots=True)
class ItemSummary:
    number: int
    title: str
    required: bool
    present: bool
    folders: tuple[str, ...]
    files: int
    errors: int
    warnings: int


@dataclasses.dataclass(frozen=True, slots=True)
class TreeDigest:
    """SHA-256 over the judged tree.

    ``kind`` is "content" when every file came with its own SHA-256 (from the
    storage index), else "metadata" (path, size and mtime of each entry).
    """

    sha256: str
    kind: str
    files: int
    folders: int
    bytes: int


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    prefecture: Prefecture
    checklist: str
    judged_at: dt.datetime
    digest: TreeDigest
    findings: tuple[Finding, ...]
    items: tuple[ItemSummary, ...]

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.is_error)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if not f.is_error)

    @property
    def passed(self) -> bool:
        return not any(f.is_error for f in self.findings)

    @property
    def verdict(self) -> str:
        return PASSED if self.passed else RETURNED
