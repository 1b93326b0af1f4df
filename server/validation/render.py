"""The report as plain text (for Notepad) and as JSON.

The text form is what a prefecture opens first from its FTP client: plain
Chinese, CRLF line ends so that old Notepad shows lines, and optionally a
UTF-8 byte-order mark so that it does not guess GBK. Errors come first,
then warnings, each with its item, path and what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .model import Finding
from .model import ItemSummary
from .model import Report

BOM = "\ufeff"
CRLF = "\r\n"
RULE_LINE = "=" * 40


def render_text(
    report: Report, *, bom: bool = False, notes: Sequence[tuple[str, str]] = ()
) -> str:
    """The text report; ``notes`` are (label, value) lines under the verdict."""
    lines = [
        f"{report.prefecture.name}验收资料预审报告",
        RULE_LINE,
        f"预审结论：{report.verdict}",
        *(f"{label}：{value}" for label, value in notes),
        f"预审时间：{_when(report)}",
        f"依据清单：{report.checklist}",
        f"检查范围：{report.digest.files}个文件，{report.digest.folders}个文件夹",
        f"问题统计：错误{len(report.errors)}项（必须改正），"
        f"提醒{len(report.warnings)}项（建议改正）",
        "",
    ]
    if report.passed:
        lines += ["预审合格，没有必须改正的问题。", ""]
    else:
        lines += ["预审未通过，请按下列说明改正后重新上传，系统会自动再次预审。", ""]
    lines += _section("一、错误（必须改正）", report.errors)
    lines += _section("二、提醒（建议改正）", report.warnings)
    lines += ["三、各项检查情况", RULE_LINE]
    for item in report.items:
        lines.append(f"第{item.number}项 {item.title}：{_item_state(item)}")
    lines += [
        "",
        f"资料校验码（SHA-256，{_digest_kind(report)}）：{report.digest.sha256}",
        "",
    ]
    text = CRLF.join(lines)
    return BOM + text if bom else text


def to_json(report: Report) -> dict[str, Any]:
    return {
        "prefecture": {
            "code": report.prefecture.code,
            "name": report.prefecture.name,
            "short_name": report.prefecture.short_name,
        },
        "checklist": report.checklist,
        "judged_at": report.judged_at.isoformat(),
        "verdict": report.verdict,
        "passed": report.passed,
        "counts": {"errors": len(report.errors), "warnings": len(report.warnings)},
        "digest": {
            "sha256": report.digest.sha256,
            "kind": report.digest.kind,
            "files": report.digest.files,
            "folders": report.digest.folders,
            "bytes": report.digest.bytes,
        },
        "findings": [_finding_json(f) for f in report.findings],
        "items": [
            {
                "number": i.number,
                "title": i.title,
                "required": i.required,
                "present": i.present,
                "folders": list(i.folders),
                "files": i.files,
                "errors": i.errors,
                "warnings": i.warnings,
            }
            for i in report.items
        ],
    }


def item_label(finding: Finding) -> str:
    return f"第{finding.item}项" if finding.item is not None else "总体"


def path_label(finding: Finding) -> str:
    return finding.path or "（提交目录）"


def _section(title: str, findings: tuple[Finding, ...]) -> list[str]:
    lines = [title, RULE_LINE]
    if not findings:
        return [*lines, "无", ""]
    for n, f in enumerate(findings, 1):
        lines += [
            f"{n}. [{item_label(f)}] {path_label(f)}",
            f"   {f.message}",
            f"   （规则：{f.rule}）",
        ]
    return [*lines, ""]


def _item_state(item: ItemSummary) -> str:
    if not item.present:
        return "未提交" if item.required else "未提交（选报项）"
    state = f"{item.files}个文件"
    if item.errors or item.warnings:
        state += f"，错误{item.errors}项，提醒{item.warnings}项"
    else:
        state += "，未发现问题"
    return state


def _when(report: Report) -> str:
    return report.judged_at.strftime("%Y-%m-%d %H:%M:%S")


def _digest_kind(report: Report) -> str:
    return (
        "按文件内容" if report.digest.kind == "content" else "按文件名、大小和修改时间"
    )


def _finding_json(f: Finding) -> dict[str, Any]:
    return {
        "rule": f.rule,
        "severity": f.severity.value,
        "item": f.item,
        "path": f.path,
        "message": f.message,
    }
