"""File kinds: what the content sniffer concludes about one file.

A kind's ``type`` is one of the checklist's file types (see
``censusdrop.config.checklist.FILE_TYPES``) or one of the few names below
that no checklist can accept (an empty file, an executable, something not
recognised). ``problem`` is the rule id of what makes the file unusable,
if anything; ``detail`` says why in Chinese, for the report.
"""

from __future__ import annotations

import dataclasses

# Types the sniffer can name that are never accepted material.
NOT_MATERIAL = frozenset({"empty", "executable", "html", "unknown"})

LABELS = {
    "pdf": "PDF文档",
    "ofd": "OFD版式文档",
    "jpeg": "JPEG图片",
    "png": "PNG图片",
    "tiff": "TIFF图片",
    "gif": "GIF图片",
    "bmp": "BMP图片",
    "webp": "WebP图片",
    "heic": "HEIC照片",
    "doc": "Word文档（doc）",
    "docx": "Word文档（docx）",
    "wps": "WPS文字文档",
    "txt": "纯文本",
    "xls": "Excel表格（xls）",
    "xlsx": "Excel表格（xlsx）",
    "et": "WPS表格",
    "csv": "CSV表格",
    "ppt": "PowerPoint演示文稿（ppt）",
    "pptx": "PowerPoint演示文稿（pptx）",
    "dps": "WPS演示文稿",
    "mp3": "MP3音频",
    "wav": "WAV音频",
    "m4a": "M4A音频",
    "flac": "FLAC音频",
    "ogg": "OGG音频",
    "amr": "AMR录音",
    "wma": "WMA音频",
    "mp4": "MP4视频",
    "mov": "MOV视频",
    "avi": "AVI视频",
    "wmv": "WMV视频",
    "flv": "FLV视频",
    "mkv": "MKV视频",
    "mpeg": "MPEG视频",
    "3gp": "3GP视频",
    "zip": "ZIP压缩包",
    "rar": "RAR压缩包",
    "7z": "7z压缩包",
    "empty": "空文件",
    "executable": "可执行程序或脚本",
    "html": "网页文件",
    "unknown": "无法识别的类型",
}

# Extensions that name the same type under another spelling.
EXTENSION_TYPES = {
    "jpg": "jpeg", "jpe": "jpeg", "jfif": "jpeg", "tif": "tiff",
    "heif": "heic", "m4v": "mp4", "mpg": "mpeg", "ts": "mpeg",
    "webm": "mkv", "aac": "m4a", "htm": "html", "text": "txt",
    "docm": "docx", "xlsm": "xlsx", "pptm": "pptx", "ppsx": "pptx",
    "dotx": "docx", "xltx": "xlsx", "potx": "pptx",
}  # fmt: skip

# Content types that are fine under another extension of the same family
# (WPS saves its own extensions with Office content, and the reverse).
COMPATIBLE = {
    "wps": {"doc", "docx", "wps"},
    "doc": {"doc", "wps", "docx"},
    "docx": {"docx", "doc"},
    "et": {"xls", "xlsx", "et"},
    "xls": {"xls", "et", "xlsx"},
    "xlsx": {"xlsx", "xls"},
    "dps": {"ppt", "pptx", "dps"},
    "ppt": {"ppt", "dps", "pptx"},
    "pptx": {"pptx", "ppt"},
    "txt": {"txt", "csv"},
    "csv": {"csv", "txt"},
    "mp4": {"mp4", "mov", "m4a", "3gp"},
    "mov": {"mov", "mp4"},
    "m4a": {"m4a", "mp4"},
    "wma": {"wma", "wmv"},
    "wmv": {"wmv", "wma"},
}


@dataclasses.dataclass(frozen=True, slots=True)
class FileKind:
    type: str
    problem: str | None = None
    detail: str = ""
    macro: bool = False


def label(file_type: str) -> str:
    return LABELS.get(file_type, file_type)


def extension_type(ext: str) -> str:
    return EXTENSION_TYPES.get(ext, ext)


def extension_fits(ext: str, file_type: str) -> bool:
    """Whether a file of this content type may carry this extension."""
    named = extension_type(ext)
    if not ext or named not in LABELS:
        return True  # no extension, or one we know nothing about
    return file_type == named or file_type in COMPATIBLE.get(named, set())
