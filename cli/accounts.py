"""``censusdrop account``: prefecture and reviewer accounts, assignments."""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

import click

from censusdrop.audit import events
from censusdrop.audit.events import AuditEvent
from censusdrop.cli.context import AppContext
from censusdrop.cli.context import now
from censusdrop.cli.context import operator
from censusdrop.cli.context import print_json
from censusdrop.cli.context import print_table
from censusdrop.config.prefectures import PrefectureError
from censusdrop.config.settings import Settings
from censusdrop.server.accounts import Account
from censusdrop.server.accounts import AccountError
from censusdrop.server.app import StartupError
from censusdrop.server.app import master_key_from_env
from censusdrop.server.app import open_services
from censusdrop.server.keykeeper import KeyKeeper
from censusdrop.server.passwords import PasswordError
from censusdrop.server.passwords import generate_password
from censusdrop.server.privileges import PrivilegeError
from censusdrop.server.privileges import RunAs
from censusdrop.server.privileges import drop_privileges
from censusdrop.server.privileges import run_as_of
from censusdrop.server.privileges import share_round_keys
from censusdrop.server.services import Services

pass_app = click.make_pass_decorator(AppContext)


class AdminSession:
    """Services for one administrative command, with its audit trail.

    With ``server.user`` set, the command must be started as root: it
    opens the keyring and the audit signing key as root, then becomes that
    user exactly as the server does, so that what it writes into the data
    root and the database is the run user's. A root child (``KeyKeeper``)
    makes and destroys round keys for it. ``keep_root`` is for the few
    commands that rewrite root's own files (``keys rotate``).
    """

    def __init__(self, app: AppContext, *, keep_root: bool = False) -> None:
        settings = app.settings
        run_as = _run_as(settings)
        self._keeper: KeyKeeper | None = None
        try:
            if run_as is not None:
                share_round_keys(settings, run_as)
            if run_as is not None and not keep_root:
                self._keeper = KeyKeeper.start(
                    settings.path(settings.storage.keys_dir), master_key_from_env()
                )
            self.services: Services = open_services(
                settings, with_tls=False, check_database=self._keeper is None
            )
        except (StartupError, PrivilegeError, OSError) as exc:
            self._end_keeper()
            raise click.ClickException(str(exc)) from exc
        if run_as is not None and self._keeper is not None:
            try:
                drop_privileges(self.services, run_as, self._keeper)
            except PrivilegeError as exc:
                self.__exit__(None, None, None)
                raise click.ClickException(str(exc)) from exc

    def __enter__(self) -> Services:
        return self.services

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        self.services.audit.close()  # type: ignore[attr-defined]
        self.services.engine.dispose()
        self._end_keeper()
        if isinstance(error, AccountError | PrefectureError | PasswordError):
            raise click.ClickException(str(error)) from error

    def _end_keeper(self) -> None:
        if self._keeper is not None:
            self._keeper.close()
            self._keeper = None


def _run_as(settings: Settings) -> RunAs | None:
    """The configured run user; one clear line when this process is
    neither root nor able to work without root."""
    try:
        run_as = run_as_of(settings)
    except PrivilegeError as exc:
        raise click.ClickException(str(exc)) from exc
    if run_as is not None and os.geteuid() != 0:
        raise click.ClickException(
            f"server.user is {run_as.user}: run censusdrop commands as root;"
            f" they read the keys as root, then work as {run_as.user}"
        )
    return run_as


def record(services: Services, act: str, target: str, **details: Any) -> None:
    """Durably record an administrative act before reporting success."""
    services.audit.emit_durable(
        AuditEvent(
            action=events.ADMIN,
            account=target,
            details={"act": act, "operator": operator(), **details},
        )
    )


def read_password(from_stdin: bool, generate: bool) -> tuple[str, bool]:
    """The new password and whether it was generated (and must be shown)."""
    if generate:
        return generate_password(), True
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise click.ClickException("no password on standard input")
        return line, False
    value = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    return str(value), False


def password_options(function: Any) -> Any:
    function = click.option(
        "--generate", is_flag=True, help="Generate a password and print it once."
    )(function)
    return click.option(
        "--password-stdin", is_flag=True, help="Read the password from stdin."
    )(function)


@click.group("account")
def account_group() -> None:
    """Manage prefecture and reviewer accounts."""


