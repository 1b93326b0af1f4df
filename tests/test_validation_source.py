"""Reading a tree: the plain directory source and the tree digest."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from censusdrop.server.validation import PASSED
from censusdrop.server.validation import DirectorySource
from censusdrop.server.validation import SourceEntry
from censusdrop.server.validation import SourceError
from censusdrop.server.validation import validate
from treebuilder import AT
from treebuilder import CHECKLIST
from treebuilder import HUBEI
from treebuilder import WUHAN
from treebuilder import build_submission
from treebuilder import describe


def test_directory_source_lists_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.pdf").write_bytes(b"12345")

    entries = {e.path: e for e in DirectorySource(tmp_path).walk()}

    assert set(entries) == {"a", "a/b", "a/b/x.pdf"}
    assert entries["a/b/x.pdf"].size == 5 and not entries["a/b/x.pdf"].is_dir
    assert entries["a"].is_dir


def test_symlinks_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.pdf").write_bytes(b"secret")
    root = tmp_path / "area"
    root.mkdir()
    (root / "link.pdf").symlink_to(outside / "secret.pdf")
    (root / "linkdir").symlink_to(outside)

    source = DirectorySource(root)

    assert list(source.walk()) == []
    assert sorted(source.refused) == ["link.pdf", "linkdir"]
    with pytest.raises(SourceError):
        source.open("link.pdf")
    with pytest.raises(SourceError):
        source.open("linkdir/secret.pdf")


@pytest.mark.parametrize("path", ["../outside.pdf", "/etc/passwd", "a//b", "./a", ""])
def test_paths_leaving_the_root_are_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(SourceError):
        DirectorySource(tmp_path).open(path)


def test_digest_is_stable_and_changes_with_the_tree(tmp_path: Path) -> None:
    sub = build_submission(tmp_path / "area")
    first = sub.validate().digest

    assert sub.validate().digest == first
    sub.write(f"{sub.item(6).name}/武汉市宣传照片补充20200405.jpg", b"\xff\xd8\xff\xd9")
    assert sub.validate().digest.sha256 != first.sha256
    assert first.kind == "metadata"


class HashedSource(DirectorySource):
    """A source that knows each file's SHA-256, as the storage index does."""

    def walk(self) -> Iterator[SourceEntry]:
        for entry in super().walk():
            digest = None if entry.is_dir else f"{entry.size:064x}"
            yield SourceEntry(entry.path, entry.is_dir, entry.size, 0.0, digest)


def test_digest_covers_contents_when_the_source_knows_them(tmp_path: Path) -> None:
    sub = build_submission(tmp_path / "area")

    report = validate(HashedSource(sub.root), CHECKLIST, WUHAN, at=AT, others=HUBEI)

    assert report.digest.kind == "content"
    assert report.verdict == PASSED, describe(report)


def test_ignored_paths_are_neither_checked_nor_digested(tmp_path: Path) -> None:
    sub = build_submission(tmp_path / "area")
    before = sub.validate().digest
    sub.write("预审报告.txt", b"")
    sub.write("预审报告.html", b"")

    report = sub.validate(ignore={"预审报告.txt", "预审报告.html"})

    assert report.verdict == PASSED, describe(report)
    assert report.digest == before


class FilesOnly:
    """A source that lists only files, as an object store might."""

    def __init__(self, inner: DirectorySource) -> None:
        self.inner = inner

    def walk(self) -> Iterator[SourceEntry]:
        return (e for e in self.inner.walk() if not e.is_dir)

    def open(self, path: str) -> BinaryIO:
        return self.inner.open(path)


def test_folders_are_implied_when_a_source_lists_only_files(tmp_path: Path) -> None:
    sub = build_submission(tmp_path / "area")
    source = FilesOnly(DirectorySource(sub.root))

    report = validate(source, CHECKLIST, WUHAN, at=AT, others=HUBEI)

    assert report.verdict == PASSED, describe(report)


def test_too_many_entries_stop_the_walk_with_an_error(tmp_path: Path) -> None:
    sub = build_submission(tmp_path / "area")
    files = dataclasses.replace(CHECKLIST.files, max_files=20)
    checklist = dataclasses.replace(CHECKLIST, files=files)

    report = validate(DirectorySource(sub.root), checklist, WUHAN, at=AT)

    assert "tree.too_many_files" in {f.rule for f in report.errors}
