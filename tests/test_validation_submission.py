"""Whole submissions judged against the Hubei checklist.

Each test builds a complete, passing submission and breaks it in one way;
it then checks the verdict and that exactly the expected errors appear.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest

from censusdrop.server.validation import PASSED
from censusdrop.server.validation import RETURNED
from censusdrop.server.validation import Severity
from treebuilder import ENSHI
from treebuilder import Submission
from treebuilder import build_submission
from treebuilder import describe
from treebuilder import errors
from treebuilder import exe_bytes
from treebuilder import pdf_bytes
from treebuilder import rules
from treebuilder import xlsx_bytes
from treebuilder import zip_bomb_bytes


@pytest.fixture
def sub(tmp_path: Path) -> Submission:
    return build_submission(tmp_path / "area")


def only_errors(sub: Submission, *expected: str) -> None:
    report = sub.validate()
    assert report.verdict == RETURNED, describe(report)
    assert errors(report) == set(expected), describe(report)


def test_complete_submission_passes_without_findings(sub: Submission) -> None:
    report = sub.validate()

    assert report.verdict == PASSED, describe(report)
    assert report.findings == ()
    assert all(item.present for item in report.items)
    assert report.digest.files == 65


def test_missing_item_is_an_error_naming_the_item(sub: Submission) -> None:
    shutil.rmtree(sub.item(5))

    report = sub.validate()

    assert errors(report) == {"item.missing"}, describe(report)
    [finding] = report.errors
    assert finding.item == 5
    assert "两员管理" in finding.message and "5." in finding.message


def test_missing_optional_item_still_passes(sub: Submission) -> None:
    shutil.rmtree(sub.item(19))

    report = sub.validate()

    assert report.verdict == PASSED, describe(report)
    assert not report.items[18].present


def test_missing_sub_item_is_an_error_naming_it(sub: Submission) -> None:
    shutil.rmtree(sub.find("③武汉市逐户摸底照片和简报20200405"))

    report = sub.validate()

    assert errors(report) == {"subitem.missing"}, describe(report)
    [finding] = report.errors
    assert finding.item == 8 and "第3小项" in finding.message and "③" in finding.message


@pytest.mark.parametrize("marker", ["(3)", "（3）", "3)", "8-3", "8.3", "3.", "3、"])
def test_sub_item_folders_may_be_marked_in_the_usual_ways(
    sub: Submission, marker: str
) -> None:
    folder = sub.find("③武汉市逐户摸底照片和简报20200405")
    folder.rename(folder.with_name(f"{marker}武汉市逐户摸底照片和简报20200405"))

    report = sub.validate()

    assert report.verdict == PASSED, describe(report)


def test_two_folders_for_one_item_is_a_warning(sub: Submission) -> None:
    sub.write(
        f"2、{sub.prefecture.name}人员配置补充{sub.date}/武汉市补充文件20200405.pdf",
        pdf_bytes(),
    )

    report = sub.validate()

    assert report.verdict == PASSED, describe(report)
    assert rules(report) == {"item.duplicate"}


def test_folder_numbered_outside_the_checklist_is_a_warning(sub: Submission) -> None:
    sub.write("23.武汉市其他材料20200405/武汉市其他材料20200405.pdf", pdf_bytes())

    report = sub.validate()

    assert report.verdict == PASSED, describe(report)
    assert rules(report) == {"item.unknown_number"}


def test_material_outside_every_item_is_a_warning(sub: Submission) -> None:
    sub.write("武汉市其他材料20200405/武汉市说明20200405.pdf", pdf_bytes())

    report = sub.validate()

    assert report.verdict == PASSED, describe(report)
    assert rules(report) == {"tree.unassigned"}
    assert report.warnings[0].path == "武汉市其他材料20200405"


def test_naive_time_is_taken_as_census_local_time(sub: Submission) -> None:
    sub.write(f"{sub.item(2).name}/武汉市人员调整文件20200420.pdf", pdf_bytes())

    report = sub.validate(at=dt.datetime(2020, 4, 20, 0, 30))

    assert report.verdict == PASSED, describe(report)
    assert report.judged_at.utcoffset() == dt.timedelta(hours=8)


def test_empty_item_folder_is_an_error(sub: Submission) -> None:
    for child in sub.item(17).iterdir():
        child.unlink()

    only_errors(sub, "item.empty")


@pytest.mark.parametrize(
    "prefix",
    ["2.", "2、", "02", "02.", "2-", "2 ", "2_", "２．", "２、", "２", "二、", "第2项"],
)
def test_item_folders_are_found_by_any_usual_number_form(
    sub: Submission, prefix: str
) -> None:
    folder = sub.item(2)  # no link of the self-assessment leads into item 2
    folder.rename(folder.with_name(prefix + folder.name.removeprefix("2.")))

    report = sub.validate()

    assert report.verdict == PASSED, describe(report)
    assert report.items[1].present


def test_items_inside_one_wrapper_folder_are_found(sub: Submission) -> None:
    wrapper = sub.root / "武汉市普查验收资料20200405"
    wrapper.mkdir()
    for child in list(sub.root.iterdir()):
        if child != wrapper:
            child.rename(wrapper / child.name)

    report = sub.validate()

    assert report.verdict == PASSED, describe(report)


def test_file_without_date_is_an_error(sub: Submission) -> None:
    sub.write(f"{sub.item(2).name}/武汉市人员调整文件.pdf", pdf_bytes())

    only_errors(sub, "name.no_date")


@pytest.mark.parametrize(
    "date",
    [
        "2020-04-05",
        "2020.4.5",
        "2020年4月5日",
        "2020_04_05",
        "2020 04 05",
        "２０２０．０４．０５",
        "２０２０年４月５日",
        "二〇二〇年四月五日",
        "2020年4月",
    ],
)
def test_dates_in_any_common_form_are_accepted(sub: Submission, date: str) -> None:
    sub.write(f"{sub.item(2).name}/武汉市人员调整文件{date}.pdf", pdf_bytes())

    report = sub.validate()

    assert report.verdict == PASSED, describe(report)


@pytest.mark.parametrize(
    ("date", "rule"),
    [
        ("20200501", "name.date_future"),
        ("2020年5月", "name.date_future"),
        ("20150301", "name.date_too_early"),
        ("20201341", "name.no_date"),
    ],
)
def test_impossible_dates_are_errors(sub: Submission, date: str, rule: str) -> None:
    sub.write(f"{sub.item(2).name}/武汉市人员调整文件{date}.pdf", pdf_bytes())

    only_errors(sub, rule)


def test_folder_without_prefecture_name_is_an_error(sub: Submission) -> None:
    folder = sub.item(9)
    folder.rename(folder.with_name("9.清查质量核查20200405"))

    only_errors(sub, "name.no_prefecture")


def test_another_prefectures_name_is_an_error(sub: Submission) -> None:
    sub.write(f"{sub.item(2).name}/武汉市黄石市人员配备文件20200405.pdf", pdf_bytes())

    report = sub.validate()

    assert errors(report) == {"name.other_prefecture"}, describe(report)
    assert "黄石市" in report.errors[0].message


def test_a_short_name_of_another_prefecture_is_recognised(sub: Submission) -> None:
    sub.write(f"{sub.item(2).name}/武汉市与恩施州交流材料20200405.pdf", pdf_bytes())

    only_errors(sub, "name.other_prefecture")


def test_a_prefecture_named_by_its_short_form_passes(tmp_path: Path) -> None:
    enshi = build_submission(tmp_path / "enshi", ENSHI, written_name="恩施州")

    report = enshi.validate()

    assert report.verdict == PASSED, describe(report)


def test_a_prefecture_named_by_an_alias_from_its_list_passes(tmp_path: Path) -> None:
    assert ENSHI.aliases == ("恩施",)  # from config/data/prefectures-hubei.toml
    enshi = build_submission(tmp_path / "enshi", ENSHI, written_name="恩施")

    report = enshi.validate()

    assert report.verdict == PASSED, describe(report)


def test_an_alias_of_another_prefecture_is_recognised(sub: Submission) -> None:
    sub.write(f"{sub.item(2).name}/武汉市与恩施交流材料20200405.pdf", pdf_bytes())

    report = sub.validate()

    assert errors(report) == {"name.other_prefecture"}, describe(report)
    assert "“恩施”" in report.errors[0].message


def test_count_that_does_not_match_the_folder_is_an_error(sub: Submission) -> None:
    folder = sub.find("工业源清查表（2份）")
    folder.rename(folder.with_name(folder.name.replace("（2份）", "（25份）")))

    report = sub.validate()

    assert errors(report) == {"count.mismatch"}, describe(report)
    assert "25份" in report.errors[0].message and "2份" in report.errors[0].message


def test_an_extra_scan_breaks_the_count(sub: Submission) -> None:
    folder = sub.find("工业源清查表（2份）")
    (folder / "武汉市第9号企业工业源表20200405.pdf").write_bytes(pdf_bytes())

    only_errors(sub, "count.mismatch")


def test_half_width_count_is_read_too(sub: Submission) -> None:
    folder = sub.find("工业源清查表（2份）")
    folder.rename(folder.with_name(folder.name.replace("（2份）", "(2份)")))

    assert sub.validate().verdict == PASSED


def test_counted_folder_without_count_is_an_error(sub: Submission) -> None:
    folder = sub.find("工业源清查表（2份）")
    folder.rename(folder.with_name(folder.name.replace("（2份）", "")))

    only_errors(sub, "count.missing")


def test_counted_material_outside_source_folders_is_an_error(sub: Submission) -> None:
    sub.write(f"{sub.item(10).name}/武汉市某企业清查表20200405.pdf", pdf_bytes())

    only_errors(sub, "source.unsorted", "count.missing")


def test_counted_item_without_source_folders_is_an_error(sub: Submission) -> None:
    folder = sub.find("工业源三种状态佐证材料（2份）")
    folder.rename(folder.with_name("武汉市三种状态佐证材料（2份）20200405"))

    only_errors(sub, "source.missing")


def test_source_folder_without_basic_info_table_is_an_error(sub: Submission) -> None:
    table = next(sub.find("工业源清查表（2份）").glob("*基本信息表*"))
    table.unlink()

    report = sub.validate()

    assert errors(report) == {"basic_info.missing"}, describe(report)
    assert "工业源清查表" in report.errors[0].path


def test_region_folder_without_basic_info_table_is_an_error(sub: Submission) -> None:
    next(sub.find("江岸区生活源清查表").glob("*基本信息表*")).unlink()

    report = sub.validate()

    assert errors(report) == {"basic_info.missing"}, describe(report)
    assert report.errors[0].path.endswith("江岸区生活源清查表（2份）20200405")


def test_basic_info_table_missing_a_column_is_an_error(sub: Submission) -> None:
    table = next(sub.find("工业源清查表（2份）").glob("*基本信息表*"))
    header = ["序号", "普查小区编号", "企业名称", "地址", "地理信息", "联系人"]
    table.write_bytes(xlsx_bytes([["基本信息表"], header]))

    report = sub.validate()

    assert errors(report) == {"basic_info.columns"}, describe(report)
    assert "联系方式" in report.errors[0].message


def test_missing_confirmation_document_is_an_error(sub: Submission) -> None:
    sub.find("普查表确认文件").unlink()

    report = sub.validate()

    assert errors(report) == {"confirmation.missing"}, describe(report)
    assert report.errors[0].item == 12


def test_executable_renamed_pdf_is_an_error(sub: Submission) -> None:
    sub.write(f"{sub.item(1).name}/武汉市补充文件20200405.pdf", exe_bytes())

    only_errors(sub, "file.executable")


def test_corrupt_xlsx_is_an_error(sub: Submission) -> None:
    table = next(sub.find("工业源清查表（2份）").glob("*基本信息表*"))
    data = table.read_bytes()
    table.write_bytes(data[: len(data) // 2])

    only_errors(sub, "file.corrupt")


def test_zero_byte_file_is_an_error(sub: Submission) -> None:
    sub.write(f"{sub.item(3).name}/武汉市实施方案补充20200405.pdf", b"")

    only_errors(sub, "file.empty")


def test_zip_bomb_is_an_error_and_is_not_extracted(sub: Submission) -> None:
    before = set(sub.root.rglob("*"))
    bomb = sub.write(f"{sub.item(6).name}/武汉市宣传材料20200405.zip", zip_bomb_bytes())

    only_errors(sub, "file.zip_bomb")
    assert set(sub.root.rglob("*")) == before | {bomb}


def test_name_with_replacement_character_is_an_error(sub: Submission) -> None:
    sub.write(f"{sub.item(3).name}/武汉市\ufffd\ufffd方案20200405.pdf", pdf_bytes())

    only_errors(sub, "name.bad_encoding")


def test_name_in_gbk_bytes_is_an_error_and_the_report_stays_printable(
    sub: Submission,
) -> None:
    folder = os.fsencode(sub.item(3))
    name = "武汉市实施方案补充20200405.pdf".encode("gbk")
    with open(os.path.join(folder, name), "wb") as fp:
        fp.write(pdf_bytes())

    report = sub.validate()

    assert errors(report) == {"name.bad_encoding"}, describe(report)
    report.errors[0].path.encode("utf-8")  # no lone surrogates left


def test_twenty_level_deep_tree_is_an_error(sub: Submission) -> None:
    folder = sub.item(9)
    for level in range(1, 21):
        folder = folder / f"武汉市第{level}层核查材料20200405"
    folder.mkdir(parents=True)
    (folder / "武汉市核查记录20200405.pdf").write_bytes(pdf_bytes())

    report = sub.validate()

    assert errors(report) == {"tree.too_deep"}, describe(report)
    assert "第21层" in report.errors[0].message


def test_report_counts_findings_per_item(sub: Submission) -> None:
    sub.write(f"{sub.item(2).name}/武汉市人员调整文件.pdf", pdf_bytes())
    sub.write(
        f"{sub.item(2).name}/武汉市人员名单20200405.zip", b"PK\x05\x06" + bytes(18)
    )

    report = sub.validate()

    summary = report.items[1]
    assert (summary.number, summary.errors) == (2, 2), describe(report)
    assert all(f.severity is Severity.ERROR for f in report.errors)
