"""The audit report's timeline chart, as inline SVG (no script, no fonts).

One lane per account across the period; a mark per access: an open circle
for a login, a downward triangle for a download (green complete, orange
aborted, grey unfinished), an upward blue triangle for an upload, a red
cross for a refusal and a red square for a lockout. Grey bands are the
times outside working hours. Every mark has a ``<title>`` (a browser shows
it on hover) and ``data-kind``/``data-status`` attributes; every lane is a
``<g data-lane="account">``.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping
from collections.abc import Sequence
from html import escape

from .report_data import Mark
from .report_data import Period
from .report_rules import WorkingHours
from .report_text import KIND_NAMES
from .report_text import STATUS_NAMES
from .report_text import show_bytes
from .report_text import show_time

# About the width of an A4 page's text at 96 dpi, so printed text keeps
# the size it has on screen.
WIDTH = 760
LABEL_WIDTH = 130
RIGHT = 24
AXIS = 30
LANE = 24
LEGEND = 28
# Shade off-hours only while the bands stay wider than a hair.
MAX_SHADED_DAYS = 120
MARKED = ("login", "download", "upload", "refusal", "lockout")
_STEPS = [dt.timedelta(hours=h) for h in (1, 2, 3, 6, 12, 24, 48, 168, 336, 720)]
_DOWNLOAD_COLOURS = {"complete": "#1a7f37", "aborted": "#d97706"}
_RED = "#c62828"
_UPLOAD = "#1f5fbf"
_LOGIN = "#444b57"


def timeline(
    lanes: Sequence[tuple[str, str]],
    marks: Sequence[Mark],
    period: Period,
    zone: zoneinfo.ZoneInfo,
    hours: WorkingHours | None = None,
    names: Mapping[str, str] | None = None,
) -> str:
    """An SVG element: ``lanes`` are (account, label) pairs, top to bottom;
    ``marks`` of accounts without a lane are left out."""
    scale = _Scale(period)
    height = AXIS + LANE * len(lanes) + LEGEND
    bottom = AXIS + LANE * len(lanes)
    parts = [
        f'<svg class="timeline" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" '
        'xmlns="http://www.w3.org/2000/svg" font-size="11">',
        f"<title>访问时间线（{escape(zone.key)}）</title>",
    ]
    if hours is not None:
        parts.extend(_off_hours(scale, hours, bottom))
    parts.extend(_axis(scale, zone, bottom))
    by_lane: dict[str, list[Mark]] = {key: [] for key, _ in lanes}
    for mark in marks:
        key = mark.account or ""
        if mark.kind in MARKED and key in by_lane:
            by_lane[key].append(mark)
    for row, (key, label) in enumerate(lanes):
        top = AXIS + row * LANE
        parts.append(_lane(scale, key, label, by_lane[key], top, zone, names or {}))
    parts.append(_legend(bottom + 8, hours is not None))
    parts.append("</svg>")
    return "\n".join(parts)


class _Scale:
    """Maps times of the period onto the chart's x axis."""

    def __init__(self, period: Period) -> None:
        self.start, self.end = period.start, period.end
        self.span = (period.end - period.start).total_seconds()

    def x(self, at: dt.datetime) -> float:
        share = (at - self.start).total_seconds() / self.span
        return LABEL_WIDTH + min(max(share, 0.0), 1.0) * (WIDTH - LABEL_WIDTH - RIGHT)


def _axis(scale: _Scale, zone: zoneinfo.ZoneInfo, bottom: int) -> list[str]:
    step = next((s for s in _STEPS if scale.span / s.total_seconds() <= 10), _STEPS[-1])
    parts = [
        f'<line x1="{LABEL_WIDTH}" y1="{AXIS}" x2="{WIDTH - RIGHT}" y2="{AXIS}" '
        'stroke="#555" stroke-width="1"/>'
    ]
    for tick in _ticks(scale, zone, step):
        x = scale.x(tick)
        local = tick.astimezone(zone)
        daily = step >= dt.timedelta(days=1) or local.hour == 0
        label = local.strftime("%m-%d") if daily else local.strftime("%H:%M")
        parts.append(
            f'<line x1="{x:.1f}" y1="{AXIS - 4}" x2="{x:.1f}" y2="{bottom}" '
            'stroke="#c5cad3" stroke-width="0.6"/>'
            f'<text x="{x:.1f}" y="{AXIS - 8}" text-anchor="middle" '
            f'fill="#333">{label}</text>'
        )
    return parts


