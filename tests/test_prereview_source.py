"""The storage layer as the validator's tree source, and which file events
count as a change of an area."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from watchdog.events import DirCreatedEvent
from watchdog.events import FileClosedEvent
from watchdog.events import FileCreatedEvent
from watchdog.events import FileDeletedEvent
from watchdog.events import FileModifiedEvent
from watchdog.events import FileMovedEvent
from watchdog.events import FileOpenedEvent

from censusdrop.server.prereview import MARKER_NAME
from censusdrop.server.prereview import StorageSource
from censusdrop.server.prereview import is_marker
from censusdrop.server.prereview.watcher import AreaEvents
from censusdrop.server.prereview.watcher import poll_interval
from censusdrop.server.storage.store import Storage
from censusdrop.server.validation import SourceError
from censusdrop.server.validation import TreeChanged
from censusdrop.server.validation import validate
from conftest import Instance
from prereviewkit import WUHAN
from prereviewkit import store_tree
from treebuilder import AT
from treebuilder import CHECKLIST
from treebuilder import HUBEI
from treebuilder import WUHAN as WUHAN_PREFECTURE
from treebuilder import build_submission
from treebuilder import docx_bytes
from treebuilder import errors
from treebuilder import exe_bytes


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    services = Instance(tmp_path / "instance", url).services()
    services.storage.prepare()
    try:
        yield services.storage
    finally:
        services.audit.close()
        services.engine.dispose()


def test_a_stored_tree_judges_like_the_same_folder(
    storage: Storage, tmp_path: Path
) -> None:
    tree = build_submission(tmp_path / "tree")
    tree.find("普查领导小组成立文件").write_bytes(exe_bytes())
    tree.find("经费预算和使用明细").write_bytes(b"PK\x03\x04 broken")
    store_tree(storage, WUHAN, tree.root)

    source = StorageSource(storage, WUHAN)
    stored = validate(source, CHECKLIST, WUHAN_PREFECTURE, at=AT, others=HUBEI)
    plain = tree.validate()
    assert stored.findings == plain.findings
    assert stored.verdict == plain.verdict == "退回补充完善"
    assert {"file.executable", "file.corrupt"} <= errors(stored)
    assert stored.digest.kind == "content"
    assert (stored.digest.files, stored.digest.folders) == (65, 44)


def test_digest_follows_content_not_only_names(storage: Storage) -> None:
    storage.ensure_area(WUHAN)
    storage.write_bytes(WUHAN, "a.pdf", b"%PDF-1.4 one", None)
    source = StorageSource(storage, WUHAN)
    first = {e.path: e.sha256 for e in source.walk()}
    storage.write_bytes(WUHAN, "a.pdf", b"%PDF-1.4 two", None)
    second = {e.path: e.sha256 for e in source.walk()}
    assert first["a.pdf"] and second["a.pdf"] and first != second


def test_reports_and_the_marker_are_left_out(storage: Storage) -> None:
    storage.ensure_area(WUHAN)
    storage.mkdir(WUHAN, "资料")
    for name in ("预审报告.txt", "预审报告.html", MARKER_NAME, "资料/预审报告.txt"):
        storage.write_bytes(WUHAN, name, b"x", None)
    paths = {entry.path for entry in StorageSource(storage, WUHAN).walk()}
    # Only the root's report names are the server's; deeper ones are uploads.
    assert paths == {"资料", "资料/预审报告.txt"}


def test_an_area_nobody_has_used_is_an_empty_tree(storage: Storage) -> None:
    assert list(StorageSource(storage, WUHAN).walk()) == []


def test_open_decrypts_and_seeks_like_a_file(storage: Storage) -> None:
    storage.ensure_area(WUHAN)
    storage.write_bytes(WUHAN, "报告.docx", docx_bytes("自评估"), None)
    with StorageSource(storage, WUHAN).open("报告.docx") as handle:
        assert handle.seekable()
        with zipfile.ZipFile(handle) as archive:
            assert "word/document.xml" in archive.namelist()
        handle.seek(0)
        assert handle.read(2) == b"PK"


def test_open_refuses_missing_files_and_escapes(storage: Storage) -> None:
    storage.ensure_area(WUHAN)
    source = StorageSource(storage, WUHAN)
    for path in ("没有.pdf", "../422800/x.pdf"):
        with pytest.raises(SourceError):
            source.open(path)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("提交完成.txt", True),
        ("提交完成.TXT", True),
        ("提交完成.docx", True),
        ("提交完成", True),
        ("提交完成说明.txt", False),
        ("资料/提交完成.txt", False),
        ("未提交完成.txt", False),
    ],
)
def test_completion_marker_names(name: str, expected: bool) -> None:
    assert is_marker(name) is expected


AREAS = Path("/srv/data/areas")


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (FileCreatedEvent(f"{AREAS}/{WUHAN}/1.机构设置/文件.pdf"), {WUHAN}),
        (FileDeletedEvent(f"{AREAS}/{WUHAN}/文件.pdf"), {WUHAN}),
        (DirCreatedEvent(f"{AREAS}/{WUHAN}/新文件夹"), {WUHAN}),
        (FileMovedEvent(f"{AREAS}/{WUHAN}/a.pdf", f"{AREAS}/{WUHAN}/b.pdf"), {WUHAN}),
        (FileMovedEvent(f"{AREAS}/{WUHAN}/a.pdf", "/srv/data/versions/x"), {WUHAN}),
        (FileMovedEvent("/srv/data/staging/t.part", f"{AREAS}/{WUHAN}/a"), {WUHAN}),
        (FileCreatedEvent(f"{AREAS}/{WUHAN}/{MARKER_NAME}"), {WUHAN}),
        # the server's own reports, at the root of an area: never a trigger
        (FileCreatedEvent(f"{AREAS}/{WUHAN}/预审报告.txt"), set()),
        (FileDeletedEvent(f"{AREAS}/{WUHAN}/预审报告.html"), set()),
        # reading, opening, modifying in place: not a committed change
        (FileOpenedEvent(f"{AREAS}/{WUHAN}/文件.pdf"), set()),
        (FileClosedEvent(f"{AREAS}/{WUHAN}/文件.pdf"), set()),
        (FileModifiedEvent(f"{AREAS}/{WUHAN}/文件.pdf"), set()),
        # outside the areas, the area folder itself, not a prefecture
        (FileCreatedEvent("/srv/data/staging/t.part"), set()),
        (DirCreatedEvent(f"{AREAS}/{WUHAN}"), set()),
        (FileCreatedEvent(f"{AREAS}/999999/文件.pdf"), set()),
        (FileCreatedEvent(f"{AREAS}/../staging/{WUHAN}/x"), set()),
    ],
)
def test_which_events_count_as_a_change(event, expected: set[str]) -> None:
    seen: list[str] = []
    AreaEvents(AREAS, [WUHAN, "422800"], seen.append).on_any_event(event)
    assert set(seen) == expected


def test_polling_interval_stays_inside_the_quiet_period() -> None:
    assert poll_interval(0.5) == 0.125
    assert poll_interval(10) == 2.0
    assert poll_interval(0) == 0.1


def test_a_file_swapped_on_disk_is_refused_not_judged(storage: Storage) -> None:
    storage.ensure_area(WUHAN)
    storage.write_bytes(WUHAN, "a.pdf", b"%PDF-1.4 a", None)
    storage.write_bytes(WUHAN, "b.pdf", b"%PDF-1.4 b", None)
    area = storage.root / "areas" / WUHAN
    # Behind the storage layer's back: a's encrypted file now also at b.
    (area / "b.pdf").write_bytes((area / "a.pdf").read_bytes())
    source = StorageSource(storage, WUHAN)
    list(source.walk())
    with source.open("a.pdf") as handle:
        assert handle.read() == b"%PDF-1.4 a"
    with pytest.raises(SourceError) as caught:
        source.open("b.pdf")
    assert not isinstance(caught.value, TreeChanged)  # damage, not a change


@pytest.mark.parametrize("change", ["replaced", "deleted"])
def test_a_file_changed_after_the_walk_voids_the_run(
    storage: Storage, change: str
) -> None:
    storage.ensure_area(WUHAN)
    storage.write_bytes(WUHAN, "a.pdf", b"%PDF-1.4 a", None)
    source = StorageSource(storage, WUHAN)
    list(source.walk())
    if change == "replaced":
        storage.write_bytes(WUHAN, "a.pdf", b"%PDF-1.4 newer", None)
    else:
        storage.remove(WUHAN, "a.pdf", None)
    with pytest.raises(TreeChanged):
        source.open("a.pdf")


def test_a_destroyed_round_key_fails_the_run_never_passes_it(
    storage: Storage, tmp_path: Path
) -> None:
    store_tree(storage, WUHAN, build_submission(tmp_path / "tree").root)
    storage.keyring.destroy_round_key(storage.key_name)
    report = validate(
        StorageSource(storage, WUHAN), CHECKLIST, WUHAN_PREFECTURE, at=AT, others=HUBEI
    )
    assert report.verdict == "退回补充完善"
    assert "file.check_failed" in errors(report)
