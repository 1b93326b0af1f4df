"""Reading the header of a 基本信息表 and matching its required columns.

Only the first rows and columns of the first few sheets are read: xlsx
with openpyxl in read-only mode (the zip was already checked for bombs),
xls and WPS et (an OLE2 workbook inside) with xlrd, csv as UTF-8 or
GB18030. A title row above the header is normal, so the best of the first
rows is taken as the header. Column names are matched exactly first, then
by containment, each cell used once, so that 联系人电话 cannot stand for
both 联系人 and 联系方式.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import warnings
from collections.abc import Iterable
from collections.abc import Sequence
from typing import IO
from typing import Any

from censusdrop.config.checklist import BasicInfoRules
from censusdrop.config.checklist import ColumnRule

from .model import ValidationError
from .names import halfwidth

MAX_SHEETS = 3
CSV_BYTES = 64 << 10
_NOISE = re.compile(r"[\s*※:：]+")


class SheetError(ValidationError):
    """The header could not be read; the message is Chinese, for the report."""


def header_rows(
    fp: IO[bytes], file_type: str, rules: BasicInfoRules
) -> list[list[str]]:
    """The first rows of the first sheets, as normalised cell texts."""
    try:
        if file_type == "xlsx":
            rows = _xlsx_rows(fp, rules)
        elif file_type in ("xls", "et"):
            rows = _xls_rows(fp, rules)
        elif file_type == "csv":
            rows = _csv_rows(fp, rules)
        else:
            raise SheetError(f"不支持读取{file_type}格式的表头")
    except SheetError:
        raise
    except Exception as exc:  # each reader raises its own kinds on bad input
        raise SheetError("表格内容无法解析") from exc
    return [[_normal(cell) for cell in row] for row in rows]


def missing_columns(
    rows: Sequence[Sequence[str]], columns: Sequence[ColumnRule]
) -> list[str]:
    """The required columns that the best header row lacks."""
    best = [c.name for c in columns]
    for row in rows:
        missing = _missing_in_row(row, columns)
        if len(missing) < len(best):
            best = missing
        if not best:
            break
    return best


def _missing_in_row(row: Sequence[str], columns: Sequence[ColumnRule]) -> list[str]:
    used: set[int] = set()
    found: set[str] = set()
    for exact in (True, False):
        for column in columns:
            if column.name in found:
                continue
            index = _match(row, (column.name, *column.variants), used, exact)
            if index is not None:
                used.add(index)
                found.add(column.name)
    for column in columns:
        if column.name in found or not column.alternative:
            continue
        hits = [_match(row, (alt,), used, False) for alt in column.alternative]
        if all(h is not None for h in hits) and len(set(hits)) == len(hits):
            used.update(h for h in hits if h is not None)
            found.add(column.name)
    return [c.name for c in columns if c.name not in found]


def _match(
    row: Sequence[str], names: Iterable[str], used: set[int], exact: bool
) -> int | None:
    wanted = [_normal(n) for n in names]
    for index, cell in enumerate(row):
        if index in used or not cell:
            continue
        if any(cell == w if exact else w in cell for w in wanted):
            return index
    return None


def _normal(value: Any) -> str:
    if value is None:
        return ""
    text = halfwidth(str(value))[:80]
    return _NOISE.sub("", text).replace("(", "（").replace(")", "）").lower()


def _xlsx_rows(fp: IO[bytes], rules: BasicInfoRules) -> list[list[Any]]:
    import openpyxl

    with warnings.catch_warnings():
        # openpyxl warns about styles and extensions it ignores.
        warnings.simplefilter("ignore")
        book = openpyxl.load_workbook(fp, read_only=True, data_only=True)
        try:
            rows: list[list[Any]] = []
            for sheet in book.worksheets[:MAX_SHEETS]:
                for row in sheet.iter_rows(
                    max_row=rules.header_rows,
                    max_col=rules.header_columns,
                    values_only=True,
                ):
                    rows.append(list(row))
            return rows
        finally:
            book.close()


def _xls_rows(fp: IO[bytes], rules: BasicInfoRules) -> list[list[Any]]:
    import xlrd

    data = fp.read(rules.max_bytes + 1)
    if len(data) > rules.max_bytes:
        raise SheetError("文件过大，无法读取表头")
    book = xlrd.open_workbook(file_contents=data, on_demand=True, logfile=io.StringIO())
    try:
        rows: list[list[Any]] = []
        for index in range(min(book.nsheets, MAX_SHEETS)):
            sheet = book.sheet_by_index(index)
            width = min(sheet.ncols, rules.header_columns)
            for r in range(min(sheet.nrows, rules.header_rows)):
                rows.append(sheet.row_values(r, 0, width))
        return rows
    finally:
        book.release_resources()


def _csv_rows(fp: IO[bytes], rules: BasicInfoRules) -> list[list[Any]]:
    text = _decode_csv(fp.read(CSV_BYTES))
    lines = text.splitlines()[: rules.header_rows]
    try:
        dialect: Any = csv.Sniffer().sniff("\n".join(lines), delimiters=",\t;")
    except csv.Error:
        dialect = csv.excel
    return [row for row in csv.reader(lines, dialect)]


def _decode_csv(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    for encoding in ("utf-8-sig", "gb18030"):
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            return str(decoder.decode(data, final=False))
        except UnicodeDecodeError:
            continue
    raise SheetError("文字编码无法识别，请另存为UTF-8编码")
