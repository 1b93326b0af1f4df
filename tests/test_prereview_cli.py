"""``censusdrop validate`` and ``censusdrop status``, in-process with CliRunner,
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from censusdrop.cli.main import cli
from censusdrop.server.prereview import MARKER_NAME
from censusdrop.server.prereview import TEXT_REPORT
from censusdrop.server.schema import prereview_reports
from censusdrop.server.services import Services
from conftest import Instance
from prereviewkit import WUHAN
from prereviewkit import store_tree
from treebuilder import build_submission


@pytest.fixture
def instance(tmp_path: Path, database_url: str) -> Instance:
    return Instance(tmp_path / "instance", database_url)


@pytest.fixture
def services(instance: Instance) -> Iterator[Services]:
    opened = instance.services()
    opened.storage.prepare()
    try:
        yield opened
    finally:
        opened.audit.close()  # type: ignore[attr-defined]
        opened.engine.dispose()


def run(instance: Instance, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(instance.config), *args])
    return result.exit_code, result.output


def test_validate_passes_a_complete_tree_and_writes_the_report(
    instance: Instance, services: Services, tmp_path: Path
) -> None:
    store_tree(services.storage, WUHAN, build_submission(tmp_path / "tree").root)

    code, out = run(instance, "validate", "武汉市")
    assert code == 0, out
    assert "预审结论：合格" in out and "\r" not in out
    text = services.storage.read_bytes(WUHAN, TEXT_REPORT).decode("utf-8-sig")
    assert "预审结论：合格" in text
    with services.engine.connect() as conn:
        [row] = conn.execute(prereview_reports.select()).all()
    assert (row.prefecture, row.verdict, row.origin) == (WUHAN, "合格", "command")
    assert _admin_acts(services) == ["prereview.validate"]


def test_validate_returns_an_incomplete_tree_with_exit_status_1(
    instance: Instance, services: Services, tmp_path: Path
) -> None:
    tree = build_submission(tmp_path / "tree")
    for found in tree.item(3).iterdir():
        found.unlink()
    tree.item(3).rmdir()
    store_tree(services.storage, WUHAN, tree.root)

    code, out = run(instance, "validate", WUHAN, "--json")
    assert code == 1, out
    document = json.loads(out)
    assert document["verdict"] == "退回补充完善"
    assert document["final"] is False
    assert "item.missing" in {f["rule"] for f in document["findings"]}
    assert isinstance(document["report_id"], int)


def test_validate_works_on_an_instance_that_never_served(instance: Instance) -> None:
    code, out = run(instance, "validate", "恩施州")
    assert code == 1, out
    assert "第1项" in out


def test_validate_refuses_an_unknown_prefecture(instance: Instance) -> None:
    code, out = run(instance, "validate", "北京市")
    assert code == 2
    assert "unknown prefecture" in out


def test_status_shows_verdict_uploads_and_declaration(
    instance: Instance, services: Services, tmp_path: Path
) -> None:
    code, out = run(instance, "status", "--json")
    assert code == 0, out
    before = {row["code"]: row for row in json.loads(out)}
    assert len(before) == 17
    assert before[WUHAN]["verdict"] is None

    store_tree(services.storage, WUHAN, build_submission(tmp_path / "tree").root)
    services.storage.write_bytes(WUHAN, MARKER_NAME, b"", "wuhan")
    assert run(instance, "validate", WUHAN)[0] == 0

    code, out = run(instance, "status", "--json")
    after = {row["code"]: row for row in json.loads(out)}
    wuhan = after[WUHAN]
    assert (wuhan["verdict"], wuhan["errors"], wuhan["final"]) == ("合格", 0, True)
    assert wuhan["declared_complete"] is True
    assert wuhan["last_upload"] is not None
    assert wuhan["declared_at"] <= wuhan["judged_at"]
    assert after["422800"]["last_upload"] is None

    code, out = run(instance, "status")
    assert code == 0, out
    assert "武汉市" in out and "合格" in out and "未预审" in out


def _admin_acts(services: Services) -> list[str]:
    query = sa.text("SELECT details FROM audit_events WHERE action = 'admin'")
    with services.engine.connect() as conn:
        return [json.loads(d)["act"] for (d,) in conn.execute(query)]
