"""Sections of the audit report: cover, findings, downloads, refusals, notes.

Each function takes the made ``Report`` and returns one ``<section>``.
Figures that tests and other tools may want to read carry ``data-*``
attributes with exact values (bytes as integers, times in ISO form), while
the visible text is for people.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import TYPE_CHECKING

from .report_page import Html
from .report_page import Row
from .report_page import attributes
from .report_page import esc
from .report_page import fields
from .report_page import join
from .report_page import table
from .report_page import tag
from .report_rules import RULE_TITLES
from .report_rules import RULES
from .report_rules import explain
from .report_stats import UNKNOWN_ACCOUNT
from .report_stats import Counts
from .report_stats import by_account
from .report_stats import downloads_by_prefecture
from .report_stats import total as total_counts
from .report_text import PROBLEM_NAMES
from .report_text import role_text
from .report_text import show_bytes
from .report_text import show_minute
from .report_text import show_time
from .report_text import warning_text

if TYPE_CHECKING:
    from .report import Report

ITEMS_SHOWN = 8
SECTIONS = (
    ("findings", "值得关注"),
    ("timeline", "访问时间线"),
    ("prefectures", "按市（州）"),
    ("accounts", "按人员（账号）"),
    ("downloads", "下载统计"),
    ("refusals", "拒绝与锁定"),
    ("notes", "说明"),
)


def cover_section(report: Report, title: str) -> Html:
    zone, period = report.zone, report.options.period
    meta: list[tuple[str, object]] = [
        ("报告期", _span(period.start, period.end, zone)),
        ("时区", f"{zone.key}（记录以 UTC 保存，本报告按此时区显示）"),
        ("生成时间", show_time(report.made_at, zone)),
        ("生成人", f"{report.made_by}（操作系统用户）"),
        ("数据库", report.database),
    ]
    if report.options.round_name:
        windows = "；".join(
            f"{label} {_span(w.start, w.end, zone)}"
            for label, w in report.options.windows
        )
        meta.insert(1, ("验收轮次", f"{report.options.round_name}：{windows}"))
    period_data = {
        "data_from": period.start.isoformat(),
        "data_to": period.end.isoformat(),
        "data_operator": report.made_by,
    }
    toc = "".join(f'<li><a href="#{key}">{name}</a></li>' for key, name in SECTIONS)
    return join(
        [
            '<section id="cover">',
            tag("h1", title),
            '<p class="muted">污染源普查验收资料交换 · 访问审计报告（存档用）</p>',
            fields(meta, id="about", **period_data),
            verification_box(report),
            _figures(report),
            f'<nav class="toc"><b>目录</b><ol>{toc}</ol></nav>',
            "</section>",
        ]
    )


def verification_box(report: Report) -> Html:
    result, zone = report.verification, report.zone
    checkpoint = result.checkpoint
    attrs = {
        "id": "verification",
        "class_": f"verdict {'ok' if result.ok else 'failed'}",
        "data_verify": "ok" if result.ok else "failed",
        "data_events": result.events,
        "data_head_seq": result.head_seq,
        "data_checkpoint_seq": checkpoint.seq if checkpoint else None,
    }
    if result.problem is None:
        lines = [
            '<div class="title">审计链校验：通过</div>',
            f"<p>第 1 至第 {result.head_seq} 条，共 {result.events} 条记录逐条"
            "重算哈希，全部一致。链头哈希："
            f"{_hash(result.head_hash)}</p>",
        ]
    else:
        problem = result.problem
        lines = [
            '<div class="title">审计链校验：未通过</div>',
            f"<p>第 {problem.seq} 条：{esc(PROBLEM_NAMES.get(problem.kind))}"
            f"（{esc(problem.message)}）。此前 {result.events} 条核验无误。</p>",
            "<p>本报告的内容取自数据库现状；出问题的记录及其后的记录不可信，"
            "请用 censusdrop audit verify 复核并与保存在服务器以外的检查点比对。</p>",
        ]
    if checkpoint is not None:
        after = max(0, result.head_seq - checkpoint.seq)
        rows = [
            ("序号", str(checkpoint.seq)),
            ("链头哈希", _hash(checkpoint.head_hash)),
            ("签署时间", show_time(checkpoint.made_at, zone)),
            ("签名密钥指纹", _hash(checkpoint.key_id)),
            ("其后新增记录", f"{after} 条（尚无检查点签署，只受哈希链保护）"),
        ]
        lines.append(fields(rows))
    elif result.problem is None:
        lines.append('<p class="warning">没有有效签名的检查点。</p>')
    if result.key_id:
        lines.append(f'<p class="muted">核验所用公钥指纹：{_hash(result.key_id)}</p>')
    for warning in result.warnings:
        lines.append(f'<p class="warning">注意：{esc(warning_text(warning))}</p>')
    return Html(f"<div{attributes(attrs)}>{''.join(lines)}</div>")


def findings_section(report: Report) -> Html:
    findings = report.findings
    parts = [
        '<section class="page" id="findings">',
        "<h2>值得关注</h2>",
        "<p>以下情况按规则自动列出，供审计人员核实；列出并不等于违规。</p>",
    ]
    for rule in RULES:
        found = findings.by_rule[rule]
        parts.append(
            f'<h3 data-rule-count="{len(found)}" id="rule-{rule}">'
            f"{RULE_TITLES[rule]}（{len(found)} 项）</h3>"
        )
        parts.append(
            f'<p class="rule">{esc(explain(rule, findings.hours, findings.bulk))}</p>'
        )
        if not found:
            parts.append('<p class="none">报告期内未发现。</p>')
            continue
        rows = (
            Row(
                [
                    show_minute(f.at, report.zone),
                    f.account,
                    _finding_text(f.summary, f.items),
                ],
                {"rule": f.rule, "account": f.account, "prefecture": f.prefecture},
            )
            for f in found
        )
        parts.append(
            table(["时间", "账号", "情况"], rows, limit=report.options.row_limit)
        )
    parts.append("</section>")
    return join(parts)


def downloads_section(report: Report) -> Html:
    downloads = report.data.marks_of("download")
    accounts = _ordered(report, by_account(downloads))
    rows = [_download_row(report, name, counts) for name, counts in accounts]
    grand = total_counts(counts for _, counts in accounts)
    rows.append(_download_row(report, "合计", grand, total=True))
    pairs = sorted(downloads_by_prefecture(downloads).items())
    detail = (
        Row(
            [
                name,
                report.data.prefecture_name(code or None),
                c.downloads,
                len(c.files),
                c.complete,
                c.aborted,
                show_bytes(c.bytes_down),
            ],
            {"account": name, "prefecture": code, "total-bytes": c.bytes_down},
        )
        for (name, code), c in pairs
    )
    return join(
        [
            '<section class="page" id="downloads">',
            "<h2>下载统计</h2>",
            "<p>每次下载计一次；“已发送”为服务器记录的实际发送字节数（中断的下载计已发送部分），"
            "“不同文件”按市（州）和文件路径去重。</p>",
            table(
                [
                    "账号",
                    "角色",
                    "下载次数",
                    "不同文件",
                    "完成",
                    "中断",
                    "未结束",
                    "已发送",
                    "其中完成的",
                ],
                rows,
                id="download-totals",
            ),
            "<h3>按账号和市（州）</h3>",
            table(
                ["账号", "市（州）", "下载次数", "不同文件", "完成", "中断", "已发送"],
                detail,
                limit=report.options.row_limit,
            ),
            "</section>",
        ]
    )


def refusals_section(report: Report) -> Html:
    zone, data = report.zone, report.data
    lockouts = data.marks_of("lockout")
    refusals = data.marks_of("refusal")
    per_account = _ordered(report, by_account([*lockouts, *refusals]))
    summary = (
        Row(
            [
                _account_label(name),
                c.refusals,
                c.lockouts,
                "、".join(sorted(c.addresses)),
                show_minute(c.first, zone) if c.first else "",
                show_minute(c.last, zone) if c.last else "",
            ],
            {"account": name, "refusals": c.refusals, "lockouts": c.lockouts},
        )
        for name, c in per_account
    )
    lockout_rows = (
        Row(
            [show_time(m.at, zone), _account_label(m.account), m.address, m.note],
            {"kind": "lockout", "account": m.account},
        )
        for m in lockouts
    )
    refusal_rows = (
        Row(
            [
                show_time(m.at, zone),
                _account_label(m.account),
                m.address,
                data.prefecture_name(m.prefecture) if m.prefecture else "",
                _file(f"/{m.file or ''}" if m.prefecture else m.file),
                m.note,
            ],
            {"kind": "refusal", "account": m.account},
        )
        for m in refusals
    )
    limit = report.options.row_limit
    return join(
        [
            '<section class="page" id="refusals">',
            "<h2>拒绝与锁定</h2>",
            f'<p data-refusals="{len(refusals)}" data-lockouts="{len(lockouts)}">'
            f"报告期内共有 {len(refusals)} 次拒绝（含登录失败），"
            f"{len(lockouts)} 次账号锁定。</p>",
            "<h3>账号锁定</h3>",
            table(["时间", "账号", "地址", "说明"], lockout_rows, id="lockouts")
            if lockouts
            else '<p class="none">报告期内没有账号被锁定。</p>',
            "<h3>按账号汇总</h3>",
            table(
                ["账号", "拒绝", "锁定", "地址", "首次", "末次"], summary, limit=limit
            ),
            "<h3>拒绝明细</h3>",
            table(
                ["时间", "账号", "地址", "市（州）", "路径", "原因"],
                refusal_rows,
                limit=limit,
                id="refusal-list",
            ),
            "</section>",
        ]
    )


def notes_section(report: Report) -> Html:
    period = report.options.period
    start, end = (t.astimezone(report.zone) for t in (period.start, period.end))
    command = (
        f"censusdrop audit report --from {start:%Y-%m-%dT%H:%M} "
        f"--to {end:%Y-%m-%dT%H:%M} --html 报告.html"
    )
    notes = [
        "本报告由 censusdrop 根据防篡改审计日志生成，内容为生成时数据库中的记录；"
        "首页的校验结果说明这些记录是否完整、未被改动。",
        "下载的“完成”指文件全部发送且记录了摘要；“中断”指传输中途停止；"
        "“未结束”指只有开始记录（传输仍在进行，或服务器在记录结束前停止）。",
        "验收人员的访问按其路径中的市（州）目录归属到该市（州）；"
        "市（州）账号的访问归属其自身目录。",
        "地址为客户端 IP（不含端口）。"
        "登录失败时若用户名不存在，账号显示为“未知用户名”。",
        f"复核：censusdrop audit verify；重新生成本报告：{command}",
    ]
    items = "".join(f"<li>{esc(note)}</li>" for note in notes)
    return Html(
        f'<section class="page" id="notes"><h2>说明</h2><ol>{items}</ol></section>'
    )


def _figures(report: Report) -> Html:
    data, findings = report.data, report.findings
    accounts = by_account(data.marks)
    overall = total_counts(accounts.values())
    figures = [
        ("账号", len(set(accounts) - {UNKNOWN_ACCOUNT}), ""),
        ("登录", overall.logins, ""),
        ("下载", overall.downloads, ""),
        ("已发送", show_bytes(overall.bytes_down), ""),
        ("上传", overall.uploads, ""),
        ("拒绝", overall.refusals, ""),
        ("锁定", overall.lockouts, " alert" if overall.lockouts else ""),
        ("值得关注", findings.total, " alert" if findings.total else ""),
    ]
    cells = "".join(
        f'<div class="figure{alert}"><span class="muted">{name}</span>'
        f"<b>{value}</b></div>"
        for name, value, alert in figures
    )
    return Html(f'<div class="figures" data-findings="{findings.total}">{cells}</div>')


def _download_row(report: Report, name: str, c: Counts, total: bool = False) -> Row:
    info = None if total else report.data.accounts.get(name)
    role = role_text(info.role) if info else ""
    return Row(
        [
            name if total else _account_label(name),
            role,
            c.downloads,
            len(c.files),
            c.complete,
            c.aborted,
            c.unfinished,
            show_bytes(c.bytes_down),
            show_bytes(c.bytes_complete),
        ],
        {
            "account": "" if total else name,
            "downloads": c.downloads,
            "files": len(c.files),
            "complete": c.complete,
            "aborted": c.aborted,
            "unfinished": c.unfinished,
            "total-bytes": c.bytes_down,
            "complete-bytes": c.bytes_complete,
        },
        total=total,
    )


def _ordered(report: Report, counts: dict[str, Counts]) -> list[tuple[str, Counts]]:
    """Reviewers first, then prefecture accounts, then the rest, by name."""
    order = {"reviewer": 0, "prefecture": 1}

    def key(item: tuple[str, Counts]) -> tuple[int, str]:
        info = report.data.accounts.get(item[0])
        rank = order.get(info.role or "", 2) if info else 3
        return rank, item[0]

    return sorted(counts.items(), key=key)


def _finding_text(summary: str, items: tuple[str, ...]) -> Html:
    shown = "；".join(items[:ITEMS_SHOWN])
    if len(items) > ITEMS_SHOWN:
        shown += f" 等 {len(items)} 项"
    detail = f'<div class="items">{esc(shown)}</div>' if items else ""
    return Html(f"{esc(summary)}{detail}")


def _span(start: dt.datetime, end: dt.datetime, zone: zoneinfo.ZoneInfo) -> str:
    return f"{show_minute(start, zone)} 至 {show_minute(end, zone)}（不含）"


def _hash(text: str) -> Html:
    return Html(f'<span class="hash">{esc(text)}</span>')


def _account_label(name: str | None) -> str:
    return name or "未知用户名"


def _file(file: str | None) -> Html:
    return Html(f'<span class="file">{esc(file)}</span>') if file else Html("")
