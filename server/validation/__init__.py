"""Pre-review: validation of a prefecture tree against the checklist.

``validate(source, checklist, prefecture, at=...)`` reads a tree through a
``TreeSource`` (``DirectorySource`` for plain folders) and returns a
``Report``; ``render_text``, ``render_html`` and ``to_json`` present it.
Modules, in reading order: ``model`` (report values), ``source`` (tree
access), ``names`` (reading names), ``kinds``/``sniff``/``containers``
(file content), ``sheets`` and ``links`` (spreadsheet headers, docx links),
``tree`` (the tree in memory), ``cache`` (content facts kept between
runs), ``naming``/``filecheck``/``counted``/``structure`` (the rules),
``messages`` (rule ids and Chinese sentences), ``validator`` (the entry
point), ``render``/``render_html``.
"""

from .cache import ContentCache
from .containers import Limits
from .model import PASSED
from .model import RETURNED
from .model import Finding
from .model import ItemSummary
from .model import Prefecture
from .model import Report
from .model import Severity
from .model import TreeDigest
from .model import ValidationError
from .render import render_text
from .render import to_json
from .render_html import render_html
from .source import DirectorySource
from .source import SourceEntry
from .source import SourceError
from .source import TreeChanged
from .source import TreeSource
from .validator import listed_digest
from .validator import tree_digest
from .validator import validate

__all__ = [
    "PASSED",
    "RETURNED",
    "ContentCache",
    "DirectorySource",
    "Finding",
    "ItemSummary",
    "Limits",
    "Prefecture",
    "Report",
    "Severity",
    "SourceEntry",
    "SourceError",
    "TreeChanged",
    "TreeDigest",
    "TreeSource",
    "ValidationError",
    "listed_digest",
    "render_html",
    "render_text",
    "to_json",
    "tree_digest",
    "validate",
]
