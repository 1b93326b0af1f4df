"""The ``censusdrop`` command: a thin layer over the other packages."""

from __future__ import annotations

import logging
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
from censusdrop.cli.rounds import round_group
from censusdrop.cli.validate import status_command
from censusdrop.cli.validate import validate_command
from censusdrop.config.prefectures import PrefectureError
from censusdrop.config.settings import CONFIG_NAME
from censusdrop.config.settings import ConfigError
from censusdrop.server.accounts import AccountError
from censusdrop.server.app import CensusServer
from censusdrop.server.app import StartupError
from censusdrop.server.app import open_services
from censusdrop.server.bootstrap import InitError
from censusdrop.server.bootstrap import init_instance
from censusdrop.server.db import DatabaseError
from censusdrop.server.db import make_engine
from censusdrop.server.db import migrate
from censusdrop.server.passwords import generate_password
from censusdrop.server.tls import TLSConfigError
from censusdrop.server.tls import fingerprint

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
def init(folder: Path) -> None:
    """Create a working instance: config, keys, certificate, database.

    \b
    Example:
      censusdrop init /srv/censusdrop
      censusdrop --config /srv/censusdrop/censusdrop.toml serve
    """
    try:
        settings = init_instance(folder, at=now())
    except (InitError, ConfigError, DatabaseError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    cert = settings.path(settings.tls.certificate)
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
@click.pass_obj
def serve(app: AppContext, host: str | None, port: int | None, verbose: bool) -> None:
    """Run the FTPS server until SIGINT or SIGTERM.

    \b
    Example:
      censusdrop --config /srv/censusdrop/censusdrop.toml serve --port 2121
    """
    run_server(app, host, port, verbose)


def run_server(
    app: AppContext, host: str | None, port: int | None, verbose: bool
) -> None:
    configure_logging(verbose)
    try:
        services = open_services(app.settings)
        server = CensusServer(services, host=host, port=port)
    except StartupError as exc:
        raise click.ClickException(str(exc)) from exc
    # Handlers first: whoever reads the announcement may signal at once.
    install_signal_handlers(server)
    announce(server, app)
    server.serve()


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


def announce(server: CensusServer, app: AppContext) -> None:
    host, port = server.address
    settings = app.settings
    click.echo(f"censusdrop listening on {host}:{port} (explicit FTPS, AUTH TLS)")
    implicit = server.implicit_address
    if implicit:
        click.echo(f"implicit FTPS on {implicit[0]}:{implicit[1]}")
    try:
        print_fp = fingerprint(settings.path(settings.tls.certificate))
    except TLSConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"certificate SHA-256 fingerprint: {print_fp}")
    click.echo(f"passive ports {settings.server.passive_ports}; stop with Ctrl-C")
    sys.stdout.flush()


def install_signal_handlers(server: CensusServer) -> None:
    def stop(signum: int, frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal=%d stopping", signum)
        server._stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
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
_register_optional_groups()


def main() -> None:
    try:
        cli(prog_name="censusdrop")
    except (AccountError, PrefectureError) as exc:  # pragma: no cover
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
