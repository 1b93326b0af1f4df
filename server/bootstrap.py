"""``censusdrop init``: a working instance on the embedded defaults."""

from __future__ import annotations

import datetime as dt
from importlib import resources
from pathlib import Path

from censusdrop.config.settings import CONFIG_NAME
from censusdrop.config.settings import Settings
from censusdrop.config.settings import load_settings
from censusdrop.server.app import master_key_from_env
from censusdrop.server.db import make_engine
from censusdrop.server.db import migrate
from censusdrop.server.storage.keyring import Keyring
from censusdrop.server.tls import create_self_signed
from censusdrop.server.tls import default_hostname

DEFAULT_ROUND_KEY = "default"  # the round key of files outside any round


class InitError(Exception):
    """The instance cannot be created where asked."""


def example_config() -> str:
    resource = resources.files("censusdrop.config") / "data" / "censusdrop.example.toml"
    return resource.read_text(encoding="utf-8")


def deployment_config(user: str, state: Path) -> str:
    """The example configuration for a server that becomes ``user`` and
    keeps its SQLite database and data root in ``state`` (absolute)."""
    text = example_config()
    for old, new in (
        ('user = ""', f'user = "{user}"'),
        ('url = "sqlite:///censusdrop.db"', f'url = "sqlite:///{state}/censusdrop.db"'),
        ('data_root = "data"', f'data_root = "{state}/data"'),
    ):
        if text.count(old) != 1:
            raise InitError(f"the example configuration has no single {old!r}")
        text = text.replace(old, new)
    return text


def init_instance(
    folder: Path, *, at: dt.datetime, config_text: str | None = None
) -> Settings:
    """Create config, keys, certificate, database and data root in ``folder``."""
    config = folder / CONFIG_NAME
    if config.exists():
        raise InitError(f"{config} already exists; nothing was changed")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    config.write_text(config_text or example_config(), encoding="utf-8")
    config.chmod(0o600)
    settings = load_settings(config)
    create_missing_parts(settings, at=at)
    return settings


def create_missing_parts(settings: Settings, *, at: dt.datetime) -> None:
    """Keys, certificate, schema and data root, each only if absent."""
    keys = settings.path(settings.storage.keys_dir)
    if not (keys / "master.key").exists():
        keyring = Keyring.create(keys, master_key=master_key_from_env())
        # Made now, so a server whose keys folder is read-only can start.
        keyring.ensure_round_key(DEFAULT_ROUND_KEY)
    cert = settings.path(settings.tls.certificate)
    key = settings.path(settings.tls.private_key)
    if not cert.exists() and not key.exists():
        create_self_signed(cert, key, hostname=default_hostname(), at=at)
    signing = settings.path(settings.audit.signing_key)
    if not signing.exists():
        from censusdrop.audit.checkpoint import create_signing_key

        create_signing_key(signing)
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        _close_sqlite_file(engine.url.get_backend_name(), engine.url.database)
    finally:
        engine.dispose()
    data = settings.path(settings.storage.data_root)
    data.mkdir(parents=True, exist_ok=True, mode=0o700)


def _close_sqlite_file(backend: str, database: str | None) -> None:
    """An SQLite database is readable by its owner only (journals follow)."""
    if backend == "sqlite" and database and database != ":memory:":
        Path(database).chmod(0o600)


__all__ = [
    "InitError",
    "Path",
    "create_missing_parts",
    "deployment_config",
    "example_config",
    "init_instance",
]
