"""Every rule the validator applies: a stable id, a severity, and the
Chinese sentence a prefecture reads, saying what is wrong and what to do.

Rule ids are ASCII and stable (tests, the database and the JSON report
refer to them); the sentences may be reworded freely.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .model import Finding
from .model import Severity
from .names import printable

E = Severity.ERROR
W = Severity.WARNING

RULES: dict[str, tuple[Severity, str]] = {
    "tree.unreadable": (
        E,
        "无法读取提交的文件目录（{detail}），本次预审未能完成，"
        "请稍后重新上传或联系省普查办。",
    ),
    "tree.too_many_files": (
        E,
        "提交的文件和文件夹超过{limit}个，预审只检查了前{limit}个，请精简后重新上传。",
    ),
    "tree.too_deep": (
        E,
        "文件夹层级过深（第{depth}层，最多{limit}层），请减少文件夹的嵌套层级。",
    ),
    "tree.unassigned": (
        W,
        "不属于清单中的任何一项。请放入对应编号的文件夹，"
        "或在文件夹名称前加上项目编号（如“1.”）。",
    ),
    "tree.path_too_long": (
        W,
        "路径长达{length}个字符（建议不超过{limit}个），"
        "在Windows中可能无法打开，请缩短文件夹或文件名称。",
    ),
    "item.missing": (
        E,
        "缺少第{item}项“{title}”。"
        "请建立以“{item}.”开头的文件夹（如“{item}.{prefecture}{title}{today}”）"
        "并放入相应材料。",
    ),
    "item.empty": (E, "第{item}项“{title}”的文件夹中没有文件，请放入相应材料。"),
    "item.duplicate": (
        W,
        "第{item}项有{count}个文件夹，请合并为一个以“{item}.”开头的文件夹。",
    ),
    "item.unknown_number": (
        W,
        "文件夹编号{number}不在清单的项目编号之内，请核对编号。",
    ),
    "subitem.missing": (
        E,
        "第{item}项缺少第{sub}小项“{title}”的材料。"
        "请在该项文件夹中建立以“{marker}”开头的子文件夹或文件。",
    ),
    "name.bad_encoding": (
        E,
        "名称含有乱码或控制字符，可能是FTP客户端的字符编码设置不对。"
        "请把客户端编码设为UTF-8（或自动），改好名称后重新上传。",
    ),
    "name.no_prefecture": (E, "{subject}中没有市州名称，请加上“{name}”或“{short}”。"),
    "name.no_date": (
        E,
        "{subject}中没有上报日期，请加上日期，如“{today}”或“{today_cn}”。",
    ),
    "name.date_future": (E, "{subject}中的日期“{date}”晚于今天，请核对后改正。"),
    "name.date_too_early": (
        E,
        "{subject}中的日期“{date}”早于普查开始日期（{start}），请写明上报日期。",
    ),
    "name.no_content": (W, "{subject}中看不出是什么材料，请写明材料内容。"),
    "name.other_prefecture": (
        E,
        "{subject}中出现了其他市州的名称“{other}”，请核对是否放错了材料。",
    ),
    "name.temporary": (W, "这是Office或WPS编辑时留下的临时文件，请删除。"),
    "count.missing": (
        E,
        "该文件夹存放有数量的材料（{actual}份），请在名称中用括号注明数量，"
        "如“（{actual}份）”。",
    ),
    "count.mismatch": (
        E,
        "名称中注明{declared}份，但实际有{actual}份材料，请核对数量或补齐材料。",
    ),
    "source.missing": (
        E,
        "第{item}项的材料需按源分类建文件夹（{sources}），"
        "请建立相应的源类文件夹并放入材料。",
    ),
    "source.unsorted": (
        E,
        "该文件没有放入源类文件夹，请按源分类（{sources}）放入相应文件夹。",
    ),
    "basic_info.missing": (
        E,
        "该源类文件夹中缺少基本信息表，请放入一份名称含“{keyword}”的表格（{type"
        "s}格式）。",
    ),
    "basic_info.columns": (
        E,
        "基本信息表的表头缺少“{columns}”，请补上这些列（表头至少应有{required}）。",
    ),
    "basic_info.unreadable": (
        E,
        "无法读取基本信息表的表头（{detail}），请另存为xlsx格式后重新上传。",
    ),
    "confirmation.missing": (
        E,
        "第{item}项缺少市州确认上报的确认文件，请放入名称含“{keyword}”的签字盖"
        "章确认文件扫描件。",
    ),
    "report.missing": (E, "缺少{title}，请{where}上传{types}格式的{title}。"),
    "link.broken": (
        E,
        "{title}中的链接“{target}”找不到对应的文件，请核对链接地址或补充该文件。",
    ),
    "link.none": (
        W,
        "{title}中没有指向档案资料的链接，请按要求与档案资料建立链接对应关系。",
    ),
    "link.unchecked": (
        W,
        "{title}不是docx格式，无法核对其中的链接，建议同时上传docx版本。",
    ),
    "file.empty": (E, "文件是空的（0字节），请重新上传。"),
    "file.executable": (E, "该文件是可执行程序或脚本，不能作为验收材料，请删除。"),
    "file.encrypted": (
        E,
        "文件设置了密码或已加密，审核人员无法打开，请取消密码后重新上传。",
    ),
    "file.corrupt": (E, "文件已损坏或不完整（{detail}），请重新上传。"),
    "file.zip_bomb": (
        E,
        "压缩文件异常（{detail}），无法安全检查，请解压后按文件夹结构上传。",
    ),
    "file.archive": (W, "压缩包中的文件无法逐项核对，建议解压后按文件夹结构上传。"),
    "file.type_not_accepted": (
        E,
        "该文件的实际类型是{kind}，而{scope}要求提交{forms}（{types}），"
        "请转换格式后重新上传。",
    ),
    "file.ext_mismatch": (
        W,
        "文件扩展名“.{ext}”与实际类型（{kind}）不符，请改正扩展名。",
    ),
    "file.macro": (W, "文档中含有宏代码，请另存为不含宏的格式后上传。"),
    "file.check_failed": (
        E,
        "检查该文件时出错，请确认文件完好后重新上传；如仍出现此提示，请联系省普查办。",
    ),
    "check.failed": (E, "检查{scope}时出错，本次预审结果不完整，请联系省普查办。"),
}

# File findings of these rules are folded into one per folder when many.
FOLDABLE_PREFIXES = ("name.", "file.", "source.unsorted", "tree.path_too_long")
FOLD_THRESHOLD = 3
MAX_PER_RULE = 200


def finding(rule: str, item: int | None, path: str, /, **params: Any) -> Finding:
    """The finding of ``rule`` on ``path``; ``params`` fill its sentence."""
    severity, template = RULES[rule]
    message = template.format(**params)
    return Finding(rule, severity, item, printable(path), message)


def today_forms(day: dt.date) -> dict[str, str]:
    """The date examples the sentences show: 20200405 and 2020年4月5日."""
    return {
        "today": day.strftime("%Y%m%d"),
        "today_cn": f"{day.year}年{day.month}月{day.day}日",
    }


def folded(findings: list[Finding], names: list[str]) -> Finding:
    """One finding standing for the same problem in several files."""
    first = findings[0]
    folder = first.path.rpartition("/")[0]
    shown = "、".join(f"“{printable(n)}”" for n in names[:3])
    message = (
        f"该文件夹中有{len(findings)}个文件（如{shown}）存在同样的问题：{first.message}"
    )
    return Finding(first.rule, first.severity, first.item, folder, message)


def overflow(rule: str, severity: Severity, count: int) -> Finding:
    message = f"另有{count}处同类问题未逐一列出，请按上面的说明一并检查改正。"
    return Finding(rule, severity, None, "", message)
