"""A file's real type, judged by content, and what makes it unusable."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from censusdrop.server.validation import PASSED
from censusdrop.server.validation import DirectorySource
from censusdrop.server.validation import Limits
from censusdrop.server.validation import SourceEntry
from censusdrop.server.validation import validate
from censusdrop.server.validation.sniff import sniff
from treebuilder import AT
from treebuilder import CHECKLIST
from treebuilder import HUBEI
from treebuilder import WUHAN
from treebuilder import Submission
from treebuilder import build_submission
from treebuilder import csv_bytes
from treebuilder import describe
from treebuilder import doc_bytes
from treebuilder import docx_bytes
from treebuilder import encrypted_ooxml_bytes
from treebuilder import errors
from treebuilder import exe_bytes
from treebuilder import jpeg_bytes
from treebuilder import mp3_bytes
from treebuilder import mp4_bytes
from treebuilder import ofd_bytes
from treebuilder import ole2_bytes
from treebuilder import pdf_bytes
from treebuilder import png_bytes
from treebuilder import pptx_bytes
from treebuilder import rules
from treebuilder import tiff_bytes
from treebuilder import xls_bytes
from treebuilder import xlsx_bytes


def kind_of(data: bytes, ext: str = "") -> tuple[str, str | None]:
    kind = sniff(io.BytesIO(data), len(data), ext, Limits())
    return kind.type, kind.problem


@pytest.mark.parametrize(
    ("make", "ext", "expected"),
    [
        (pdf_bytes, "pdf", "pdf"),
        (jpeg_bytes, "jpg", "jpeg"),
        (png_bytes, "png", "png"),
        (tiff_bytes, "tif", "tiff"),
        (mp4_bytes, "mp4", "mp4"),
        (mp3_bytes, "mp3", "mp3"),
        (docx_bytes, "docx", "docx"),
        (pptx_bytes, "pptx", "pptx"),
        (ofd_bytes, "ofd", "ofd"),
        (lambda: xlsx_bytes([["a"]]), "xlsx", "xlsx"),
        (lambda: xls_bytes([["a"]]), "xls", "xls"),
        (lambda: xls_bytes([["a"]]), "et", "et"),
        (doc_bytes, "doc", "doc"),
        (doc_bytes, "wps", "wps"),
        (lambda: csv_bytes([["普查小区编号", "企业名称"]], "gb18030"), "csv", "csv"),
    ],
)
def test_real_types_are_told_by_content(
    make: Callable[[], bytes], ext: str, expected: str
) -> None:
    assert kind_of(make(), ext) == (expected, None)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "file.empty"),
        (exe_bytes(), "file.executable"),
        (b"\x7fELF\x02\x01\x01" + bytes(64), "file.executable"),
        (b"\xcf\xfa\xed\xfe" + bytes(64), "file.executable"),
        (b"#!/bin/sh\nrm -rf /\n", "file.executable"),
        (pdf_bytes(encrypted=True), "file.encrypted"),
        (doc_bytes(encrypted=True), "file.encrypted"),
        (encrypted_ooxml_bytes(), "file.encrypted"),
        (pdf_bytes()[:200], "file.corrupt"),
        (jpeg_bytes()[:-2], "file.corrupt"),
        (png_bytes()[:-12], "file.corrupt"),
        (docx_bytes()[:300], "file.corrupt"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "file.corrupt"),
    ],
)
def test_unusable_files_are_recognised(data: bytes, problem: str) -> None:
    assert kind_of(data, "pdf")[1] == problem


def test_zip_with_an_encrypted_member_is_password_protected() -> None:
    data = bytearray(docx_bytes())
    # Set the "encrypted" flag in every local and central header.
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = data.find(signature)
        while start != -1:
            data[start + offset] |= 0x1
            start = data.find(signature, start + 4)

    assert kind_of(bytes(data), "docx") == ("docx", "file.encrypted")


def test_zip_lying_about_its_size_is_a_bomb_without_decompressing() -> None:
    data = bytearray(docx_bytes())
    central = data.find(b"PK\x01\x02")
    data[central + 24 : central + 28] = (3 << 30).to_bytes(4, "little")

    kind = sniff(
        io.BytesIO(bytes(data)), len(data), "docx", Limits(max_total_bytes=1 << 30)
    )

    assert kind.problem == "file.zip_bomb"


def test_zip_with_too_many_members_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for n in range(30):
            archive.writestr(f"{n}.txt", "x")
    data = buffer.getvalue()

    kind = sniff(io.BytesIO(data), len(data), "zip", Limits(max_members=20))

    assert kind.problem == "file.zip_bomb"


def test_msi_installer_is_an_executable() -> None:
    clsid = bytes.fromhex("84100c0000000000c000000000000046")  # 000C1084-…-46
    data = ole2_bytes({"\u4840\u3b3f": b"x"}, clsid=clsid)

    assert kind_of(data, "doc")[1] == "file.executable"


def test_macro_document_is_a_warning(tmp_path: Path) -> None:
    sub = build_submission(tmp_path / "area")
    buffer = io.BytesIO(docx_bytes())
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("word/vbaProject.bin", b"\0" * 32)
    sub.write(f"{sub.item(22).name}/武汉市专题报告20200405.docx", buffer.getvalue())

    report = sub.validate()

    assert report.verdict == PASSED, describe(report)
    assert rules(report) == {"file.macro"}


@pytest.fixture
def sub(tmp_path: Path) -> Submission:
    return build_submission(tmp_path / "area")


def test_electronic_document_in_a_scan_only_item_is_an_error(sub: Submission) -> None:
    sub.write(f"{sub.item(1).name}/武汉市机构设置说明20200405.docx", docx_bytes())

    report = sub.validate()

    assert errors(report) == {"file.type_not_accepted"}, describe(report)
    assert "扫描件" in report.errors[0].message


def test_scan_in_an_electronic_only_item_is_accepted_when_listed(
    sub: Submission,
) -> None:
    sub.write(f"{sub.item(7).name}/武汉市培训签到表20200405.pdf", pdf_bytes())

    assert sub.validate().verdict == PASSED


def test_archive_in_an_electronic_item_is_a_warning(sub: Submission) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("照片.jpg", jpeg_bytes())
    sub.write(f"{sub.item(6).name}/武汉市宣传照片合集20200405.zip", buffer.getvalue())

    report = sub.validate()

    assert report.verdict == PASSED, describe(report)
    assert rules(report) == {"file.archive"}


def test_wrong_extension_is_a_warning(sub: Submission) -> None:
    sub.write(f"{sub.item(6).name}/武汉市宣传照片20200406.pdf", jpeg_bytes())

    report = sub.validate()

    assert report.verdict == PASSED, describe(report)
    assert rules(report) == {"file.ext_mismatch"}


def test_dangerous_extension_is_refused_whatever_the_content(sub: Submission) -> None:
    sub.write(f"{sub.item(6).name}/武汉市宣传脚本20200405.bat", b"echo hello\r\n")

    assert errors(sub.validate()) == {"file.executable"}


def test_office_lock_file_is_a_warning(sub: Submission) -> None:
    sub.write(f"{sub.item(5).name}/~$两员选聘管理文件20200405.docx", b"\x00" * 162)

    assert rules(sub.validate()) == {"name.temporary"}


def test_system_clutter_is_ignored(sub: Submission) -> None:
    sub.write(f"{sub.item(6).name}/Thumbs.db", b"\xd0\xcf\x11\xe0")

    assert sub.validate().findings == ()


def test_many_files_with_one_problem_are_folded_per_folder(sub: Submission) -> None:
    for n in range(6):
        sub.write(f"{sub.item(6).name}/IMG_{n:04d}武汉市宣传20200405.jpg", jpeg_bytes())
        sub.write(f"{sub.item(6).name}/IMG_{n:04d}.jpg", jpeg_bytes())

    report = sub.validate()

    folded = [f for f in report.findings if f.rule == "name.no_date"]
    assert len(folded) == 1, describe(report)
    assert folded[0].path == sub.item(6).name and "6个文件" in folded[0].message


@pytest.mark.parametrize(
    ("kind", "header"),
    [
        (
            "csv-gb18030",
            ["普查小区编号", "企业名称", "地址", "经度", "纬度", "联系人", "电话"],
        ),
        ("xls", ["小区编号", "单位名称", "详细地址", "地理坐标", "负责人", "手机号码"]),
        (
            "xlsx",
            [
                "普查小区编号",
                "企业（单位）名称",
                "地址",
                "经纬度",
                "联系人",
                "联系电话",
            ],
        ),
    ],
)
def test_basic_info_tables_with_variant_columns_pass(
    sub: Submission, kind: str, header: list[str]
) -> None:
    table = next(sub.find("工业源清查表（2份）").glob("*基本信息表*"))
    rows = [["武汉市工业源基本信息表"], header]
    data = {
        "csv-gb18030": lambda: csv_bytes(rows, "gb18030"),
        "xls": lambda: xls_bytes(rows),
        "xlsx": lambda: xlsx_bytes(rows),
    }[kind]()
    table.unlink()
    suffix = "csv" if kind.startswith("csv") else kind
    (table.parent / f"武汉市工业源基本信息表20200405.{suffix}").write_bytes(data)

    report = sub.validate()

    assert report.verdict == PASSED, describe(report)


def test_contact_phone_column_does_not_stand_for_the_contact_person(
    sub: Submission,
) -> None:
    table = next(sub.find("工业源清查表（2份）").glob("*基本信息表*"))
    header = ["普查小区编号", "企业名称", "地址", "地理信息", "联系人电话"]
    table.write_bytes(xlsx_bytes([header]))

    report = sub.validate()

    assert errors(report) == {"basic_info.columns"}
    assert "联系人" in report.errors[0].message


def test_spreadsheet_that_cannot_be_parsed_is_an_error(sub: Submission) -> None:
    table = next(sub.find("工业源清查表（2份）").glob("*基本信息表*"))
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(table.read_bytes())) as src,
        zipfile.ZipFile(buffer, "w") as dst,
    ):
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(
                info, b"<broken" if info.filename == "xl/workbook.xml" else data
            )
    table.write_bytes(buffer.getvalue())

    assert errors(sub.validate()) == {"basic_info.unreadable"}


class FailingSource(DirectorySource):
    """A source whose reads fail for one file, as a storage fault would."""

    def __init__(self, root: Path, broken: str) -> None:
        super().__init__(root)
        self.broken = broken

    def open(self, path: str) -> BinaryIO:
        if path == self.broken:
            raise RuntimeError("storage fault")
        return super().open(path)


def test_a_crash_on_one_file_becomes_an_error_not_a_pass(sub: Submission) -> None:
    target = next(sub.item(3).iterdir())
    source = FailingSource(sub.root, str(target.relative_to(sub.root)))

    report = validate(source, CHECKLIST, WUHAN, at=AT, others=HUBEI)

    assert errors(report) == {"file.check_failed"}
    assert "检查该文件时出错" in report.errors[0].message


class BrokenWalk:
    def walk(self) -> Iterator[SourceEntry]:
        yield SourceEntry("1.武汉市机构设置20200405", True, 0, 0.0)
        raise OSError("disk gone")

    def open(self, path: str) -> BinaryIO:
        raise OSError("disk gone")


def test_a_tree_that_cannot_be_listed_never_passes() -> None:
    report = validate(BrokenWalk(), CHECKLIST, WUHAN, at=AT)

    assert "tree.unreadable" in errors(report)
    assert report.verdict != PASSED
