"""Working days on the official Chinese calendar, and local census time.

Deadlines in the acceptance plan are counted in working days ("会议后3个
工作日内"): public holidays do not count, and the make-up working days
(调休上班, often a Saturday or Sunday) do. The official calendar comes from
the maintained ``chinesecalendar`` package. For a year it has no data for
(the State Council publishes each year's arrangement late in the year
before), Monday to Friday are taken as working days and the result says it
is an estimate, so the CLI can tell the operator to check it.

Dates and times of the review are entered and shown in China Standard
Time (Asia/Shanghai) and stored in UTC.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import zoneinfo

import chinese_calendar

CENSUS_TZ = zoneinfo.ZoneInfo("Asia/Shanghai")
RECTIFICATION_WORKING_DAYS = 3

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclasses.dataclass(frozen=True)
class Deadline:
    """The end of a span of working days.

    ``day`` is the last working day; ``at`` is the instant it ends (the
    following local midnight, in UTC), so a window is open while
    ``at < deadline.at``. ``estimated`` is True when some day of the span
    fell in a year without official calendar data (Monday–Friday assumed).
    """

    day: dt.date
    at: dt.datetime
    estimated: bool


def is_working_day(day: dt.date) -> tuple[bool, bool]:
    """Whether ``day`` is a working day, and whether that is an estimate."""
    try:
        return bool(chinese_calendar.is_workday(day)), False
    except NotImplementedError:
        return day.weekday() < 5, True


def add_working_days(start: dt.date, count: int) -> tuple[dt.date, bool]:
    """The ``count``-th working day after ``start`` (not counting it)."""
    if count < 1:
        raise ValueError("count: must be at least 1")
    day, found, estimated = start, 0, False
    while found < count:
        day += dt.timedelta(days=1)
        working, guessed = is_working_day(day)
        estimated = estimated or guessed
        found += working
    return day, estimated


def rectification_deadline(
    meeting: dt.date, working_days: int = RECTIFICATION_WORKING_DAYS
) -> Deadline:
    """End of the 3rd working day after a review meeting, China time."""
    day, estimated = add_working_days(meeting, working_days)
    return Deadline(day=day, at=end_of_day(day), estimated=estimated)


def start_of_day(day: dt.date) -> dt.datetime:
    """Local midnight at the start of ``day``, in UTC."""
    local = dt.datetime.combine(day, dt.time(), tzinfo=CENSUS_TZ)
    return local.astimezone(dt.UTC)


def end_of_day(day: dt.date) -> dt.datetime:
    """Local midnight at the end of ``day`` (exclusive), in UTC."""
    return start_of_day(day + dt.timedelta(days=1))


def local_date(at: dt.datetime) -> dt.date:
    """The calendar date of ``at`` in China."""
    return at.astimezone(CENSUS_TZ).date()


def parse_local(text: str, *, end: bool = False) -> dt.datetime:
    """Parse ``YYYY-MM-DD`` or ``YYYY-MM-DD HH:MM`` given in China time.

    A bare date as the ``end`` of a window means the end of that day.
    Raises ``ValueError`` with the accepted forms.
    """
    text = text.strip()
    if _DATE.match(text):
        day = dt.date.fromisoformat(text)
        return end_of_day(day) if end else start_of_day(day)
    try:
        parsed = dt.datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date or time: use YYYY-MM-DD or YYYY-MM-DD HH:MM"
            " (China time)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=CENSUS_TZ)
    return parsed.astimezone(dt.UTC)


def format_local(at: dt.datetime, *, end: bool = False) -> str:
    """``2020-05-08 18:00`` in China time. As the ``end`` of a span, a
    midnight reads ``2020-05-08 24:00`` so that deadlines name their last
    day."""
    local = at.astimezone(CENSUS_TZ)
    if end and local.time() == dt.time():
        previous = local.date() - dt.timedelta(days=1)
        return f"{previous:%Y-%m-%d} 24:00"
    return f"{local:%Y-%m-%d %H:%M}"


def format_local_zh(at: dt.datetime, *, end: bool = False) -> str:
    """The same for Chinese replies: ``2020年5月8日 18:00``, and as an end
    ``2020年5月8日24时``."""
    local = at.astimezone(CENSUS_TZ)
    if end and local.time() == dt.time():
        day, clock = local.date() - dt.timedelta(days=1), "24时"
    else:
        day, clock = local.date(), f" {local:%H:%M}"
    return f"{day.year}年{day.month}月{day.day}日{clock}"
