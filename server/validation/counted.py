"""Counted materials: 清查表, 普查表扫描件, 三种状态佐证材料 (note 3).

In a counted scope (an item folder, or a sub-item folder such as 12①):
- the material is split into source-type folders (工业源, 农业源 …);
- each source folder, and each region folder inside one, holds a
  基本信息表 whose header has the required columns;
- a folder's count in parentheses equals the material below it, each file
  weighing 1 or its own count (a combined PDF named ``…（25份）.pdf``);
  material files need a count on their folder, an ancestor or themselves;
- signed-and-sealed scans come with the prefecture's confirmation document.
Files whose names mark them as the table, the confirmation, a list or a
summary are not material and are not counted.
"""

from __future__ import annotations

from censusdrop.config.checklist import Checklist
from censusdrop.config.checklist import Item

from .cache import ContentCache
from .cache import content_key
from .messages import finding
from .model import Finding
from .names import find_count
from .sheets import SheetError
from .sheets import header_rows
from .sheets import missing_columns
from .source import TreeSource
from .source import reading
from .tree import Node


class CountedChecker:
    def __init__(
        self,
        source: TreeSource,
        checklist: Checklist,
        cache: ContentCache | None = None,
    ) -> None:
        self._source = source
        self._checklist = checklist
        self._cache = cache
        self._rules = checklist.counted
        self._units = checklist.naming.count_units
        self._source_names = tuple(
            name for s in self._rules.sources for name in (s.name, *s.aliases)
        )
        self._sources_text = "、".join(s.name for s in self._rules.sources)
        self._weights: dict[Node, int] = {}

    def check(self, scope: Node, item: Item, confirmation: bool) -> list[Finding]:
        found: list[Finding] = []
        if confirmation and not self._has_confirmation(scope):
            keyword = self._rules.confirmation_keywords[0]
            found.append(
                finding(
                    "confirmation.missing",
                    item.number,
                    scope.path,
                    item=item.number,
                    keyword=keyword,
                )
            )
        folders = self._source_folders(scope)
        if not folders:
            found.append(
                finding(
                    "source.missing",
                    item.number,
                    scope.path,
                    item=item.number,
                    sources=self._sources_text,
                )
            )
            return found + self._count_rules(scope, item)
        found += self._unsorted(scope, folders, item)
        for folder in folders:
            found += self._basic_info(folder, item)
            for region in folder.children:
                if region.is_dir and self._weight(region):
                    found += self._basic_info(region, item)
        return found + self._count_rules(scope, item)

    def is_material(self, node: Node) -> bool:
        return not node.is_dir and not any(
            k in node.name for k in self._rules.not_counted
        )

    def _source_folders(self, scope: Node) -> list[Node]:
        folders: list[Node] = []
        for node in scope.walk():
            if node is scope or not node.is_dir:
                continue
            inside = any(f in _lineage(node) for f in folders)
            if not inside and any(s in node.name for s in self._source_names):
                folders.append(node)
        return folders

    def _unsorted(self, scope: Node, folders: list[Node], item: Item) -> list[Finding]:
        return [
            finding(
                "source.unsorted", item.number, node.path, sources=self._sources_text
            )
            for node in scope.files()
            if self.is_material(node) and not any(f in _lineage(node) for f in folders)
        ]

    def _basic_info(self, folder: Node, item: Item) -> list[Finding]:
        rules = self._checklist.basic_info
        tables = [
            n
            for n in folder.children
            if not n.is_dir and any(k in n.name for k in rules.keywords)
        ]
        readable = [t for t in tables if t.kind and t.kind.type in rules.types]
        if not readable and any(t.kind and t.kind.problem for t in tables):
            return []  # the damaged table is an error on the file already
        if not readable:
            return [
                finding(
                    "basic_info.missing",
                    item.number,
                    folder.path,
                    keyword=rules.keywords[0],
                    types="、".join(sorted(rules.types)),
                )
            ]
        found: list[Finding] = []
        for table in readable:
            if table.kind is not None and table.kind.problem is None:
                found += self._header(table, item)
        return found

    def _header(self, table: Node, item: Item) -> list[Finding]:
        rules = self._checklist.basic_info
        assert table.kind is not None
        missing, problem = self._missing(table, table.kind.type)
        if problem is not None:
            return [
                finding(
                    "basic_info.unreadable", item.number, table.path, detail=problem
                )
            ]
        if not missing:
            return []
        return [
            finding(
                "basic_info.columns",
                item.number,
                table.path,
                columns="、".join(missing),
                required="、".join(c.name for c in rules.columns),
            )
        ]

    def _missing(
        self, table: Node, file_type: str
    ) -> tuple[tuple[str, ...], str | None]:
        """The required columns the table's header lacks, or why it cannot
        be read; remembered per content and rules when a cache is given."""
        content = content_key(table)
        if self._cache is None or content is None:
            return self._read_missing(table, file_type)
        key = ("header", *content, file_type, self._checklist.basic_info)
        return self._cache.recall(key, lambda: self._read_missing(table, file_type))

    def _read_missing(
        self, table: Node, file_type: str
    ) -> tuple[tuple[str, ...], str | None]:
        rules = self._checklist.basic_info
        try:
            with reading(self._source, table.path) as fp:
                rows = header_rows(fp, file_type, rules)
        except SheetError as exc:
            return (), str(exc)
        return tuple(missing_columns(rows, rules.columns)), None

    def _count_rules(self, scope: Node, item: Item) -> list[Finding]:
        found: list[Finding] = []
        for folder in scope.walk():
            if not folder.is_dir:
                continue
            declared = find_count(folder.name, self._units, unit_required=False)
            actual = self._weight(folder)
            if declared is not None and declared != actual:
                found.append(
                    finding(
                        "count.mismatch",
                        item.number,
                        folder.path,
                        declared=declared,
                        actual=actual,
                    )
                )
            elif declared is None and self._needs_count(folder, scope):
                found.append(
                    finding("count.missing", item.number, folder.path, actual=actual)
                )
        return found

    def _needs_count(self, folder: Node, scope: Node) -> bool:
        direct = [n for n in folder.children if self.is_material(n)]
        if not direct or all(self._own_count(n) is not None for n in direct):
            return False
        node = folder
        while node is not scope and node.parent is not None:
            node = node.parent
            if find_count(node.name, self._units, unit_required=False) is not None:
                return False
        return True

    def _weight(self, folder: Node) -> int:
        """The material below ``folder``, each file weighing 1 or its own
        count; worked out once per folder, as folders nest."""
        weight = self._weights.get(folder)
        if weight is None:
            weight = sum(self._file_weight(n) for n in folder.children)
            self._weights[folder] = weight
        return weight

    def _file_weight(self, node: Node) -> int:
        if node.is_dir:
            return self._weight(node)
        return (self._own_count(node) or 1) if self.is_material(node) else 0

    def _own_count(self, node: Node) -> int | None:
        return find_count(node.stem, self._units, unit_required=True)

    def _has_confirmation(self, scope: Node) -> bool:
        keywords = self._rules.confirmation_keywords
        return any(any(k in n.name for k in keywords) for n in scope.files())


def _lineage(node: Node | None) -> list[Node]:
    """``node`` and its ancestors, nearest first."""
    chain = []
    while node is not None:
        chain.append(node)
        node = node.parent
    return chain
