"""Working days on the official Chinese calendar, and China-time input."""

from __future__ import annotations

import datetime as dt

import pytest

from censusdrop.server.workdays import add_working_days
from censusdrop.server.workdays import format_local
from censusdrop.server.workdays import format_local_zh
from censusdrop.server.workdays import is_working_day
from censusdrop.server.workdays import parse_local
from censusdrop.server.workdays import rectification_deadline
from roundkit import china


@pytest.mark.parametrize(
    ("meeting", "last_day"),
    [
        # Thursday before the Labour Day holiday (1-5 May 2020).
        (dt.date(2020, 4, 30), dt.date(2020, 5, 8)),
        # A meeting on the holiday itself counts from the same place.
        (dt.date(2020, 5, 1), dt.date(2020, 5, 8)),
        # Dragon Boat holiday 25-27 June; Sunday 28 June is a make-up day.
        (dt.date(2020, 6, 24), dt.date(2020, 6, 30)),
    ],
)
def test_rectification_deadline_counts_official_working_days(
    meeting: dt.date, last_day: dt.date
) -> None:
    deadline = rectification_deadline(meeting)
    assert deadline.day == last_day
    assert not deadline.estimated
    after = last_day + dt.timedelta(days=1)
    assert deadline.at == china(after.year, after.month, after.day)


def test_deadline_ends_at_midnight_china_time_and_reads_as_24_00() -> None:
    deadline = rectification_deadline(dt.date(2020, 4, 30))
    assert deadline.at == dt.datetime(2020, 5, 8, 16, 0, tzinfo=dt.UTC)
    assert format_local(deadline.at, end=True) == "2020-05-08 24:00"
    assert format_local_zh(deadline.at, end=True) == "2020年5月8日24时"
    assert format_local(deadline.at) == "2020-05-09 00:00"


def test_make_up_saturday_is_a_working_day_and_holiday_weekday_is_not() -> None:
    assert is_working_day(dt.date(2020, 5, 9)) == (True, False)
    assert is_working_day(dt.date(2020, 5, 4)) == (False, False)


def test_year_without_calendar_data_falls_back_to_weekdays_and_says_so() -> None:
    deadline = rectification_deadline(dt.date(2099, 1, 1))  # a Thursday
    assert deadline.estimated
    assert deadline.day == dt.date(2099, 1, 6)
    assert add_working_days(dt.date(2099, 1, 2), 1) == (dt.date(2099, 1, 5), True)


def test_add_working_days_needs_a_positive_count() -> None:
    with pytest.raises(ValueError, match="count"):
        add_working_days(dt.date(2020, 5, 1), 0)


def test_parse_local_reads_china_time_and_bare_end_dates_as_end_of_day() -> None:
    assert parse_local("2020-05-10") == china(2020, 5, 10)
    assert parse_local("2020-05-10", end=True) == china(2020, 5, 11)
    assert parse_local("2020-05-10 18:30") == china(2020, 5, 10, 18, 30)
    assert parse_local("2020-05-10T10:30:00+00:00") == china(2020, 5, 10, 18, 30)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        parse_local("10 May")
