"""The ``censusdrop`` command: a thin layer over the other packages."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

import click

from censusdrop.cli.accounts import AdminSession
from censusdrop.cli.accounts import account_group
from censusdrop.cli.accounts import record
from censusdrop.cli.context import AppContext
from censusdrop.cli.context import now
from censusdrop.cli.custody import custody_group
from censusdrop.cli.custody import reinstate
from censusdrop.cli.custody import revoke
from censusdrop.cli.files import files_group
from censusdrop.cli.files import import_command
from censusdrop.cli.keys import keys_group
from censusdrop.cli.rounds import round_group
from censusdrop.cli.validate import status_command
from censusdrop.cli.validate import validate_command
from censusdrop.config.prefectures import PrefectureError
from censusdrop.config.settings import CONFIG_NAME
from censusdrop.config.settings import ConfigError
from censusdrop.config.settings import Settings
from censusdrop.config.settings import check_workers
from censusdrop.server.accounts import AccountError
from censusdrop.server.app import CensusServer
from censusdrop.server.app import StartupError
from censusdrop.server.app import open_services
from censusdrop.server.bootstrap import InitError
from censusdrop.server.bootstrap import deployment_config
from censusdrop.server.bootstrap import init_instance
from censusdrop.server.db import DatabaseError
from censusdrop.server.db import make_engine
from censusdrop.server.db import migrate
from censusdrop.server.passwords import generate_password
from censusdrop.server.privileges import PrivilegeError
from censusdrop.server.privileges import RunAs
from censusdrop.server.privileges import hand_over_state
from censusdrop.server.privileges import look_up
from censusdrop.server.privileges import share_round_keys
from censusdrop.server.tls import TLSConfigError
from censusdrop.server.tls import fingerprint
from censusdrop.server.workers import Supervisor

DEMO_ACCOUNT = "demo-wuhan"
DEMO_PREFECTURE = "420100"


@click.group()
@click.option(
    "--config",
    "config",
    metavar="FILE",
    help=f"Configuration file (default: $CENSUSDROP_CONFIG or ./{CONFIG_NAME}).",
)
@click.version_option(package_name="censusdrop")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """censusdrop: secure FTPS exchange for census acceptance reviews."""
    ctx.obj = AppContext(config)


@cli.command()
@click.argument("folder", type=click.Path(path_type=Path), default=".")
@click.option(
    "--user",
    help="Set up for serving as this system user (server.user); needs --state.",
)
@click.option(
    "--state",
    type=click.Path(path_type=Path),
    help="Absolute folder for the user's database and data root.",
)
def init(folder: Path, user: str | None, state: Path | None) -> None:
    """Create a working instance: config, keys, certificate, database.

    With --user (as root), FOLDER keeps the configuration and keys for root
    alone, and the SQLite database and data root go in --state, owned by
    that user, which the server becomes after binding its ports.

    \b
    Example:
      censusdrop init /srv/censusdrop
      censusdrop --config /srv/censusdrop/censusdrop.toml serve
      censusdrop init /etc/censusdrop --user censusdrop --state /var/lib/censusdrop
    """
    run_as = _init_run_as(user, state)
    try:
        text = None if state is None else deployment_config(user or "", state)
        settings = init_instance(folder, at=now(), config_text=text)
        if run_as is not None:
            hand_over_state(settings, run_as)
            share_round_keys(settings, run_as)
    except (InitError, ConfigError, DatabaseError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    cert = settings.path(settings.tls.certificate)
    if run_as is not None:
        click.echo(f"database and data root in {state}, owned by {run_as.user}")
    click.echo(f"created {folder / CONFIG_NAME}")
    click.echo(f"certificate SHA-256 fingerprint: {fingerprint(cert)}")
    click.echo(
        f"keep {settings.path(settings.storage.keys_dir)} backed up apart from the data"
    )


@cli.command()
@click.option("--host", help="Listen address for this run (overrides server.host).")
@click.option(
    "--port", type=int, help="Listen port for this run (overrides server.port)."
)
@click.option("-v", "--verbose", is_flag=True, help="Log every FTP command (DEBUG).")
@click.option(
    "--user",
    help="Started as root: become this user after binding (overrides server.user).",
)
@click.option("--group", help="Its group (overrides server.group).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Server processes for this run (overrides server.workers).",
)
@click.pass_obj
def serve(
    app: AppContext,
    host: str | None,
    port: int | None,
    verbose: bool,
    user: str | None,
    group: str | None,
    workers: int | None,
) -> None:
    """Run the FTPS server until SIGINT or SIGTERM.

    \b
    Example:
      censusdrop --config /srv/censusdrop/censusdrop.toml serve --port 2121
      censusdrop --config /etc/censusdrop/censusdrop.toml serve --user censusdrop
      censusdrop --config /srv/censusdrop/censusdrop.toml serve --workers 2
    """
    run_server(app, host, port, verbose, user=user, group=group, workers=workers)


def run_server(
    app: AppContext,
    host: str | None,
    port: int | None,
    verbose: bool,
    *,
    user: str | None = None,
    group: str | None = None,
    workers: int | None = None,
) -> None:
    settings = _run_as_settings(app.settings, user, group)
    settings = _workers_settings(settings, workers)
    configure_logging(verbose, with_pid=settings.server.workers > 1)
    # Read now: a server that drops privileges may not read it later.
    print_fp = _fingerprint(settings)
    if settings.server.workers > 1:
        run_supervisor(settings, app, host, port, print_fp)
        return
    try:
        # A server that drops privileges checks the database as its user.
        services = open_services(settings, check_database=not settings.server.user)
        server = CensusServer(services, host=host, port=port)
    except StartupError as exc:
        raise click.ClickException(str(exc)) from exc
    # Handlers first: whoever reads the announcement may signal at once.
    install_signal_handlers(server)
    announce(server, app, print_fp)
    server.serve()


def run_supervisor(
    settings: Settings,
    app: AppContext,
    host: str | None,
    port: int | None,
    print_fp: str,
) -> None:
    """Bind, drop privileges, then fork ``server.workers`` processes."""
    try:
        services = open_services(
            settings, check_database=not settings.server.user, start_audit=False
        )
        supervisor = Supervisor(services, settings.server.workers, host, port)
    except StartupError as exc:
        raise click.ClickException(str(exc)) from exc
    supervisor.start()  # catches signals before the workers exist
    announce(supervisor, app, print_fp)
    supervisor.run()


def _workers_settings(settings: Settings, workers: int | None) -> Settings:
    if workers is None:
        return settings
    server = dataclasses.replace(settings.server, workers=workers)
    try:
        check_workers(server)
    except ConfigError as exc:
        raise click.ClickException(f"--workers: {exc}") from exc
    return dataclasses.replace(settings, server=server)


def _init_run_as(user: str | None, state: Path | None) -> RunAs | None:
    if user is None and state is None:
        return None
    if user is None or state is None or not state.is_absolute():
        raise click.ClickException("--user and --state (an absolute path) go together")
    if os.geteuid() != 0:
        raise click.ClickException("--user: run init as root to set up ownership")
    try:
        run_as = look_up(user)
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
    except (PrivilegeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    return run_as


def _run_as_settings(
    settings: Settings, user: str | None, group: str | None
) -> Settings:
    if user is None and group is None:
        return settings
    server = dataclasses.replace(
        settings.server,
        user=settings.server.user if user is None else user,
        group=settings.server.group if group is None else group,
    )
    if server.group and not server.user:
        raise click.ClickException("--group: only used with --user or server.user")
    return dataclasses.replace(settings, server=server)


@cli.command()
@click.argument("folder", type=click.Path(path_type=Path), default="censusdrop-demo")
@click.option("--port", type=int, default=2121, show_default=True)
@click.pass_obj
def demo(app: AppContext, folder: Path, port: int) -> None:
    """Create (once) a demo instance with a prefecture account, then serve it.

    \b
    Example:
      censusdrop demo
    """
    config = folder / CONFIG_NAME
    if not config.exists():
        try:
            init_instance(folder, at=now())
        except (InitError, ConfigError, DatabaseError, OSError) as exc:
            raise click.ClickException(str(exc)) from exc
    app = AppContext(str(config))
    password = generate_password()
    with AdminSession(app) as services:
        if services.accounts.get(DEMO_ACCOUNT) is None:
            services.accounts.create(
                DEMO_ACCOUNT,
                "prefecture",
                password,
                at=now(),
                prefecture=DEMO_PREFECTURE,
            )
        else:
            services.accounts.set_password(DEMO_ACCOUNT, password, at=now())
        services.accounts.unlock(DEMO_ACCOUNT)
        record(services, "account.demo", DEMO_ACCOUNT)
    click.echo(f"demo account: {DEMO_ACCOUNT}  password: {password}  (武汉市)")
    run_server(app, None, port, verbose=False)


@cli.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@click.pass_obj
def db_upgrade(app: AppContext) -> None:
    """Bring the database schema to this version's revision.

    \b
    Example:
      export CENSUSDROP_DATABASE_URL=postgresql://censusdrop@db/censusdrop
      censusdrop db upgrade
    """
    try:
        engine = make_engine(app.settings.database_url)
        migrate(engine)
    except DatabaseError as exc:
        raise click.ClickException(str(exc)) from exc
    engine.dispose()
    click.echo("database schema is up to date")


def announce(server: CensusServer | Supervisor, app: AppContext, print_fp: str) -> None:
    host, port = server.address
    settings = app.settings
    click.echo(f"censusdrop listening on {host}:{port} (explicit FTPS, AUTH TLS)")
    implicit = server.implicit_address
    if implicit:
        click.echo(f"implicit FTPS on {implicit[0]}:{implicit[1]}")
    if server.run_as is not None:
        click.echo(f"running as {server.run_as}")
    click.echo(f"certificate SHA-256 fingerprint: {print_fp}")
    if isinstance(server, Supervisor):
        pids = " ".join(str(pid) for pid in server.pids)
        click.echo(f"worker processes {pids} (parent {os.getpid()})")
    click.echo(f"passive ports {settings.server.passive_ports}; stop with Ctrl-C")
    sys.stdout.flush()


def _fingerprint(settings: Settings) -> str:
    try:
        return fingerprint(settings.path(settings.tls.certificate))
    except TLSConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def install_signal_handlers(server: CensusServer) -> None:
    def stop(signum: int, frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal=%d stopping", signum)
        server._stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def configure_logging(verbose: bool, *, with_pid: bool = False) -> None:
    # With several processes, each line names the one that wrote it.
    process = " [%(process)d]" if with_pid else ""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"%(asctime)s{process} %(levelname)s %(name)s %(message)s",
    )
    if not verbose:
        logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)


def _register_optional_groups() -> None:
    try:
        from censusdrop.cli.audit import audit
    except ImportError:  # pragma: no cover - shipped together
        return
    cli.add_command(audit)


cli.add_command(account_group)
cli.add_command(files_group)
cli.add_command(import_command)
account_group.add_command(revoke)
account_group.add_command(reinstate)
cli.add_command(round_group)
cli.add_command(custody_group)
cli.add_command(validate_command)
cli.add_command(status_command)
cli.add_command(keys_group)
_register_optional_groups()


def main() -> None:
    try:
        cli(prog_name="censusdrop")
    except (AccountError, PrefectureError) as exc:  # pragma: no cover
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