def _ticks(
    scale: _Scale, zone: zoneinfo.ZoneInfo, step: dt.timedelta
) -> list[dt.datetime]:
    """Local round times (midnights, whole hours) within the period."""
    local = scale.start.astimezone(zone).replace(minute=0, second=0, microsecond=0)
    if step >= dt.timedelta(days=1):
        local = local.replace(hour=0)
    else:
        hours = int(step.total_seconds() // 3600)
        local = local.replace(hour=local.hour - local.hour % hours)
    naive = local.replace(tzinfo=None)
    ticks = []
    while (tick := naive.replace(tzinfo=zone).astimezone(dt.UTC)) <= scale.end:
        if tick >= scale.start:
            ticks.append(tick)
        naive += step
    return ticks


def _off_hours(scale: _Scale, hours: WorkingHours, bottom: int) -> list[str]:
    if scale.span > MAX_SHADED_DAYS * 86400:
        return []
    parts = []
    for low, high in hours.off_spans(scale.start, scale.end):
        x1, x2 = scale.x(low), scale.x(high)
        parts.append(
            f'<rect x="{x1:.1f}" y="{AXIS}" width="{max(x2 - x1, 0.5):.1f}" '
            f'height="{bottom - AXIS}" fill="#eceef2"/>'
        )
    return parts


def _lane(
    scale: _Scale,
    key: str,
    label: str,
    marks: Sequence[Mark],
    top: int,
    zone: zoneinfo.ZoneInfo,
    names: Mapping[str, str],
) -> str:
    middle = top + LANE / 2
    parts = [
        f'<g data-lane="{escape(key)}">',
        f'<line x1="{LABEL_WIDTH}" y1="{top + LANE}" x2="{WIDTH - RIGHT}" '
        f'y2="{top + LANE}" stroke="#e1e4e8" stroke-width="0.6"/>',
        f'<text x="{LABEL_WIDTH - 6}" y="{middle + 4:.1f}" text-anchor="end" '
        f'fill="#1f2328">{escape(_clip(label, 18))}</text>',
    ]
    for mark in marks:
        # Sessions and refusals above, transfers below, so they do not hide
        # each other when they happen at once.
        y = middle + (5 if mark.kind in ("download", "upload") else -5)
        shape = _shape(mark.kind, mark.status, scale.x(mark.at), y)
        status = f' data-status="{mark.status}"' if mark.status else ""
        tip = escape(_tooltip(mark, zone, names))
        parts.append(
            f'<g data-kind="{mark.kind}"{status}>{shape}<title>{tip}</title></g>'
        )
    parts.append("</g>")
    return "".join(parts)


def _shape(kind: str, status: str | None, x: float, y: float) -> str:
    if kind == "login":
        return (
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="#fff" '
            f'stroke="{_LOGIN}" stroke-width="1.3"/>'
        )
    if kind == "download":
        colour = _DOWNLOAD_COLOURS.get(status or "", "#8a8f98")
        return _triangle(x, y, 1, colour)
    if kind == "upload":
        return _triangle(x, y, -1, _UPLOAD)
    if kind == "lockout":
        return (
            f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" '
            f'fill="{_RED}"/>'
        )
    return (
        f'<path d="M{x - 4:.1f} {y - 4:.1f}L{x + 4:.1f} {y + 4:.1f}'
        f'M{x + 4:.1f} {y - 4:.1f}L{x - 4:.1f} {y + 4:.1f}" '
        f'stroke="{_RED}" stroke-width="1.8"/>'
    )


def _triangle(x: float, y: float, direction: int, colour: str) -> str:
    tip, base = y + 5 * direction, y - 4 * direction
    return (
        f'<path d="M{x - 5:.1f} {base:.1f}L{x + 5:.1f} {base:.1f}L{x:.1f} {tip:.1f}Z" '
        f'fill="{colour}" fill-opacity="0.85"/>'
    )


def _legend(y: int, shaded: bool) -> str:
    items = [
        ("login", None, "登录"),
        ("download", "complete", "下载完成"),
        ("download", "aborted", "下载中断"),
        ("upload", None, "上传"),
        ("refusal", None, "拒绝"),
        ("lockout", None, "锁定"),
    ]
    parts = ['<g class="legend">']
    x = LABEL_WIDTH
    for kind, status, text in items:
        parts.append(_shape(kind, status, x + 6, y + 8))
        parts.append(f'<text x="{x + 15}" y="{y + 12}" fill="#333">{text}</text>')
        x += 80
    if shaded:
        parts.append(
            f'<rect x="{x}" y="{y + 2}" width="14" height="12" fill="#eceef2" '
            f'stroke="#c5cad3" stroke-width="0.6"/>'
            f'<text x="{x + 19}" y="{y + 12}" fill="#333">非工作时间</text>'
        )
    parts.append("</g>")
    return "".join(parts)


def _tooltip(mark: Mark, zone: zoneinfo.ZoneInfo, names: Mapping[str, str]) -> str:
    parts = [show_time(mark.at, zone), KIND_NAMES.get(mark.kind, mark.kind)]
    if mark.status:
        parts.append(f"（{STATUS_NAMES.get(mark.status, mark.status)}）")
    if mark.prefecture:
        parts.append(names.get(mark.prefecture, mark.prefecture))
    if mark.file:
        parts.append(mark.file)
    if mark.bytes is not None and mark.kind in ("download", "upload"):
        parts.append(show_bytes(mark.bytes))
    if mark.note:
        parts.append(mark.note)
    if mark.address:
        parts.append(f"地址 {mark.address}")
    return " ".join(parts)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
