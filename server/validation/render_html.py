"""The report as one self-contained HTML page (no scripts, no links out).

Meant to be opened from the prefecture's area in any browser and printed:
inline styles only, a print stylesheet that keeps rows whole, every text
escaped (paths come from uploaders and may hold anything).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from .model import Finding
from .model import ItemSummary
from .model import Report
from .render import item_label
from .render import path_label

_STYLE = """
body { font-family: "Microsoft YaHei", "PingFang SC", "Noto Sans CJK SC",
  "SimSun", sans-serif; margin: 2em auto; max-width: 60em; color: #222;
  line-height: 1.6; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; }
h2 { font-size: 1.15em; border-bottom: 2px solid #888; margin-top: 1.6em; }
.verdict { font-size: 1.3em; font-weight: bold; padding: .3em .8em;
  display: inline-block; border: 2px solid; }
.pass { color: #1a6b2a; } .fail { color: #a31515; }
table { border-collapse: collapse; width: 100%; font-size: .95em; }
th, td { border: 1px solid #bbb; padding: .3em .5em; text-align: left;
  vertical-align: top; }
th { background: #eee; white-space: nowrap; }
td.n { white-space: nowrap; }
.meta td:first-child { width: 6em; white-space: nowrap; }
td.path { word-break: break-all; font-family: monospace, "SimSun"; }
td.rule { color: #666; font-size: .85em; white-space: nowrap; }
.meta td { border: none; padding: .1em .5em .1em 0; }
.none { color: #666; }
.digest { color: #666; font-size: .85em; word-break: break-all; }
@media print {
  body { margin: 0; max-width: none; }
  tr, td { page-break-inside: avoid; }
  h2 { page-break-after: avoid; }
}
"""


def render_html(report: Report, *, notes: Sequence[tuple[str, str]] = ()) -> str:
    """The HTML page; ``notes`` are (label, value) rows under the verdict."""
    name = escape(report.prefecture.name)
    verdict_class = "pass" if report.passed else "fail"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="zh-CN"><head><meta charset="utf-8">',
        f"<title>{name}验收资料预审报告</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{name}验收资料预审报告</h1>",
        f'<p class="verdict {verdict_class}">预审结论：{escape(report.verdict)}</p>',
        _meta(report, notes),
        _advice(report),
        _findings("一、错误（必须改正）", report.errors),
        _findings("二、提醒（建议改正）", report.warnings),
        _items(report.items),
        f'<p class="digest">资料校验码（SHA-256）：{report.digest.sha256}</p>',
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _meta(report: Report, notes: Sequence[tuple[str, str]]) -> str:
    rows = [
        *notes,
        ("预审时间", report.judged_at.strftime("%Y-%m-%d %H:%M:%S")),
        ("依据清单", report.checklist),
        (
            "检查范围",
            f"{report.digest.files}个文件，{report.digest.folders}个文件夹",
        ),
        (
            "问题统计",
            f"错误{len(report.errors)}项（必须改正），"
            f"提醒{len(report.warnings)}项（建议改正）",
        ),
    ]
    cells = "".join(
        f"<tr><td>{escape(k)}：</td><td>{escape(v)}</td></tr>" for k, v in rows
    )
    return f'<table class="meta">{cells}</table>'


def _advice(report: Report) -> str:
    if report.passed:
        return "<p>预审合格，没有必须改正的问题。</p>"
    return "<p>预审未通过，请按下列说明改正后重新上传，系统会自动再次预审。</p>"


def _findings(title: str, findings: tuple[Finding, ...]) -> str:
    head = f"<h2>{escape(title)}</h2>"
    if not findings:
        return head + '<p class="none">无</p>'
    rows = "".join(
        "<tr>"
        f'<td class="n">{n}</td>'
        f'<td class="n">{escape(item_label(f))}</td>'
        f'<td class="path">{escape(path_label(f))}</td>'
        f"<td>{escape(f.message)}</td>"
        f'<td class="rule">{escape(f.rule)}</td>'
        "</tr>"
        for n, f in enumerate(findings, 1)
    )
    header = (
        "<tr><th>序号</th><th>项目</th><th>位置</th>"
        "<th>问题及改正方法</th><th>规则</th></tr>"
    )
    return f"{head}<table>{header}{rows}</table>"


def _items(items: tuple[ItemSummary, ...]) -> str:
    rows = "".join(
        "<tr>"
        f"<td>{i.number}</td>"
        f"<td>{escape(i.title)}</td>"
        f"<td>{_state(i)}</td>"
        f"<td>{i.files}</td>"
        f"<td>{i.errors}</td>"
        f"<td>{i.warnings}</td>"
        "</tr>"
        for i in items
    )
    header = (
        "<tr><th>序号</th><th>项目</th><th>提交情况</th>"
        "<th>文件数</th><th>错误</th><th>提醒</th></tr>"
    )
    return f"<h2>三、各项检查情况</h2><table>{header}{rows}</table>"


def _state(item: ItemSummary) -> str:
    if item.present:
        return "已提交"
    return "未提交" if item.required else "未提交（选报项）"
