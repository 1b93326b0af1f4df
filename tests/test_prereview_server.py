"""Pre-review in a running server: uploads over FTPS lead to a report file in
the uploader's area, after a quiet period, without retriggering itself."""

from __future__ import annotations

import datetime as dt
import ftplib
import io
from pathlib import Path

import pytest

from censusdrop.server.filesystem import REPORT_NAMES
from censusdrop.server.prereview import HTML_REPORT
from censusdrop.server.prereview import TEXT_REPORT
from censusdrop.server.prereview import runner
from censusdrop.server.validation import validate
from ftpclient import download
from ftpclient import upload
from prereviewkit import ENSHI
from prereviewkit import QUIET
from prereviewkit import WUHAN
from prereviewkit import audit_events
from prereviewkit import login_as
from prereviewkit import make_instance
from prereviewkit import quick_server
from prereviewkit import quick_sqlite_server
from prereviewkit import report_text
from prereviewkit import reports
from prereviewkit import rules
from prereviewkit import running
from prereviewkit import store_tree
from prereviewkit import upload_tree
from prereviewkit import wait_for
from prereviewkit import wait_reports
from treebuilder import ENSHI as ENSHI_PREFECTURE
from treebuilder import build_submission

__all__ = ["quick_server", "quick_sqlite_server"]  # fixtures used below


def test_report_names_are_the_read_only_names() -> None:
    assert {TEXT_REPORT, HTML_REPORT} == REPORT_NAMES


def test_complete_tree_uploaded_over_ftps_gets_a_passing_report(
    quick_server, tmp_path: Path
) -> None:
    tree = build_submission(tmp_path / "tree")
    client = login_as(quick_server, "wuhan")
    upload_tree(client, tree.root)

    wait_for(lambda: TEXT_REPORT in client.nlst())
    text = download(client, TEXT_REPORT)
    assert text.startswith(b"\xef\xbb\xbf")
    assert b"\r\n" in text and b"\n" not in text.replace(b"\r\n", b"")
    decoded = text.decode("utf-8-sig")
    assert "预审结论：合格" in decoded
    assert "临时报告" in decoded and "提交完成.txt" in decoded
    assert "预审结论：合格" in download(client, HTML_REPORT).decode("utf-8")
    client.quit()

    [row] = wait_reports(quick_server, WUHAN, 1)
    assert (row["verdict"], row["errors"], row["final"]) == ("合格", 0, False)
    assert row["report"]["digest"]["kind"] == "content"
    assert row["report"]["digest"]["files"] == 65
    [event] = audit_events(quick_server, "prereview")
    assert event["prefecture"] == WUHAN
    assert event["digest"] == row["digest"]
    assert event["details"]["verdict"] == "合格"


def test_report_is_readable_by_the_prefecture_and_not_writable(
    quick_sqlite_server,
) -> None:
    client = login_as(quick_sqlite_server, "wuhan")
    upload(client, "说明.txt", "草稿".encode())
    wait_for(lambda: TEXT_REPORT in client.nlst())
    wait_reports(quick_sqlite_server, WUHAN, 1)
    for name in (TEXT_REPORT, HTML_REPORT):
        before = download(client, name)
        with pytest.raises(ftplib.error_perm, match="^550"):
            upload(client, name, b"forged")
        with pytest.raises(ftplib.error_perm, match="^550"):
            client.storbinary(f"APPE {name}", io.BytesIO(b"more"))
        with pytest.raises(ftplib.error_perm, match="^550"):
            client.delete(name)
        with pytest.raises(ftplib.error_perm, match="^550"):
            client.rename(name, "改名.txt")
        with pytest.raises(ftplib.error_perm, match="^550"):
            client.rename("说明.txt", name)
        assert download(client, name) == before
    client.quit()


def test_incomplete_tree_is_returned_with_the_missing_item(
    quick_sqlite_server, tmp_path: Path
) -> None:
    tree = build_submission(tmp_path / "tree")
    missing = tree.item(3).name
    client = login_as(quick_sqlite_server, "wuhan")
    upload_tree(client, tree.root, skip=missing)
    client.quit()

    [row] = wait_reports(quick_sqlite_server, WUHAN, 1)
    assert row["verdict"] == "退回补充完善"
    assert "item.missing" in rules(row)
    [finding] = [f for f in row["report"]["findings"] if f["rule"] == "item.missing"]
    assert finding["item"] == 3
    text = report_text(quick_sqlite_server, WUHAN)
    assert "预审结论：退回补充完善" in text
    assert finding["message"] in text


def test_many_quick_uploads_give_one_run_after_the_quiet_period(
    quick_sqlite_server,
) -> None:
    client = login_as(quick_sqlite_server, "wuhan")
    for n in range(12):
        upload(client, f"第{n}份材料.pdf", b"%PDF-1.4 draft")
    last_upload = dt.datetime.now(dt.UTC)
    wait_for(lambda: TEXT_REPORT in client.nlst())
    client.quit()

    [row] = wait_reports(quick_sqlite_server, WUHAN, 1)
    assert row["report"]["digest"]["files"] == 12
    judged = dt.datetime.fromisoformat(row["report"]["judged_at"])
    # The run started once the last upload had been quiet for QUIET seconds.
    assert (judged - last_upload).total_seconds() >= QUIET - 0.1
    # Writing the report did not trigger another run.
    assert not wait_for_more(quick_sqlite_server, 1)


def wait_for_more(server, count: int) -> bool:
    """Whether more than ``count`` reports appear within three quiet periods."""
    try:
        wait_for(lambda: len(reports(server, WUHAN)) > count, timeout=3 * QUIET)
    except AssertionError:
        return False
    return True


