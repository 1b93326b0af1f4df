"""A realistic audit log for the report tests, as the FTP server records it.

Three prefectures (武汉市 420100, 宜昌市 420500, 恩施州 422800) upload their
materials in the week of 2020-09-21; three reviewers (zhang: 武汉市; li:
宜昌市 and 恩施州; wang: 恩施州) first log in on 2020-09-25. The report
period is 2020-09-28 00:00 to 2020-10-12 00:00, China time, and holds:

- zhang, 09-28 09:30: two complete downloads and one aborted; a refused
  listing of 恩施州's folder;
- li, 09-29 10:00: two downloads of 宜昌市;
- wang, 09-30 11:00, from a new address: five failed logins and a lockout;
  an unknown user name fails once from elsewhere;
- zhang, 10-01 10:15 (National Day, a public holiday): one download;
- zhang, 10-09 09:45, from a new address: one download;
- li, 10-09 14:00-14:40: four of 恩施州's five files (a bulk take);
- 宜昌市, 10-09 15:00: uploads a rectification report, deletes a file;
- li, 10-10 10:00 (a Saturday, but a make-up working day): one download
  of 恩施州 and one refused download.

Before the period zhang downloaded once; after it, once more: neither may
count. Times are given in China time and stored in UTC.
"""

from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo
from html.parser import HTMLParser
from typing import Any

from censusdrop.audit import events as ev
from censusdrop.audit.events import AuditEvent

CHINA = zoneinfo.ZoneInfo("Asia/Shanghai")
WUHAN, YICHANG, ENSHI = "420100", "420500", "422800"
FOLDERS = {WUHAN: "武汉市", YICHANG: "宜昌市", ENSHI: "恩施土家族苗族自治州"}
WUHAN_FILES = [
    "01 验收申请/验收申请表.pdf",
    "02 工作报告/工作报告.docx",
    "02 工作报告/技术报告.docx",
    "03 质量核查/质量核查报告.pdf",
    "04 数据库/普查数据库.zip",
    "05 档案/档案整理报告.pdf",
    "06 图件/污染源分布图.jpg",
    "07 其他/经费使用情况.xlsx",
]
YICHANG_FILES = [
    "01 验收申请/验收申请表.pdf",
    "02 工作报告/工作报告.docx",
    "03 质量核查/质量核查报告.pdf",
    "01 验收申请/旧申请表.pdf",
]
ENSHI_FILES = [f"0{n} 材料/恩施州材料{n}.pdf" for n in range(1, 7)]
RECTIFICATION = "08 整改/整改报告.pdf"


def china(day: str, clock: str) -> dt.datetime:
    """``china("10-01", "10:15")``: that time of 2020 in China, as UTC."""
    local = dt.datetime.fromisoformat(f"2020-{day}T{clock}").replace(tzinfo=CHINA)
    return local.astimezone(dt.UTC)


PERIOD_START = china("09-28", "00:00")
PERIOD_END = china("10-12", "00:00")

# Downloads in the period, per reviewer: (count, distinct files, complete,
# aborted, bytes sent, bytes of complete downloads).
EXPECTED_DOWNLOADS = {
    "zhang": (5, 5, 4, 1, 8_590_000, 8_550_000),
    "li": (7, 7, 7, 0, 2_800_000, 2_800_000),
}


