"""Typed settings: one TOML file plus environment overrides.

Every key has a documented default (see ``DEFAULT_TOML``, which ``censusdrop
init`` writes out). A bad value stops start-up with a ``ConfigError`` that
names the key and the problem. Relative paths are resolved against the
folder holding the configuration file.

Environment overrides: ``CENSUSDROP_DATABASE_URL`` replaces
``database.url`` and ``CENSUSDROP_<SECTION>_<KEY>`` replaces any other key
(for example ``CENSUSDROP_SERVER_PORT=2121``). The master key never lives in
this file; see ``CENSUSDROP_MASTER_KEY`` in ``censusdrop.server.storage``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CONFIG_ENV = "CENSUSDROP_CONFIG"
CONFIG_NAME = "censusdrop.toml"
MAX_WORKERS = 64


class ConfigError(Exception):
    """A configuration value is missing, unknown or wrong."""


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 2121
    implicit_tls_port: int = 0
    passive_ports: str = "50000-50199"
    masquerade_address: str = ""
    allow_active_mode: bool = False
    max_connections: int = 256
    max_connections_per_ip: int = 16
    workers: int = 1
    idle_timeout: int = 300
    line_timeout: int = 30
    data_timeout: int = 120
    banner: str = "censusdrop FTPS ready."
    tls_session_reuse_required: bool = True
    user: str = ""
    group: str = ""


@dataclasses.dataclass(frozen=True)
class TLSSettings:
    certificate: Path = Path("tls/server.crt")
    private_key: Path = Path("tls/server.key")
    min_version: str = "1.2"
    max_version: str = "1.2"


@dataclasses.dataclass(frozen=True)
class DatabaseSettings:
    url: str = "sqlite:///censusdrop.db"


@dataclasses.dataclass(frozen=True)
class StorageSettings:
    data_root: Path = Path("data")
    keys_dir: Path = Path("keys")
    partial_hours: float = 24.0
    area_quota_mib: int = 0
    area_quota_files: int = 0


@dataclasses.dataclass(frozen=True)
class SecuritySettings:
    lockout_threshold: int = 5
    lockout_minutes: int = 15
    ip_failure_limit: int = 30
    ip_failure_window_minutes: int = 10
    failed_login_delay: float = 1.0
    argon2_memory_kib: int = 19456
    argon2_iterations: int = 2
    argon2_lanes: int = 1


@dataclasses.dataclass(frozen=True)
class AuditSettings:
    signing_key: Path = Path("keys/audit-signing.key")
    checkpoint_interval_minutes: int = 60
    timezone: str = "Asia/Shanghai"


@dataclasses.dataclass(frozen=True)
class ReferenceSettings:
    prefectures: str = "hubei"
    checklist: str = "checklist-hubei-2020"


@dataclasses.dataclass(frozen=True)
class PrereviewSettings:
    """Automatic pre-review of uploads (see ``censusdrop.server.prereview``)."""

    enabled: bool = True
    quiet_seconds: float = 10.0
    observer: str = "native"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The whole configuration. ``base_dir`` anchors relative paths."""

    base_dir: Path
    server: ServerSettings = ServerSettings()
    tls: TLSSettings = TLSSettings()
    database: DatabaseSettings = DatabaseSettings()
    storage: StorageSettings = StorageSettings()
    security: SecuritySettings = SecuritySettings()
    audit: AuditSettings = AuditSettings()
    reference: ReferenceSettings = ReferenceSettings()
    prereview: PrereviewSettings = PrereviewSettings()

    def path(self, value: Path) -> Path:
        return value if value.is_absolute() else self.base_dir / value

    @property
    def database_url(self) -> str:
        url = self.database.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/"):
            name = url[len(prefix) :]
            if name and name != ":memory:":
                return prefix + str(self.base_dir / name)
        return url

    def passive_port_range(self) -> range:
        return parse_port_range(self.server.passive_ports)


SECTIONS: dict[str, type] = {
    "server": ServerSettings,
    "tls": TLSSettings,
    "database": DatabaseSettings,
    "storage": StorageSettings,
    "security": SecuritySettings,
    "audit": AuditSettings,
    "reference": ReferenceSettings,
    "prereview": PrereviewSettings,
}


def find_config(explicit: str | Path | None) -> Path:
    """The configuration file: the option, the variable, or ./censusdrop.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return Path.cwd() / CONFIG_NAME


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, override from the environment, and check the configuration."""
    environ = os.environ if environ is None else environ
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such configuration file (run 'censusdrop init' first)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return build_settings(raw, path.resolve().parent, environ)


def build_settings(
    raw: dict[str, Any], base_dir: Path, environ: Mapping[str, str]
) -> Settings:
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in SECTIONS:
            raise ConfigError(f"unknown section [{name}]")
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] must be a table")
    for name, cls in SECTIONS.items():
        values = dict(raw.get(name, {}))
        values.update(_environment_values(name, cls, environ))
        sections[name] = _build_section(name, cls, values)
    settings = Settings(base_dir=base_dir, **sections)
    _check(settings)
    return settings


