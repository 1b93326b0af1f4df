"""The naming rules of the annex's notes, applied to one name at a time.

Every folder and file name must carry the prefecture, the content and the
submission date (note 3); a date must be neither in the future nor before
the census began; another prefecture's name means misfiled material. Also
here: names mangled by a wrong encoding, editor lock files, paths too long
for Windows, folders nested too deep.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable

from censusdrop.config.checklist import Checklist

from .messages import finding
from .messages import today_forms
from .model import Finding
from .model import Prefecture
from .model import Severity
from .model import prefecture_names
from .names import NameDate
from .names import find_dates
from .names import has_content
from .names import is_broken
from .names import mentions
from .names import other_prefecture
from .tree import Node


class NameChecker:
    def __init__(
        self,
        checklist: Checklist,
        prefecture: Prefecture,
        others: Iterable[Prefecture],
        today: dt.date,
    ) -> None:
        self._rules = checklist.naming
        self._files = checklist.files
        self._start = checklist.census.start
        self._today = today
        self._own = prefecture_names(prefecture)
        self._prefecture = prefecture
        own = set(self._own)
        self._others = tuple(
            name
            for other in others
            if other.code != prefecture.code and other.name != prefecture.name
            for name in prefecture_names(other)
            if name not in own
        )
        self._noise = (*self._own, checklist.province)
        self._severity = Severity(self._rules.severity)

    def check(self, node: Node) -> list[Finding]:
        """Findings on ``node``'s own name (not on what is inside it)."""
        if is_broken(node.name):
            return [self._finding("name.bad_encoding", node)]
        if not node.is_dir and node.name.startswith(self._files.temporary_prefixes):
            return [self._finding("name.temporary", node)]
        found = self._tree_rules(node)
        if self._rules.folders if node.is_dir else self._rules.files:
            found += self._name_rules(node)
        return found

    def _tree_rules(self, node: Node) -> list[Finding]:
        found = []
        if len(node.path) > self._files.max_path_chars:
            found.append(
                self._finding(
                    "tree.path_too_long",
                    node,
                    length=len(node.path),
                    limit=self._files.max_path_chars,
                )
            )
        if node.is_dir and node.depth == self._files.max_depth + 1:
            deepest = max(n.depth for n in node.walk() if n.is_dir)
            found.append(
                self._finding(
                    "tree.too_deep", node, depth=deepest, limit=self._files.max_depth
                )
            )
        return found

    def _name_rules(self, node: Node) -> list[Finding]:
        stem = node.stem
        subject = "文件夹名称" if node.is_dir else "文件名称"
        found = []
        if self._rules.require_prefecture and not self._has_prefecture(node):
            found.append(
                self._finding(
                    "name.no_prefecture",
                    node,
                    subject=subject,
                    name=self._prefecture.name,
                    short=self._prefecture.short_name,
                )
            )
        other = other_prefecture(stem, self._own, self._others)
        if other:
            found.append(
                self._finding(
                    "name.other_prefecture", node, subject=subject, other=other
                )
            )
        found += self._date_rules(node, subject)
        if self._rules.require_content and not has_content(stem, self._noise):
            found.append(self._finding("name.no_content", node, subject=subject))
        return found

    def _date_rules(self, node: Node, subject: str) -> list[Finding]:
        dates = find_dates(node.stem)
        if not dates:
            if self._rules.require_date and not self._inherits_date(node):
                examples = today_forms(self._today)
                return [
                    self._finding("name.no_date", node, subject=subject, **examples)
                ]
            return []
        latest = max(dates, key=lambda d: d.date)
        if _after(latest, self._today):
            return [
                self._finding(
                    "name.date_future", node, subject=subject, date=latest.text
                )
            ]
        if _before(latest, self._start):
            start = f"{self._start.year}年{self._start.month}月{self._start.day}日"
            return [
                self._finding(
                    "name.date_too_early",
                    node,
                    subject=subject,
                    date=latest.text,
                    start=start,
                )
            ]
        return []

    def _has_prefecture(self, node: Node) -> bool:
        if mentions(node.stem, self._own):
            return True
        return self._rules.inherit_from_folder and any(
            mentions(a.name, self._own) for a in _ancestors(node)
        )

    def _inherits_date(self, node: Node) -> bool:
        return self._rules.inherit_from_folder and any(
            find_dates(a.name) for a in _ancestors(node)
        )

    def _finding(self, rule: str, node: Node, **params: object) -> Finding:
        found = finding(rule, node.item, node.path, **params)
        if rule in _SEVERITY_FROM_DATA:
            found = dataclasses.replace(found, severity=self._severity)
        return found


_SEVERITY_FROM_DATA = frozenset(
    {"name.no_prefecture", "name.no_date", "name.date_future", "name.date_too_early"}
)


def _ancestors(node: Node) -> Iterable[Node]:
    parent = node.parent
    while parent is not None and parent.path:
        yield parent
        parent = parent.parent


def _after(date: NameDate, today: dt.date) -> bool:
    if date.has_day:
        return date.date > today
    return (date.date.year, date.date.month) > (today.year, today.month)


def _before(date: NameDate, start: dt.date) -> bool:
    if date.has_day:
        return date.date < start
    return (date.date.year, date.date.month) < (start.year, start.month)
