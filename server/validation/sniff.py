"""Judging a file's real type by its content, never by its name.

Reads at most the first and the last few KB of a file (containers are
handed to :mod:`containers`, which is bounded too). Besides the type, it
notices what makes a file unusable as material: empty, an executable or
script under any name, a password, or a file cut short (a PDF without its
end-of-file marker, a JPEG or PNG without its end chunk).
"""

from __future__ import annotations

import codecs
from typing import IO

from .containers import Limits
from .containers import inspect_ole
from .containers import inspect_zip
from .kinds import FileKind

HEAD_BYTES = 8192
TAIL_BYTES = 4096

_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_EXECUTABLE = (
    b"MZ",  # Windows PE, DOS
    b"\x7fELF",
    b"\xfe\xed\xfa\xce",  # Mach-O, both byte orders, 32 and 64 bit
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",  # Mach-O universal, Java class
    b"L\x00\x00\x00\x01\x14\x02\x00",  # Windows shortcut (.lnk)
    b"dex\n",  # Android
)
_ASF = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
_SIMPLE = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"Rar!\x1a\x07", "rar"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"fLaC", "flac"),
    (b"OggS", "ogg"),
    (b"#!AMR", "amr"),
    (b"ID3", "mp3"),
    (b"FLV\x01", "flv"),
    (b"\x1a\x45\xdf\xa3", "mkv"),
    (b"\x00\x00\x01\xba", "mpeg"),
    (b"\x00\x00\x01\xb3", "mpeg"),
    (b"{\\rtf", "doc"),
)
_BMP_HEADERS = (12, 40, 52, 56, 108, 124)
_RIFF = {b"WEBP": "webp", b"WAVE": "wav", b"AVI ": "avi"}
_FTYP_BRANDS = {
    b"M4A ": "m4a", b"M4B ": "m4a", b"M4P ": "m4a", b"qt  ": "mov",
    b"heic": "heic", b"heix": "heic", b"mif1": "heic", b"msf1": "heic",
    b"hevc": "heic", b"3gp4": "3gp", b"3gp5": "3gp", b"3gp6": "3gp",
    b"3g2a": "3gp",
}  # fmt: skip
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\x1a\x1b")
_HTML = (b"<!doctype html", b"<html", b"<head", b"<script")


def sniff(fp: IO[bytes], size: int, ext: str, limits: Limits) -> FileKind:
    """The kind of the file open at ``fp`` (``size`` bytes, ``ext`` lower)."""
    if size == 0:
        return FileKind("empty", "file.empty")
    head = fp.read(HEAD_BYTES)
    if not head:
        return FileKind("empty", "file.empty")
    if head.startswith(_EXECUTABLE) or _is_script(head):
        return FileKind("executable", "file.executable")
    if head.startswith(_ZIP):
        fp.seek(0)
        return inspect_zip(fp, ext, limits)
    if head.startswith(_OLE2):
        fp.seek(0)
        return inspect_ole(fp, ext)
    if b"%PDF-" in head[:1024]:
        return _pdf(head, _tail(fp, size, head))
    if head.startswith(b"\xff\xd8\xff"):
        return _ended("jpeg", b"\xff\xd9", _tail(fp, size, head))
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _ended("png", b"IEND", _tail(fp, size, head))
    return FileKind(_plain_type(head, ext))


def _plain_type(head: bytes, ext: str) -> str:
    for magic, kind in _SIMPLE:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] in _RIFF:
        return _RIFF[head[8:12]]
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12], "mp4")
    if head.startswith(_ASF):
        return "wma" if ext == "wma" else "wmv"
    if head.startswith(b"BM") and len(head) > 18 and head[14] in _BMP_HEADERS:
        return "bmp"
    if _is_mpeg_audio(head):
        return "mp3"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "mpeg"
    return _text_type(head, ext)


def _text_type(head: bytes, ext: str) -> str:
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "unknown"
    text = _decode(head)
    if text is None:
        return "unknown"
    if text.lstrip().lower().encode().startswith(_HTML):
        return "html"
    return "csv" if ext == "csv" else "txt"


def _decode(head: bytes) -> str | None:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return head.decode("utf-16", errors="ignore")
    controls = sum(1 for b in head if b < 0x20 and b not in _TEXT_CONTROLS)
    if controls * 100 > len(head):
        return None
    for encoding in ("utf-8", "gb18030"):
        # Incremental: a character cut at the end of the head is no error.
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            return str(decoder.decode(head, final=False))
        except UnicodeDecodeError:
            continue
    return None


def _is_script(head: bytes) -> bool:
    return head.startswith(b"#!") and not head.startswith(b"#!AMR")


def _is_mpeg_audio(head: bytes) -> bool:
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    layer = (head[1] >> 1) & 0x3
    bitrate = head[2] >> 4
    return layer != 0 and bitrate not in (0, 15)


def _tail(fp: IO[bytes], size: int, head: bytes) -> bytes:
    if size <= len(head):
        return head
    fp.seek(max(0, size - TAIL_BYTES))
    return fp.read(TAIL_BYTES)


def _pdf(head: bytes, tail: bytes) -> FileKind:
    if b"%%EOF" not in tail:
        return FileKind("pdf", "file.corrupt", "PDF文件不完整，缺少结束标记")
    if b"/Encrypt" in head or b"/Encrypt" in tail:
        return FileKind("pdf", "file.encrypted")
    return FileKind("pdf")


def _ended(kind: str, marker: bytes, tail: bytes) -> FileKind:
    if marker not in tail:
        return FileKind(kind, "file.corrupt", "图片文件不完整")
    return FileKind(kind)
