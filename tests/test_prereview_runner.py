"""One pre-review run without the FTP server: the report, the declaration of
completion, and the round state it moves, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from censusdrop.server import roundmodel as rm
from censusdrop.server.prereview import MARKER_NAME
from censusdrop.server.prereview import TEXT_REPORT
from censusdrop.server.prereview import Prereviewer
from censusdrop.server.prereview import configured_checklist
from censusdrop.server.prereview import runner
from censusdrop.server.services import Services
from conftest import Instance
from prereviewkit import ENSHI
from prereviewkit import WUHAN
from prereviewkit import store_tree
from treebuilder import ENSHI as ENSHI_PREFECTURE
from treebuilder import build_submission

AT = dt.datetime(2020, 5, 6, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def services(tmp_path: Path, database_url: str) -> Iterator[Services]:
    opened = Instance(tmp_path / "instance", database_url).services()
    opened.storage.prepare()
    try:
        yield opened
    finally:
        opened.audit.close()  # type: ignore[attr-defined]
        opened.engine.dispose()


@pytest.fixture
def prereviewer(services: Services) -> Prereviewer:
    return Prereviewer(services, configured_checklist(services.settings))


def _state(services: Services) -> str:
    return services.rounds.find(WUHAN)[1].state


def test_only_a_final_report_moves_the_round(
    services: Services, prereviewer: Prereviewer, tmp_path: Path
) -> None:
    services.rounds.create("2020-hubei", at=AT, prefectures=[WUHAN])
    store_tree(services.storage, WUHAN, build_submission(tmp_path / "tree").root)

    provisional = prereviewer.run(WUHAN, at=AT, origin="test")
    assert (provisional.passed, provisional.record.final) == (True, False)
    assert _state(services) == rm.NOT_SUBMITTED

    services.storage.write_bytes(WUHAN, MARKER_NAME, b"", "wuhan")
    final = prereviewer.run(WUHAN, at=AT, origin="test")
    assert final.record.final and final.record.declared_at is not None
    assert _state(services) == rm.PREREVIEWED
    assert "正式报告" in final.text


def test_a_failing_final_report_returns_and_a_new_declaration_resubmits(
    services: Services, prereviewer: Prereviewer, tmp_path: Path
) -> None:
    services.rounds.create("2020-hubei", at=AT, prefectures=[WUHAN])
    tree = build_submission(tmp_path / "tree")
    store_tree(services.storage, WUHAN, tree.root)
    item = tree.item(3).name
    for name in [p.name for p in tree.item(3).iterdir()]:
        services.storage.remove(WUHAN, f"{item}/{name}", "wuhan")
    services.storage.write_bytes(WUHAN, MARKER_NAME, b"", "wuhan")

    assert not prereviewer.run(WUHAN, at=AT, origin="test").passed
    assert _state(services) == rm.RETURNED

    for local in tree.item(3).iterdir():
        path = f"{item}/{local.name}"
        services.storage.write_bytes(WUHAN, path, local.read_bytes(), "wuhan")
    services.storage.write_bytes(WUHAN, MARKER_NAME, "再次提交".encode(), "wuhan")
    assert prereviewer.run(WUHAN, at=AT, origin="test").passed
    assert _state(services) == rm.PREREVIEWED


def test_a_prefecture_in_no_round_is_judged_all_the_same(
    services: Services, prereviewer: Prereviewer
) -> None:
    services.storage.ensure_area(WUHAN)
    services.storage.write_bytes(WUHAN, MARKER_NAME, b"", "wuhan")
    outcome = prereviewer.run(WUHAN, at=AT, origin="test")
    assert outcome.record.final and not outcome.passed


def test_names_written_with_an_alias_of_the_prefecture_list_pass(
    services: Services, prereviewer: Prereviewer, tmp_path: Path
) -> None:
    # 恩施 is an alias of 恩施土家族苗族自治州 in the bundled list only.
    tree = build_submission(tmp_path / "tree", ENSHI_PREFECTURE, written_name="恩施")
    store_tree(services.storage, ENSHI, tree.root)

    outcome = prereviewer.run(ENSHI, at=AT, origin="test")

    assert outcome.passed, outcome.text


def test_a_crash_gives_a_failing_report_that_says_so(
    services: Services,
    prereviewer: Prereviewer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise RecursionError("validator fault")

    monkeypatch.setattr(runner, "validate", crash)
    outcome = prereviewer.run(WUHAN, at=AT, origin="test")
    assert outcome.report.verdict == "退回补充完善"
    assert [f.rule for f in outcome.report.findings] == ["check.failed"]
    text = services.storage.read_bytes(WUHAN, TEXT_REPORT).decode("utf-8-sig")
    assert "预审结论：退回补充完善" in text and "请联系省普查办" in text
