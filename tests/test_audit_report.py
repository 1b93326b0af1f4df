"""The auditors' HTML report: its figures match the log it was made from.

The log is ``reportkit.realistic_log`` (read its docstring for the story);
the page is parsed with ``html.parser`` and read through the ``data-*``
attributes the report carries for machines.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import reportkit as kit
from censusdrop.audit import events as ev
from censusdrop.audit.checkpoint import SigningKey
from censusdrop.audit.checkpoint import create_signing_key
from censusdrop.audit.checkpoint import make_checkpoint
from censusdrop.audit.events import AuditEvent
from censusdrop.audit.query import EventFilter
from censusdrop.audit.query import downloads
from censusdrop.audit.report import Period
from censusdrop.audit.report import Report
from censusdrop.audit.report import ReportOptions
from censusdrop.audit.report import build_report
from censusdrop.audit.report import render
from censusdrop.audit.report import write_report
from censusdrop.audit.schema import audit_events
from censusdrop.audit.schema import metadata
from censusdrop.audit.store import AuditLog
from censusdrop.config.prefectures import load_prefectures

MADE_AT = kit.china("10-12", "09:30")
LOG = kit.realistic_log()


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return create_signing_key(tmp_path / "audit-signing.key")


@pytest.fixture
def engine(database_url: str, key: SigningKey) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database_url)
    metadata.create_all(engine)
    AuditLog(engine).append(LOG)
    make_checkpoint(engine, key, at=MADE_AT)
    yield engine
    engine.dispose()


def options(**changes: object) -> ReportOptions:
    base = ReportOptions(
        Period(kit.PERIOD_START, kit.PERIOD_END), prefectures=load_prefectures()
    )
    return dataclasses.replace(base, **changes)


def make(engine: sa.Engine, key: SigningKey, **changes: object) -> Report:
    return build_report(
        engine, key.public, options(**changes), at=MADE_AT, operator="auditor"
    )


def page(engine: sa.Engine, key: SigningKey, **changes: object) -> kit.Page:
    return kit.Page(render(make(engine, key, **changes)))


def test_the_top_shows_the_verification_and_the_latest_checkpoint(
    engine: sa.Engine, key: SigningKey
) -> None:
    shown = page(engine, key)

    box = shown.one(id="verification")
    assert box["data-verify"] == "ok"
    assert box["data-events"] == box["data-head-seq"] == str(len(LOG))
    assert box["data-checkpoint-seq"] == str(len(LOG))
    assert "审计链校验：通过" in shown.text
    assert key.key_id in shown.text and "2020-10-12 09:30:00" in shown.text

    about = shown.one(id="about")
    assert about["data-from"] == kit.PERIOD_START.isoformat()
    assert about["data-to"] == kit.PERIOD_END.isoformat()
    assert about["data-operator"] == "auditor"
    assert "2020-09-28 00:00 至 2020-10-12 00:00" in shown.text


def test_download_totals_per_reviewer_match_the_log(
    engine: sa.Engine, key: SigningKey
) -> None:
    shown = page(engine, key)

    for account, expected in kit.EXPECTED_DOWNLOADS.items():
        row = shown.one("tr", table="download-totals", account=account)
        figures = [
            row["data-" + name]
            for name in (
                "downloads", "files", "complete", "aborted", "total-bytes",
                "complete-bytes",
            )
        ]  # fmt: skip
        assert figures == [str(value) for value in expected], account
    total = shown.one("tr", table="download-totals", account="")
    ledger = downloads(
        engine, EventFilter(since=kit.PERIOD_START, until=kit.PERIOD_END)
    )
    assert total["data-downloads"] == str(len(ledger)) == "12"
    assert total["data-total-bytes"] == str(sum(d.bytes or 0 for d in ledger))
    assert total["data-aborted"] == "1"


def test_downloads_outside_the_period_do_not_count(
    engine: sa.Engine, key: SigningKey
) -> None:
    whole = Period(kit.china("09-21", "00:00"), kit.china("10-13", "00:00"))
    shown = page(engine, key, period=whole)
    row = shown.one("tr", table="download-totals", account="zhang")
    assert row["data-downloads"] == "7"
    assert row["data-total-bytes"] == str(8_590_000 + 7 + 9)


def test_each_prefecture_shows_who_accessed_it_on_a_timeline(
    engine: sa.Engine, key: SigningKey
) -> None:
    shown = page(engine, key)

    sections = [div["data-prefecture"] for div in shown.find("div", prefecture=None)]
    assert sections == [kit.WUHAN, kit.YICHANG, kit.ENSHI]

    def accessed(code: str) -> list[tuple[str, str, str]]:
        rows = shown.find("tr", table=f"access-{code}")[1:]  # after the header
        return [
            (r["data-account"], r["data-downloads"], r["data-total-bytes"])
            for r in rows
        ]

    assert accessed(kit.WUHAN) == [("zhang", "5", "8590000")]
    assert accessed(kit.YICHANG) == [("li", "2", "1300000"), ("yichang", "0", "0")]
    # zhang was refused a listing of 恩施州's folder: that is access too.
    assert accessed(kit.ENSHI) == [("li", "5", "1500000"), ("zhang", "0", "0")]
    assert "恩施土家族苗族自治州（422800）" in shown.text
    assert "报告期内无人访问的市（州）：黄石市" in shown.text

    lanes = [g["data-lane"] for g in shown.find("g") if "data-lane" in g]
    assert lanes[:5] == ["li", "wang", "zhang", "yichang", ""]
    marks = shown.find("g", kind="download")
    # Each download is marked in the overall chart and its prefecture's.
    assert len(marks) == 2 * 12
    assert len(shown.find("g", kind="lockout")) == 1


def test_refusals_and_lockouts_are_listed(engine: sa.Engine, key: SigningKey) -> None:
    shown = page(engine, key)

    counts = shown.one("p", refusals="8")
    assert counts["data-lockouts"] == "1"
    (lockout,) = shown.find("tr", table="lockouts")[1:]
    assert lockout["data-account"] == "wang"
    refused = shown.find("tr", table="refusal-list", kind="refusal")
    assert [row.get("data-account", "") for row in refused] == [
        "zhang", "wang", "wang", "wang", "wang", "wang", "", "li",
    ]  # fmt: skip
    assert "登录失败；密码错误" in shown.text
    assert "未知用户名" in shown.text and "用户名不存在" in shown.text


def test_findings_name_the_holiday_download_the_bulk_take_and_new_addresses(
    engine: sa.Engine, key: SigningKey
) -> None:
    report = make(engine, key)
    shown = kit.Page(render(report))

    def found(rule: str) -> list[tuple[str, str]]:
        return [
            (row["data-account"], row.get("data-prefecture", ""))
            for row in shown.find("tr", rule=rule)
        ]

    # The Saturday download of 10-10 was on a make-up working day: not listed.
    assert found("after_hours") == [("zhang", "")]
    assert "国庆节假期" in shown.text
    assert found("bulk") == [("li", kit.ENSHI)]
    assert (
        "下载恩施土家族苗族自治州 4 个不同文件，占该市（州）已知文件 5 个的 80%"
        in shown.text
    )
    assert found("new_address") == [("wang", ""), ("zhang", "")]
    assert "首次从地址 10.20.7.42 访问" in shown.text
    assert shown.one("div", findings="4")
    assert "1 小时内" in shown.text  # each rule is explained


def test_rule_thresholds_are_parameters(engine: sa.Engine, key: SigningKey) -> None:
    from censusdrop.audit.report import BulkRule
    from censusdrop.audit.report import WorkingHours

    strict = make(
        engine, key,
        bulk=BulkRule(share=0.9, window=dt.timedelta(hours=1)),
        hours=WorkingHours(dt.time(10, 0), dt.time(14, 0)),
    )  # fmt: skip
    assert strict.findings.by_rule["bulk"] == []  # 4 of 5 is under 90%
    late = [
        (f.account, f.at.astimezone(kit.CHINA).strftime("%m-%d %H:%M"))
        for f in strict.findings.by_rule["after_hours"]
    ]
    assert late == [
        ("zhang", "09-28 09:32"),
        ("zhang", "10-01 10:16"),
        ("zhang", "10-09 09:46"),
        ("li", "10-09 14:00"),
    ]


def test_text_from_the_log_is_escaped(engine: sa.Engine, key: SigningKey) -> None:
    AuditLog(engine).append(
        [
            AuditEvent(
                ev.REFUSED, at=kit.china("10-02", "10:00"), outcome=ev.DENIED,
                account="<b>x</b>", role="reviewer", session="sx",
                remote="10.0.0.9:1", path='/武汉市/<script>alert("x")</script>.pdf',
            )
        ]
    )  # fmt: skip
    html = render(make(engine, key))
    assert "<script" not in html and "<b>x</b>" not in html
    assert "&lt;script&gt;" in html


def test_the_page_needs_nothing_from_outside(
    engine: sa.Engine, key: SigningKey
) -> None:
    html = render(make(engine, key))
    shown = kit.Page(html)

    tags = {tag for tag, _ in shown.elements}
    assert not tags & {"script", "link", "img", "iframe", "object", "embed"}
    links = [attrs["href"] for tag, attrs in shown.elements if "href" in attrs]
    assert links and all(link.startswith("#") for link in links)
    assert "url(" not in html and "@import" not in html
    assert html.count("http") == html.count('xmlns="http://www.w3.org/2000/svg"')
    assert "@page { size: A4" in html and "break-before: page" in html


def test_a_tampered_chain_is_reported_at_the_top(
    engine: sa.Engine, key: SigningKey
) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.update(audit_events).where(audit_events.c.seq == 40).values(bytes=1)
        )
    shown = page(engine, key)

    box = shown.one(id="verification")
    assert box["data-verify"] == "failed"
    assert box["data-events"] == "39"
    assert (
        "审计链校验：未通过" in shown.text and "第 40 条：条目内容被修改" in shown.text
    )


def test_without_a_checkpoint_the_page_warns(
    database_url: str, key: SigningKey
) -> None:
    engine = sa.create_engine(database_url)
    metadata.create_all(engine)
    AuditLog(engine).append(LOG)
    try:
        shown = page(engine, key)
    finally:
        engine.dispose()
    assert "data-checkpoint-seq" not in shown.one(id="verification")
    assert "无法发现链尾被截断或整条链被重新计算" in shown.text


def test_the_file_is_written_whole(
    engine: sa.Engine, key: SigningKey, tmp_path: Path
) -> None:
    target = tmp_path / "审计报告.html"
    target.write_text("old")
    write_report(make(engine, key), target)
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