@account_group.command("add")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(["prefecture", "reviewer", "admin", "auditor"]),
    required=True,
)
@click.option("--prefecture", help="Code or name, for --role prefecture.")
@click.option("--allow", default="", help="Allowed networks, CIDR, comma-separated.")
@password_options
@pass_app
def add(
    app: AppContext,
    name: str,
    role: str,
    prefecture: str | None,
    allow: str,
    password_stdin: bool,
    generate: bool,
) -> None:
    """Create an account.

    \b
    Example:
      censusdrop account add wuhan --role prefecture --prefecture 武汉市 --generate
      censusdrop account add expert01 --role reviewer
    """
    password, show = read_password(password_stdin, generate)
    with AdminSession(app) as services:
        account = services.accounts.create(
            name, role, password, at=now(), prefecture=prefecture, networks=allow
        )
        record(services, "account.add", name, role=role, prefecture=account.prefecture)
    click.echo(f"created {role} account {name}")
    if show:
        click.echo(f"password: {password}")


@account_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def list_accounts(app: AppContext, as_json: bool) -> None:
    """List every account.

    \b
    Example:
      censusdrop account list --json
    """
    with AdminSession(app) as services:
        accounts = services.accounts.list()
        names = {p.code: p.name for p in services.prefectures}
    at = now()
    if as_json:
        print_json([_as_dict(account) for account in accounts])
        return
    print_table(
        "Accounts",
        ["name", "role", "prefecture", "assigned", "state"],
        [
            (
                a.name,
                a.role,
                names.get(a.prefecture or "", ""),
                " ".join(names.get(code, code) for code in a.assigned),
                _state(a, at),
            )
            for a in accounts
        ],
    )


@account_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def show(app: AppContext, name: str, as_json: bool) -> None:
    """Show one account.

    \b
    Example:
      censusdrop account show wuhan
    """
    with AdminSession(app) as services:
        account = services.accounts.require(name)
    if as_json:
        print_json(_as_dict(account))
        return
    for key, value in _as_dict(account).items():
        click.echo(f"{key:>17}: {value}")


@account_group.command("passwd")
@click.argument("name")
@password_options
@pass_app
def passwd(app: AppContext, name: str, password_stdin: bool, generate: bool) -> None:
    """Set a new password.

    \b
    Example:
      echo 'a-long-new-secret' | censusdrop account passwd wuhan --password-stdin
    """
    password, show_it = read_password(password_stdin, generate)
    with AdminSession(app) as services:
        services.accounts.set_password(name, password, at=now())
        record(services, "account.passwd", name)
    click.echo(f"password of {name} changed")
    if show_it:
        click.echo(f"password: {password}")


def _set_state(app: AppContext, name: str, act: str) -> None:
    with AdminSession(app) as services:
        store = services.accounts
        if act == "unlock":
            store.unlock(name)
        else:
            store.set_disabled(name, act == "disable")
        record(services, f"account.{act}", name)
    click.echo(f"{name}: {act} done")


@account_group.command("disable")
@click.argument("name")
@pass_app
def disable(app: AppContext, name: str) -> None:
    """Refuse every login of an account.

    \b
    Example:
      censusdrop account disable wuhan
    """
    _set_state(app, name, "disable")


@account_group.command("enable")
@click.argument("name")
@pass_app
def enable(app: AppContext, name: str) -> None:
    """Allow logins of a disabled account again.

    \b
    Example:
      censusdrop account enable wuhan
    """
    _set_state(app, name, "enable")


@account_group.command("unlock")
@click.argument("name")
@pass_app
def unlock(app: AppContext, name: str) -> None:
    """Clear a lockout after repeated failed logins.

    \b
    Example:
      censusdrop account unlock wuhan
    """
    _set_state(app, name, "unlock")


@account_group.command("assign")
@click.argument("reviewer")
@click.argument("prefecture")
@pass_app
def assign(app: AppContext, reviewer: str, prefecture: str) -> None:
    """Let a reviewer read a prefecture's area.

    \b
    Example:
      censusdrop account assign expert01 恩施州
    """
    with AdminSession(app) as services:
        code = services.accounts.assign(reviewer, prefecture, at=now())
        record(services, "account.assign", reviewer, prefecture=code)
    click.echo(f"{reviewer} assigned to {code}")


@account_group.command("unassign")
@click.argument("reviewer")
@click.argument("prefecture")
@pass_app
def unassign(app: AppContext, reviewer: str, prefecture: str) -> None:
    """Withdraw a reviewer's access to a prefecture.

    \b
    Example:
      censusdrop account unassign expert01 422800
    """
    with AdminSession(app) as services:
        code = services.accounts.unassign(reviewer, prefecture)
        record(services, "account.unassign", reviewer, prefecture=code)
    click.echo(f"{reviewer} no longer assigned to {code}")


def _state(account: Account, at: Any) -> str:
    if account.disabled:
        return "disabled"
    if account.is_locked(at):
        return f"locked until {account.locked_until:%Y-%m-%d %H:%M} UTC"
    return "active"


def _as_dict(account: Account) -> dict[str, Any]:
    data = dataclasses.asdict(account)
    data.pop("id")
    data["allowed_networks"] = [str(net) for net in account.allowed_networks]
    data["assigned"] = list(account.assigned)
    return data
