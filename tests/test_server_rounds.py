"""Rounds in the database: states move only along the plan's steps, every
move is audited, meetings open rectification windows (SQLite and
PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from censusdrop.audit.schema import audit_events
from censusdrop.server.roundmodel import RoundError
from censusdrop.server.roundmodel import TransitionRefused
from conftest import Instance
from roundkit import ENSHI
from roundkit import REVIEWING
from roundkit import SUBMITTING
from roundkit import WUHAN
from roundkit import china
from roundkit import distribute
from roundkit import make_round


@pytest.fixture
def services(tmp_path: Path, database_url: str) -> Iterator[Any]:
    from censusdrop.server.app import open_services

    made = open_services(
        Instance(tmp_path / "instance", database_url).settings, with_tls=False
    )
    try:
        yield made
    finally:
        made.audit.close()
        made.engine.dispose()


def _transitions(services: Any) -> list[dict[str, Any]]:
    services.audit.flush(10)
    with services.engine.connect() as conn:
        rows = conn.execute(
            sa.select(audit_events.c.prefecture, audit_events.c.details)
            .where(audit_events.c.action == "round_state")
            .order_by(audit_events.c.seq)
        ).all()
    return [{"prefecture": row[0], **json.loads(row[1])} for row in rows]


def test_a_new_round_holds_every_prefecture_by_default(services: Any) -> None:
    created = services.rounds.create("2020-hubei", at=SUBMITTING)
    assert len(created.entries) == 17
    assert {entry.state for entry in created.entries} == {"not_submitted"}
    assert services.rounds.list()[0].name == "2020-hubei"
    with pytest.raises(RoundError, match="already exists"):
        services.rounds.create("2020-hubei", at=SUBMITTING)


def test_round_names_and_prefectures_are_checked(services: Any) -> None:
    with pytest.raises(RoundError, match="round name"):
        services.rounds.create("第一轮 验收", at=SUBMITTING)
    with pytest.raises(Exception, match="unknown prefecture"):
        services.rounds.create("r1", at=SUBMITTING, prefectures=["上海市"])


def test_states_move_along_the_plan_and_each_move_is_audited(services: Any) -> None:
    make_round(services)
    distribute(services, WUHAN)
    moved = _transitions(services)
    assert [(m["from"], m["to"]) for m in moved] == [
        ("not_submitted", "submitted"),
        ("submitted", "prereviewed"),
        ("prereviewed", "distributed"),
    ]
    assert {m["prefecture"] for m in moved} == {WUHAN}
    assert moved[-1]["reason"] == "test" and moved[-1]["actor"] == "test"


@pytest.mark.parametrize(
    ("steps", "target"),
    [
        ((), "distributed"),
        ((), "passed"),
        (("submitted",), "meeting_held"),
        (("submitted", "prereviewed", "distributed"), "submitted"),
    ],
)
def test_an_impossible_transition_is_refused_and_says_what_is_possible(
    services: Any, steps: tuple[str, ...], target: str
) -> None:
    make_round(services)
    for step in steps:
        services.rounds.advance(WUHAN, step, at=REVIEWING, actor="t", reason="t")
    before = len(_transitions(services))
    with pytest.raises(TransitionRefused, match="may go to"):
        services.rounds.advance(WUHAN, target, at=REVIEWING, actor="t", reason="t")
    assert len(_transitions(services)) == before
    state = services.rounds.get("2020-hubei").entry(WUHAN).state
    assert state == (steps[-1] if steps else "not_submitted")


def test_rectification_and_archiving_are_not_set_by_hand(services: Any) -> None:
    make_round(services)
    for state in ("rectification", "archived"):
        with pytest.raises(RoundError, match="not by hand"):
            services.rounds.advance(WUHAN, state, at=REVIEWING, actor="t", reason="t")


def test_an_administrator_overrides_the_pre_review_verdict(services: Any) -> None:
    make_round(services)
    assert services.rounds.mark_submitted(WUHAN, at=SUBMITTING)
    assert services.rounds.mark_prereview(WUHAN, False, at=SUBMITTING)
    services.rounds.advance(
        WUHAN, "prereviewed", at=SUBMITTING, actor="admin", reason="补交纸质件已核"
    )
    assert services.rounds.get("2020-hubei").entry(WUHAN).state == "prereviewed"
    assert not services.rounds.mark_submitted(WUHAN, at=SUBMITTING)


def test_a_meeting_opens_rectification_until_the_third_working_day(
    services: Any,
) -> None:
    make_round(services)
    distribute(services, WUHAN)
    held = services.rounds.record_meeting(
        WUHAN,
        dt.date(2020, 4, 30),
        at=china(2020, 4, 30, 17),
        actor="admin",
        notice_on=dt.date(2020, 4, 28),
    )
    assert held.deadline.day == dt.date(2020, 5, 8)
    assert held.short_notice and held.notice_days == 2
    entry = services.rounds.get("2020-hubei").entry(WUHAN)
    assert entry.state == "rectification"
    assert entry.rectify_until == china(2020, 5, 9)
    assert entry.meeting_on == dt.date(2020, 4, 30)
    assert [m["to"] for m in _transitions(services)][-2:] == [
        "meeting_held",
        "rectification",
    ]


def test_a_prefecture_passed_at_the_meeting_gets_no_rectification(
    services: Any,
) -> None:
    make_round(services)
    distribute(services, ENSHI)
    held = services.rounds.record_meeting(
        ENSHI, dt.date(2020, 6, 24), at=REVIEWING, actor="admin", passed=True
    )
    assert held.deadline is None and held.notice_days is None
    entry = services.rounds.get("2020-hubei").entry(ENSHI)
    assert (entry.state, entry.rectify_until) == ("passed", None)


def test_a_meeting_needs_a_distributed_prefecture(services: Any) -> None:
    make_round(services)
    with pytest.raises(TransitionRefused, match="not_submitted to meeting_held"):
        services.rounds.record_meeting(
            WUHAN, dt.date(2020, 5, 20), at=REVIEWING, actor="admin"
        )


def test_windows_open_and_close_now(services: Any) -> None:
    make_round(services, submission=None)
    at = china(2020, 5, 12, 10)
    opened = services.rounds.open_window(
        "2020-hubei", "submission", at=at, until=china(2020, 5, 13)
    )
    assert opened.submission.is_open(at)
    closed = services.rounds.close_window("2020-hubei", "submission", at=at)
    assert closed.submission.has_ended(at)
    with pytest.raises(RoundError, match="not open"):
        services.rounds.close_window("2020-hubei", "submission", at=at)
    with pytest.raises(RoundError, match="--until"):
        services.rounds.open_window("2020-hubei", "submission", at=at, until=None)


def test_status_shows_states_windows_and_deadlines(services: Any) -> None:
    make_round(services)
    distribute(services, WUHAN)
    services.rounds.record_meeting(
        WUHAN, dt.date(2020, 6, 24), at=china(2020, 6, 24, 18), actor="admin"
    )
    (status,) = services.rounds.status(china(2020, 6, 29, 9))
    assert status.review_open and not status.submission_open
    rows = {row.prefecture: row for row in status.prefectures}
    assert rows[WUHAN].state == "rectification"
    assert rows[WUHAN].write_until == china(2020, 7, 1)
    assert rows[WUHAN].open_to_reviewers
    assert rows[ENSHI].write_until is None and not rows[ENSHI].open_to_reviewers
    assert rows[ENSHI].name == "恩施土家族苗族自治州"


def test_a_prefecture_in_several_rounds_needs_the_round_named(services: Any) -> None:
    make_round(services, name="first")
    make_round(services, name="second")
    with pytest.raises(RoundError, match="give --round"):
        services.rounds.advance(WUHAN, "submitted", at=REVIEWING, actor="t", reason="t")
    moved = services.rounds.advance(
        WUHAN, "submitted", at=REVIEWING, actor="t", reason="t", round_name="second"
    )
    assert moved.round == "second"