class Session:
    """One FTP session of one account, recording events as the server does."""

    _ids = itertools.count(1)

    def __init__(
        self, log: list[AuditEvent], account: str | None, address: str, **who: Any
    ) -> None:
        port = 50000 + next(self._ids)
        self.log = log
        self.fields = {
            "account": account,
            "session": f"s{port}",
            "remote": f"{address}:{port}",
            **who,
        }

    def add(self, action: str, at: dt.datetime, **fields: Any) -> Session:
        self.log.append(AuditEvent(action, at=at, **{**self.fields, **fields}))
        return self

    def login(self, at: dt.datetime) -> Session:
        self.add(ev.CONNECT, at - dt.timedelta(seconds=2), account=None, role=None)
        return self.add(ev.LOGIN, at)

    def download(
        self, path: str, at: dt.datetime, size: int, *, aborted: bool = False
    ) -> Session:
        self.add(ev.DOWNLOAD_START, at, path=path, version="1")
        outcome = ev.ABORTED if aborted else ev.OK
        end = at + dt.timedelta(seconds=20)
        return self.add(
            ev.DOWNLOAD_END, end, path=path, bytes=size, outcome=outcome,
            digest=None if aborted else "ab" * 32, details={"seconds": 20.0},
        )  # fmt: skip

    def upload(self, path: str, at: dt.datetime, size: int) -> Session:
        self.add(ev.UPLOAD_START, at, path=path)
        end = at + dt.timedelta(seconds=5)
        return self.add(ev.UPLOAD_END, end, path=path, bytes=size, digest="cd" * 32)

    def refused(self, path: str, at: dt.datetime, command: str) -> Session:
        details = {"command": command, "reply": 550}
        return self.add(ev.REFUSED, at, path=path, outcome=ev.DENIED, details=details)


def reviewer(log: list[AuditEvent], name: str, address: str) -> Session:
    return Session(log, name, address, role="reviewer", prefecture=None)


def prefecture(log: list[AuditEvent], name: str, code: str, address: str) -> Session:
    return Session(log, name, address, role="prefecture", prefecture=code)


def seen_by_reviewer(code: str, file: str) -> str:
    return f"/{FOLDERS[code]}/{file}"


def realistic_log() -> list[AuditEvent]:
    """The events described in the module docstring, in time order."""
    log: list[AuditEvent] = []
    _before_the_period(log)
    _first_week(log)
    _second_week(log)
    zhang = reviewer(log, "zhang", "10.20.1.15").login(china("10-12", "09:00"))
    zhang.download(seen_by_reviewer(WUHAN, WUHAN_FILES[5]), china("10-12", "09:01"), 9)
    return sorted(log, key=lambda event: event.at)


def _before_the_period(log: list[AuditEvent]) -> None:
    for code, name, files, day, address in (
        (WUHAN, "wuhan", WUHAN_FILES, "09-21", "10.30.1.10"),
        (YICHANG, "yichang", YICHANG_FILES, "09-22", "10.30.2.10"),
        (ENSHI, "enshi", ENSHI_FILES, "09-23", "10.30.3.10"),
    ):
        area = prefecture(log, name, code, address).login(china(day, "10:00"))
        for minute, file in enumerate(files, start=1):
            area.upload(f"/{file}", china(day, f"10:{minute:02d}"), 100_000 * minute)
    # 恩施州 removes a misplaced file: five files remain.
    area.add(ev.DELETE, china("09-23", "10:30"), path=f"/{ENSHI_FILES[5]}")
    zhang = reviewer(log, "zhang", "10.20.1.15").login(china("09-25", "09:00"))
    zhang.download(seen_by_reviewer(WUHAN, WUHAN_FILES[0]), china("09-25", "09:05"), 7)
    reviewer(log, "li", "10.20.1.16").login(china("09-25", "09:10"))
    reviewer(log, "wang", "10.20.1.17").login(china("09-25", "09:20"))


