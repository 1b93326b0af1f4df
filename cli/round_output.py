"""How ``censusdrop round`` and ``censusdrop custody`` show things: China
time for people, ISO 8601 with the +08:00 offset for ``--json``.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import click

from censusdrop.cli.context import print_table
from censusdrop.server.roundmodel import STATES
from censusdrop.server.roundmodel import Round
from censusdrop.server.roundmodel import RoundStatus
from censusdrop.server.roundmodel import Window
from censusdrop.server.rounds import NOTICE_DAYS
from censusdrop.server.rounds import Meeting
from censusdrop.server.workdays import CENSUS_TZ
from censusdrop.server.workdays import format_local


def shown(at: dt.datetime | None, *, end: bool = False) -> str:
    """China time for tables; ``end`` shows a closing midnight as 24:00."""
    return "" if at is None else format_local(at, end=end)


def as_json_time(at: dt.datetime | None) -> str | None:
    return None if at is None else at.astimezone(CENSUS_TZ).isoformat()


def warn(message: str) -> None:
    click.secho(f"warning: {message}", fg="yellow", err=True)


def status_json(status: RoundStatus) -> dict[str, Any]:
    """A round's status for ``--json`` (also for ``censusdrop status``)."""
    data = round_json(status.round)
    data["submission_open"] = status.submission_open
    data["review_open"] = status.review_open
    data["prefectures"] = [
        {
            "prefecture": p.prefecture,
            "name": p.name,
            "state": p.state,
            "since": as_json_time(p.since),
            "write_until": as_json_time(p.write_until),
            "rectify_until": as_json_time(p.rectify_until),
            "deadline_estimated": p.deadline_estimated,
            "open_to_reviewers": p.open_to_reviewers,
        }
        for p in status.prefectures
    ]
    return data


def print_status(status: RoundStatus) -> None:
    round_ = status.round
    click.echo(f"round {round_.name} (times in Asia/Shanghai)")
    for which, is_open in (
        ("submission", status.submission_open),
        ("review", status.review_open),
    ):
        state = "open" if is_open else "closed"
        click.echo(f"  {which}: {window_text(round_.window(which))} ({state})")
    print_table(
        f"Prefectures of {round_.name}",
        [
            "code",
            "prefecture",
            "state",
            "since",
            "may write until",
            "rectify until",
            "reviewers see",
        ],
        [
            (
                p.prefecture,
                p.name,
                p.state,
                shown(p.since),
                shown(p.write_until, end=True),
                shown(p.rectify_until, end=True)
                + (" (estimated)" if p.deadline_estimated else ""),
                "yes" if p.open_to_reviewers else "no",
            )
            for p in status.prefectures
        ],
    )


def report_meeting(label: str, held: Meeting, at: dt.datetime) -> None:
    deadline = held.deadline
    if deadline is None:
        click.echo(f"{label}: meeting recorded; passed at the meeting")
    else:
        click.echo(
            f"{label}: meeting recorded; rectification window until "
            f"{format_local(deadline.at, end=True)} (Asia/Shanghai)"
        )
        if deadline.estimated:
            warn(
                "no official holiday calendar for that year: working days were "
                "counted Monday to Friday; check the deadline against the "
                "State Council's published arrangement"
            )
        if deadline.at <= at:
            warn("that rectification window has already ended")
    if held.notice_days is None:
        warn(f"no --notice-date given: the {NOTICE_DAYS}-day notice was not checked")
    elif held.short_notice:
        warn(
            f"the meeting was announced {held.notice_days} day(s) ahead; "
            f"the plan asks for at least {NOTICE_DAYS}"
        )


def window_text(window: Window | None) -> str:
    if window is None:
        return "not set"
    start, end = format_local(window.start), format_local(window.end, end=True)
    return f"{start} .. {end}"


def window_json(window: Window | None) -> dict[str, str | None] | None:
    if window is None:
        return None
    return {"start": as_json_time(window.start), "end": as_json_time(window.end)}


def state_counts(round_: Round) -> str:
    counts = Counter(entry.state for entry in round_.entries)
    return ", ".join(f"{state} {counts[state]}" for state in STATES if counts[state])


def round_json(round_: Round) -> dict[str, Any]:
    return {
        "name": round_.name,
        "created_at": as_json_time(round_.created_at),
        "submission": window_json(round_.submission),
        "review": window_json(round_.review),
        "states": dict(Counter(entry.state for entry in round_.entries)),
    }
