"""Reading names as prefecture staff write them: numbers, dates, counts."""

from __future__ import annotations

import datetime as dt

import pytest

from censusdrop.server.validation import Prefecture
from censusdrop.server.validation.model import prefecture_names
from censusdrop.server.validation.names import find_count
from censusdrop.server.validation.names import find_dates
from censusdrop.server.validation.names import has_content
from censusdrop.server.validation.names import is_broken
from censusdrop.server.validation.names import item_number
from censusdrop.server.validation.names import other_prefecture
from censusdrop.server.validation.names import printable
from censusdrop.server.validation.names import split_extension
from censusdrop.server.validation.names import sub_item_marker


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("1.武汉市机构设置20200405", 1),
        ("1、武汉市机构设置", 1),
        ("01武汉市机构设置", 1),
        ("01.武汉市机构设置", 1),
        ("1-武汉市机构设置", 1),
        ("1 武汉市机构设置", 1),
        ("1_武汉市机构设置", 1),
        ("１．武汉市机构设置", 1),
        ("１、武汉市机构设置", 1),
        ("１０．武汉市清查表", 10),
        ("22.武汉市成果开发", 22),
        ("十、武汉市清查表", 10),
        ("二十二、成果开发", 22),
        ("第3项 实施方案", 3),
        ("8.1武汉市名录筛查", 8),
    ],
)
def test_leading_item_numbers_are_read_in_every_usual_form(
    name: str, number: int
) -> None:
    assert item_number(name) == number


@pytest.mark.parametrize(
    "name",
    [
        "2020年武汉市材料",
        "20200405武汉市",
        "3月份调度材料",
        "5份清查表",
        "武汉市1.材料",
        "100.材料",
    ],
)
def test_dates_and_quantities_are_not_item_numbers(name: str) -> None:
    assert item_number(name) is None


@pytest.mark.parametrize(
    ("name", "is_dir", "marker"),
    [
        ("①名录筛查", False, 1),
        ("⑤名录比对报告", True, 5),
        ("(2)七表合一", False, 2),
        ("（2）七表合一", False, 2),
        ("2)七表合一", False, 2),
        ("2）七表合一", False, 2),
        ("8-2七表合一", False, 2),
        ("8.2 七表合一", False, 2),
        ("8（2）七表合一", False, 2),
        ("8②七表合一", False, 2),
        ("（二）七表合一", True, 2),
        ("2.七表合一", True, 2),
        ("2.七表合一", False, None),
        ("七表合一", True, None),
    ],
)
def test_sub_item_markers(name: str, is_dir: bool, marker: int | None) -> None:
    assert sub_item_marker(name, 8, is_dir=is_dir) == marker


@pytest.mark.parametrize(
    ("name", "date", "has_day"),
    [
        ("武汉市清查表20200405", dt.date(2020, 4, 5), True),
        ("武汉市清查表2020-04-05", dt.date(2020, 4, 5), True),
        ("武汉市清查表2020-4-5", dt.date(2020, 4, 5), True),
        ("武汉市清查表2020.4.5", dt.date(2020, 4, 5), True),
        ("武汉市清查表2020_04_05", dt.date(2020, 4, 5), True),
        ("武汉市清查表2020年4月5日", dt.date(2020, 4, 5), True),
        ("武汉市清查表2020年04月05号", dt.date(2020, 4, 5), True),
        ("武汉市清查表２０２０．４．５", dt.date(2020, 4, 5), True),
        ("武汉市清查表二〇二〇年四月五日", dt.date(2020, 4, 5), True),
        ("武汉市清查表二〇二〇年十二月三十一日", dt.date(2020, 12, 31), True),
        ("武汉市清查表2020年4月", dt.date(2020, 4, 1), False),
    ],
)
def test_dates_in_common_written_forms(name: str, date: dt.date, has_day: bool) -> None:
    [found] = find_dates(name)
    assert (found.date, found.has_day) == (date, has_day)


@pytest.mark.parametrize(
    "name",
    [
        "武汉市清查表20201305",
        "武汉市清查表20200230",
        "编号420102001001",
        "2017年经费预算",
    ],
)
def test_impossible_or_partial_dates_are_not_dates(name: str) -> None:
    assert find_dates(name) == []


def test_several_dates_are_all_found_in_order() -> None:
    dates = find_dates("2016年10月成立文件20200405")
    assert [d.date for d in dates] == [dt.date(2016, 10, 1), dt.date(2020, 4, 5)]


@pytest.mark.parametrize(
    ("name", "needs_unit", "count"),
    [
        ("武汉市清查表（25份）20200405", True, 25),
        ("武汉市清查表(25份)20200405", True, 25),
        ("武汉市清查表（共25份）", True, 25),
        ("武汉市清查表（２５份）", True, 25),
        ("武汉市照片（6张）", True, 6),
        ("武汉市清查表(25)", False, 25),
        ("武汉市清查表(25)", True, None),
        ("武汉市报告 (2)", True, None),
        ("(1)武汉市清查表", False, None),
        ("武汉市清查表（2017-2019年）", False, None),
    ],
)
def test_counts_in_parentheses(name: str, needs_unit: bool, count: int | None) -> None:
    units = ["份", "张"]
    assert find_count(name, units, unit_required=needs_unit) == count


def test_own_short_name_is_not_taken_for_another_prefecture() -> None:
    own = ["恩施土家族苗族自治州", "恩施州"]
    assert other_prefecture("恩施州清查表", own, ["恩施", "宜昌市"]) is None
    assert other_prefecture("恩施州宜昌市清查表", own, ["宜昌市"]) == "宜昌市"


def test_every_form_of_a_prefecture_name_counts_longest_first() -> None:
    enshi = Prefecture("422800", "恩施土家族苗族自治州", "恩施州", ("恩施", "施州"))
    assert prefecture_names(enshi) == ("恩施土家族苗族自治州", "恩施州", "恩施", "施州")
    assert prefecture_names(Prefecture("420100", "武汉市", "武汉")) == (
        "武汉市",
        "武汉",
    )


def test_a_name_of_only_prefecture_and_date_has_no_content() -> None:
    assert not has_content("1.武汉市20200405", ["武汉市", "武汉"])
    assert has_content("1.武汉市机构设置20200405", ["武汉市", "武汉"])


def test_broken_names_are_recognised_and_made_printable() -> None:
    assert is_broken("武汉\ufffd清查表")
    assert is_broken("\udcce\udce4清查表")
    assert is_broken("清查表\x07")
    assert not is_broken("武汉市清查表（25份）20200405")
    assert printable("\udcce清查表") == "\ufffd清查表"


@pytest.mark.parametrize(
    ("name", "stem", "ext"),
    [
        ("报告.PDF", "报告", "pdf"),
        ("压缩.7z", "压缩", "7z"),
        ("武汉2020.4.5", "武汉2020.4.5", ""),
        (".hidden", ".hidden", ""),
    ],
)
def test_extensions_need_a_letter(name: str, stem: str, ext: str) -> None:
    assert split_extension(name) == (stem, ext)
