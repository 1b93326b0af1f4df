"""The page around the audit report: style sheet, shell and table helper.

The page must open anywhere, offline, years later, and print on A4: so the
style sheet is inline, fonts are the reader's own (a list of common CJK
fonts, no download), there is no script, and each major section starts a
new printed page. All text goes through ``esc`` unless it is ``Html``
built here, so names and paths from the log cannot inject markup.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from html import escape

STYLE = """
@page { size: A4; margin: 14mm 12mm 16mm; }
:root { --ink: #1f2328; --muted: #59636e; --line: #d0d7de; --ok: #1a7f37;
  --bad: #c62828; --warn: #9a6700; --head: #f3f4f6; }
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { font-family: "Noto Sans CJK SC", "Source Han Sans SC", "Noto Sans SC",
  "Microsoft YaHei", "PingFang SC", "WenQuanYi Micro Hei", "SimSun", sans-serif;
  color: var(--ink); font-size: 10.5pt; line-height: 1.5; max-width: 1100px;
  margin: 0 auto; padding: 24px 28px; background: #fff; }
h1 { font-size: 20pt; margin: 0 0 2px; }
h2 { font-size: 15pt; border-bottom: 2px solid var(--ink); padding-bottom: 3px;
  margin: 0 0 10px; }
h3 { font-size: 12pt; margin: 18px 0 6px; break-after: avoid; }
p { margin: 4px 0 8px; }
section.page { break-before: page; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px;
  font-size: 9pt; }
th, td { border: 1px solid var(--line); padding: 3px 6px; text-align: left;
  vertical-align: top; }
th { background: var(--head); font-weight: 600; white-space: nowrap; }
thead { display: table-header-group; }
tr { break-inside: avoid; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums;
  white-space: nowrap; }
td:first-child { white-space: nowrap; }
tr.total td { font-weight: 700; background: #f6f8fa; }
span.file { word-break: break-all; }
.hash { font-family: "DejaVu Sans Mono", "Noto Sans Mono", monospace;
  font-size: 8.5pt; word-break: break-all; }
.meta th { width: 9em; }
.verdict { border: 2px solid; border-radius: 6px; padding: 8px 14px;
  margin: 12px 0; break-inside: avoid; }
.verdict.ok { border-color: var(--ok); background: #eef8f0; }
.verdict.failed { border-color: var(--bad); background: #fdecec; }
.verdict .title { font-size: 14pt; font-weight: 700; }
.verdict.ok .title { color: var(--ok); }
.verdict.failed .title { color: var(--bad); }
.warning { color: var(--warn); }
.figures { display: grid; grid-template-columns: repeat(4, 1fr); gap: 6px;
  margin: 8px 0 12px; }
.figure { border: 1px solid var(--line); border-radius: 4px; padding: 4px 8px; }
.figure b { display: block; font-size: 14pt; }
.figure.alert b { color: var(--bad); }
figure.chart { margin: 6px 0 14px; break-inside: avoid; }
figure.chart figcaption { font-size: 9pt; color: var(--muted); }
svg.timeline { width: 100%; height: auto; display: block; }
.muted { color: var(--muted); }
.rule { background: #f6f8fa; border-left: 4px solid var(--line);
  padding: 4px 10px; font-size: 9.5pt; }
.items { font-size: 8.5pt; color: var(--muted); margin: 2px 0 0;
  word-break: break-all; }
.none { color: var(--muted); font-style: italic; }
nav.toc ol { margin: 4px 0; padding-left: 1.6em; }
a { color: #0b5cad; }
@media print {
  body { max-width: none; padding: 0; font-size: 9.5pt; }
  a { color: inherit; text-decoration: none; }
}
@media screen {
  section.page { margin-top: 32px; border-top: 1px dashed var(--line);
    padding-top: 20px; }
}
"""


class Html(str):
    """Text that already is HTML (built here, never taken from the log)."""

    __slots__ = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """A table row: its cells and ``data-*`` attributes for machines."""

    cells: Sequence[object]
    data: Mapping[str, object] = dataclasses.field(default_factory=dict)
    total: bool = False


def esc(value: object) -> Html:
    """``value`` as HTML text; ``Html`` passes through, None is empty."""
    if isinstance(value, Html):
        return value
    return Html("" if value is None else escape(str(value)))


def join(parts: Iterable[str]) -> Html:
    return Html("\n".join(parts))


def tag(name: str, content: object, **attrs: object) -> Html:
    """``<name attrs>content</name>``; ``class_`` gives ``class``."""
    return Html(f"<{name}{attributes(attrs)}>{esc(content)}</{name}>")


def attributes(attrs: Mapping[str, object]) -> str:
    """`` key="value"`` pairs; ``data_x`` becomes ``data-x``, None is left out."""
    parts = []
    for key, value in attrs.items():
        if value is None:
            continue
        name = key.rstrip("_").replace("_", "-")
        parts.append(f' {name}="{escape(str(value))}"')
    return "".join(parts)


def table(
    headers: Sequence[str],
    rows: Iterable[Row],
    *,
    limit: int | None = None,
    class_: str | None = None,
    **attrs: object,
) -> Html:
    """A table; past ``limit`` rows it says how many more there were."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body: list[str] = []
    left_out = 0
    for row in rows:
        if limit is not None and len(body) >= limit and not row.total:
            left_out += 1
            continue
        body.append(_row(row))
    if left_out:
        note = f"另有 {left_out} 行未列出；可用 censusdrop audit log 查询全部记录。"
        body.append(f'<tr><td colspan="{len(headers)}" class="muted">{note}</td></tr>')
    return Html(
        f"<table{attributes({'class_': class_, **attrs})}>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def fields(items: Iterable[tuple[str, object]], **attrs: object) -> Html:
    """A two-column table of labelled values."""
    rows = "".join(
        f"<tr><th>{esc(label)}</th><td>{esc(value)}</td></tr>" for label, value in items
    )
    attrs = {"class_": "meta", **attrs}
    return Html(f"<table{attributes(attrs)}><tbody>{rows}</tbody></table>")


def page(title: str, sections: Iterable[str]) -> str:
    """The whole document."""
    return (
        '<!DOCTYPE html>\n<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )


def _row(row: Row) -> str:
    data = {f"data_{key}": value for key, value in row.data.items()}
    if row.total:
        data["class_"] = "total"
    cells = "".join(_cell(value) for value in row.cells)
    return f"<tr{attributes(data)}>{cells}</tr>"


def _cell(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"<td>{esc(value)}</td>"
    return f'<td class="num">{value:,}</td>'
