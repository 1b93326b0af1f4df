"""What deserves a look: the rules behind the report's "值得关注" section.

Each rule reads plain data gathered by ``report_data`` (no database) and
returns ``Finding`` objects whose ``summary`` says, in Chinese, what was
seen. A finding is a prompt to look, not a verdict: reviewers are expected
to download their prefectures' materials, and people do work late.

- ``after_hours``: downloads started outside working hours (``WorkingHours``:
  by default Monday to Friday 08:30-18:00, the official holidays off and
  the make-up working days on, from the ``chinese_calendar`` package);
- ``bulk_takes``: one account downloading at least ``BulkRule.share`` of a
  prefecture's distinct files within ``BulkRule.window``;
- ``new_addresses``: an account used from an address it had never used
  before, after its first day.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import math
import zoneinfo
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence

import chinese_calendar

from .report_text import WEEKDAY_NAMES
from .report_text import show_bytes
from .report_text import show_clock
from .report_text import show_duration
from .report_text import show_minute

AFTER_HOURS = "after_hours"
BULK = "bulk"
NEW_ADDRESS = "new_address"
RULES = (AFTER_HOURS, BULK, NEW_ADDRESS)
RULE_TITLES = {
    AFTER_HOURS: "非工作时间下载",
    BULK: "短时间内下载某市（州）大部分文件",
    NEW_ADDRESS: "从未用过的地址访问",
}
_HOLIDAY_NAMES = {
    holiday.value: holiday.chinese for holiday in chinese_calendar.Holiday
}


@dataclasses.dataclass(frozen=True, slots=True)
class WorkingHours:
    """When downloads are expected.

    Options (default): ``start`` (08:30) and ``end`` (18:00) local time of
    a working day; ``zone`` (Asia/Shanghai); ``official_calendar`` (True:
    public holidays are off and make-up working days on, as the State
    Council publishes them; False, or a year the calendar has no data for:
    Monday to Friday).
    """

    start: dt.time = dt.time(8, 30)
    end: dt.time = dt.time(18, 0)
    zone: str = "Asia/Shanghai"
    official_calendar: bool = True

    def __post_init__(self) -> None:
        if not self.start < self.end:
            raise ValueError("working hours: start must be before end")
        try:
            zoneinfo.ZoneInfo(self.zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"working hours: unknown zone {self.zone!r}") from exc

    @classmethod
    def parse(cls, text: str, zone: str = "Asia/Shanghai") -> WorkingHours:
        """From ``"08:30-18:00"``."""
        try:
            first, last = (dt.time.fromisoformat(part) for part in text.split("-"))
        except ValueError as exc:
            raise ValueError(
                f"working hours: expected HH:MM-HH:MM, not {text!r}"
            ) from exc
        return cls(first, last, zone)

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.zone)

    def day(self, day: dt.date) -> tuple[bool, str]:
        """Whether ``day`` is a working day, and what kind of day it is."""
        weekday = WEEKDAY_NAMES[day.weekday()]
        if self.official_calendar:
            try:
                off, name = chinese_calendar.get_holiday_detail(day)
            except NotImplementedError:
                pass  # a year without official data: Monday to Friday
            else:
                if not off:
                    kind = "调休上班" if day.weekday() >= 5 else "工作日"
                    return True, f"{weekday}，{kind}"
                holiday = _HOLIDAY_NAMES.get(name or "", "")
                return False, f"{weekday}，{holiday}假期" if holiday else weekday
        return day.weekday() < 5, weekday

    def is_working_time(self, at: dt.datetime) -> bool:
        moment = at.astimezone(self.tz)
        working, _ = self.day(moment.date())
        return working and self.start <= moment.time() < self.end

    def off_spans(
        self, start: dt.datetime, end: dt.datetime
    ) -> list[tuple[dt.datetime, dt.datetime]]:
        """The times between ``start`` and ``end`` outside working hours."""
        spans: list[tuple[dt.datetime, dt.datetime]] = []
        day = start.astimezone(self.tz).date()
        while (midnight := self._at(day, dt.time())) < end:
            following = self._at(day + dt.timedelta(days=1), dt.time())
            if self.day(day)[0]:
                pieces = [(midnight, self._at(day, self.start))]
                pieces.append((self._at(day, self.end), following))
            else:
                pieces = [(midnight, following)]
            for low, high in pieces:
                low, high = max(low, start), min(high, end)
                if low < high:
                    spans.append((low, high))
            day += dt.timedelta(days=1)
        return spans

    def describe(self) -> str:
        hours = f"{self.start:%H:%M}–{self.end:%H:%M}（{self.zone}）"
        if not self.official_calendar:
            return f"周一至周五 {hours}"
        return (
            f"周一至周五 {hours}，法定节假日休息、调休上班日照常工作"
            "（按国务院办公厅公布的安排）"
        )

    def _at(self, day: dt.date, time: dt.time) -> dt.datetime:
        return dt.datetime.combine(day, time, tzinfo=self.tz).astimezone(dt.UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class BulkRule:
    """When many downloads in a short time deserve a look.

    Options (default): ``share`` (0.5) of a prefecture's distinct files,
    within ``window`` (1 hour), and at least ``min_files`` (3) files, so a
    prefecture with one or two files does not raise it every time.
    """

    share: float = 0.5
    window: dt.timedelta = dt.timedelta(hours=1)
    min_files: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise ValueError("bulk rule: share must lie in (0, 1]")
        if self.window <= dt.timedelta(0):
            raise ValueError("bulk rule: window must be positive")
        if self.min_files < 1:
            raise ValueError("bulk rule: min_files must be at least 1")

    def threshold(self, files: int) -> int:
        return max(self.min_files, math.ceil(self.share * files))

    def describe(self) -> str:
        return (
            f"{show_duration(self.window)}内下载某市（州）不同文件数达到该市（州）"
            f"已知文件数的 {self.share:.0%} 及以上（且至少 {self.min_files} 个）"
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Take:
    """A download that started (complete, aborted or still open)."""

    account: str
    prefecture: str | None
    file: str | None
    at: dt.datetime
    bytes: int


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """Something that deserves a look, found by ``rule``."""

    rule: str
    account: str
    at: dt.datetime
    summary: str
    prefecture: str | None = None
    items: tuple[str, ...] = ()


def after_hours(takes: Iterable[Take], hours: WorkingHours) -> list[Finding]:
    """One finding per account and local day with downloads outside hours."""
    tz = hours.tz
    days: dict[tuple[str, dt.date], list[Take]] = collections.defaultdict(list)
    for take in sorted(takes, key=lambda t: t.at):
        if not hours.is_working_time(take.at):
            days[take.account, take.at.astimezone(tz).date()].append(take)
    findings = []
    for (account, day), found in sorted(days.items(), key=lambda item: item[1][0].at):
        _, kind = hours.day(day)
        first, last = found[0].at, found[-1].at
        size = show_bytes(sum(take.bytes for take in found))
        clock = show_clock(first, tz)
        if show_clock(last, tz) != clock:
            clock += f"–{show_clock(last, tz)}"
        summary = (
            f"{account} 于 {day:%Y-%m-%d}（{kind}）{clock} "
            f"下载 {len(found)} 次（共 {size}）"
        )
        items = tuple(f"{show_clock(t.at, tz)} {t.file or ''}" for t in found)
        findings.append(Finding(AFTER_HOURS, account, first, summary, None, items))
    return findings


def bulk_takes(
    takes: Iterable[Take],
    files: Mapping[str, int],
    rule: BulkRule,
    zone: zoneinfo.ZoneInfo,
    names: Mapping[str, str],
) -> list[Finding]:
    """One finding per account and prefecture whose busiest ``rule.window``
    reaches the threshold; ``files`` is each prefecture's distinct files."""
    groups: dict[tuple[str, str], list[Take]] = collections.defaultdict(list)
    for take in takes:
        if take.prefecture is not None and take.file is not None:
            groups[take.account, take.prefecture].append(take)
    findings = []
    for (account, code), group in groups.items():
        total = max(files.get(code, 0), len({t.file for t in group}))
        busiest = _busiest(sorted(group, key=lambda t: t.at), rule.window)
        best = list(dict.fromkeys(t.file for t in busiest if t.file))
        if len(best) < rule.threshold(total):
            continue
        first, last = busiest[0].at, busiest[-1].at
        name = names.get(code, code)
        summary = (
            f"{account} 在 {show_minute(first, zone)}–{show_clock(last, zone)}"
            f"（{show_duration(last - first)}内）下载{name} {len(best)} 个不同文件，"
            f"占该市（州）已知文件 {total} 个的 {len(best) / total:.0%}"
        )
        findings.append(Finding(BULK, account, first, summary, code, tuple(best)))
    return sorted(findings, key=lambda finding: finding.at)


