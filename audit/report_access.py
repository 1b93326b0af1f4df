"""Sections of the audit report on access: who touched what, and when.

``timeline_section`` charts every account over the period;
``prefectures_section`` shows, for each prefecture, the accounts that
touched its area, a timeline of them, and its transfers and changes;
``accounts_section`` shows, for each account, its addresses, sessions and
transfers.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .report_data import Mark
from .report_page import Html
from .report_page import Row
from .report_page import esc
from .report_page import join
from .report_page import table
from .report_stats import UNKNOWN_ACCOUNT
from .report_stats import Counts
from .report_stats import by_account
from .report_stats import by_prefecture
from .report_stats import by_session
from .report_svg import timeline
from .report_text import KIND_NAMES
from .report_text import STATUS_NAMES
from .report_text import role_text
from .report_text import show_bytes
from .report_text import show_minute
from .report_text import show_time

if TYPE_CHECKING:
    from .report import Report

_ROLE_ORDER = {"reviewer": 0, "prefecture": 1}
_TRANSFERS = ("download", "upload", "change")
_ACCESS_HEADERS = (
    "账号 角色 首次 末次 浏览 下载 完成 中断 上传 修改 拒绝 已发送".split()
)
_SESSION_HEADERS = "开始 结束 地址 登录 浏览 下载 上传 修改 拒绝".split()
_TRANSFER_HEADERS = "时间 {who} 操作 文件 结果 字节".split()


def timeline_section(report: Report) -> Html:
    data = report.data
    accounts = list(by_account(data.marks))
    parts = [
        '<section class="page" id="timeline">',
        "<h2>访问时间线</h2>",
        "<p>每行一个账号，横轴为报告期（按 "
        f"{esc(report.zone.key)} 时间）；灰色区域为非工作时间"
        f"（{esc(report.findings.hours.describe())}）。"
        "在浏览器中把鼠标停在标记上可看到时间、文件和地址。</p>",
    ]
    if not accounts:
        parts.append('<p class="none">报告期内没有访问记录。</p>')
    else:
        parts.append(_chart(report, _lanes(report, accounts), data.marks))
    parts.append("</section>")
    return join(parts)


def prefectures_section(report: Report) -> Html:
    data = report.data
    grouped = by_prefecture(data.marks)
    parts = [
        '<section class="page" id="prefectures">',
        "<h2>按市（州）</h2>",
        "<p>每个市（州）列出访问过其目录的账号（验收人员按路径中的市（州）目录归属），"
        "以及该目录中的下载、上传和修改。</p>",
    ]
    for code, accounts in grouped.items():
        marks = [mark for mark in data.marks if mark.prefecture == code]
        rows = (_access_row(report, name, c) for name, c in _ordered(report, accounts))
        parts += [
            f'<div class="prefecture" data-prefecture="{esc(code)}">',
            f"<h3>{esc(data.prefecture_name(code))}</h3>",
            table(_ACCESS_HEADERS, rows, id=f"access-{code}"),
            _chart(report, _lanes(report, list(accounts)), marks),
            _transfers(report, marks, show_account=True),
            "</div>",
        ]
    idle = [name for code, name in sorted(data.names.items()) if code not in grouped]
    if idle:
        parts.append(f"<p>报告期内无人访问的市（州）：{esc('、'.join(idle))}。</p>")
    if not grouped:
        parts.append('<p class="none">报告期内没有访问任何市（州）目录的记录。</p>')
    parts.append("</section>")
    return join(parts)


def accounts_section(report: Report) -> Html:
    data, zone = report.data, report.zone
    sessions = by_session(data.marks)
    overall = by_account(data.marks)
    parts = [
        '<section class="page" id="accounts">',
        "<h2>按人员（账号）</h2>",
        "<p>每个账号的登录会话（一次连接为一个会话）和传输的文件。"
        "“首次使用”为该账号在整个审计日志中第一次从该地址出现的时间。</p>",
    ]
    for name, counts in _ordered(report, overall):
        seen = data.first_seen.get(name, {})
        addresses = "、".join(
            f"{address}（首次使用 {show_minute(seen[address], zone)}）"
            if address in seen
            else address
            for address in sorted(counts.addresses)
        )
        session_rows = (
            Row(
                [
                    show_time(c.first, zone),
                    show_time(c.last, zone),
                    "、".join(sorted(c.addresses)),
                    c.logins,
                    c.lists,
                    c.downloads,
                    c.uploads,
                    c.changes,
                    c.refusals + c.lockouts,
                ],
                {"session": session},
            )
            for session, c in sessions.get(name, {}).items()
        )
        mine = [mark for mark in data.marks if (mark.account or "") == name]
        parts += [
            f'<div class="account" data-account="{esc(name)}">',
            f"<h3>{esc(_title(report, name))}</h3>",
            f"<p>地址：{esc(addresses) or '—'}</p>",
            table(_SESSION_HEADERS, session_rows, limit=report.options.row_limit),
            _transfers(report, mine, show_account=False),
            "</div>",
        ]
    parts.append("</section>")
    return join(parts)


def _chart(report: Report, lanes: list[tuple[str, str]], marks: Sequence[Mark]) -> Html:
    svg = timeline(
        lanes,
        marks,
        report.options.period,
        report.zone,
        report.findings.hours,
        report.data.names,
    )
    return Html(f'<figure class="chart">{svg}</figure>')


def _lanes(report: Report, accounts: Iterable[str]) -> list[tuple[str, str]]:
    ordered = sorted(accounts, key=lambda name: _rank(report, name))
    return [(name, _lane_label(report, name)) for name in ordered]


def _lane_label(report: Report, name: str) -> str:
    if name == UNKNOWN_ACCOUNT:
        return "未知用户名"
    info = report.data.accounts.get(name)
    if info is not None and info.prefecture:
        return f"{name} · {report.data.names.get(info.prefecture, info.prefecture)}"
    return name


def _title(report: Report, name: str) -> str:
    if name == UNKNOWN_ACCOUNT:
        return "未知用户名（登录失败）"
    info = report.data.accounts.get(name)
    role = role_text(info.role if info else None)
    own = info.prefecture if info else None
    return f"{name} · {role}" + (
        f" · {report.data.prefecture_name(own)}" if own else ""
    )


def _rank(report: Report, name: str) -> tuple[int, str, str]:
    info = report.data.accounts.get(name)
    if info is None:
        return 3, "", name
    return _ROLE_ORDER.get(info.role or "", 2), info.prefecture or "", name


def _ordered(report: Report, counts: dict[str, Counts]) -> list[tuple[str, Counts]]:
    return sorted(counts.items(), key=lambda item: _rank(report, item[0]))


def _access_row(report: Report, name: str, c: Counts) -> Row:
    info = report.data.accounts.get(name)
    zone = report.zone
    return Row(
        [
            name or "未知用户名",
            role_text(info.role if info else None),
            show_minute(c.first, zone) if c.first else "",
            show_minute(c.last, zone) if c.last else "",
            c.lists,
            c.downloads,
            c.complete,
            c.aborted,
            c.uploads,
            c.changes,
            c.refusals + c.lockouts,
            show_bytes(c.bytes_down),
        ],
        {"account": name, "downloads": c.downloads, "total-bytes": c.bytes_down},
    )


def _transfers(report: Report, marks: Sequence[Mark], *, show_account: bool) -> Html:
    """Downloads, uploads and changes, one row each, in time order."""
    chosen = [mark for mark in marks if mark.kind in _TRANSFERS]
    if not chosen:
        return Html('<p class="none">没有下载、上传或修改。</p>')
    zone, data = report.zone, report.data
    who = "账号" if show_account else "市（州）"
    headers = [h.format(who=who) for h in _TRANSFER_HEADERS]
    rows = (
        Row(
            [
                show_time(m.at, zone),
                m.account if show_account else data.prefecture_name(m.prefecture),
                KIND_NAMES[m.kind] + (f"（{m.note}）" if m.note else ""),
                Html(f'<span class="file">{esc(m.file or "")}</span>'),
                STATUS_NAMES.get(m.status or "", ""),
                m.bytes if m.bytes is not None else "",
            ],
            {"kind": m.kind, "status": m.status, "bytes": m.bytes},
        )
        for m in chosen
    )
    return table(headers, rows, limit=report.options.row_limit, class_="transfers")
