"""File names and paths as clients send them, made safe to store.

Trusts nothing from the client. Guarantees that a path accepted here is a
sequence of NFC-normalised components with no control or format characters
(so no NUL, CR, LF, bidirectional overrides or zero-width characters), no
``.``/``..``, no separators, no Windows reserved device names, no trailing
dot or space, at most 255 UTF-8 bytes each and at most ``MAX_DEPTH`` deep.
A rejected name raises ``NameRefused`` carrying a Chinese explanation for
the FTP reply.

Also decodes the bytes of a command line: UTF-8 first, then GB18030 (a
superset of GBK) for older Chinese clients, remembering per session which
one the client speaks so that replies and listings go back in kind.
"""

from __future__ import annotations

import posixpath
import unicodedata

MAX_NAME_BYTES = 255
MAX_DEPTH = 32
MAX_PATH_CHARS = 4096
LEGACY_ENCODING = "gb18030"

_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CLOCK$", "CONIN$", "CONOUT$"]
    + [f"COM{n}" for n in range(1, 10)]
    + [f"LPT{n}" for n in range(1, 10)]
)


class NameRefused(ValueError):
    """A client-supplied name or path cannot be accepted.

    ``reason`` is a short Chinese sentence for the client; ``rule`` a stable
    English id for logs and the audit trail.
    """

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(f"{rule}: {reason}")
        self.rule = rule
        self.reason = reason


def decode_line(raw: bytes) -> tuple[str, str]:
    """Decode a command line; return the text and the encoding it was in."""
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode(LEGACY_ENCODING), LEGACY_ENCODING
    except UnicodeDecodeError:
        raise NameRefused(
            "encoding", "无法识别的字符编码，请使用 UTF-8 或 GBK 编码的文件名"
        ) from None


FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def has_forbidden_characters(text: str) -> bool:
    """Control, format (invisible, bidirectional), surrogate, private-use,
    unassigned characters and line/paragraph separators."""
    return any(unicodedata.category(char) in FORBIDDEN_CATEGORIES for char in text)


def check_component(name: str) -> str:
    """Return the NFC form of one path component, or raise ``NameRefused``."""
    if has_forbidden_characters(name):
        raise NameRefused(
            "control_character", "文件名含有控制字符或不可见字符，请修改后重试"
        )
    name = unicodedata.normalize("NFC", name)
    if name in ("", ".", ".."):
        raise NameRefused("empty_name", "文件名不能为空，也不能是“.”或“..”")
    if "/" in name or "\\" in name:
        raise NameRefused("separator", "文件名不能含有“/”或“\\”")
    if name[-1] in ". ":
        raise NameRefused("trailing_dot", "文件名不能以句点或空格结尾")
    stem = name.split(".", 1)[0].rstrip(" ").upper()
    if stem in _RESERVED:
        raise NameRefused(
            "reserved_name", f"“{name}”是 Windows 保留名称，不能用作文件名"
        )
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise NameRefused("name_too_long", "文件名过长（不得超过 255 字节）")
    return name


def normalize_path(path: str, cwd: str = "/") -> str:
    """Resolve ``path`` against ``cwd`` into a clean absolute virtual path.

    ``..`` climbs within the virtual tree and stops at its root; it can never
    leave it, because the result is a pure string that the storage layer
    maps below the account's own area.
    """
    if len(path) > MAX_PATH_CHARS:
        raise NameRefused("path_too_long", "路径过长")
    if has_forbidden_characters(path):
        raise NameRefused(
            "control_character", "路径含有控制字符或不可见字符，请修改后重试"
        )
    joined = path if path.startswith("/") else posixpath.join(cwd, path)
    parts: list[str] = []
    for part in joined.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(check_component(part))
    if len(parts) > MAX_DEPTH:
        raise NameRefused("too_deep", f"目录层级过深（不得超过 {MAX_DEPTH} 层）")
    return "/" + "/".join(parts)


def split(path: str) -> list[str]:
    """Components of a normalised absolute virtual path."""
    return [part for part in path.split("/") if part]


def escape_for_log(text: str) -> str:
    """Render text for a single log line: no character can start a new one."""
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)
