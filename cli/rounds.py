"""``censusdrop round``: acceptance rounds, their windows and states.

Times are entered and shown in China time (Asia/Shanghai). Every change is
recorded in the audit log with the operator who made it; each state change
of a prefecture is an audit event of its own as well.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator

import click

from censusdrop.cli.accounts import AdminSession
from censusdrop.cli.accounts import pass_app
from censusdrop.cli.accounts import record
from censusdrop.cli.context import AppContext
from censusdrop.cli.context import now
from censusdrop.cli.context import operator
from censusdrop.cli.context import print_json
from censusdrop.cli.context import print_table
from censusdrop.cli.round_archive import COMMANDS as END_OF_ROUND_COMMANDS
from censusdrop.cli.round_output import as_json_time
from censusdrop.cli.round_output import print_status
from censusdrop.cli.round_output import report_meeting
from censusdrop.cli.round_output import round_json
from censusdrop.cli.round_output import shown
from censusdrop.cli.round_output import state_counts
from censusdrop.cli.round_output import status_json
from censusdrop.cli.round_output import window_json
from censusdrop.cli.round_output import window_text
from censusdrop.server.custody import CustodyError
from censusdrop.server.roundmodel import STATES
from censusdrop.server.roundmodel import WINDOWS
from censusdrop.server.roundmodel import RoundError
from censusdrop.server.roundmodel import Window
from censusdrop.server.services import Services
from censusdrop.server.workdays import local_date
from censusdrop.server.workdays import parse_local


def to_window(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> Window | None:
    """Option callback: ``START..END`` in China time; a bare date as the
    end means the end of that day."""
    if value is None:
        return None
    start, sep, end = value.partition("..")
    if not sep:
        raise click.BadParameter("give START..END, e.g. 2020-04-23..2020-05-10")
    try:
        return Window(parse_local(start), parse_local(end, end=True))
    except (ValueError, RoundError) as exc:
        raise click.BadParameter(str(exc)) from None


def to_instant(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> dt.datetime | None:
    """Option callback: a date or date and time in China time; a bare date
    means the end of that day."""
    if value is None:
        return None
    try:
        return parse_local(value, end=True)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@contextlib.contextmanager
def admin(app: AppContext) -> Iterator[Services]:
    """An ``AdminSession`` whose round and custody errors end the command
    with one clear line."""
    with AdminSession(app) as services:
        try:
            yield services
        except (RoundError, CustodyError) as exc:
            raise click.ClickException(str(exc)) from exc


@click.group("round")
def round_group() -> None:
    """Acceptance rounds: prefectures, windows, states (China time)."""


@round_group.command("create")
@click.argument("name")
@click.option(
    "-p",
    "--prefecture",
    "prefectures",
    multiple=True,
    help="Code or name; repeat or separate with commas (default: all).",
)
@click.option(
    "--submission", metavar="START..END", callback=to_window, help="Submission window."
)
@click.option(
    "--review", metavar="START..END", callback=to_window, help="Review window."
)
@pass_app
def create(
    app: AppContext,
    name: str,
    prefectures: tuple[str, ...],
    submission: Window | None,
    review: Window | None,
) -> None:
    """Create a round; every prefecture starts as not_submitted.

    \b
    Example:
      censusdrop round create 2020-hubei \\
        --submission 2020-04-23..2020-05-10 \\
        --review '2020-05-11 09:00..2020-06-30'
    """
    keys = [key for item in prefectures for key in item.split(",") if key.strip()]
    with admin(app) as services:
        created = services.rounds.create(
            name, at=now(), prefectures=keys, submission=submission, review=review
        )
        record(
            services,
            "round.create",
            name,
            prefectures=[entry.prefecture for entry in created.entries],
            submission=window_json(created.submission),
            review=window_json(created.review),
        )
    click.echo(f"created round {name} with {len(created.entries)} prefectures")


@round_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def list_rounds(app: AppContext, as_json: bool) -> None:
    """List every round with its windows and how many are in each state.

    \b
    Example:
      censusdrop round list --json
    """
    with admin(app) as services:
        found = services.rounds.list()
    if as_json:
        print_json([round_json(round_) for round_ in found])
        return
    print_table(
        "Rounds (times in Asia/Shanghai)",
        ["round", "prefectures", "submission", "review", "states"],
        [
            (
                r.name,
                len(r.entries),
                window_text(r.submission),
                window_text(r.review),
                state_counts(r),
            )
            for r in found
        ],
    )


@round_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def show(app: AppContext, name: str, as_json: bool) -> None:
    """Show a round: its windows and each prefecture's state now.

    \b
    Example:
      censusdrop round show 2020-hubei
    """
    at = now()
    with admin(app) as services:
        services.rounds.get(name)
        status = next(s for s in services.rounds.status(at) if s.round.name == name)
    if as_json:
        print_json(status_json(status))
        return
    print_status(status)


@round_group.command("open")
@click.argument("name")
@click.argument("window", type=click.Choice(WINDOWS))
@click.option(
    "--until", metavar="WHEN", callback=to_instant, help="New end (China time)."
)
@pass_app
def open_window(
    app: AppContext, name: str, window: str, until: dt.datetime | None
) -> None:
    """Open a window now, until --until or its planned end.

    \b
    Example:
      censusdrop round open 2020-hubei submission --until '2020-05-12 18:00'
    """
    with admin(app) as services:
        changed = services.rounds.open_window(name, window, at=now(), until=until)
        opened = changed.window(window)
        record(services, f"round.open.{window}", name, window=window_json(opened))
    click.echo(f"{name}: {window} window open {window_text(opened)}")


@round_group.command("close")
@click.argument("name")
@click.argument("window", type=click.Choice(WINDOWS))
@pass_app
def close_window(app: AppContext, name: str, window: str) -> None:
    """Close a window now. Closing the review window ends every reviewer
    session of the round within seconds on a running server.

    \b
    Example:
      censusdrop round close 2020-hubei review
    """
    with admin(app) as services:
        changed = services.rounds.close_window(name, window, at=now())
        closed = changed.window(window)
        record(services, f"round.close.{window}", name, window=window_json(closed))
    click.echo(
        f"{name}: {window} window closed at {shown(closed.end if closed else None)}"
    )


@round_group.command("meeting")
@click.argument("prefecture")
@click.argument("date", type=click.DateTime(["%Y-%m-%d"]))
@click.option(
    "--notice-date",
    type=click.DateTime(["%Y-%m-%d"]),
    help="When the meeting was announced (checked: at least 3 days ahead).",
)
@click.option("--passed", is_flag=True, help="Passed at the meeting: no rectification.")
@click.option(
    "--round", "round_name", help="The round, if the prefecture is in several."
)
@pass_app
def meeting(
    app: AppContext,
    prefecture: str,
    date: dt.datetime,
    notice_date: dt.datetime | None,
    passed: bool,
    round_name: str | None,
) -> None:
    """Record a review meeting; open the rectification window until the end
    of the 3rd working day after it (official Chinese calendar).

    \b
    Example:
      censusdrop round meeting 武汉市 2020-04-30 --notice-date 2020-04-26
    """
    at = now()
    if date.date() > local_date(at):
        raise click.ClickException(
            "the meeting date is in the future: record it once held"
        )
    notice = notice_date.date() if notice_date else None
    with admin(app) as services:
        held = services.rounds.record_meeting(
            prefecture,
            date.date(),
            at=at,
            actor=operator(),
            notice_on=notice,
            passed=passed,
            round_name=round_name,
        )
        code = held.transitions[0].prefecture
        record(
            services,
            "round.meeting",
            held.transitions[0].round,
            prefecture=code,
            meeting_on=date.date().isoformat(),
            notice_days=held.notice_days,
            rectify_until=as_json_time(held.deadline.at if held.deadline else None),
        )
        label = f"{services.prefectures.by_code(code).name} ({code})"
    report_meeting(label, held, at)


@round_group.command("advance")
@click.argument("prefecture")
@click.argument("state", type=click.Choice(STATES))
@click.option("--reason", required=True, help="Why (recorded in the audit log).")
@click.option(
    "--round", "round_name", help="The round, if the prefecture is in several."
)
@pass_app
def advance(
    app: AppContext, prefecture: str, state: str, reason: str, round_name: str | None
) -> None:
    """Move a prefecture to its next state by an administrator's decision
    (also overrides the validator's pre-review verdict).

    \b
    Example:
      censusdrop round advance 武汉市 distributed --reason '初审合格，已分发'
    """
    with admin(app) as services:
        moved = services.rounds.advance(
            prefecture,
            state,
            at=now(),
            actor=operator(),
            reason=reason,
            round_name=round_name,
        )
        record(
            services,
            "round.advance",
            moved.round,
            prefecture=moved.prefecture,
            before=moved.before,
            after=moved.after,
            reason=reason,
        )
    click.echo(f"{moved.round}: {moved.prefecture} {moved.before} -> {moved.after}")


for _command in END_OF_ROUND_COMMANDS:
    round_group.add_command(_command)
