"""Words and number formats of the audit report (in Chinese).

The report is read by auditors of a Chinese census office, so everything it
says is Chinese; the few English texts it receives from elsewhere (the
verifier's warnings and problems, refusal rules) are translated here, and a
text without a translation is shown as it is rather than dropped.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

from . import events as ev
from .diagnose import ProblemKind

ROLE_NAMES = {
    "reviewer": "验收人员",
    "prefecture": "市（州）普查办",
    "admin": "管理员",
    "auditor": "审计员",
}

# Marks on the timeline and rows of the tables, by kind of access.
KIND_NAMES = {
    "login": "登录",
    "download": "下载",
    "upload": "上传",
    "refusal": "拒绝",
    "lockout": "锁定",
    "list": "浏览目录",
    "change": "修改",
}

ACTION_NAMES = {
    ev.LOGIN_FAILED: "登录失败",
    ev.LOCKOUT: "账号锁定",
    ev.REFUSED: "操作被拒绝",
    ev.DOWNLOAD_START: "下载被拒绝",
    ev.UPLOAD_START: "上传被拒绝",
    ev.LIST: "浏览被拒绝",
    ev.CHDIR: "进入目录被拒绝",
    ev.DELETE: "删除被拒绝",
    ev.RENAME: "改名被拒绝",
    ev.MKDIR: "建目录被拒绝",
    ev.RMDIR: "删目录被拒绝",
}

CHANGE_NAMES = {
    ev.DELETE: "删除",
    ev.RENAME: "改名",
    ev.MKDIR: "新建目录",
    ev.RMDIR: "删除目录",
}

# FTP commands a refusal may name.
COMMAND_NAMES = {
    "LIST": "列目录",
    "NLST": "列目录",
    "MLSD": "列目录",
    "MLST": "查看文件",
    "CWD": "进入目录",
    "RETR": "下载",
    "STOR": "上传",
    "APPE": "追加上传",
    "DELE": "删除",
    "MKD": "建目录",
    "RMD": "删目录",
    "RNFR": "改名",
    "RNTO": "改名",
    "SIZE": "查看大小",
    "MDTM": "查看时间",
}

STATUS_NAMES = {
    "complete": "完成",
    "aborted": "中断",
    "open": "未结束",
    "refused": "被拒绝",
}

# Reasons recorded with refusals: login outcomes and the handler's rules.
REASON_NAMES = {
    "bad_password": "密码错误",
    "unknown_account": "用户名不存在",
    "locked": "账号已锁定",
    "disabled": "账号已停用",
    "network_not_allowed": "来源网络不允许",
    "address_throttled": "该地址失败次数过多",
    "no_ftp_access": "该账号不能登录 FTP",
    "revoked": "访问权限已收回",
    "outside_review_window": "不在审核期内",
    "control_character": "命令含控制字符",
    "tls_required": "未加密连接",
    "prot_required": "数据连接未加密",
    "prot_clear": "要求明文数据连接",
    "tls_session_reuse": "数据连接未复用 TLS 会话",
    "auth_pipelining": "AUTH TLS 后夹带命令",
}

PROBLEM_NAMES = {
    ProblemKind.MODIFIED: "条目内容被修改",
    ProblemKind.DELETED: "条目被删除",
    ProblemKind.INSERTED: "插入了不属于链的条目",
    ProblemKind.REORDERED: "条目顺序被调换",
    ProblemKind.TRUNCATED: "链尾被截断",
    ProblemKind.REWRITTEN: "整条链被重新计算",
    ProblemKind.BAD_CHECKPOINT: "检查点签名无效",
    ProblemKind.MALFORMED: "条目无法读取",
}

_WARNINGS = (
    (
        re.compile(r"^no signed checkpoint"),
        "没有有效签名的检查点：无法发现链尾被截断或整条链被重新计算。",
    ),
    (
        re.compile(r"^no public key"),
        "未提供公钥：检查点未经核验。",
    ),
    (
        re.compile(r"^(\d+) checkpoint\(s\) signed by another key"),
        "{0} 个检查点由其他密钥签名，已跳过。",
    ),
)

WEEKDAY_NAMES = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")


def show_time(at: dt.datetime | None, zone: zoneinfo.ZoneInfo) -> str:
    """``2020-10-01 22:10:05`` in ``zone``; empty for no time."""
    if at is None:
        return ""
    return at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def show_minute(at: dt.datetime, zone: zoneinfo.ZoneInfo) -> str:
    return at.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def show_clock(at: dt.datetime, zone: zoneinfo.ZoneInfo) -> str:
    return at.astimezone(zone).strftime("%H:%M")


def show_bytes(count: int) -> str:
    """A byte count for people: ``1.5 MB`` (binary units), exact below 1 KB."""
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1024
        if value < 1024 or unit == "TB":
            break
    return f"{value:.1f} {unit}"


def show_duration(span: dt.timedelta) -> str:
    minutes = max(0, round(span.total_seconds() / 60))
    if minutes < 60:
        return f"{minutes} 分钟"
    hours, rest = divmod(minutes, 60)
    return f"{hours} 小时 {rest} 分钟" if rest else f"{hours} 小时"


def warning_text(warning: str) -> str:
    """A verifier warning in Chinese (the original if it is not known)."""
    for pattern, text in _WARNINGS:
        found = pattern.match(warning)
        if found:
            return text.format(*found.groups())
    return warning


def reason_text(action: str, details: dict[str, object]) -> str:
    """Why an access was refused, as far as the event says."""
    parts = [ACTION_NAMES.get(action, action)]
    for key in ("reason", "rule"):
        value = details.get(key)
        if isinstance(value, str):
            parts.append(REASON_NAMES.get(value, value))
    command = details.get("command")
    if isinstance(command, str):
        parts.append(f"{COMMAND_NAMES.get(command, '命令')} {command}")
    reply = details.get("reply")
    if isinstance(reply, int):
        parts.append(f"应答 {reply}")
    return "；".join(parts)


def role_text(role: str | None) -> str:
    return ROLE_NAMES.get(role or "", role or "未知")
