"""The ``[prereview]`` settings and the configured checklist: bad values stop
start-up with one line naming the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from censusdrop.config.settings import ConfigError
from censusdrop.config.settings import Settings
from censusdrop.config.settings import load_settings
from censusdrop.server.app import CensusServer
from censusdrop.server.app import StartupError
from censusdrop.server.bootstrap import example_config
from censusdrop.server.prereview import configured_checklist
from conftest import Instance


def _settings(tmp_path: Path, environ: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "censusdrop.toml"
    path.write_text(example_config(), encoding="utf-8")
    return load_settings(path, environ={} if environ is None else environ)


def test_defaults_from_the_example_file(tmp_path: Path) -> None:
    prereview = _settings(tmp_path).prereview
    assert (prereview.enabled, prereview.quiet_seconds, prereview.observer) == (
        True,
        10.0,
        "native",
    )


def test_environment_overrides_the_observer(tmp_path: Path) -> None:
    settings = _settings(tmp_path, environ={"CENSUSDROP_PREREVIEW_OBSERVER": "polling"})
    assert settings.prereview.observer == "polling"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("observer", '"fanotify"', "prereview.observer: 'fanotify' must be native"),
        ("quiet_seconds", "-1", "prereview.quiet_seconds: must lie within 0-3600"),
        ("quiet_seconds", '"soon"', "prereview.quiet_seconds: expected a number"),
        ("enabled", '"maybe"', "prereview.enabled: expected true or false"),
    ],
)
def test_bad_values_are_refused_with_the_key(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    text = example_config().replace(f"\n{key} = ", f"\n{key} = {value}  # ", 1)
    path = tmp_path / "censusdrop.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_settings(path, environ={})


def test_the_bundled_checklist_is_found_by_its_name(tmp_path: Path) -> None:
    checklist = configured_checklist(_settings(tmp_path))
    assert len(checklist.items) == 22


def test_a_malformed_checklist_stops_the_server_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "checklist-bad.toml"
    bad.write_text('name = "x"\n[census\n', encoding="utf-8")
    instance = Instance(
        tmp_path / "instance",
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        checklist=f'"{bad}"',
    )
    services = instance.services()
    try:
        with pytest.raises(StartupError, match=r"reference\.checklist: .*line 2"):
            CensusServer(services, host="127.0.0.1", port=0)
    finally:
        services.audit.close()
        services.engine.dispose()
