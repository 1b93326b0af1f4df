"""The report's rules on their own: working hours, bulk takes, new addresses."""

from __future__ import annotations

import datetime as dt

import pytest

from censusdrop.audit.report_data import host_of
from censusdrop.audit.report_rules import BulkRule
from censusdrop.audit.report_rules import Take
from censusdrop.audit.report_rules import WorkingHours
from censusdrop.audit.report_rules import after_hours
from censusdrop.audit.report_rules import bulk_takes
from censusdrop.audit.report_rules import new_addresses
from reportkit import CHINA
from reportkit import china

HOURS = WorkingHours()


def test_official_holidays_are_not_working_days() -> None:
    working, kind = HOURS.day(dt.date(2020, 10, 1))
    assert not working and kind == "周四，国庆节假期"
    assert not HOURS.is_working_time(china("10-01", "10:00"))


def test_make_up_working_days_are_working_days() -> None:
    working, kind = HOURS.day(dt.date(2020, 10, 10))
    assert working and kind == "周六，调休上班"
    assert HOURS.is_working_time(china("10-10", "10:00"))


def test_working_hours_start_inclusive_and_end_exclusive() -> None:
    assert not HOURS.is_working_time(china("10-09", "08:29:59"))
    assert HOURS.is_working_time(china("10-09", "08:30"))
    assert HOURS.is_working_time(china("10-09", "17:59:59"))
    assert not HOURS.is_working_time(china("10-09", "18:00"))


def test_a_year_without_official_data_counts_monday_to_friday() -> None:
    assert HOURS.day(dt.date(2100, 1, 4)) == (True, "周一")
    assert HOURS.day(dt.date(2100, 1, 2)) == (False, "周六")


def test_working_hours_are_parsed_and_checked() -> None:
    hours = WorkingHours.parse("09:00-17:30", "Asia/Shanghai")
    assert (hours.start, hours.end) == (dt.time(9), dt.time(17, 30))
    for bad in ("18:00-08:00", "nine to five", "09:00"):
        with pytest.raises(ValueError, match="working hours"):
            WorkingHours.parse(bad)
    with pytest.raises(ValueError, match="unknown zone"):
        WorkingHours(zone="Mars/Olympus")


def test_off_hours_cover_nights_and_holidays() -> None:
    spans = HOURS.off_spans(china("09-30", "00:00"), china("10-02", "00:00"))
    local = [
        (f"{low.astimezone(CHINA):%m-%d %H:%M}", f"{high.astimezone(CHINA):%H:%M}")
        for low, high in spans
    ]
    assert local == [
        ("09-30 00:00", "08:30"),
        ("09-30 18:00", "00:00"),
        ("10-01 00:00", "00:00"),
    ]


def test_after_hours_downloads_are_summed_per_account_and_day() -> None:
    takes = [
        Take("li", "420100", "a.pdf", china("10-09", "19:00"), 100),
        Take("li", "420100", "b.pdf", china("10-09", "19:30"), 50),
        Take("li", "420100", "c.pdf", china("10-09", "12:00"), 50),
    ]
    (finding,) = after_hours(takes, HOURS)
    assert finding.summary == (
        "li 于 2020-10-09（周五，工作日）19:00–19:30 下载 2 次（共 150 B）"
    )
    assert finding.items == ("19:00 a.pdf", "19:30 b.pdf")


def takes_of(files: int, minutes: int) -> list[Take]:
    """``files`` downloads by li of 420100, ``minutes`` apart."""
    start = china("10-09", "09:00")
    return [
        Take("li", "420100", f"{n}.pdf", start + dt.timedelta(minutes=n * minutes), 1)
        for n in range(files)
    ]


def bulk(takes: list[Take], files: int, rule: BulkRule | None = None) -> list[str]:
    found = bulk_takes(takes, {"420100": files}, rule or BulkRule(), CHINA, {})
    return [f.summary for f in found]


def test_half_of_a_prefectures_files_within_an_hour_is_a_bulk_take() -> None:
    (summary,) = bulk(takes_of(5, 14), files=10)
    assert summary.endswith("下载420100 5 个不同文件，占该市（州）已知文件 10 个的 50%")
    assert bulk(takes_of(4, 14), files=10) == []
    # The same five files spread over two hours are not.
    assert bulk(takes_of(5, 30), files=10) == []


def test_a_small_prefecture_needs_the_minimum_number_of_files() -> None:
    assert bulk(takes_of(2, 1), files=2) == []
    assert len(bulk(takes_of(2, 1), files=2, rule=BulkRule(min_files=2))) == 1


def test_downloading_one_file_again_is_not_another_file() -> None:
    again = [Take("li", "420100", "0.pdf", china("10-09", "09:05"), 1)] * 4
    assert bulk(takes_of(2, 1) + again, files=4) == []


def test_bulk_rule_settings_are_checked() -> None:
    for changes in ({"share": 0}, {"share": 1.5}, {"min_files": 0}):
        with pytest.raises(ValueError, match="bulk rule"):
            BulkRule(**changes)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window"):
        BulkRule(window=dt.timedelta(0))


def test_a_new_address_after_the_first_day_is_reported() -> None:
    seen = {
        "li": {
            "10.0.0.1": china("09-25", "09:00"),
            "10.0.0.2": china("09-25", "17:00"),  # the first day: usual
            "10.0.0.3": china("09-26", "10:00"),  # before the period
            "10.0.0.4": china("10-09", "10:00"),  # new, in the period
        }
    }
    found = new_addresses(seen, china("09-28", "00:00"), china("10-12", "00:00"), CHINA)
    (finding,) = found
    assert (finding.account, finding.at) == ("li", china("10-09", "10:00"))
    assert "10.0.0.4" in finding.summary
    assert "10.0.0.1、10.0.0.2、10.0.0.3" in finding.summary


def test_addresses_are_hosts_without_ports() -> None:
    assert host_of("10.0.0.8:5000") == "10.0.0.8"
    assert host_of("[::1]:21") == "::1"
    assert host_of("::1:5000") == "::1"
    assert host_of("localhost") == "localhost"