def _first_week(log: list[AuditEvent]) -> None:
    zhang = reviewer(log, "zhang", "10.20.1.15").login(china("09-28", "09:30"))
    zhang.add(ev.LIST, china("09-28", "09:31"), path="/武汉市", details={"entries": 7})
    for minute, (file, size) in enumerate(
        zip(WUHAN_FILES[:2], (1_200_000, 350_000), strict=True), start=32
    ):
        zhang.download(
            seen_by_reviewer(WUHAN, file), china("09-28", f"09:{minute}"), size
        )
    zhang.download(
        seen_by_reviewer(WUHAN, WUHAN_FILES[2]), china("09-28", "09:40"), 40_000,
        aborted=True,
    )  # fmt: skip
    zhang.refused(f"/{FOLDERS[ENSHI]}", china("09-28", "09:45"), "LIST")

    li = reviewer(log, "li", "10.20.1.16").login(china("09-29", "10:00"))
    li.download(
        seen_by_reviewer(YICHANG, YICHANG_FILES[0]), china("09-29", "10:05"), 800_000
    )
    li.download(
        seen_by_reviewer(YICHANG, YICHANG_FILES[1]), china("09-29", "10:20"), 500_000
    )

    wang = reviewer(log, "wang", "10.20.9.99")
    for second in range(5):
        wang.add(
            ev.LOGIN_FAILED, china("09-30", f"11:00:{second * 10:02d}"),
            outcome=ev.DENIED, details={"reason": "bad_password"},
        )  # fmt: skip
    wang.add(ev.LOCKOUT, china("09-30", "11:00:41"), outcome=ev.DENIED)
    stranger = Session(log, None, "10.99.0.5")
    stranger.add(
        ev.LOGIN_FAILED, china("09-30", "11:05"), outcome=ev.DENIED,
        details={"reason": "unknown_account", "name_sha256": "00" * 32},
    )  # fmt: skip

    zhang = reviewer(log, "zhang", "10.20.1.15").login(china("10-01", "10:15"))
    zhang.download(
        seen_by_reviewer(WUHAN, WUHAN_FILES[3]), china("10-01", "10:16"), 2_000_000
    )


def _second_week(log: list[AuditEvent]) -> None:
    li = reviewer(log, "li", "10.20.1.16").login(china("10-09", "13:59"))
    for clock, file in zip(
        ("14:00", "14:10", "14:25", "14:40"), ENSHI_FILES, strict=False
    ):
        li.download(seen_by_reviewer(ENSHI, file), china("10-09", clock), 300_000)

    zhang = reviewer(log, "zhang", "10.20.7.42").login(china("10-09", "09:45"))
    zhang.download(
        seen_by_reviewer(WUHAN, WUHAN_FILES[4]), china("10-09", "09:46"), 5_000_000
    )

    yichang = prefecture(log, "yichang", YICHANG, "10.30.2.10")
    yichang.login(china("10-09", "15:00"))
    yichang.upload(f"/{RECTIFICATION}", china("10-09", "15:01"), 640_000)
    yichang.add(ev.DELETE, china("10-09", "15:03"), path=f"/{YICHANG_FILES[3]}")

    li = reviewer(log, "li", "10.20.1.16").login(china("10-10", "10:00"))
    li.download(
        seen_by_reviewer(ENSHI, ENSHI_FILES[4]), china("10-10", "10:01"), 300_000
    )
    li.refused(
        seen_by_reviewer(YICHANG, RECTIFICATION), china("10-10", "10:05"), "RETR"
    )


class Page(HTMLParser):
    """A parsed report: each element's tag and attributes, and the text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self._texts: list[str] = []
        self._tables: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "table":
            self._tables.append(found.get("id", ""))
        # The id of the table an element lies in, to tell tables apart.
        found["table"] = self._tables[-1] if self._tables else ""
        self.elements.append((tag, found))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._tables.pop()

    def handle_data(self, data: str) -> None:
        self._texts.append(data)

    @property
    def text(self) -> str:
        return "".join(self._texts)

    def find(self, tag: str | None = None, **data: str | None) -> list[dict[str, str]]:
        """Elements with these ``data-*`` values (``total_bytes`` stands for
        ``data-total-bytes``; None: any value); ``id`` matches the id,
        ``table`` the id of the table the element lies in."""
        wanted = {
            (key if key in ("id", "table") else "data-" + key.replace("_", "-")): value
            for key, value in data.items()
        }
        return [
            attrs
            for name, attrs in self.elements
            if (tag is None or name == tag)
            and all(
                key in attrs if value is None else attrs.get(key) == value
                for key, value in wanted.items()
            )
        ]

    def one(self, tag: str | None = None, **data: str | None) -> dict[str, str]:
        (found,) = self.find(tag, **data)
        return found
