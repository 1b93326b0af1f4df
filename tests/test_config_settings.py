"""Settings: defaults, overrides, and one clear line for each bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from censusdrop.config.prefectures import PrefectureError
from censusdrop.config.prefectures import load_prefectures
from censusdrop.config.prefectures import parse_prefectures
from censusdrop.config.settings import ConfigError
from censusdrop.config.settings import load_settings
from censusdrop.server.bootstrap import example_config


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "censusdrop.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_file_loads_with_every_default(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, example_config()), environ={})
    assert settings.server.port == 2121
    assert settings.tls.min_version == "1.2"
    assert settings.database_url == f"sqlite:///{tmp_path / 'censusdrop.db'}"
    assert settings.passive_port_range() == range(50000, 50200)


def test_an_empty_file_means_all_defaults(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, ""), environ={})
    assert settings.security.lockout_threshold == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nport = 'abc'\n", "server.port: expected a whole number"),
        ("[server]\nport = 70000\n", "server.port: 70000 is not a TCP port"),
        ("[server]\nprot = 21\n", "server.prot: unknown key"),
        ("[srever]\n", "unknown section [srever]"),
        ("[server]\nhost = 'example.org'\n", "server.host"),
        ("[server]\npassive_ports = '100-50'\n", "server.passive_ports"),
        ("[tls]\nmin_version = '1.0'\n", "tls.min_version"),
        ("[audit]\ntimezone = 'Mars/Base'\n", "audit.timezone"),
        ("[server\n", "not valid TOML"),
    ],
)
def test_bad_values_name_the_key_and_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, text), environ={})
    assert message in str(caught.value)


def test_environment_overrides(tmp_path: Path) -> None:
    environ = {
        "CENSUSDROP_DATABASE_URL": "postgresql://u@h/db",
        "CENSUSDROP_SERVER_PORT": "2222",
        "CENSUSDROP_SERVER_ALLOW_ACTIVE_MODE": "yes",
    }
    settings = load_settings(_write(tmp_path, ""), environ=environ)
    assert settings.database_url == "postgresql://u@h/db"
    assert settings.server.port == 2222
    assert settings.server.allow_active_mode is True


def test_bad_environment_override_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="server.port"):
        load_settings(_write(tmp_path, ""), environ={"CENSUSDROP_SERVER_PORT": "x"})


def test_hubei_has_seventeen_prefectures_found_by_any_name() -> None:
    prefectures = load_prefectures("hubei")
    assert len(prefectures) == 17
    assert prefectures.find("恩施州").code == "422800"
    assert prefectures.find("恩施土家族苗族自治州").code == "422800"
    assert prefectures.find("429021").name == "神农架林区"
    with pytest.raises(PrefectureError):
        prefectures.find("北京市")


def test_a_malformed_prefecture_file_is_refused() -> None:
    with pytest.raises(PrefectureError, match="six digits"):
        parse_prefectures(
            'province = "x"\n[[prefecture]]\ncode = "12"\nname = "a"\nshort = "a"\n'
        )
    with pytest.raises(PrefectureError, match="names two"):
        parse_prefectures(
            'province = "x"\n[[prefecture]]\ncode = "420100"\nname = "a"\nshort = "b"\n'
            '[[prefecture]]\ncode = "420200"\nname = "b"\nshort = "c"\n'
        )
