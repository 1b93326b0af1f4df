"""The content cache between runs: an unchanged stored file is not opened
again, and whatever changed (the file, its name or place, the checklist,
the limits, the day) is judged again. Opens are counted by the storage
source itself (``StorageSource.opened``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from censusdrop.config.checklist import Checklist
from censusdrop.config.checklist import ColumnRule
from censusdrop.server.prereview import Prereviewer
from censusdrop.server.prereview import StorageSource
from censusdrop.server.prereview import configured_checklist
from censusdrop.server.services import Services
from censusdrop.server.storage.store import Storage
from censusdrop.server.validation import ContentCache
from censusdrop.server.validation import Limits
from censusdrop.server.validation import Report
from censusdrop.server.validation import validate
from conftest import Instance
from prereviewkit import WUHAN
from prereviewkit import store_tree
from treebuilder import AT
from treebuilder import CHECKLIST
from treebuilder import HUBEI
from treebuilder import WUHAN as WUHAN_PREFECTURE
from treebuilder import Submission
from treebuilder import basic_info_rows
from treebuilder import biff8_workbook
from treebuilder import build_submission
from treebuilder import describe
from treebuilder import errors
from treebuilder import exe_bytes
from treebuilder import ole2_bytes
from treebuilder import pdf_bytes
from treebuilder import rules

# Files of the default submission, and the extra opens of a cold run: the
# 基本信息表 headers (the same file is sniffed first) and the linked report.
FILES = 65
TABLES = 7
LINKED_REPORTS = 1


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    opened = Instance(tmp_path / "instance", url).services()
    opened.storage.prepare()
    try:
        yield opened
    finally:
        opened.audit.close()  # type: ignore[attr-defined]
        opened.engine.dispose()


@pytest.fixture
def storage(services: Services) -> Storage:
    return services.storage


@pytest.fixture
def tree(storage: Storage, tmp_path: Path) -> Submission:
    submission = build_submission(tmp_path / "tree")
    store_tree(storage, WUHAN, submission.root)
    return submission


def judge(
    storage: Storage,
    cache: ContentCache | None,
    *,
    checklist: Checklist = CHECKLIST,
    at: dt.datetime = AT,
    limits: Limits | None = None,
) -> tuple[Report, int]:
    """One run over 武汉市's area; the report and how many files it opened."""
    source = StorageSource(storage, WUHAN)
    report = validate(
        source,
        checklist,
        WUHAN_PREFECTURE,
        at=at,
        others=HUBEI,
        limits=limits,
        cache=cache,
    )
    return report, source.opened


def stored_path(tree: Submission, text: str) -> str:
    return tree.find(text).relative_to(tree.root).as_posix()


def test_an_unchanged_tree_is_judged_again_without_opening_a_file(
    storage: Storage, tree: Submission
) -> None:
    cache = ContentCache()

    cold, cold_opens = judge(storage, cache)
    warm, warm_opens = judge(storage, cache)

    assert cold_opens == FILES + TABLES + LINKED_REPORTS
    assert warm_opens == 0
    assert warm == cold
    assert warm.findings == judge(storage, None)[0].findings == ()
    assert cache.hits == cold_opens


def test_a_changed_file_is_opened_and_judged_again(
    storage: Storage, tree: Submission
) -> None:
    cache = ContentCache()
    judge(storage, cache)
    path = stored_path(tree, "普查领导小组成立文件")

    storage.write_bytes(WUHAN, path, exe_bytes(), "test")
    report, opened = judge(storage, cache)

    assert opened == 1
    assert errors(report) == {"file.executable"}, describe(report)
    assert report.errors[0].path == path


def test_a_file_changed_back_is_judged_as_at_first(
    storage: Storage, tree: Submission
) -> None:
    cache = ContentCache()
    first, _ = judge(storage, cache)
    path = stored_path(tree, "普查领导小组成立文件")
    storage.write_bytes(WUHAN, path, exe_bytes(), "test")
    judge(storage, cache)

    # A new upload is a new version even with the old content: opened again.
    storage.write_bytes(WUHAN, path, pdf_bytes(), "test")
    report, opened = judge(storage, cache)

    assert opened == 1
    assert report.findings == first.findings == ()


def test_a_renamed_file_is_sniffed_again_for_its_new_extension(
    storage: Storage, tree: Submission
) -> None:
    cache = ContentCache()
    judge(storage, cache)
    path = stored_path(tree, "第三方机构管理文件")  # a JPEG

    storage.rename(WUHAN, path, path.removesuffix(".jpg") + ".png", "test")
    report, opened = judge(storage, cache)

    assert opened == 1
    assert rules(report) == {"file.ext_mismatch"}, describe(report)


def test_a_moved_file_is_judged_by_the_rules_of_its_new_place_unopened(
    storage: Storage, tree: Submission
) -> None:
    cache = ContentCache()
    judge(storage, cache)
    document = stored_path(tree, "两员选聘管理文件")  # docx in item 5
    scans_only = tree.item(1).name  # item 1 takes 扫描件 only

    target = f"{scans_only}/{document.rpartition('/')[2]}"
    storage.rename(WUHAN, document, target, "test")
    report, opened = judge(storage, cache)

    assert opened == 0
    assert errors(report) == {"file.type_not_accepted"}, describe(report)
    assert report.errors[0].path == target


