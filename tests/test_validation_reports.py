"""The required reports, the self-assessment's links, and the rendered report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from censusdrop.server.validation import PASSED
from censusdrop.server.validation import render_html
from censusdrop.server.validation import render_text
from censusdrop.server.validation import to_json
from censusdrop.server.validation.links import LinkResolver
from censusdrop.server.validation.links import file_target
from treebuilder import Submission
from treebuilder import build_submission
from treebuilder import describe
from treebuilder import doc_bytes
from treebuilder import docx_bytes
from treebuilder import errors
from treebuilder import pdf_bytes
from treebuilder import rules

SELF = "武汉市验收自评估报告20200405.docx"


@pytest.fixture
def sub(tmp_path: Path) -> Submission:
    return build_submission(tmp_path / "area")


def test_missing_self_assessment_report_is_an_error(sub: Submission) -> None:
    sub.path(SELF).unlink()

    report = sub.validate()

    assert errors(report) == {"report.missing"}, describe(report)
    assert "验收自评估报告" in report.errors[0].message


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("普查公报", "普查公报"),
        ("普查总结报告", "普查总结报告"),
        ("普查技术报告", "技术报告"),
        ("数据审核报告", "数据审核报告"),
        ("普查成果汇报", "汇报PPT"),
    ],
)
def test_each_report_of_item_18_is_required(
    sub: Submission, name: str, title: str
) -> None:
    next(sub.item(18).glob(f"*{name}*")).unlink()
    if name == "普查公报":  # the self-assessment links to the bulletin
        sub.path(SELF).write_bytes(docx_bytes("自评估", [("机构", _first_file(sub))]))

    report = sub.validate()

    assert errors(report) == {"report.missing"}, describe(report)
    assert report.errors[0].item == 18 and title in report.errors[0].message


def test_report_in_a_wrong_format_is_missing(sub: Submission) -> None:
    ppt = next(sub.item(18).glob("*汇报*"))
    ppt.unlink()
    sub.write(f"{sub.item(18).name}/武汉市普查成果汇报20200405.pdf", pdf_bytes())

    assert errors(sub.validate()) == {"report.missing"}


def test_link_to_a_missing_file_is_an_error(sub: Submission) -> None:
    links = [("机构", _first_file(sub)), ("缺", f"{sub.item(2).name}/不存在.pdf")]
    sub.path(SELF).write_bytes(docx_bytes("自评估", links))

    report = sub.validate()

    assert errors(report) == {"link.broken"}, describe(report)
    assert "不存在.pdf" in report.errors[0].message


def test_self_assessment_without_file_links_is_a_warning(sub: Submission) -> None:
    sub.path(SELF).write_bytes(docx_bytes("自评估", [("网站", "https://example.cn/")]))

    report = sub.validate()

    assert report.verdict == PASSED
    assert rules(report) == {"link.none"}


def test_self_assessment_in_word_97_cannot_be_link_checked(sub: Submission) -> None:
    sub.path(SELF).unlink()
    sub.write("武汉市验收自评估报告20200405.doc", doc_bytes())

    report = sub.validate()

    assert report.verdict == PASSED
    assert rules(report) == {"link.unchecked"}


def test_links_resolve_relative_absolute_and_encoded() -> None:
    resolver = LinkResolver(["a/1.机构/文件.pdf", "a/自评估.docx", "b/x.pdf"])
    base = "a"

    def ok(target: str) -> bool:
        path = file_target(target)
        assert path is not None
        return resolver.resolves(path, base)

    assert ok("1.机构/文件.pdf")
    assert ok("1.%E6%9C%BA%E6%9E%84/%E6%96%87%E4%BB%B6.pdf")
    assert ok("file:///D:/验收资料/1.机构/文件.pdf")
    assert ok(r"D:\验收资料\1.机构\文件.pdf")
    assert ok("../b/x.pdf")
    assert ok("1.机构/文件.pdf#page=2")
    assert not ok("file:///D:/别处/文件.pdf")
    assert file_target("http://sthjt.hubei.gov.cn/") is None
    assert file_target("mailto:a@b.cn") is None


def test_text_report_is_chinese_with_crlf_and_optional_bom(sub: Submission) -> None:
    sub.write(f"{sub.item(2).name}/武汉市人员调整文件.pdf", pdf_bytes())
    report = sub.validate()

    text = render_text(report, bom=True)

    assert text.startswith("\ufeff武汉市验收资料预审报告\r\n")
    assert "预审结论：退回补充完善" in text
    assert "\n" not in text.replace("\r\n", "")
    assert "name.no_date" in text and "没有上报日期" in text
    assert not render_text(report).startswith("\ufeff")


def test_html_report_is_self_contained_and_escapes_names(sub: Submission) -> None:
    sub.write(f"{sub.item(2).name}/<script>武汉市人员.pdf", pdf_bytes())
    report = sub.validate()

    page = render_html(report)

    assert page.startswith("<!DOCTYPE html>") and 'lang="zh-CN"' in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "http" not in page.replace("http-equiv", "")
    assert "@media print" in page


def test_json_report_carries_verdict_findings_digest_and_items(sub: Submission) -> None:
    sub.write(f"{sub.item(2).name}/武汉市人员调整文件.pdf", pdf_bytes())
    report = sub.validate()

    data = to_json(report)

    assert json.loads(json.dumps(data, ensure_ascii=False)) == data
    assert data["verdict"] == "退回补充完善" and data["passed"] is False
    assert data["findings"][0]["rule"] == "name.no_date"
    assert data["findings"][0]["item"] == 2
    assert len(data["digest"]["sha256"]) == 64 and data["digest"]["kind"] == "metadata"
    assert [i["number"] for i in data["items"]] == list(range(1, 23))
    assert data["judged_at"] == "2020-04-20T10:00:00+08:00"


def test_passing_report_says_so(sub: Submission) -> None:
    report = sub.validate()

    assert "预审结论：合格" in render_text(report)
    assert "预审结论：合格" in render_html(report)


def _first_file(sub: Submission) -> str:
    target = next(sub.item(1).iterdir())
    return str(target.relative_to(sub.root))
