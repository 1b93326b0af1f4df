"""The acceptance checklist: annex 1 of the plan, loaded from a TOML file.

Rules are data: the items, their accepted forms, the naming rules, the
source-type folders and the columns of the 基本信息表 all come from a file
under ``config/data/`` (schema in ``checklist-hubei-2020.toml``). This module
reads such a file into frozen dataclasses and refuses a malformed one with a
single exception, :class:`ChecklistError`, whose message names the line.
Unknown keys are refused too, so that a typo cannot silently drop a rule.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import re
import tomllib
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING
from typing import Any
from typing import NoReturn
from typing import TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

DATA_DIR = Path(__file__).parent / "data"
SCHEMA_VERSION = 1
SEVERITIES = frozenset({"error", "warning"})
SHEET_TYPES = frozenset({"xlsx", "xls", "et", "csv"})

# Every file type the content sniffer can name; forms may only use these.
FILE_TYPES = frozenset(
    {
        "pdf", "ofd", "jpeg", "png", "tiff", "gif", "bmp", "webp", "heic",
        "doc", "docx", "wps", "txt", "xls", "xlsx", "et", "csv",
        "ppt", "pptx", "dps", "mp3", "wav", "m4a", "flac", "ogg", "amr",
        "wma", "mp4", "mov", "avi", "wmv", "flv", "mkv", "mpeg", "3gp",
        "zip", "rar", "7z",
    }
)  # fmt: skip

Path_ = tuple[str | int, ...]
Table = dict[str, Any]
_R = TypeVar("_R", bound="DataclassInstance")

_MISSING: Any = object()


class ChecklistError(ValueError):
    """A checklist file that cannot be used; ``line`` is 1-based or None."""

    def __init__(self, origin: str, line: int | None, problem: str) -> None:
        where = f"{origin}, line {line}" if line else origin
        super().__init__(f"{where}: {problem}")
        self.origin = origin
        self.line = line
        self.problem = problem


@dataclasses.dataclass(frozen=True, slots=True)
class SubItem:
    number: int
    title: str
    required: bool = True
    counted: bool = False
    confirmation: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Item:
    number: int
    title: str
    forms: tuple[str, ...]
    description: str = ""
    required: bool = True
    counted: bool = False
    confirmation: bool = False
    sub_items: tuple[SubItem, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class SourceType:
    name: str
    aliases: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class ColumnRule:
    """A required header column; ``alternative`` columns together also do."""

    name: str
    variants: tuple[str, ...] = ()
    alternative: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class BasicInfoRules:
    types: frozenset[str]
    keywords: tuple[str, ...] = ("基本信息表",)
    columns: tuple[ColumnRule, ...] = ()
    header_rows: int = 10
    header_columns: int = 60
    max_bytes: int = 64 << 20


@dataclasses.dataclass(frozen=True, slots=True)
class ReportRule:
    """A report that must be present; ``item`` None means anywhere."""

    key: str
    title: str
    types: frozenset[str]
    keywords: tuple[str, ...] = ()
    item: int | None = None
    check_links: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class FileRules:
    archives: frozenset[str] = frozenset()
    archive_forms: tuple[str, ...] = ()
    dangerous_extensions: tuple[str, ...] = ()
    ignored_names: tuple[str, ...] = ()
    temporary_prefixes: tuple[str, ...] = ()
    max_depth: int = 10
    max_files: int = 50000
    max_path_chars: int = 240


@dataclasses.dataclass(frozen=True, slots=True)
class NamingRules:
    folders: bool = True
    files: bool = True
    require_prefecture: bool = True
    require_date: bool = True
    require_content: bool = True
    inherit_from_folder: bool = False
    severity: str = "error"
    count_units: tuple[str, ...] = ("份",)


@dataclasses.dataclass(frozen=True, slots=True)
class CountedRules:
    sources: tuple[SourceType, ...] = ()
    not_counted: tuple[str, ...] = ()
    confirmation_keywords: tuple[str, ...] = ("确认",)


@dataclasses.dataclass(frozen=True, slots=True)
class Census:
    """When the census began (no submission date is earlier) and where."""

    start: dt.date
    timezone: str = "Asia/Shanghai"


@dataclasses.dataclass(frozen=True, slots=True)
class Checklist:
    name: str
    province: str
    year: int
    census: Census
    forms: Mapping[str, frozenset[str]]
    files: FileRules
    naming: NamingRules
    counted: CountedRules
    basic_info: BasicInfoRules
    reports: tuple[ReportRule, ...]
    items: tuple[Item, ...]
    source: str = ""

    def item(self, number: int) -> Item | None:
        return next((i for i in self.items if i.number == number), None)

    def accepted_types(self, forms: tuple[str, ...]) -> frozenset[str]:
        """File types accepted by an item with these forms."""
        return frozenset().union(*(self.forms[f] for f in forms))


def bundled_checklist_path(name: str = "hubei-2020") -> Path:
    return DATA_DIR / f"checklist-{name}.toml"


def load_checklist(path: Path) -> Checklist:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ChecklistError(str(path), None, f"cannot read: {exc}") from exc
    return parse_checklist(text, origin=str(path))


def parse_checklist(text: str, *, origin: str = "<checklist>") -> Checklist:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"at line (\d+)", str(exc))
        line = int(match.group(1)) if match else None
        raise ChecklistError(origin, line, f"not valid TOML: {exc}") from exc
    return _Reader(text, origin).checklist(data)


class _Reader:
    """Typed access to the parsed TOML; every failure names its line."""

    def __init__(self, text: str, origin: str) -> None:
        self._lines = text.splitlines()
        self._origin = origin

    def checklist(self, data: Table) -> Checklist:
        if self._get(data, ("schema",), int, _MISSING) != SCHEMA_VERSION:
            self.fail(("schema",), f"schema must be {SCHEMA_VERSION}")
        body = {k: v for k, v in data.items() if k != "schema"}
        checklist = self._record(Checklist, body, ())
        self._check(checklist)
        return checklist

    def _check(self, c: Checklist) -> None:
        """Rules across fields, once every field has its type."""
        self._unique([i.number for i in c.items], ("items",), "number")
        self._unique([r.key for r in c.reports], ("reports",), "key")
        for n, item in enumerate(c.items):
            p: Path_ = ("items", n)
            self._unique(
                [s.number for s in item.sub_items], (*p, "sub_items"), "number"
            )
            if not item.forms:
                self.fail((*p, "forms"), "an item needs at least one form")
            for form in item.forms:
                if form not in c.forms:
                    self.fail((*p, "forms"), f"unknown form {form!r}")
        numbers = {i.number for i in c.items}
        for n, report in enumerate(c.reports):
            if report.item is not None and report.item not in numbers:
                self.fail(("reports", n, "item"), f"no item {report.item} here")
        counted = any(i.counted or any(s.counted for s in i.sub_items) for i in c.items)
        if counted and not c.counted.sources:
            self.fail(("counted", "sources"), "counted items need sources")
        if c.naming.severity not in SEVERITIES:
            self.fail(("naming", "severity"), "must be error or warning")
        if not c.basic_info.types <= SHEET_TYPES:
            self.fail(("basic_info", "types"), f"readable: {sorted(SHEET_TYPES)}")
        try:
            zoneinfo.ZoneInfo(c.census.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            self.fail(("census", "timezone"), "unknown time zone")

    def _record(self, cls: type[_R], t: Table, p: Path_) -> _R:
        """Build a dataclass from a table, reading each field by its type."""
        fields = dataclasses.fields(cls)
        self._keys(t, p, {f.name for f in fields})
        values = {}
        for field in fields:
            default = field.default
            if default is dataclasses.MISSING:
                default = _MISSING
            q, kind = (*p, field.name), str(field.type)
            inner = _RECORDS.get(kind.removeprefix("tuple[").removesuffix(", ...]"))
            if inner is not None and kind.startswith("tuple["):
                tables = enumerate(self._tables(t, q))
                values[field.name] = tuple(
                    self._record(inner, s, (*q, n)) for n, s in tables
                )
            elif inner is not None:
                values[field.name] = self._record(inner, self._table(t, q), q)
            else:
                values[field.name] = _FIELD_READERS[kind](self, t, q, default)
        return cls(**values)

    # Typed getters: a key with the _MISSING default is required.

    def _get(self, t: Table, p: Path_, kind: type, default: Any) -> Any:
        key = p[-1]
        if key not in t:
            if default is _MISSING:
                self.fail(p[:-1], f"missing key {key!r}")
            return default
        value = t[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(p, f"expected {kind.__name__}, got {value!r}")
        return value

    def _str(self, t: Table, p: Path_, default: Any = _MISSING) -> str:
        value: str = self._get(t, p, str, default)
        if default is _MISSING and not value.strip():
            self.fail(p, "must not be empty")
        return value

    def _positive(self, t: Table, p: Path_, default: Any = _MISSING) -> int | None:
        value: int | None = self._get(t, p, int, default)
        if p[-1] in t and (value is None or value <= 0):
            self.fail(p, "must be a positive integer")
        return value

    def _date(self, t: Table, p: Path_, default: Any = _MISSING) -> dt.date:
        value = self._get(t, p, dt.date, default)
        if type(value) is not dt.date:  # a datetime is a date too
            self.fail(p, "expected a date such as 2016-10-20")
        return value

    def _strs(self, t: Table, p: Path_, default: Any = ()) -> tuple[str, ...]:
        default = default if default is _MISSING else list(default)
        values: list[Any] = self._get(t, p, list, default)
        for value in values:
            if not isinstance(value, str) or not value:
                self.fail(p, f"expected non-empty strings, got {value!r}")
        return tuple(values)

    def _types(self, t: Table, p: Path_, default: Any = ()) -> frozenset[str]:
        types = frozenset(self._strs(t, p, default))
        unknown = sorted(types - FILE_TYPES)
        if unknown:
            self.fail(p, f"unknown file type(s) {unknown}")
        return types

    def _forms(self, t: Table, p: Path_, default: Any) -> Mapping[str, frozenset[str]]:
        table = self._table(t, p)
        if not table:
            self.fail(p, "at least one form is needed")
        return MappingProxyType({f: self._types(table, (*p, f)) for f in table})

    def _table(self, t: Table, p: Path_) -> Table:
        return self._get(t, p, dict, _MISSING)  # type: ignore[no-any-return]

    def _tables(self, t: Table, p: Path_) -> list[Table]:
        values: list[Any] = self._get(t, p, list, [])
        for n, value in enumerate(values):
            if not isinstance(value, dict):
                self.fail((*p, n), f"expected a table, got {value!r}")
        return values

    def _keys(self, t: Table, p: Path_, known: set[str]) -> None:
        for key in t:
            if key not in known:
                self.fail((*p, key), f"unknown key {key!r}")

    def _unique(self, values: list[Any], p: Path_, key: str) -> None:
        seen = set()
        for n, value in enumerate(values):
            if value in seen:
                self.fail((*p, n, key), f"duplicate {key} {value!r}")
            seen.add(value)

    def fail(self, p: Path_, problem: str) -> NoReturn:
        dotted = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in p)
        dotted = dotted.removeprefix(".")
        message = f"{dotted}: {problem}" if dotted else problem
        raise ChecklistError(self._origin, self._line_of(p), message)

    def _line_of(self, p: Path_) -> int | None:
        """Best-effort line of a key path, found by scanning the text: an
        index counts ``[[...]]`` headers, or ``{`` in an inline array."""
        line, start, end = None, 0, len(self._lines)
        for i, key in enumerate(p):
            if isinstance(key, int):
                continue
            index = p[i + 1] if i + 1 < len(p) else None
            n = index if isinstance(index, int) else 0
            name = re.escape(key)
            headers = self._hits(rf"^\s*\[\[?\s*([\w.\"]+\.)?\"?{name}\"?\s*\]", start)
            if n < len(headers):
                start = headers[n]
                end = next(iter(self._hits(r"^\s*\[", start + 1)), len(self._lines))
            else:
                keys = self._hits(
                    rf"^\s*\"?{name}\"?\s*=|[{{,]\s*{name}\s*=", start, end
                )
                if not keys:
                    break
                braces = self._hits(r"\{", keys[0], end)
                has_index = isinstance(index, int) and n < len(braces)
                start = braces[n] if has_index else keys[0]
            line = start + 1
        return line

    def _hits(self, pattern: str, start: int, end: int | None = None) -> list[int]:
        regex = re.compile(pattern)
        lines = itertools.islice(enumerate(self._lines), start, end)
        return [n for n, text in lines if regex.search(text)]


_RECORDS: dict[str, Any] = {
    cls.__name__: cls
    for cls in (
        SubItem, Item, SourceType, ColumnRule, BasicInfoRules, ReportRule,
        FileRules, NamingRules, CountedRules, Census,
    )
}  # fmt: skip
_FIELD_READERS: dict[str, Any] = {
    "str": _Reader._str,
    "int": _Reader._positive,
    "int | None": _Reader._positive,
    "bool": lambda r, t, p, d: r._get(t, p, bool, d),
    "dt.date": _Reader._date,
    "tuple[str, ...]": _Reader._strs,
    "frozenset[str]": _Reader._types,
    "Mapping[str, frozenset[str]]": _Reader._forms,
}
