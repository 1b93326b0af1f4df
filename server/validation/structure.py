"""Checks on the shape of the tree: items, sub-items, reports and links.

Every required item has a folder (found by its leading number) with files
in it, every required sub-item ①②… is there, counted scopes are handed to
:class:`CountedChecker`, the self-assessment report and the reports of
item 18 are present, and the self-assessment's hyperlinks lead to files of
the tree. Folders and files that belong to no item are pointed out.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import Any

from censusdrop.config.checklist import Checklist
from censusdrop.config.checklist import Item
from censusdrop.config.checklist import ReportRule

from .cache import ContentCache
from .cache import content_key
from .counted import CountedChecker
from .links import LinkError
from .links import LinkResolver
from .links import docx_links
from .links import file_target
from .messages import finding
from .model import Finding
from .model import Prefecture
from .names import item_number
from .source import TreeSource
from .source import reading
from .tree import Node
from .tree import Tree

_CIRCLED = "①②③④⑤⑥⑦⑧⑨⑩⑪⑫⑬⑭⑮⑯⑰⑱⑲⑳"


class StructureChecker:
    def __init__(
        self,
        tree: Tree,
        source: TreeSource,
        checklist: Checklist,
        prefecture: Prefecture,
        today_text: dict[str, str],
        cache: ContentCache | None = None,
    ) -> None:
        self._tree = tree
        self._source = source
        self._checklist = checklist
        self._prefecture = prefecture
        self._today = today_text
        self._cache = cache
        self._counted = CountedChecker(source, checklist, cache)
        self.report_files: set[str] = set()

    def item_checks(self, item: Item) -> list[Finding]:
        folders = self._tree.items.get(item.number, [])
        if not folders:
            if not item.required:
                return []
            return [self._missing_item(item)]
        found: list[Finding] = []
        if len(folders) > 1:
            found.append(
                finding(
                    "item.duplicate",
                    item.number,
                    folders[0].path,
                    item=item.number,
                    count=len(folders),
                )
            )
        if not any(True for f in folders for _ in f.files()):
            found.append(
                finding("item.empty", item.number, folders[0].path, **_titled(item))
            )
            return found
        found += self._sub_items(item, folders[0])
        for scope, confirmation in self._counted_scopes(item, folders):
            found += self._counted.check(scope, item, confirmation)
        return found

    def unknown_numbers(self) -> list[Finding]:
        return [
            finding("item.unknown_number", None, node.path, number=_number_of(node))
            for node in self._tree.unknown_items
        ]

    def unassigned(self) -> list[Finding]:
        wrappers = set(map(id, self._tree.wrappers))
        found = []
        for wrapper in self._tree.wrappers:
            for child in wrapper.children:
                if id(child) in wrappers or child.item is not None:
                    continue
                if child in self._tree.unknown_items or child.path in self.report_files:
                    continue
                found.append(finding("tree.unassigned", None, child.path))
        return found

    def report_checks(self, rule: ReportRule) -> list[Finding]:
        if rule.item is not None and rule.item not in self._tree.items:
            return []  # the missing item is reported already
        candidates = [
            f
            for f in self._scope_files(rule)
            if not rule.keywords or any(k in f.name for k in rule.keywords)
        ]
        self.report_files.update(f.path for f in candidates)
        good = [
            f
            for f in candidates
            if f.kind and f.kind.type in rule.types and f.kind.problem is None
        ]
        if not good:
            where = f"在第{rule.item}项文件夹中" if rule.item else ""
            types = "、".join(sorted(t.upper() for t in rule.types))
            path = self._tree.items[rule.item][0].path if rule.item else ""
            return [
                finding(
                    "report.missing",
                    rule.item,
                    path,
                    title=rule.title,
                    where=where,
                    types=types,
                )
            ]
        return self._link_checks(rule, good) if rule.check_links else []

    def _missing_item(self, item: Item) -> Finding:
        return finding(
            "item.missing",
            item.number,
            "",
            prefecture=self._prefecture.name,
            **_titled(item),
            **self._today,
        )

    def _sub_items(self, item: Item, folder: Node) -> list[Finding]:
        if len(item.sub_items) < 2:
            return []  # a lone ① is the item itself
        return [
            finding(
                "subitem.missing",
                item.number,
                folder.path,
                item=item.number,
                sub=sub.number,
                title=sub.title,
                marker=_CIRCLED[sub.number - 1]
                if sub.number <= 20
                else f"({sub.number})",
            )
            for sub in item.sub_items
            if sub.required and not self._tree.sub_item_nodes(item, sub.number)
        ]

    def _counted_scopes(
        self, item: Item, folders: list[Node]
    ) -> Iterator[tuple[Node, bool]]:
        for sub in item.sub_items:
            if sub.counted:
                for node in self._tree.sub_item_nodes(item, sub.number):
                    yield node, sub.confirmation or item.confirmation
        if item.counted:
            for folder in folders:
                lone = [
                    n
                    for n in folder.children
                    if len(item.sub_items) == 1
                    and n.sub_item == item.sub_items[0].number
                ]
                scope = lone[0] if len(lone) == 1 and lone[0].is_dir else folder
                yield scope, item.confirmation

    def _scope_files(self, rule: ReportRule) -> Iterator[Node]:
        if rule.item is None:
            return self._tree.files()
        return (f for folder in self._tree.items[rule.item] for f in folder.files())

    def _link_checks(self, rule: ReportRule, reports: list[Node]) -> list[Finding]:
        docx = [r for r in reports if r.kind and r.kind.type == "docx"]
        if not docx:
            return [finding("link.unchecked", None, reports[0].path, title=rule.title)]
        resolver = LinkResolver(self._tree.nodes)
        found: list[Finding] = []
        for report in docx:
            targets, problem = self._targets(report)
            if problem is not None:
                found.append(finding("file.corrupt", None, report.path, detail=problem))
                continue
            if not targets:
                found.append(finding("link.none", None, report.path, title=rule.title))
            base = posixpath.dirname(report.path)
            found += [
                finding("link.broken", None, report.path, title=rule.title, target=t)
                for t in targets
                if not resolver.resolves(t, base)
            ]
        return found

    def _targets(self, report: Node) -> tuple[tuple[str, ...], str | None]:
        """The file links of a docx report, or why they cannot be read;
        remembered per content when a cache is given."""
        content = content_key(report)
        if self._cache is None or content is None:
            return self._read_targets(report)
        key = ("links", *content)
        return self._cache.recall(key, lambda: self._read_targets(report))

    def _read_targets(self, report: Node) -> tuple[tuple[str, ...], str | None]:
        try:
            with reading(self._source, report.path) as fp:
                links = docx_links(fp)
        except LinkError as exc:
            return (), str(exc)
        return tuple(t for t in map(file_target, links) if t), None


def _titled(item: Item) -> dict[str, Any]:
    return {"item": item.number, "title": item.title}


def _number_of(node: Node) -> str:
    return str(item_number(node.name))