def new_addresses(
    first_seen: Mapping[str, Mapping[str, dt.datetime]],
    start: dt.datetime,
    end: dt.datetime,
    zone: zoneinfo.ZoneInfo,
) -> list[Finding]:
    """Addresses first used by an account between ``start`` and ``end``,
    on a later local day than the account's first day.

    ``first_seen[account][address]`` is when the account was first seen
    from the address, over the whole log up to ``end``.
    """
    findings = []
    for account, seen in first_seen.items():
        first_day = min(seen.values()).astimezone(zone).date()
        for address, at in seen.items():
            if not start <= at < end or at.astimezone(zone).date() <= first_day:
                continue
            earlier = sorted(a for a, t in seen.items() if t < at)
            summary = (
                f"{account} 于 {show_minute(at, zone)} 首次从地址 {address} 访问；"
                f"此前（自 {first_day:%Y-%m-%d} 起）用过的地址："
                f"{'、'.join(earlier) or '无'}"
            )
            findings.append(Finding(NEW_ADDRESS, account, at, summary, None, ()))
    return sorted(findings, key=lambda finding: finding.at)


def explain(rule: str, hours: WorkingHours, bulk: BulkRule) -> str:
    """What ``rule`` looks for, in one paragraph for the reader."""
    if rule == AFTER_HOURS:
        return (
            f"工作时间为{hours.describe()}。在此之外开始的下载（含中断的下载）"
            "按账号和日期汇总列出。"
        )
    if rule == BULK:
        return (
            f"规则：{bulk.describe()}。某市（州）的已知文件数，是审计日志中截至"
            "报告期末上传或下载过、且未被删除的该市（州）不同文件的数目；"
            "每个账号和市（州）只列出下载最集中的一段时间。"
        )
    if rule == NEW_ADDRESS:
        return (
            "某账号首次使用的地址（IP，不含端口）出现在报告期内，且不在该账号"
            "首次出现的当天，即列出。账号首日用过的地址视为其常用地址。"
        )
    raise ValueError(f"rule: unknown rule {rule!r}")


def _busiest(takes: Sequence[Take], window: dt.timedelta) -> list[Take]:
    """The downloads within ``window`` of each other (``takes`` in time
    order) that cover the most distinct files."""
    best = (0, 0, -1)  # distinct files, first index, last index
    counts: collections.Counter[str | None] = collections.Counter()
    low = 0
    for high, take in enumerate(takes):
        counts[take.file] += 1
        while take.at - takes[low].at > window:
            gone = takes[low].file
            counts[gone] -= 1
            if not counts[gone]:
                del counts[gone]
            low += 1
        if len(counts) > best[0]:
            best = (len(counts), low, high)
    return list(takes[best[1] : best[2] + 1])
