"""Acceptance rounds as data: states, allowed transitions, windows, rules.

A round is one acceptance review: a set of prefectures, a submission window
and a review window. Each prefecture moves through the states of the
provincial plan (鄂污普办〔2020〕5号, section 三)::

    not_submitted → submitted → returned ⇄ submitted
                              → prereviewed → distributed → meeting_held
    meeting_held → rectification → passed → archived
    meeting_held → passed            (passed at the meeting, no rectification)
    rectification → meeting_held     (a follow-up meeting)
    prereviewed → returned           (an administrator withdraws the pass)

Everything here is pure: the store (``censusdrop.server.rounds``) loads and
saves it, the policy (``censusdrop.server.policy``) decides access from it.
Windows are half-open, ``start <= at < end``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

NOT_SUBMITTED = "not_submitted"
SUBMITTED = "submitted"
RETURNED = "returned"
PREREVIEWED = "prereviewed"
DISTRIBUTED = "distributed"
MEETING_HELD = "meeting_held"
RECTIFICATION = "rectification"
PASSED = "passed"
ARCHIVED = "archived"

STATES = (
    NOT_SUBMITTED,
    SUBMITTED,
    RETURNED,
    PREREVIEWED,
    DISTRIBUTED,
    MEETING_HELD,
    RECTIFICATION,
    PASSED,
    ARCHIVED,
)

# What each state means, in the words of the plan (for Chinese replies).
STATE_NAMES_ZH = {
    NOT_SUBMITTED: "未提交",
    SUBMITTED: "已提交",
    RETURNED: "退回补充完善",
    PREREVIEWED: "初审合格",
    DISTRIBUTED: "已分发审核",
    MEETING_HELD: "已召开视频会审",
    RECTIFICATION: "整改完善中",
    PASSED: "通过验收",
    ARCHIVED: "已归档",
}

TRANSITIONS: dict[str, frozenset[str]] = {
    NOT_SUBMITTED: frozenset({SUBMITTED}),
    SUBMITTED: frozenset({RETURNED, PREREVIEWED}),
    RETURNED: frozenset({SUBMITTED, PREREVIEWED}),
    PREREVIEWED: frozenset({DISTRIBUTED, RETURNED}),
    DISTRIBUTED: frozenset({MEETING_HELD}),
    MEETING_HELD: frozenset({RECTIFICATION, PASSED}),
    RECTIFICATION: frozenset({PASSED, MEETING_HELD}),
    PASSED: frozenset({ARCHIVED}),
    ARCHIVED: frozenset(),
}

# Before distribution a prefecture may still change its submission;
# afterwards only a rectification window lets it write.
SUBMISSION_STATES = frozenset({NOT_SUBMITTED, SUBMITTED, RETURNED, PREREVIEWED})
# States in which reviewers may read the material (review window open).
REVIEW_STATES = frozenset({DISTRIBUTED, MEETING_HELD, RECTIFICATION, PASSED})

WINDOWS = ("submission", "review")


class RoundError(Exception):
    """A round operation cannot be done; the message says why."""


class TransitionRefused(RoundError):
    """The asked state change is not a step the process allows."""


@dataclasses.dataclass(frozen=True)
class Window:
    """A span of time, ``start <= at < end``, in UTC."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window: start and end must be timezone-aware")
        if self.end < self.start:
            raise RoundError("a window must not end before it starts")

    def is_open(self, at: dt.datetime) -> bool:
        return self.start <= at < self.end

    def has_ended(self, at: dt.datetime) -> bool:
        return at >= self.end


@dataclasses.dataclass(frozen=True)
class Entry:
    """One prefecture's place in a round."""

    prefecture: str
    state: str
    since: dt.datetime
    meeting_on: dt.date | None = None
    notice_on: dt.date | None = None
    rectify_until: dt.datetime | None = None
    deadline_estimated: bool = False


@dataclasses.dataclass(frozen=True)
class Round:
    id: int
    name: str
    created_at: dt.datetime
    submission: Window | None
    review: Window | None
    entries: tuple[Entry, ...]

    def entry(self, prefecture: str) -> Entry | None:
        for entry in self.entries:
            if entry.prefecture == prefecture:
                return entry
        return None

    def window(self, which: str) -> Window | None:
        if which not in WINDOWS:
            raise ValueError(f"window: {which!r} is not one of {WINDOWS}")
        return self.submission if which == "submission" else self.review

    @property
    def is_archived(self) -> bool:
        return all(entry.state == ARCHIVED for entry in self.entries)


@dataclasses.dataclass(frozen=True)
class PrefectureStatus:
    """One prefecture of a round at one moment (for ``censusdrop status``)."""

    round: str
    prefecture: str
    name: str
    state: str
    since: dt.datetime
    write_until: dt.datetime | None
    rectify_until: dt.datetime | None
    deadline_estimated: bool
    open_to_reviewers: bool


@dataclasses.dataclass(frozen=True)
class RoundStatus:
    round: Round
    submission_open: bool
    review_open: bool
    prefectures: tuple[PrefectureStatus, ...]


def check_transition(prefecture: str, current: str, target: str) -> None:
    """Raise ``TransitionRefused`` unless ``current → target`` is allowed."""
    if target not in STATES:
        raise TransitionRefused(
            f"unknown state {target!r}; states are: {', '.join(STATES)}"
        )
    if target in TRANSITIONS[current]:
        return
    allowed = ", ".join(sorted(TRANSITIONS[current])) or "none (final state)"
    raise TransitionRefused(
        f"{prefecture} cannot go from {current} to {target}; "
        f"from {current} it may go to: {allowed}"
    )


def write_window(round_: Round, entry: Entry, at: dt.datetime) -> Window | None:
    """The window through which the prefecture may write at ``at``, if any."""
    submission = round_.submission
    if (
        submission is not None
        and submission.is_open(at)
        and entry.state in SUBMISSION_STATES
    ):
        return submission
    until = entry.rectify_until
    if entry.state == RECTIFICATION and until is not None and at < until:
        return Window(min(entry.since, until), until)
    return None


def open_to_reviewers(round_: Round, entry: Entry, at: dt.datetime) -> bool:
    """Whether reviewers assigned to the prefecture may read it now."""
    review = round_.review
    return review is not None and review.is_open(at) and entry.state in REVIEW_STATES


def round_status(
    round_: Round, names: Mapping[str, str], at: dt.datetime
) -> RoundStatus:
    """A round at ``at``: its windows, and for each prefecture its state,
    until when it may write and whether reviewers see it."""
    rows = []
    for entry in round_.entries:
        window = write_window(round_, entry, at)
        rows.append(
            PrefectureStatus(
                round=round_.name,
                prefecture=entry.prefecture,
                name=names.get(entry.prefecture, entry.prefecture),
                state=entry.state,
                since=entry.since,
                write_until=None if window is None else window.end,
                rectify_until=entry.rectify_until,
                deadline_estimated=entry.deadline_estimated,
                open_to_reviewers=open_to_reviewers(round_, entry, at),
            )
        )
    return RoundStatus(
        round=round_,
        submission_open=bool(round_.submission and round_.submission.is_open(at)),
        review_open=bool(round_.review and round_.review.is_open(at)),
        prefectures=tuple(rows),
    )
