"""The checklist file: annex 1 as data, and refusal of malformed files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from censusdrop.config.checklist import FILE_TYPES
from censusdrop.config.checklist import ChecklistError
from censusdrop.config.checklist import bundled_checklist_path
from censusdrop.config.checklist import load_checklist
from censusdrop.config.checklist import parse_checklist
from censusdrop.server.validation.kinds import LABELS

TEXT = bundled_checklist_path().read_text(encoding="utf-8")


def line_of(text: str, fragment: str) -> int:
    """The last line holding ``fragment`` (a duplicate is the later one)."""
    lines = [n for n, line in enumerate(text.splitlines(), 1) if fragment in line]
    return lines[-1]


def test_bundled_checklist_describes_the_22_items_of_annex_1() -> None:
    checklist = load_checklist(bundled_checklist_path())

    assert [i.number for i in checklist.items] == list(range(1, 23))
    assert checklist.census.start == dt.date(2016, 10, 20)
    assert checklist.item(1).forms == ("扫描件",)  # type: ignore[union-attr]
    assert checklist.item(17).forms == ("电子版", "扫描件")  # type: ignore[union-attr]
    twelve = checklist.item(12)
    assert twelve is not None and [s.number for s in twelve.sub_items] == [1, 2, 3, 4]
    assert twelve.sub_items[0].counted and twelve.sub_items[0].confirmation
    assert [i.number for i in checklist.items if i.counted] == [10, 14]
    assert not checklist.item(19).required  # type: ignore[union-attr]
    assert {r.key for r in checklist.reports if r.item == 18} == {
        "bulletin",
        "summary",
        "technical",
        "audit",
        "presentation",
    }
    assert [c.name for c in checklist.basic_info.columns] == [
        "普查小区编号",
        "企业名称",
        "地址",
        "地理信息",
        "联系人",
        "联系方式",
    ]


def test_every_file_type_the_checklist_can_name_has_a_chinese_label() -> None:
    assert set(LABELS) >= FILE_TYPES


@pytest.mark.parametrize(
    ("old", "new", "anchor", "problem"),
    [
        ('forms = ["扫描件"]', 'forms = ["扫描"]', 'forms = ["扫描"]', "unknown form"),
        ("max_depth = 10", "max_depth = -1", "max_depth", "positive"),
        ("header_rows = 10", 'header_rows = "ten"', "header_rows", "expected int"),
        ("start = 2016-10-20", 'start = "2016"', "start =", "date"),
        ('timezone = "Asia/Shanghai"', 'timezone = "Hubei/Wuhan"', "timezone", "zone"),
        ("item = 18", "item = 99", "item = 99", "no item 99"),
        (
            '"pdf", "ofd", "jpeg"',
            '"pdf", "ofdx", "jpeg"',
            '"ofdx"',
            "unknown file type",
        ),
        ("number = 22", "number = 21", "number = 21", "duplicate number"),
        ('severity = "error"', 'severity = "fatal"', "severity", "error or warning"),
        (
            'title = "锅炉信息统计表" }',
            'title = "锅炉", requird = true }',
            "requird",
            "unknown key",
        ),
        (
            "[[items]]\nnumber = 7\n",
            "[[items]]\nnumber = 7\ncolour = 1\n",
            "colour",
            "unknown key",
        ),
    ],
)
def test_malformed_checklist_is_refused_naming_the_line(
    old: str, new: str, anchor: str, problem: str
) -> None:
    assert old in TEXT
    text = TEXT.replace(old, new, 1)

    with pytest.raises(ChecklistError) as caught:
        parse_checklist(text, origin="broken.toml")

    assert caught.value.line == line_of(text, anchor)
    assert problem in caught.value.problem
    assert f"broken.toml, line {caught.value.line}:" in str(caught.value)


def test_invalid_toml_is_refused_with_its_line() -> None:
    text = TEXT.replace("year = 2020", "year = 2020\nyear = = 3", 1)

    with pytest.raises(ChecklistError) as caught:
        parse_checklist(text)

    assert caught.value.line == line_of(text, "year = = 3")


def test_missing_required_key_is_refused() -> None:
    text = TEXT.replace('title = "机构设置"\n', "", 1)

    with pytest.raises(ChecklistError, match="missing key 'title'"):
        parse_checklist(text)


def test_unreadable_file_is_a_checklist_error(tmp_path: Path) -> None:
    path = tmp_path / "checklist.toml"
    path.write_bytes(b"\xff\xfe not utf-8")

    with pytest.raises(ChecklistError, match="cannot read"):
        load_checklist(path)


def test_another_province_is_another_file(tmp_path: Path) -> None:
    text = TEXT.replace('province = "湖北省"', 'province = "湖南省"')
    path = tmp_path / "checklist-hunan-2020.toml"
    path.write_text(text, encoding="utf-8")

    assert load_checklist(path).province == "湖南省"
