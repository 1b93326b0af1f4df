"""``censusdrop round``: tables, JSON, one clear line on errors, every act
audited (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from censusdrop.audit.schema import audit_events
from censusdrop.cli.main import cli

COMMANDS = [
    ("round", "create"),
    ("round", "list"),
    ("round", "show"),
    ("round", "open"),
    ("round", "close"),
    ("round", "meeting"),
    ("round", "advance"),
    ("account", "revoke"),
    ("account", "reinstate"),
    ("custody", "confirm"),
    ("custody", "outstanding"),
    ("custody", "report"),
]


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> str:
    from conftest import Instance

    return str(Instance(tmp_path / "inst", database_url).config)


def run(config: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", config, *args])
    return result.exit_code, result.output


def _create(config: str, *extra: str) -> None:
    code, out = run(
        config,
        "round",
        "create",
        "2020-hubei",
        "--submission",
        "2020-04-23..2020-05-10",
        "--review",
        "2020-05-11 09:00..2020-06-30",
        *extra,
    )
    assert code == 0, out


def _to_distributed(config: str, prefecture: str) -> None:
    for state in ("submitted", "prereviewed", "distributed"):
        code, out = run(config, "round", "advance", prefecture, state, "--reason", "t")
        assert code == 0, out


def _acts(config: str) -> list[dict[str, object]]:
    from censusdrop.config.settings import load_settings

    engine = sa.create_engine(load_settings(Path(config)).database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(audit_events.c.details)
            .where(audit_events.c.action == "admin")
            .order_by(audit_events.c.seq)
        ).scalars()
        acts = [json.loads(row) for row in rows]
    engine.dispose()
    return acts


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_an_example_in_its_help(command: tuple[str, str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output and "censusdrop " in result.output


def test_create_list_and_show_in_china_time(config: str) -> None:
    _create(config, "-p", "武汉市,恩施州", "-p", "420500")
    code, out = run(config, "round", "list", "--json")
    assert code == 0, out
    (listed,) = json.loads(out)
    assert listed["submission"] == {
        "start": "2020-04-23T00:00:00+08:00",
        "end": "2020-05-11T00:00:00+08:00",
    }
    assert listed["review"]["start"] == "2020-05-11T09:00:00+08:00"
    assert listed["states"] == {"not_submitted": 3}
    code, out = run(config, "round", "show", "2020-hubei", "--json")
    shown = json.loads(out)
    assert [p["prefecture"] for p in shown["prefectures"]] == [
        "420100",
        "420500",
        "422800",
    ]
    code, out = run(config, "round", "show", "2020-hubei")
    assert code == 0 and "2020-05-10 24:00" in out and "武汉市" in out
    code, out = run(config, "round", "list")
    assert code == 0 and "2020-hubei" in out
    assert _acts(config)[-1]["act"] == "round.create"


def test_an_impossible_transition_fails_with_one_clear_line(config: str) -> None:
    _create(config)
    code, out = run(config, "round", "advance", "武汉市", "passed", "--reason", "x")
    assert code == 1
    assert out.strip().splitlines() == [
        "Error: 420100 cannot go from not_submitted to passed; "
        "from not_submitted it may go to: submitted"
    ]
    code, out = run(config, "round", "advance", "武汉市", "submitted")
    assert code == 2 and "--reason" in out


def test_meeting_opens_rectification_and_warns_of_short_notice(config: str) -> None:
    _create(config)
    _to_distributed(config, "武汉市")
    code, out = run(
        config,
        "round",
        "meeting",
        "武汉市",
        "2020-05-01",
        "--notice-date",
        "2020-04-29",
    )
    assert code == 0, out
    assert "rectification window until 2020-05-08 24:00" in out
    assert "announced 2 day(s) ahead" in out
    code, out = run(config, "round", "show", "2020-hubei", "--json")
    wuhan = json.loads(out)["prefectures"][0]
    assert wuhan["state"] == "rectification"
    assert wuhan["rectify_until"] == "2020-05-09T00:00:00+08:00"
    acts = [act["act"] for act in _acts(config)]
    assert acts.count("round.advance") == 3 and acts[-1] == "round.meeting"


def test_meeting_in_a_year_without_calendar_data_is_flagged(config: str) -> None:
    _create(config)
    _to_distributed(config, "武汉市")
    code, out = run(
        config,
        "round",
        "meeting",
        "武汉市",
        "2003-01-06",
        "--notice-date",
        "2003-01-01",
    )
    assert code == 0, out
    assert "until 2003-01-09 24:00" in out
    assert "counted Monday to Friday" in out
    assert "announced" not in out


def test_meetings_in_the_future_or_for_undistributed_prefectures_fail(
    config: str,
) -> None:
    _create(config)
    code, out = run(config, "round", "meeting", "武汉市", "2099-01-05")
    assert code == 1 and "in the future" in out
    code, out = run(config, "round", "meeting", "武汉市", "2020-05-20")
    assert code == 1 and "not_submitted to meeting_held" in out


def test_open_and_close_windows_now(config: str) -> None:
    _create(config)
    code, out = run(
        config, "round", "open", "2020-hubei", "review", "--until", "2099-12-31"
    )
    assert code == 0, out
    assert "review window open" in out and "2099-12-31 24:00" in out
    code, out = run(config, "round", "close", "2020-hubei", "review")
    assert code == 0, out
    code, out = run(config, "round", "close", "2020-hubei", "review")
    assert code == 1 and "not open" in out
    acts = [act["act"] for act in _acts(config)]
    assert acts[-2:] == ["round.open.review", "round.close.review"]


def test_bad_input_is_refused_before_anything_changes(config: str) -> None:
    code, out = run(config, "round", "create", "r1", "--review", "2020-05-11")
    assert code == 2 and "START..END" in out
    code, out = run(
        config, "round", "create", "r1", "--review", "2020-06-30..2020-05-11"
    )
    assert code == 2 and "must not end before it starts" in out
    code, out = run(config, "round", "show", "r1")
    assert code == 1 and "no round named 'r1'" in out
    code, out = run(config, "round", "create", "r1", "-p", "上海市")
    assert code == 1 and "unknown prefecture" in out
