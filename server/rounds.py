"""``RoundStore``: acceptance rounds and each prefecture's state, in the DB.

Trusts: the database and its caller's ``at``. Guarantees: a state changes
only along ``roundmodel.TRANSITIONS`` (checked and written in one
transaction, so two writers cannot both move the same prefecture), and
every change is written durably to the audit trail (action
``round_state``) before the method returns. An impossible change raises
``TransitionRefused`` saying what is possible instead.

The validator calls ``mark_submitted`` and ``mark_prereview``; the
administrator's ``round`` commands call the rest. ``status(at)`` is what
``censusdrop status`` shows.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
import re
from collections.abc import Callable
from collections.abc import Sequence

import sqlalchemy as sa

from censusdrop.audit import events
from censusdrop.audit.events import AuditEvent
from censusdrop.audit.events import AuditSink
from censusdrop.audit.locking import read_connection
from censusdrop.config.prefectures import PrefectureList
from censusdrop.server import roundmodel as rm
from censusdrop.server.roundmodel import Entry
from censusdrop.server.roundmodel import Round
from censusdrop.server.roundmodel import RoundError
from censusdrop.server.roundmodel import RoundStatus
from censusdrop.server.roundmodel import Window
from censusdrop.server.schema import round_prefectures
from censusdrop.server.schema import rounds
from censusdrop.server.workdays import Deadline
from censusdrop.server.workdays import rectification_deadline

ROUND_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NOTICE_DAYS = 3
# States an administrator cannot set directly, and what sets them.
SET_ELSEWHERE = {
    rm.RECTIFICATION: "recording a meeting (round meeting)",
    rm.ARCHIVED: "archiving the round (round archive)",
}


@dataclasses.dataclass(frozen=True)
class Transition:
    round: str
    prefecture: str
    before: str
    after: str
    at: dt.datetime


@dataclasses.dataclass(frozen=True)
class Meeting:
    """What recording a meeting did."""

    transitions: tuple[Transition, ...]
    deadline: Deadline | None
    notice_days: int | None

    @property
    def short_notice(self) -> bool:
        return self.notice_days is not None and self.notice_days < NOTICE_DAYS


class RoundStore:
    """Rounds on the database. Safe to share between threads."""

    def __init__(
        self,
        engine: sa.Engine,
        prefectures: PrefectureList,
        audit: AuditSink,
        *,
        on_create: Callable[[Round, dt.datetime], object] | None = None,
    ) -> None:
        self.engine = engine
        self.prefectures = prefectures
        self.audit = audit
        # Called with each new round (its key and re-keying: see
        # censusdrop.server.archive.keys).
        self.on_create = on_create

    # --- rounds

    def create(
        self,
        name: str,
        *,
        at: dt.datetime,
        prefectures: Sequence[str] = (),
        submission: Window | None = None,
        review: Window | None = None,
    ) -> Round:
        if not ROUND_NAME.match(name):
            raise RoundError(
                f"round name {name!r} must be 1-64 letters, digits, '.', '_' or '-'"
            )
        codes = [self.prefectures.find(key).code for key in prefectures] or [
            prefecture.code for prefecture in self.prefectures
        ]
        with self.engine.begin() as conn:
            if conn.execute(_by_name(name)).first() is not None:
                raise RoundError(f"round {name!r} already exists")
            round_id = conn.execute(
                rounds.insert()
                .values(name=name, created_at=at, **_window_values(submission, review))
                .returning(rounds.c.id)
            ).scalar_one()
            conn.execute(
                round_prefectures.insert(),
                [
                    {"round_id": round_id, "prefecture": code, "state_since": at}
                    | {"state": rm.NOT_SUBMITTED, "deadline_estimated": False}
                    for code in dict.fromkeys(codes)
                ],
            )
        created = self.get(name)
        if self.on_create is not None:
            self.on_create(created, at)
        return created

    def get(self, name: str) -> Round:
        for round_ in self.list():
            if round_.name == name:
                return round_
        raise RoundError(f"no round named {name!r}")

    def list(self) -> builtins.list[Round]:
        """Every round, oldest first."""
        with read_connection(self.engine) as conn:
            round_rows = conn.execute(rounds.select().order_by(rounds.c.id)).all()
            entry_rows = conn.execute(
                round_prefectures.select().order_by(round_prefectures.c.prefecture)
            ).all()
        entries: dict[int, builtins.list[Entry]] = {}
        for row in entry_rows:
            entries.setdefault(row.round_id, []).append(_entry(row))
        return [_round(row, entries.get(row.id, [])) for row in round_rows]

    def set_window(self, name: str, which: str, window: Window | None) -> Round:
        round_ = self.get(name)
        round_.window(which)  # checks the name of the window
        values: dict[str, dt.datetime | None]
        values = {f"{which}_start": None, f"{which}_end": None}
        if window is not None:
            values = {f"{which}_start": window.start, f"{which}_end": window.end}
        with self.engine.begin() as conn:
            conn.execute(rounds.update().where(rounds.c.id == round_.id).values(values))
        return self.get(name)

    def open_window(
        self, name: str, which: str, *, at: dt.datetime, until: dt.datetime | None
    ) -> Round:
        """Open a window now, until ``until`` or its planned end."""
        current = self.get(name).window(which)
        end = until or (current.end if current is not None else None)
        if end is None or end <= at:
            raise RoundError(f"the {which} window needs an end after now: give --until")
        return self.set_window(name, which, Window(at, end))

    def close_window(self, name: str, which: str, *, at: dt.datetime) -> Round:
        """End a window now (a window not yet begun ends before it starts)."""
        current = self.get(name).window(which)
        if current is None or current.has_ended(at):
            raise RoundError(f"the {which} window of {name} is not open")
        return self.set_window(name, which, Window(min(current.start, at), at))

    def find(self, prefecture: str, name: str | None = None) -> tuple[Round, Entry]:
        """The round a prefecture is in: the named one, or its only round
        that is not archived."""
        code = self.prefectures.find(prefecture).code
        if name is not None:
            round_ = self.get(name)
            entry = round_.entry(code)
            if entry is None:
                raise RoundError(f"{code} is not in round {name}")
            return round_, entry
        found = [
            (round_, entry)
            for round_ in self.list()
            if (entry := round_.entry(code)) is not None and entry.state != rm.ARCHIVED
        ]
        if len(found) != 1:
            where = "no round" if not found else "several rounds"
            raise RoundError(f"{code} is in {where} under way: give --round")
        return found[0]

    # --- prefecture states

    def advance(
        self,
        prefecture: str,
        state: str,
        *,
        at: dt.datetime,
        actor: str,
        reason: str,
        round_name: str | None = None,
    ) -> Transition:
        """Move a prefecture one allowed step (an administrator's decision)."""
        round_, entry = self.find(prefecture, round_name)
        if state in SET_ELSEWHERE:
            raise RoundError(f"{state} is set by {SET_ELSEWHERE[state]}, not by hand")
        return self._move(round_, entry, state, at, actor=actor, reason=reason)

    def record_meeting(
        self,
        prefecture: str,
        meeting_on: dt.date,
        *,
        at: dt.datetime,
        actor: str,
        notice_on: dt.date | None = None,
        passed: bool = False,
        round_name: str | None = None,
    ) -> Meeting:
        """A review meeting was held: open the rectification window until
        the end of the 3rd working day after it (or pass at the meeting)."""
        round_, entry = self.find(prefecture, round_name)
        if notice_on is not None and notice_on > meeting_on:
            raise RoundError("the notice date is after the meeting date")
        notice_days = None if notice_on is None else (meeting_on - notice_on).days
        details = {"meeting_on": meeting_on.isoformat(), "notice_days": notice_days}
        held = self._move(round_, entry, rm.MEETING_HELD, at, actor=actor, **details)
        entry = dataclasses.replace(entry, state=rm.MEETING_HELD)
        if passed:
            done = self._move(round_, entry, rm.PASSED, at, actor=actor, **details)
            self._set_meeting(round_, entry, meeting_on, notice_on, None)
            return Meeting((held, done), None, notice_days)
        deadline = rectification_deadline(meeting_on)
        self._set_meeting(round_, entry, meeting_on, notice_on, deadline)
        opened = self._move(
            round_,
            entry,
            rm.RECTIFICATION,
            at,
            actor=actor,
            until=deadline.at.isoformat(),
            estimated=deadline.estimated,
        )
        return Meeting((held, opened), deadline, notice_days)

    def mark_submitted(self, prefecture: str, *, at: dt.datetime) -> bool:
        """A submission arrived (from pre-review); False if not applicable."""
        return self._follow(prefecture, rm.SUBMITTED, at, actor="server")

    def mark_prereview(self, prefecture: str, passed: bool, *, at: dt.datetime) -> bool:
        """The validator's verdict on a submission; False if not applicable."""
        target = rm.PREREVIEWED if passed else rm.RETURNED
        return self._follow(prefecture, target, at, actor="validator")

    def archive(
        self, name: str, *, at: dt.datetime, actor: str, forced_reason: str | None
    ) -> builtins.list[Transition]:
        """Move every prefecture of the round to ``archived``. One not yet
        ``passed`` is refused, unless ``forced_reason`` says why (recorded
        with its transition)."""
        round_ = self.get(name)
        pending = [
            e.prefecture
            for e in round_.entries
            if e.state not in (rm.PASSED, rm.ARCHIVED)
        ]
        if pending and forced_reason is None:
            raise RoundError(
                f"not passed yet: {', '.join(pending)}; "
                "give --force with --reason to archive anyway"
            )
        moved = []
        for entry in round_.entries:
            if entry.state == rm.ARCHIVED:
                continue
            details: dict[str, object] = {}
            if entry.state != rm.PASSED:
                details = {"forced": True, "reason": forced_reason}
            moved.append(
                self._move(round_, entry, rm.ARCHIVED, at, actor=actor, **details)
            )
        return moved

    # --- reading

    def status(self, at: dt.datetime) -> builtins.list[RoundStatus]:
        """Every round with each prefecture's state and windows at ``at``."""
        names = {prefecture.code: prefecture.name for prefecture in self.prefectures}
        return [rm.round_status(round_, names, at) for round_ in self.list()]

    # --- helpers

    def _follow(
        self, prefecture: str, target: str, at: dt.datetime, actor: str
    ) -> bool:
        moved = False
        for round_ in self.list():
            entry = round_.entry(prefecture)
            if entry is not None and target in rm.TRANSITIONS[entry.state]:
                self._move(round_, entry, target, at, actor=actor)
                moved = True
        return moved

    def _move(
        self,
        round_: Round,
        entry: Entry,
        target: str,
        at: dt.datetime,
        *,
        actor: str,
        **details: object,
    ) -> Transition:
        if not details.get("forced"):
            rm.check_transition(entry.prefecture, entry.state, target)
        with self.engine.begin() as conn:
            changed = conn.execute(
                _entry_update(round_.id, entry.prefecture)
                .where(round_prefectures.c.state == entry.state)
                .values(state=target, state_since=at)
            ).rowcount
        if changed != 1:
            raise RoundError(
                f"{entry.prefecture} changed state meanwhile; look again and retry"
            )
        transition = Transition(round_.name, entry.prefecture, entry.state, target, at)
        self._audit(transition, actor, details)
        return transition

    def _set_meeting(
        self,
        round_: Round,
        entry: Entry,
        meeting_on: dt.date,
        notice_on: dt.date | None,
        deadline: Deadline | None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                _entry_update(round_.id, entry.prefecture).values(
                    meeting_on=meeting_on,
                    notice_on=notice_on,
                    rectify_until=None if deadline is None else deadline.at,
                    deadline_estimated=bool(deadline and deadline.estimated),
                )
            )

    def _audit(
        self, transition: Transition, actor: str, details: dict[str, object]
    ) -> None:
        self.audit.emit_durable(
            AuditEvent(
                action=events.ROUND_STATE,
                prefecture=transition.prefecture,
                details={
                    "round": transition.round,
                    "from": transition.before,
                    "to": transition.after,
                    "effective_at": transition.at.isoformat(),
                    "actor": actor,
                    **details,
                },
            )
        )


def _by_name(name: str) -> sa.Select[tuple[int]]:
    return sa.select(rounds.c.id).where(rounds.c.name == name)


def _entry_update(round_id: int, prefecture: str) -> sa.Update:
    return round_prefectures.update().where(
        round_prefectures.c.round_id == round_id,
        round_prefectures.c.prefecture == prefecture,
    )


def _window_values(
    submission: Window | None, review: Window | None
) -> dict[str, dt.datetime | None]:
    return {
        "submission_start": submission.start if submission else None,
        "submission_end": submission.end if submission else None,
        "review_start": review.start if review else None,
        "review_end": review.end if review else None,
    }


def _window(start: dt.datetime | None, end: dt.datetime | None) -> Window | None:
    return None if start is None or end is None else Window(start, end)


def _entry(row: sa.Row[tuple[object, ...]]) -> Entry:
    m = row._mapping
    return Entry(
        prefecture=m["prefecture"],
        state=m["state"],
        since=m["state_since"],
        meeting_on=m["meeting_on"],
        notice_on=m["notice_on"],
        rectify_until=m["rectify_until"],
        deadline_estimated=m["deadline_estimated"],
    )


def _round(row: sa.Row[tuple[object, ...]], entries: builtins.list[Entry]) -> Round:
    m = row._mapping
    return Round(
        id=m["id"],
        name=m["name"],
        created_at=m["created_at"],
        submission=_window(m["submission_start"], m["submission_end"]),
        review=_window(m["review_start"], m["review_end"]),
        entries=tuple(entries),
    )
