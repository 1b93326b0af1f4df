"""Judging one prefecture's tree against the checklist: :func:`validate`.

Pure: no FTP, no database, no clock (``at`` is "now"). It reads the tree
through a :class:`TreeSource` and returns a :class:`Report`; a
:class:`ContentCache` handed in spares it the contents it already knows,
without changing the report.

What it guarantees: it does not raise on bad input. A tree that cannot be
listed, and any unexpected exception while checking one file or one item,
become error findings, so a fault can only ever turn the verdict into
退回补充完善, never into 合格. Work per file is bounded (headers and the
first KBs only, limits on zip members), and so is the number of entries
read from the source.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import logging
import zoneinfo
from collections import defaultdict
from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Iterable
from functools import partial

from censusdrop.config.checklist import Checklist

from .cache import ContentCache
from .containers import Limits
from .filecheck import FileChecker
from .messages import FOLD_THRESHOLD
from .messages import FOLDABLE_PREFIXES
from .messages import MAX_PER_RULE
from .messages import finding
from .messages import folded
from .messages import overflow
from .messages import today_forms
from .model import Finding
from .model import ItemSummary
from .model import Prefecture
from .model import Report
from .model import TreeDigest
from .naming import NameChecker
from .source import SourceEntry
from .source import TreeChanged
from .source import TreeSource
from .structure import StructureChecker
from .tree import Node
from .tree import Tree

log = logging.getLogger(__name__)


def validate(
    source: TreeSource,
    checklist: Checklist,
    prefecture: Prefecture,
    *,
    at: dt.datetime,
    others: Iterable[Prefecture] = (),
    ignore: Collection[str] = (),
    limits: Limits | None = None,
    cache: ContentCache | None = None,
) -> Report:
    """Judge the tree in ``source`` as ``prefecture``'s submission.

    ``others`` are the prefectures whose names must not appear in this
    one's names (the own one is skipped if listed). ``ignore`` lists paths
    left out of every check and of the digest, such as the report files
    censusdrop itself writes into the area. ``cache`` keeps what was learnt
    from file contents for the next run; the report is the same with or
    without it.
    """
    zone = zoneinfo.ZoneInfo(checklist.census.timezone)
    # A naive ``at`` is taken as local time where the census happens.
    local = at.replace(tzinfo=zone) if at.tzinfo is None else at.astimezone(zone)
    today = local.date()
    findings: list[Finding] = []
    entries = _read_entries(source, checklist.files.max_files, findings)
    tree = Tree(entries, _ignorer(checklist, ignore))
    _guard(findings, "目录结构", lambda: tree.assign_items(checklist))

    names = NameChecker(checklist, prefecture, others, today)
    files = FileChecker(source, checklist, limits or Limits(), cache)
    for node in itertools.islice(tree.root.walk(), 1, None):
        _guard(findings, node.path, partial(names.check, node), node=node)
        if not node.is_dir:
            _guard(findings, node.path, partial(files.check, node), node=node)

    structure = StructureChecker(
        tree, source, checklist, prefecture, today_forms(today), cache
    )
    for rule in checklist.reports:
        _guard(findings, rule.title, partial(structure.report_checks, rule))
    for item in checklist.items:
        scope = f"第{item.number}项"
        _guard(findings, scope, partial(structure.item_checks, item))
    _guard(findings, "目录结构", structure.unknown_numbers)
    _guard(findings, "目录结构", structure.unassigned)

    finished = _finish(findings, {n.path for n in tree.files()})
    return Report(
        prefecture=prefecture,
        checklist=checklist.name,
        judged_at=local,
        digest=tree_digest(tree.root.walk()),
        findings=tuple(finished),
        items=_summaries(tree, checklist, finished),
    )


def listed_digest(
    source: TreeSource, checklist: Checklist, *, ignore: Collection[str] = ()
) -> TreeDigest:
    """The digest ``validate`` would give the tree in ``source``, from its
    listing alone: no file is opened, nothing is judged."""
    entries = _read_entries(source, checklist.files.max_files, [])
    tree = Tree(entries, _ignorer(checklist, ignore))
    return tree_digest(tree.root.walk())


def tree_digest(nodes: Iterable[Node]) -> TreeDigest:
    """SHA-256 over the sorted entries: contents when known, else metadata."""
    listed = sorted((n for n in nodes if n.path), key=lambda n: n.path)
    files = [n for n in listed if not n.is_dir]
    by_content = bool(files) and all(n.sha256 for n in files)
    digest = hashlib.sha256()
    for node in listed:
        if node.is_dir:
            fields = [node.path, "d"]
        elif by_content:
            fields = [node.path, "f", node.sha256 or ""]
        else:
            fields = [node.path, "f", str(node.size), f"{node.mtime:.6f}"]
        digest.update("\0".join(fields).encode("utf-8", "surrogatepass") + b"\n")
    return TreeDigest(
        sha256=digest.hexdigest(),
        kind="content" if by_content else "metadata",
        files=len(files),
        folders=len(listed) - len(files),
        bytes=sum(n.size for n in files),
    )


def _read_entries(
    source: TreeSource, limit: int, findings: list[Finding]
) -> list[SourceEntry]:
    entries: list[SourceEntry] = []
    try:
        for entry in source.walk():
            if len(entries) >= limit:
                findings.append(finding("tree.too_many_files", None, "", limit=limit))
                break
            entries.append(entry)
    except Exception as exc:
        log.exception("tree walk failed entries=%d", len(entries))
        findings.append(finding("tree.unreadable", None, "", detail=type(exc).__name__))
    return entries


def _ignorer(checklist: Checklist, ignore: Collection[str]) -> Callable[[str], bool]:
    names = {n.casefold() for n in checklist.files.ignored_names}
    paths = set(ignore)

    def ignored(path: str) -> bool:
        if path.rpartition("/")[2].casefold() in names:
            return True
        return any(path == p or path.startswith(p + "/") for p in paths)

    return ignored


def _guard(
    findings: list[Finding],
    scope: str,
    check: Callable[[], object],
    *,
    node: Node | None = None,
) -> None:
    """Run one check; its exception becomes an error finding, never a pass."""
    try:
        result = check()
    except TreeChanged:
        raise  # not a fault of the file: the whole run is judged again
    except Exception:
        log.exception("validation check failed scope=%r", scope)
        if node is not None:
            findings.append(finding("file.check_failed", node.item, node.path))
        else:
            findings.append(finding("check.failed", None, "", scope=scope))
        return
    if isinstance(result, list):
        findings.extend(result)


def _finish(findings: list[Finding], files: set[str]) -> list[Finding]:
    """Fold repeated file findings per folder, cap each rule, sort."""
    groups: dict[tuple[str, int | None, str, str], list[Finding]] = defaultdict(list)
    kept: list[Finding] = []
    for f in findings:
        if f.path in files and f.rule.startswith(FOLDABLE_PREFIXES):
            groups[(f.rule, f.item, f.path.rpartition("/")[0], f.message)].append(f)
        else:
            kept.append(f)
    for group in groups.values():
        if len(group) > FOLD_THRESHOLD:
            kept.append(folded(group, [g.path.rpartition("/")[2] for g in group]))
        else:
            kept.extend(group)
    kept = sorted(set(kept), key=lambda f: (f.item or 0, f.path, f.rule, f.message))
    per_rule: dict[str, int] = defaultdict(int)
    capped: list[Finding] = []
    for f in kept:
        per_rule[f.rule] += 1
        if per_rule[f.rule] <= MAX_PER_RULE:
            capped.append(f)
    for rule, count in per_rule.items():
        if count > MAX_PER_RULE:
            severity = next(f.severity for f in kept if f.rule == rule)
            capped.append(overflow(rule, severity, count - MAX_PER_RULE))
    return capped


def _summaries(
    tree: Tree, checklist: Checklist, findings: list[Finding]
) -> tuple[ItemSummary, ...]:
    summaries = []
    for item in checklist.items:
        folders = tree.items.get(item.number, [])
        mine = [f for f in findings if f.item == item.number]
        summaries.append(
            ItemSummary(
                number=item.number,
                title=item.title,
                required=item.required,
                present=bool(folders),
                folders=tuple(f.path for f in folders),
                files=sum(1 for f in folders for _ in f.files()),
                errors=sum(1 for f in mine if f.is_error),
                warnings=sum(1 for f in mine if not f.is_error),
            )
        )
    return tuple(summaries)
