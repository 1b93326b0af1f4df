"""Hyperlinks of a docx report and whether they lead to files in the tree.

The self-assessment report must link to the archive materials. Links are
read from ``word/_rels/document.xml.rels`` (bounded, no DTD allowed) and
resolved the way Word does: relative to the report's folder. Links written
on the prefecture's PC are often absolute (``file:///D:/验收/3.…/x.pdf``);
such a link counts when its last components (at least the file and its
folder) match a path in the tree. Web and mail links are not file links.
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
import zipfile
from collections.abc import Iterable
from typing import IO
from xml.etree import ElementTree

from .model import ValidationError

RELS = "word/_rels/document.xml.rels"
MAX_RELS_BYTES = 2 << 20
MAX_LINKS = 2000
_HYPERLINK = "/relationships/hyperlink"
_NOT_FILE = re.compile(r"^(https?|mailto|ftp|tel|news|javascript):", re.IGNORECASE)
_DRIVE = re.compile(r"^[A-Za-z]:/")


class LinkError(ValidationError):
    """The document's links could not be read; message in Chinese."""


def docx_links(fp: IO[bytes]) -> list[str]:
    """Targets of the hyperlinks in a docx's main document, in order."""
    try:
        with zipfile.ZipFile(fp) as archive, archive.open(RELS) as member:
            data = member.read(MAX_RELS_BYTES + 1)
    except KeyError:
        return []  # no relationships part: no links
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise LinkError("文档结构损坏") from exc
    if len(data) > MAX_RELS_BYTES or b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise LinkError("文档的链接部分异常")
    try:
        # No DTD can be in ``data`` (checked above), so no entity expansion.
        root = ElementTree.fromstring(data)  # noqa: S314
    except ElementTree.ParseError as exc:
        raise LinkError("文档的链接部分无法解析") from exc
    return [
        rel.get("Target", "")
        for rel in root
        if rel.get("Type", "").endswith(_HYPERLINK)
    ][:MAX_LINKS]


def file_target(target: str) -> str | None:
    """The path a link points to (``/``-separated), None for web links."""
    target = target.strip()
    if not target or target.startswith("#") or _NOT_FILE.match(target):
        return None
    path = urllib.parse.unquote(target.split("#", 1)[0]).replace("\\", "/")
    if path.lower().startswith("file:"):
        path = path[5:].lstrip("/")
        if not _DRIVE.match(path):
            path = "//" + path  # file://server/share/…
    return path or None


class LinkResolver:
    """Answers whether a link target names a file or folder of the tree."""

    def __init__(self, paths: Iterable[str]) -> None:
        self._paths: set[str] = set()
        self._suffixes: set[str] = set()
        for path in paths:
            folded = path.casefold()
            self._paths.add(folded)
            parts = folded.split("/")
            for k in range(1, len(parts) + 1):
                self._suffixes.add("/".join(parts[-k:]))

    def resolves(self, target: str, base: str) -> bool:
        is_absolute = target.startswith("/") or bool(_DRIVE.match(target))
        if not is_absolute:
            joined = posixpath.normpath(posixpath.join(base, target))
            if not joined.startswith("..") and joined.casefold() in self._paths:
                return True
        parts = [p for p in target.casefold().split("/") if p not in ("", ".")]
        if ".." in parts:
            parts = parts[len(parts) - parts[::-1].index("..") :]
        shortest = 2 if len(parts) >= 2 else 1
        return any(
            "/".join(parts[-k:]) in self._suffixes
            for k in range(len(parts), shortest - 1, -1)
        )
