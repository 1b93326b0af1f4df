"""The administrator's command line, run in-process with click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from censusdrop.cli.main import cli


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> str:
    from conftest import Instance

    return str(Instance(tmp_path / "inst", database_url).config)


def run(config: str, *args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", config, *args], input=stdin)
    return result.exit_code, result.output


def test_init_creates_a_working_instance_with_private_secrets(tmp_path: Path) -> None:
    folder = tmp_path / "srv"
    result = CliRunner().invoke(cli, ["init", str(folder)])
    assert result.exit_code == 0, result.output
    assert "SHA-256 fingerprint" in result.output
    for secret in ("tls/server.key", "keys/master.key", "keys/audit-signing.key"):
        assert (folder / secret).stat().st_mode & 0o077 == 0, secret
    assert (folder / "censusdrop.toml").stat().st_mode & 0o077 == 0
    again = CliRunner().invoke(cli, ["init", str(folder)])
    assert again.exit_code != 0
    assert "already exists" in again.output


def test_add_list_show_and_json(config: str) -> None:
    code, out = run(
        config,
        "account",
        "add",
        "wuhan",
        "--role",
        "prefecture",
        "--prefecture",
        "武汉市",
        "--generate",
    )
    assert code == 0, out
    assert "password: " in out
    code, out = run(
        config,
        "account",
        "add",
        "expert",
        "--role",
        "reviewer",
        "--password-stdin",
        stdin="a-long-password-1\n",
    )
    assert code == 0, out
    code, out = run(config, "account", "assign", "expert", "恩施州")
    assert code == 0 and "422800" in out
    code, out = run(config, "account", "list", "--json")
    data = {item["name"]: item for item in json.loads(out)}
    assert data["wuhan"]["prefecture"] == "420100"
    assert data["expert"]["assigned"] == ["422800"]
    code, out = run(config, "account", "list")
    assert code == 0 and "wuhan" in out and "恩施土家族苗族自治州" in out
    code, out = run(config, "account", "show", "expert", "--json")
    assert json.loads(out)["role"] == "reviewer"


def test_prefecture_may_be_given_by_code_short_name_or_name(config: str) -> None:
    for index, key in enumerate(("429021", "神农架", "神农架林区")):
        code, out = run(
            config,
            "account",
            "add",
            f"snj{index}",
            "--role",
            "prefecture",
            "--prefecture",
            key,
            "--password-stdin",
            stdin="long-enough-pw\n",
        )
        assert code == 0, out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [
                "account",
                "add",
                "x1",
                "--role",
                "prefecture",
                "--prefecture",
                "北京市",
                "--generate",
            ],
            "unknown prefecture",
        ),
        (
            ["account", "add", "x1", "--role", "prefecture", "--generate"],
            "needs --prefecture",
        ),
        (
            ["account", "add", "Bad Name", "--role", "reviewer", "--generate"],
            "account name",
        ),
        (["account", "show", "ghost"], "no account named"),
        (["account", "assign", "ghost", "420100"], "no account named"),
    ],
)
def test_bad_input_gets_one_clear_line_and_a_nonzero_exit(
    config: str, args: list[str], message: str
) -> None:
    code, out = run(config, *args)
    assert code != 0
    assert message in out
    assert "Traceback" not in out


def test_short_password_is_refused(config: str) -> None:
    code, out = run(
        config,
        "account",
        "add",
        "wuhan",
        "--role",
        "prefecture",
        "--prefecture",
        "420100",
        "--password-stdin",
        stdin="short\n",
    )
    assert code != 0 and "at least" in out


def test_disable_enable_unlock_and_passwd(config: str) -> None:
    run(
        config,
        "account",
        "add",
        "wuhan",
        "--role",
        "prefecture",
        "--prefecture",
        "420100",
        "--generate",
    )
    assert run(config, "account", "disable", "wuhan")[0] == 0
    assert json.loads(run(config, "account", "show", "wuhan", "--json")[1])["disabled"]
    assert run(config, "account", "enable", "wuhan")[0] == 0
    assert run(config, "account", "unlock", "wuhan")[0] == 0
    code, out = run(
        config,
        "account",
        "passwd",
        "wuhan",
        "--password-stdin",
        stdin="another-long-pw\n",
    )
    assert code == 0, out


def test_missing_config_is_one_clear_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--config", str(tmp_path / "none.toml"), "account", "list"]
    )
    assert result.exit_code != 0
    assert "no such configuration file" in result.output


def test_every_command_has_an_example_in_its_help() -> None:
    def walk(group, prefix):  # type: ignore[no-untyped-def]
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                yield from walk(command, [*prefix, name])
            else:
                yield [*prefix, name]

    for path in walk(cli, []):
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0
        assert "Example" in result.output, " ".join(path)