def test_a_changed_column_rule_rereads_only_the_table_headers(
    storage: Storage, tree: Submission
) -> None:
    cache = ContentCache()
    judge(storage, cache)
    basic = CHECKLIST.basic_info
    columns = (*basic.columns, ColumnRule("行业代码"))
    stricter = dataclasses.replace(
        CHECKLIST, basic_info=dataclasses.replace(basic, columns=columns)
    )

    report, opened = judge(storage, cache, checklist=stricter)

    assert opened == TABLES
    assert errors(report) == {"basic_info.columns"}, describe(report)
    assert all("行业代码" in f.message for f in report.errors)


def test_changed_limits_sniff_every_file_again(
    storage: Storage, tree: Submission
) -> None:
    cache = ContentCache()
    judge(storage, cache)

    report, opened = judge(storage, cache, limits=Limits(max_members=2))

    # Headers and links do not depend on the limits: those stay cached (and
    # the zip-based tables and report are bombs now, not read at all).
    assert opened == FILES
    assert "file.zip_bomb" in errors(report)


def test_a_stored_file_that_fails_to_decrypt_is_never_remembered(
    storage: Storage, tree: Submission, caplog: pytest.LogCaptureFixture
) -> None:
    # An OLE2 workbook whose directory lies past the first 64 KiB chunk: the
    # sniffer's head reads fine, then olefile, which turns every exception
    # into its own verdict, meets the damaged chunk. The source's failure
    # must not pass for a fault of the file, nor be remembered.
    cache = ContentCache()
    path = stored_path(tree, "两员信息统计表")
    workbook = biff8_workbook(basic_info_rows("两员"))
    big = ole2_bytes({"Workbook": workbook, "Padding": bytes(100_000)})
    storage.write_bytes(WUHAN, path, big, "test")
    assert errors(judge(storage, None)[0]) == set()
    encrypted = storage.root / "areas" / WUHAN / path
    damaged = bytearray(encrypted.read_bytes())
    damaged[-1] ^= 0x40  # the last chunk's tag
    encrypted.write_bytes(bytes(damaged))

    first, _ = judge(storage, cache)
    second, opened = judge(storage, cache)

    assert errors(first) == {"file.check_failed"}, describe(first)
    assert second == first
    assert opened == 1
    assert "failed to decrypt" in caplog.text


def test_dates_are_judged_against_the_day_of_each_run(
    storage: Storage, tree: Submission
) -> None:
    cache = ContentCache()
    name = f"{tree.item(2).name}/武汉市人员调整文件20200425.pdf"
    storage.write_bytes(WUHAN, name, pdf_bytes(), "test")

    early, _ = judge(storage, cache, at=AT)
    later, opened = judge(storage, cache, at=AT + dt.timedelta(days=7))

    assert errors(early) == {"name.date_future"}, describe(early)
    assert opened == 0
    assert later.findings == ()


def test_a_small_cache_stays_within_its_bound_and_judges_the_same(
    storage: Storage, tree: Submission
) -> None:
    cache = ContentCache(max_bytes=16 << 10)

    first, _ = judge(storage, cache)
    second, opened = judge(storage, cache)

    assert 0 < len(cache) < FILES
    assert cache.footprint <= cache.max_bytes
    assert opened > 0
    assert second == first


def test_the_least_recently_used_entries_go_first() -> None:
    probe = ContentCache()
    probe.recall("a", lambda: "a" * 10)
    cache = ContentCache(max_bytes=probe.footprint * 7 // 2)  # room for three
    for key in "abc":
        cache.recall(key, lambda key=key: key * 10)
    cache.recall("a", lambda: "made again")  # a hit: "a" is now the newest

    cache.recall("d", lambda: "d" * 10)

    assert len(cache) == 3 and cache.footprint <= cache.max_bytes
    assert cache.recall("a", lambda: "made again") == "a" * 10
    assert cache.recall("b", lambda: "made again") == "made again"


def test_a_failed_check_is_not_remembered() -> None:
    cache = ContentCache()

    def fail() -> str:
        raise OSError("disk")

    with pytest.raises(OSError):
        cache.recall("k", fail)
    assert len(cache) == 0
    assert cache.recall("k", lambda: "ok") == "ok"


def test_a_cache_needs_room() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        ContentCache(max_bytes=0)


def test_the_prereviewer_keeps_its_cache_between_runs(
    services: Services, tree: Submission
) -> None:
    prereviewer = Prereviewer(services, configured_checklist(services.settings))
    at = dt.datetime(2020, 5, 6, 10, 0, tzinfo=dt.UTC)

    first = prereviewer.run(WUHAN, at=at, origin="test")
    hits = prereviewer.cache.hits
    second = prereviewer.run(WUHAN, at=at, origin="test")

    assert hits == 0
    assert prereviewer.cache.hits == FILES + TABLES + LINKED_REPORTS
    assert second.text == first.text
    assert second.report == first.report
