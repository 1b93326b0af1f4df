"""The judged tree in memory, and where the checklist's items are in it.

Built once from the source's walk: parents are made up when a source lists
only files, ignored names are dropped. Item folders are the folders whose
name starts with an item number; they may sit at the top of the area or in
up to two wrapper folders (``武汉市验收资料20200405/1.…``). Everything in an
item folder belongs to that item; sub-item folders and files are found up
to two levels inside it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator

from censusdrop.config.checklist import Checklist
from censusdrop.config.checklist import Item

from .kinds import FileKind
from .names import item_number
from .names import sub_item_marker
from .source import SourceEntry

WRAPPER_LEVELS = 2
SUB_ITEM_LEVELS = 2


@dataclasses.dataclass(eq=False, slots=True)
class Node:
    path: str
    name: str
    is_dir: bool
    size: int = 0
    mtime: float = 0.0
    sha256: str | None = None
    version: str | None = None
    parent: Node | None = None
    children: list[Node] = dataclasses.field(default_factory=list)
    depth: int = 0
    item: int | None = None
    sub_item: int | None = None
    kind: FileKind | None = None

    @property
    def stem(self) -> str:
        return self.name if self.is_dir else self.name.rpartition(".")[0] or self.name

    def walk(self) -> Iterator[Node]:
        """This node and everything under it, parents before children."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def files(self) -> Iterator[Node]:
        return (n for n in self.walk() if not n.is_dir)


class Tree:
    def __init__(self, entries: Iterable[SourceEntry], ignore: Callable[[str], bool]):
        self.root = Node("", "", True)
        self.nodes: dict[str, Node] = {"": self.root}
        for entry in sorted(entries, key=lambda e: e.path):
            if not any(ignore(part) for part in entry.path.split("/")):
                self._add(entry)
        for node in self.nodes.values():
            node.children.sort(key=lambda n: n.name)
        self.items: dict[int, list[Node]] = {}
        self.unknown_items: list[Node] = []
        self.wrappers: list[Node] = [self.root]

    def files(self) -> Iterator[Node]:
        return self.root.files()

    def assign_items(self, checklist: Checklist) -> None:
        """Find item folders, then mark every node with its item and sub-item."""
        numbers = {i.number for i in checklist.items}
        level = [self.root]
        for _ in range(WRAPPER_LEVELS + 1):
            below: list[Node] = []
            for folder in level:
                for child in folder.children:
                    if not child.is_dir:
                        continue
                    number = item_number(child.name)
                    if number is not None and number in numbers:
                        self.items.setdefault(number, []).append(child)
                    elif number is not None:
                        self.unknown_items.append(child)
                    else:
                        below.append(child)
            if self.items or self.unknown_items:
                break
            self.wrappers.extend(below)
            level = below
        for number, folders in self.items.items():
            item = checklist.item(number)
            for folder in folders:
                if item is not None:
                    self._mark(folder, item)

    def sub_item_nodes(self, item: Item, sub: int) -> list[Node]:
        return [
            node
            for folder in self.items.get(item.number, [])
            for node in folder.walk()
            if node.sub_item == sub
            and (node.parent is None or node.parent.sub_item != sub)
        ]

    def _mark(self, folder: Node, item: Item) -> None:
        subs = {s.number for s in item.sub_items}
        for node in folder.walk():
            node.item = item.number
            parent = node.parent
            node.sub_item = parent.sub_item if parent and parent is not folder else None
            inside = node.depth - folder.depth
            if node.sub_item is None and subs and 0 < inside <= SUB_ITEM_LEVELS:
                marker = sub_item_marker(node.stem, item.number, is_dir=node.is_dir)
                node.sub_item = marker if marker in subs else None

    def _add(self, entry: SourceEntry) -> None:
        parent = self._folder(entry.path.rpartition("/")[0])
        node = self.nodes.get(entry.path)
        if node is None:
            name = entry.path.rpartition("/")[2]
            node = Node(entry.path, name, entry.is_dir, parent=parent)
            node.depth = parent.depth + 1
            parent.children.append(node)
            self.nodes[entry.path] = node
        node.is_dir = entry.is_dir
        node.size, node.mtime, node.sha256 = entry.size, entry.mtime, entry.sha256
        node.version = entry.version

    def _folder(self, path: str) -> Node:
        """The folder at ``path``, made up with its parents if not listed."""
        missing: list[str] = []
        while path not in self.nodes:
            missing.append(path)
            path = path.rpartition("/")[0]
        parent = self.nodes[path]
        for path in reversed(missing):
            node = Node(path, path.rpartition("/")[2], True, parent=parent)
            node.depth = parent.depth + 1
            parent.children.append(node)
            self.nodes[path] = node
            parent = node
        return parent