def parse_port_range(text: str) -> range:
    first, sep, last = text.partition("-")
    try:
        low = int(first)
        high = int(last) if sep else low
    except ValueError:
        raise ConfigError(
            f"server.passive_ports: {text!r} is not a port range such as 50000-50199"
        ) from None
    if not (1024 <= low <= high <= 65535):
        raise ConfigError(
            f"server.passive_ports: {text!r} must lie within 1024-65535, low to high"
        )
    return range(low, high + 1)


def _environment_values(
    section: str, cls: type, environ: Mapping[str, str]
) -> dict[str, str]:
    found = {}
    for field in dataclasses.fields(cls):
        key = f"CENSUSDROP_{section}_{field.name}".upper()
        if key in environ:
            found[field.name] = environ[key]
    return found


def _build_section(name: str, cls: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {field.name for field in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(f"{name}.{key}: unknown key")
    coerced = {
        key: _coerce(f"{name}.{key}", hints[key], value)
        for key, value in values.items()
    }
    return cls(**coerced)


def _coerce(key: str, hint: Any, value: Any) -> Any:
    """Turn a TOML or environment value into the field's type, or explain."""
    if isinstance(hint, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    elif hint is str and isinstance(value, str):
        return value
    elif hint is Path and isinstance(value, str) and value:
        return Path(value)
    expected = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{key}: expected {_describe(expected)}, got {value!r}")


def _describe(type_name: str) -> str:
    return {
        "bool": "true or false",
        "int": "a whole number",
        "float": "a number",
        "str": "a string",
        "Path": "a file or folder path",
    }.get(type_name, type_name)


def _check(settings: Settings) -> None:
    server = settings.server
    for key, port in (
        ("port", server.port),
        ("implicit_tls_port", server.implicit_tls_port),
    ):
        if not 0 <= port <= 65535:
            raise ConfigError(f"server.{key}: {port} is not a TCP port (0-65535)")
    try:
        ipaddress.ip_address(server.host)
    except ValueError:
        raise ConfigError(
            f"server.host: {server.host!r} is not an IP address"
        ) from None
    if server.masquerade_address:
        try:
            ipaddress.ip_address(server.masquerade_address)
        except ValueError:
            raise ConfigError(
                f"server.masquerade_address: {server.masquerade_address!r}"
                " is not an IP address"
            ) from None
    parse_port_range(server.passive_ports)
    if server.group and not server.user:
        raise ConfigError("server.group: only used with server.user; set both")
    for key in (
        "max_connections",
        "max_connections_per_ip",
        "idle_timeout",
        "line_timeout",
    ):
        if getattr(server, key) < 1:
            raise ConfigError(f"server.{key}: must be at least 1")
    check_workers(server)
    tls = settings.tls
    for key in ("min_version", "max_version"):
        if getattr(tls, key) not in ("1.2", "1.3"):
            raise ConfigError(f"tls.{key}: {getattr(tls, key)!r} must be 1.2 or 1.3")
    if tls.min_version > tls.max_version:
        raise ConfigError("tls.min_version: must not be above tls.max_version")
    if not 0 < settings.storage.partial_hours <= 24 * 30:
        raise ConfigError("storage.partial_hours: must lie within 0-720 (and not 0)")
    for key in ("area_quota_mib", "area_quota_files"):
        if getattr(settings.storage, key) < 0:
            raise ConfigError(f"storage.{key}: must be 0 (no limit) or more")
    security = settings.security
    if security.lockout_threshold < 1:
        raise ConfigError("security.lockout_threshold: must be at least 1")
    if security.argon2_memory_kib < 8 * security.argon2_lanes:
        raise ConfigError("security.argon2_memory_kib: must be at least 8 x lanes")
    try:
        zoneinfo.ZoneInfo(settings.audit.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"audit.timezone: {settings.audit.timezone!r} is not a known time zone"
        ) from None
    _check_prereview(settings.prereview)


def check_workers(server: ServerSettings) -> None:
    """``server.workers`` within bounds, with passive ports for each."""
    if not 1 <= server.workers <= MAX_WORKERS:
        raise ConfigError(f"server.workers: must lie within 1-{MAX_WORKERS}")
    if len(parse_port_range(server.passive_ports)) < server.workers:
        raise ConfigError(
            "server.workers: each worker needs passive ports of its own;"
            " widen server.passive_ports"
        )


def _check_prereview(prereview: PrereviewSettings) -> None:
    if not 0 <= prereview.quiet_seconds <= 3600:
        raise ConfigError("prereview.quiet_seconds: must lie within 0-3600")
    if prereview.observer not in ("native", "polling"):
        raise ConfigError(
            f"prereview.observer: {prereview.observer!r} must be native or polling"
        )