def test_a_later_upload_replaces_the_report_and_keeps_the_earlier_one(
    quick_sqlite_server,
) -> None:
    client = login_as(quick_sqlite_server, "wuhan")
    upload(client, "第一份.pdf", b"%PDF-1.4 one")
    first = wait_reports(quick_sqlite_server, WUHAN, 1)[0]
    upload(client, "第二份.pdf", b"%PDF-1.4 two")
    client.quit()

    rows = wait_reports(quick_sqlite_server, WUHAN, 2)
    assert [r["report"]["digest"]["files"] for r in rows] == [1, 2]
    storage = quick_sqlite_server.services.storage
    for name in (TEXT_REPORT, HTML_REPORT):
        history = storage.history(WUHAN, name)
        assert [v.state for v in history] == ["current", "superseded"]
    [old] = storage.history(WUHAN, TEXT_REPORT)[1:]
    with storage.open_version(WUHAN, TEXT_REPORT, old.id) as earlier:
        assert first["digest"] in earlier.read().decode("utf-8-sig")


def test_crash_on_one_prefecture_gives_a_failing_report_and_others_go_on(
    quick_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crashing(source, checklist, prefecture, **options):  # type: ignore[no-untyped-def]
        if prefecture.code == WUHAN:
            raise RuntimeError("validator fault")
        return validate(source, checklist, prefecture, **options)

    monkeypatch.setattr(runner, "validate", crashing)
    storage = quick_server.services.storage
    store_tree(storage, WUHAN, build_submission(tmp_path / "wuhan").root)
    enshi = build_submission(tmp_path / "enshi", ENSHI_PREFECTURE)
    store_tree(storage, ENSHI, enshi.root)

    [failed] = wait_reports(quick_server, WUHAN, 1)
    [judged] = wait_reports(quick_server, ENSHI, 1)
    assert failed["verdict"] == "退回补充完善"
    assert rules(failed) == {"check.failed"}
    assert "请联系省普查办" in report_text(quick_server, WUHAN)
    assert judged["verdict"] == "合格"
    assert "预审结论：合格" in report_text(quick_server, ENSHI)


def test_completion_marker_makes_the_report_final(quick_server) -> None:
    client = login_as(quick_server, "wuhan")
    upload(client, "说明.pdf", b"%PDF-1.4 draft")
    wait_reports(quick_server, WUHAN, 1)
    upload(client, "提交完成.txt", "全部资料已上传".encode())
    rows = wait_reports(quick_server, WUHAN, 2)
    [marker] = quick_server.services.storage.history(WUHAN, "提交完成.txt")

    assert [r["final"] for r in rows] == [False, True]
    assert rows[1]["declared_at"] == marker.created_at
    assert rows[1]["report"]["digest"]["files"] == 1  # the marker is not judged
    text = download(client, TEXT_REPORT).decode("utf-8-sig")
    assert "正式报告" in text and "提交时间" in text
    [declared] = audit_events(quick_server, "submission_complete")
    assert (declared["account"], declared["version"]) == ("wuhan", marker.id)

    upload(client, "补充.pdf", b"%PDF-1.4 more")
    rows = wait_reports(quick_server, WUHAN, 3)
    assert rows[2]["final"] is True
    assert len(audit_events(quick_server, "submission_complete")) == 1
    client.quit()


def test_polling_observer_triggers_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    instance = make_instance(tmp_path / "instance", url, observer='"polling"')
    with running(instance) as server:
        assert server.server.prereview.watcher.kind == "polling"
        client = login_as(server, "wuhan")
        upload(client, "说明.pdf", b"%PDF-1.4 draft")
        wait_for(lambda: TEXT_REPORT in client.nlst())
        client.quit()
        [row] = wait_reports(server, WUHAN, 1)
        assert row["origin"] == "upload"


def test_uploads_made_while_the_server_was_down_are_judged_on_start(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    instance = make_instance(tmp_path / "instance", url)
    services = instance.services()
    services.storage.prepare()
    services.storage.ensure_area(WUHAN)
    services.storage.write_bytes(WUHAN, "说明.pdf", b"%PDF-1.4", "wuhan")
    services.audit.close()
    services.engine.dispose()
    with running(instance) as server:
        [row] = wait_reports(server, WUHAN, 1)
        assert row["origin"] == "catch_up"


def test_disabled_prereview_writes_no_report(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    instance = make_instance(tmp_path / "instance", url, enabled="false")
    with running(instance) as server:
        assert server.server.prereview is None
        client = login_as(server, "wuhan")
        upload(client, "说明.pdf", b"%PDF-1.4 draft")
        assert not wait_for_more(server, 0)
        assert client.nlst() == ["说明.pdf"]
        client.quit()


def test_a_warm_up_opens_new_files_before_the_quiet_period_ends(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    instance = make_instance(tmp_path / "instance", url, quiet_seconds="4")
    tree = build_submission(tmp_path / "tree").root
    with running(instance) as server:
        service = server.server.prereview
        assert service.warmer is not None
        client = login_as(server, "wuhan")
        upload_tree(client, tree)
        # Warm-up passes run a second after the uploads pause, long before
        # the 4-second quiet period ends and the report is written.
        wait_for(lambda: service.warmed > 0, timeout=3.5)
        assert reports(server, WUHAN) == []
        [row] = wait_reports(server, WUHAN, 1)
        assert row["origin"] == "upload"
        client.quit()


def test_no_warm_up_when_the_quiet_period_is_short(quick_sqlite_server) -> None:
    assert quick_sqlite_server.server.prereview.warmer is None
