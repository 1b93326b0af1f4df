"""The custody ledger: every reviewer download is an item, confirmation
closes them, ``custody outstanding`` tells cron who owes what."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from censusdrop.cli.main import cli
from conftest import TEST_PASSWORD
from ftpclient import download
from ftpclient import login
from ftpclient import upload
from roundkit import REVIEWING
from roundkit import WUHAN
from roundkit import distribute
from roundkit import fixed_clock
from roundkit import make_round
from roundkit import wait_for

FILES = {"自评估报告.txt": "自评估".encode() * 100, "总结报告.txt": b"summary" * 50}


def _cli(running: Any, *args: str) -> tuple[int, str]:
    config = str(running.instance.config)
    result = CliRunner().invoke(cli, ["--config", config, *args])
    return result.exit_code, result.output


def _downloaded(running: Any) -> list[Any]:
    """Two complete downloads by expert during the review window."""
    fixed_clock(running, REVIEWING)
    storage = running.services.storage
    storage.ensure_area(WUHAN)
    for name, data in FILES.items():
        storage.write_bytes(WUHAN, name, data, "wuhan")
    make_round(running.services)
    distribute(running.services, WUHAN)
    expert = login(running.address, running.cafile, "expert", TEST_PASSWORD)
    for name, data in FILES.items():
        assert download(expert, f"/武汉市/{name}") == data
    expert.quit()
    items: list[Any] = wait_for(
        lambda: (
            len(running.services.custody.items("expert")) == 2
            and running.services.custody.items("expert")
        )
    )
    return items


def test_each_reviewer_download_is_a_ledger_item(server) -> None:
    items = _downloaded(server)
    assert [item.path for item in items] == list(FILES)
    for item, data in zip(items, FILES.values(), strict=True):
        assert item.reviewer == "expert" and item.prefecture == WUHAN
        assert item.complete and item.bytes == len(data)
        assert item.sha256 == hashlib.sha256(data).hexdigest()
        assert item.version and item.downloaded_at == REVIEWING
        assert item.confirmation is None


def test_prefecture_downloads_are_not_custody_items(sqlite_server) -> None:
    wuhan = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    upload(wuhan, "a.txt", b"own")
    assert download(wuhan, "a.txt") == b"own"
    wuhan.quit()
    sqlite_server.services.audit.flush(10)
    assert sqlite_server.services.custody.items() == []


def test_items_are_owed_after_the_review_and_closed_by_confirmation(
    server, tmp_path: Path
) -> None:
    _downloaded(server)
    code, out = _cli(server, "custody", "outstanding", "--at", "2020-06-15")
    assert (code, out.strip()) == (0, "nothing outstanding")

    code, out = _cli(
        server, "custody", "outstanding", "--json", "--at", "2020-07-04 10:00"
    )
    assert code == 1
    (debt,) = json.loads(out)
    assert (debt["reviewer"], debt["days"], len(debt["items"])) == ("expert", 3, 2)
    assert debt["owed_since"] == "2020-07-01T00:00:00+08:00"
    code, out = _cli(server, "custody", "outstanding", "--at", "2020-07-04 10:00")
    assert code == 1 and "expert" in out

    statement = tmp_path / "退还删除承诺书.pdf"
    statement.write_bytes(b"%PDF-1.4 signed statement")
    code, out = _cli(
        server, "custody", "confirm", "expert", "--evidence", str(statement)
    )
    assert code == 0, out
    assert "2 item(s) closed" in out
    code, out = _cli(server, "custody", "outstanding")
    assert (code, out.strip()) == (0, "nothing outstanding")

    code, out = _cli(server, "custody", "report", "--json")
    ledger = json.loads(out)["expert"]
    (confirmation,) = ledger["confirmations"]
    assert {item["confirmation"] for item in ledger["items"]} == {confirmation["id"]}
    digest = hashlib.sha256(statement.read_bytes()).hexdigest()
    assert confirmation["evidence_sha256"] == digest
    assert confirmation["evidence_name"] == "退还删除承诺书.pdf"
    stored = confirmation["evidence_path"].removeprefix("_custody/")
    assert (
        server.services.storage.read_bytes("_custody", stored) == statement.read_bytes()
    )

    code, out = _cli(server, "custody", "report")
    assert code == 0 and "closed #" in out
    code, out = _cli(
        server, "custody", "confirm", "expert", "--evidence", str(statement)
    )
    assert code == 1 and "no open custody items" in out


def test_revocation_makes_items_owed_at_once(sqlite_server) -> None:
    _downloaded(sqlite_server)
    code, out = _cli(sqlite_server, "account", "revoke", "expert", "--reason", "x")
    assert code == 0, out
    code, out = _cli(sqlite_server, "custody", "outstanding", "--json")
    assert code == 1 and json.loads(out)[0]["reviewer"] == "expert"


def test_confirm_refuses_unknown_reviewers_and_missing_files(
    sqlite_server, tmp_path: Path
) -> None:
    statement = tmp_path / "s.pdf"
    statement.write_bytes(b"x")
    code, out = _cli(
        sqlite_server, "custody", "confirm", "nobody", "--evidence", str(statement)
    )
    assert code == 1 and "no account named 'nobody'" in out
    code, out = _cli(
        sqlite_server, "custody", "confirm", "expert", "--evidence", str(statement)
    )
    assert code == 1 and "no open custody items" in out
    code, out = _cli(
        sqlite_server,
        "custody",
        "confirm",
        "expert",
        "--evidence",
        str(tmp_path / "no"),
    )
    assert code == 2 and "does not exist" in out
