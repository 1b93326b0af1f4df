"""Checks on one file's content: its real type and whether it is usable.

The type comes from :func:`sniff.sniff` (content, not name) and must be one
the item accepts: scans only where the annex asks for 扫描件, electronic
formats where it allows 电子版. The 基本信息表 is a spreadsheet wherever it
lives. Executables (by content or by a dangerous extension), empty,
encrypted, damaged files and zip bombs are errors; archives, a misleading
extension and macros are warnings.
"""

from __future__ import annotations

from censusdrop.config.checklist import Checklist
from censusdrop.config.checklist import Item

from .cache import ContentCache
from .cache import content_key
from .containers import Limits
from .kinds import FileKind
from .kinds import extension_fits
from .kinds import label
from .messages import finding
from .model import Finding
from .names import split_extension
from .sniff import sniff
from .source import TreeSource
from .source import reading
from .tree import Node

_FATAL = frozenset(
    {"file.empty", "file.executable", "file.encrypted", "file.corrupt", "file.zip_bomb"}
)
_MAX_TYPES_SHOWN = 12


class FileChecker:
    def __init__(
        self,
        source: TreeSource,
        checklist: Checklist,
        limits: Limits,
        cache: ContentCache | None = None,
    ) -> None:
        self._source = source
        self._checklist = checklist
        self._limits = limits
        self._cache = cache
        self._dangerous = {e.lower() for e in checklist.files.dangerous_extensions}
        self._all_forms = tuple(checklist.forms)

    def check(self, node: Node) -> list[Finding]:
        """Sniff ``node`` (setting ``node.kind``) and judge its type."""
        if node.name.startswith(self._checklist.files.temporary_prefixes):
            node.kind = FileKind("unknown")
            return []  # an editor's lock file: reported by name, not content
        ext = split_extension(node.name)[1]
        node.kind = self._kind(node, ext)
        kind = node.kind
        if kind.problem in _FATAL:
            return [finding(kind.problem, node.item, node.path, detail=kind.detail)]
        found = []
        if not extension_fits(ext, kind.type):
            found.append(
                finding(
                    "file.ext_mismatch",
                    node.item,
                    node.path,
                    ext=ext,
                    kind=label(kind.type),
                )
            )
        found += self._form_rules(node, kind)
        if kind.macro:
            found.append(finding("file.macro", node.item, node.path))
        return found

    def is_basic_info(self, node: Node) -> bool:
        rules = self._checklist.basic_info
        return any(k in node.name for k in rules.keywords) and (
            node.kind is not None and node.kind.type in rules.types
        )

    def _kind(self, node: Node, ext: str) -> FileKind:
        if ext in self._dangerous:
            return FileKind("executable", "file.executable")
        content = content_key(node)
        if self._cache is None or content is None:
            return self._sniff(node, ext)
        # The sniffer reads content and is told the extension, nothing else.
        key = ("kind", *content, node.size, ext, self._limits)
        return self._cache.recall(key, lambda: self._sniff(node, ext))

    def _sniff(self, node: Node, ext: str) -> FileKind:
        with reading(self._source, node.path) as fp:
            return sniff(fp, node.size, ext, self._limits)

    def _form_rules(self, node: Node, kind: FileKind) -> list[Finding]:
        item = self._checklist.item(node.item) if node.item else None
        forms = item.forms if item else self._all_forms
        accepted = self._checklist.accepted_types(forms)
        if kind.type in accepted or self.is_basic_info(node):
            return []
        files = self._checklist.files
        if kind.type in files.archives and set(forms) & set(files.archive_forms):
            return [finding("file.archive", node.item, node.path)]
        return [
            finding(
                "file.type_not_accepted",
                node.item,
                node.path,
                kind=label(kind.type),
                scope=_scope(item),
                forms="或".join(forms),
                types=_types_text(accepted),
            )
        ]


def _scope(item: Item | None) -> str:
    return f"第{item.number}项" if item else "验收资料"


def _types_text(types: frozenset[str]) -> str:
    names = sorted(t.upper() for t in types)
    shown = "、".join(names[:_MAX_TYPES_SHOWN])
    return shown + ("等" if len(names) > _MAX_TYPES_SHOWN else "")
