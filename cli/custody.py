"""The end of a review for reviewers: their access and what they received.

``censusdrop account revoke | reinstate`` stop and restore a reviewer's
access. A revocation is stored in the database: a running server ends the
reviewer's sessions (aborting a download in flight) at its next access
check, within seconds, and refuses new logins; only ``reinstate`` lifts it.
(Registered under the ``account`` group by ``censusdrop.cli.main``.)

``censusdrop custody`` keeps the ledger: every download by a reviewer is an
item until the reviewer's return or deletion is confirmed with a signed
statement (``confirm``). ``outstanding`` is meant for cron and monitoring:
it exits 1 while anyone owes anything.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from pathlib import Path
from typing import Any

import click

from censusdrop.cli.accounts import pass_app
from censusdrop.cli.accounts import record
from censusdrop.cli.context import AppContext
from censusdrop.cli.context import now
from censusdrop.cli.context import operator
from censusdrop.cli.context import print_json
from censusdrop.cli.context import print_table
from censusdrop.cli.round_output import as_json_time
from censusdrop.cli.round_output import shown
from censusdrop.cli.rounds import admin
from censusdrop.cli.rounds import to_instant
from censusdrop.server.custody import Confirmation
from censusdrop.server.custody import Debt
from censusdrop.server.custody import Item

OUTSTANDING_EXIT = 1


@click.command("revoke")
@click.argument("reviewer")
@click.option("--reason", required=True, help="Why (recorded in the audit log).")
@pass_app
def revoke(app: AppContext, reviewer: str, reason: str) -> None:
    """Stop a reviewer's access at once, until reinstated.

    \b
    Example:
      censusdrop account revoke expert01 --reason '验收结束，收回访问权限'
    """
    with admin(app) as services:
        done = services.revocations.revoke(
            reviewer, at=now(), operator=operator(), reason=reason
        )
        record(services, "account.revoke", reviewer, reason=reason)
    click.echo(
        f"{reviewer}: access revoked at {shown(done.revoked_at)} (Asia/Shanghai);"
        " a running server ends their sessions within seconds"
    )


@click.command("reinstate")
@click.argument("reviewer")
@click.option("--reason", required=True, help="Why (recorded in the audit log).")
@pass_app
def reinstate(app: AppContext, reviewer: str, reason: str) -> None:
    """Lift a revocation (review windows still apply).

    \b
    Example:
      censusdrop account reinstate expert01 --reason '误操作，恢复访问'
    """
    with admin(app) as services:
        lifted = services.revocations.reinstate(reviewer)
        record(
            services,
            "account.reinstate",
            reviewer,
            reason=reason,
            revoked_at=lifted.revoked_at.isoformat(),
        )
    click.echo(f"{reviewer}: reinstated (was revoked {shown(lifted.revoked_at)})")


@click.group("custody")
def custody_group() -> None:
    """Custody of downloaded material: confirmations, what is owed."""


@custody_group.command("confirm")
@click.argument("reviewer")
@click.option(
    "--evidence",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The reviewer's signed return-or-deletion statement.",
)
@pass_app
def confirm(app: AppContext, reviewer: str, evidence: Path) -> None:
    """Store a reviewer's signed statement and close their open items.

    \b
    Example:
      censusdrop custody confirm expert01 --evidence 退还删除承诺书-expert01.pdf
    """
    try:
        data = evidence.read_bytes()
    except OSError as exc:
        raise click.ClickException(f"{evidence}: cannot read: {exc.strerror}") from exc
    with admin(app) as services:
        services.accounts.require(reviewer)
        done = services.custody.confirm(
            reviewer, data, evidence.name, at=now(), operator=operator()
        )
        record(
            services,
            "custody.confirm",
            reviewer,
            confirmation=done.id,
            items=done.items,
            evidence_name=done.evidence_name,
            evidence_path=f"_custody/{done.evidence_path}",
            evidence_version=done.evidence_version,
            evidence_sha256=done.evidence_sha256,
        )
    click.echo(
        f"{reviewer}: {done.items} item(s) closed; statement stored as "
        f"_custody/{done.evidence_path} (SHA-256 {done.evidence_sha256})"
    )


@custody_group.command("outstanding")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--at",
    "at",
    metavar="WHEN",
    callback=to_instant,
    help="Judge as of this time (China time).",
)
@pass_app
def outstanding(app: AppContext, as_json: bool, at: dt.datetime | None) -> None:
    """List reviewers who still owe a return or deletion confirmation.

    An item is owed once the reviewer's access to it has ended (the end of
    its review window, or a revocation). Exits 1 while anything is owed.

    \b
    Example:
      censusdrop custody outstanding || mail -s 'custody overdue' office@example
    """
    with admin(app) as services:
        debts = services.custody.outstanding(at or now())
    if as_json:
        print_json([_debt_json(debt) for debt in debts])
    elif not debts:
        click.echo("nothing outstanding")
    else:
        print_table(
            "Outstanding custody (times in Asia/Shanghai)",
            ["reviewer", "items", "bytes", "prefectures", "owed since", "days"],
            [
                (
                    debt.reviewer,
                    len(debt.items),
                    debt.bytes,
                    " ".join(sorted({item.prefecture for item in debt.items})),
                    shown(debt.due_since),
                    debt.days,
                )
                for debt in debts
            ],
        )
    if debts:
        raise SystemExit(OUTSTANDING_EXIT)


@custody_group.command("report")
@click.option("--reviewer", help="Only this reviewer.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def report(app: AppContext, reviewer: str | None, as_json: bool) -> None:
    """The whole ledger per reviewer: items and confirmations.

    \b
    Example:
      censusdrop custody report --reviewer expert01 --json
    """
    with admin(app) as services:
        items = services.custody.items(reviewer)
        confirmations = services.custody.confirmations(reviewer)
    ledger = _by_reviewer(items, confirmations)
    if as_json:
        print_json(
            {
                name: {
                    "items": [_item_json(item) for item in entry[0]],
                    "confirmations": [_confirmation_json(c) for c in entry[1]],
                }
                for name, entry in ledger.items()
            }
        )
        return
    if not ledger:
        click.echo("the ledger is empty")
    for name, (reviewer_items, reviewer_confirmations) in ledger.items():
        _print_reviewer(name, reviewer_items, reviewer_confirmations)


def _print_reviewer(
    name: str, items: list[Item], confirmations: list[Confirmation]
) -> None:
    open_items = sum(item.confirmation is None for item in items)
    print_table(
        f"{name}: {len(items)} item(s), {open_items} open (times in Asia/Shanghai)",
        ["id", "prefecture", "path", "sha256", "bytes", "downloaded", "status"],
        [
            (
                item.id,
                item.prefecture,
                item.path,
                (item.sha256 or "")[:12],
                item.bytes if item.complete else f"{item.bytes} (partial)",
                shown(item.downloaded_at),
                "open" if item.confirmation is None else f"closed #{item.confirmation}",
            )
            for item in items
        ],
    )
    for c in confirmations:
        click.echo(
            f"  confirmation #{c.id} {shown(c.confirmed_at)} by {c.operator}: "
            f"{c.items} item(s), _custody/{c.evidence_path} "
            f"SHA-256 {c.evidence_sha256}"
        )


def _by_reviewer(
    items: list[Item], confirmations: list[Confirmation]
) -> dict[str, tuple[list[Item], list[Confirmation]]]:
    ledger: dict[str, tuple[list[Item], list[Confirmation]]] = defaultdict(
        lambda: ([], [])
    )
    for item in items:
        ledger[item.reviewer][0].append(item)
    for confirmation in confirmations:
        ledger[confirmation.reviewer][1].append(confirmation)
    return dict(sorted(ledger.items()))


def _item_json(item: Item) -> dict[str, Any]:
    data = dataclasses.asdict(item)
    data["downloaded_at"] = as_json_time(item.downloaded_at)
    return data


def _confirmation_json(confirmation: Confirmation) -> dict[str, Any]:
    data = dataclasses.asdict(confirmation)
    data["confirmed_at"] = as_json_time(confirmation.confirmed_at)
    data["evidence_path"] = f"_custody/{confirmation.evidence_path}"
    return data


def _debt_json(debt: Debt) -> dict[str, Any]:
    return {
        "reviewer": debt.reviewer,
        "items": [_item_json(item) for item in debt.items],
        "bytes": debt.bytes,
        "owed_since": as_json_time(debt.due_since),
        "days": debt.days,
    }
