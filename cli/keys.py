"""``censusdrop keys``: the master key and the round keys it wraps.

``keys status`` shows which master key is in use and the state of every
round key; ``keys rotate`` replaces the master key and re-wraps the round
keys under it without touching a single stored file (file secrets are
wrapped by round keys, which do not change). Both are audited.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa

from censusdrop.cli.accounts import AdminSession
from censusdrop.cli.accounts import record
from censusdrop.cli.context import AppContext
from censusdrop.cli.context import print_json
from censusdrop.cli.context import print_table
from censusdrop.server.app import MASTER_KEY_ENV
from censusdrop.server.archive.keys import KEY_PREFIX
from censusdrop.server.schema import rounds
from censusdrop.server.storage.errors import StorageError
from censusdrop.server.storage.keyring import Keyring
from censusdrop.server.storage.keyring import encode_master_key
from censusdrop.server.storage.keyring import generate_master_key

pass_app = click.make_pass_decorator(AppContext)

ACTIVE = "active"
DESTROYED = "destroyed"


@click.group("keys")
def keys_group() -> None:
    """Encryption keys: state and master key rotation."""


@keys_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Show the master key in use and the state of every round key.

    A round key is "active", "destroyed" (by a purge: its files can no
    longer be read) or "damaged" with the reason. Exits 1 if any key
    is damaged.

    \b
    Example:
      censusdrop keys status
    """
    with AdminSession(app) as services:
        keyring = services.storage.keyring
        names = _round_names(services.engine)
        keys = [_key_state(keyring, name, names) for name in _all_keys(keyring)]
        source = "environment" if keyring.is_master_from_environment else "file"
        summary = {"master_key_id": keyring.master_key_id, "source": source}
    if as_json:
        print_json({**summary, "round_keys": keys})
    else:
        click.echo(f"master key {summary['master_key_id']} (from {source})")
        rows = [(k["key"], k["round"], k["state"], k["problem"]) for k in keys]
        print_table("Round keys", ("key", "round", "state", "problem"), rows)
    if any(key["problem"] for key in keys):
        raise SystemExit(1)


@keys_group.command("rotate")
@click.option(
    "--new-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=(
        f"Where to write the new master key when it comes from {MASTER_KEY_ENV} "
        "(created 0600; must not exist). Not used with a key file."
    ),
)
@pass_app
def rotate(app: AppContext, new_key_file: Path | None) -> None:
    """Replace the master key and re-wrap every round key under it.

    Stored files are not re-encrypted. With a master key kept in the keys
    directory, a new one is generated and a running server follows at
    once. With one given by the environment, the new key is written to
    --new-key-file; set the environment to it and restart the server.
    With a master key from the environment, rotating after a purge (and
    discarding the old key) makes copies of the keys directory taken
    earlier useless.

    \b
    Example:
      censusdrop keys rotate
    """
    with AdminSession(app, keep_root=True) as services:  # rewrites master.key
        keyring = services.storage.keyring
        old_id = keyring.master_key_id
        new_key = None
        if keyring.is_master_from_environment:
            if new_key_file is None:
                raise click.ClickException(
                    f"the master key comes from {MASTER_KEY_ENV}: give "
                    "--new-key-file to receive the new one"
                )
            new_key = generate_master_key()
            _write_new_key(new_key_file, new_key)
        elif new_key_file is not None:
            raise click.ClickException(
                "--new-key-file is only for a master key given by the environment"
            )
        try:
            new_id = keyring.rotate_master(new_key)
        except (StorageError, ValueError) as exc:
            raise click.ClickException(f"rotation failed: {exc}") from exc
        rounds_rewrapped = len(keyring.round_names())
        record(
            services,
            "keys.rotate",
            "master-key",
            old_id=old_id,
            new_id=new_id,
            round_keys=rounds_rewrapped,
        )
    click.echo(
        f"master key rotated: {old_id} -> {new_id}; "
        f"{rounds_rewrapped} round key(s) re-wrapped"
    )
    if new_key_file is not None:
        click.echo(
            f"set {MASTER_KEY_ENV} to the contents of {new_key_file}, restart "
            "the server, then keep the key safe and delete that file"
        )


def _write_new_key(path: Path, key: bytes) -> None:
    """Write the key (base64, as the environment takes it) to a new 0600 file."""
    data = (encode_master_key(key) + "\n").encode("ascii")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise click.ClickException(f"{path}: {exc.strerror}") from exc
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _all_keys(keyring: Keyring) -> list[str]:
    return sorted(set(keyring.round_names()) | set(keyring.destroyed_round_names()))


def _round_names(engine: sa.Engine) -> dict[str, str]:
    """Key name -> round name, for the rounds in the database."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(rounds.c.id, rounds.c.name)).all()
    return {f"{KEY_PREFIX}{row.id}": row.name for row in rows}


def _key_state(keyring: Keyring, name: str, names: dict[str, str]) -> dict[str, Any]:
    state, problem = ACTIVE, ""
    if name in keyring.destroyed_round_names():
        state = DESTROYED
    else:
        try:
            keyring.round_key(name)
        except StorageError as exc:
            state, problem = "damaged", str(exc)
    return {
        "key": name,
        "round": names.get(name, ""),
        "state": state,
        "problem": problem,
    }
