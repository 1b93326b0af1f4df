"""Looking inside zip and OLE2 containers without extracting them.

Zip-based files (docx, xlsx, pptx, OFD, plain zip) are judged from the
central directory: member count, declared sizes and compression ratios
(zip bombs), encrypted members, and the member names that tell the
format. At most a few KB of a few members are decompressed, in memory, to
prove the data is readable. OLE2 files (doc, xls, ppt and the WPS
equivalents, MSI, encrypted OOXML) are judged from their stream names and
the first bytes of one stream, read sector by sector so that a large
stream is never loaded whole.
"""

from __future__ import annotations

import dataclasses
import struct
import zipfile
import zlib
from typing import IO
from typing import Any

import olefile

from .kinds import FileKind


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on the work done for one container."""

    max_members: int = 20_000
    max_total_bytes: int = 4 << 30
    max_ratio: int = 200
    ratio_floor_bytes: int = 10 << 20
    probe_members: int = 3
    probe_bytes: int = 64 << 10


_OOXML_DIRS = {"word/": "docx", "xl/": "xlsx", "ppt/": "pptx"}
_OOXML_MAIN = {
    "docx": "word/document.xml",
    "xlsx": "xl/workbook.xml",
    "pptx": "ppt/presentation.xml",
}
_ENCRYPTED_OOXML = {"doc": "docx", "xls": "xlsx", "ppt": "pptx", "wps": "docx"}
_MSI_CLSIDS = {
    "000C1084-0000-0000-C000-000000000046",
    "000C1086-0000-0000-C000-000000000046",
}
_WORD_FLAGS = struct.Struct("<H")
_BIFF_FILEPASS = 0x002F
_BIFF_BOUNDSHEET = 0x0085


def inspect_zip(fp: IO[bytes], ext: str, limits: Limits) -> FileKind:
    try:
        archive = zipfile.ZipFile(fp)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        return FileKind("zip", "file.corrupt", "压缩结构损坏或文件不完整")
    with archive:
        infos = archive.infolist()
        kind = _zip_kind({i.filename for i in infos}, ext)
        bomb = _bomb_reason(infos, limits)
        if bomb:
            return dataclasses.replace(kind, problem="file.zip_bomb", detail=bomb)
        if any(i.flag_bits & 0x1 for i in infos):
            return dataclasses.replace(kind, problem="file.encrypted")
        broken = _probe(archive, _probe_order(kind.type, infos, limits), limits)
        if broken:
            return dataclasses.replace(kind, problem="file.corrupt", detail=broken)
        return kind


def inspect_ole(fp: IO[bytes], ext: str) -> FileKind:
    try:
        ole = olefile.OleFileIO(fp)
    except Exception:  # olefile raises many kinds on malformed input
        return FileKind("unknown", "file.corrupt", "文档结构损坏")
    try:
        return _ole_kind(ole, ext)
    except Exception:
        return FileKind("unknown", "file.corrupt", "文档结构损坏")
    finally:
        ole.close()


def _zip_kind(names: set[str], ext: str) -> FileKind:
    macro = any(n.lower().endswith("vbaproject.bin") for n in names)
    if "[Content_Types].xml" in names:
        for prefix, kind in _OOXML_DIRS.items():
            if any(n.startswith(prefix) for n in names):
                return FileKind(kind, macro=macro)
    if any(n.lower() == "ofd.xml" for n in names):
        return FileKind("ofd")
    return FileKind("zip")


def _bomb_reason(infos: list[zipfile.ZipInfo], limits: Limits) -> str:
    if len(infos) > limits.max_members:
        return f"包含{len(infos)}个文件，超过上限{limits.max_members}"
    if sum(i.file_size for i in infos) > limits.max_total_bytes:
        return "解压后总大小超过上限"
    for info in infos:
        if info.file_size <= limits.ratio_floor_bytes:
            continue
        if info.file_size > limits.max_ratio * max(info.compress_size, 1):
            return f"“{info.filename}”压缩比异常"
    return ""


def _probe_order(
    kind: str, infos: list[zipfile.ZipInfo], limits: Limits
) -> list[zipfile.ZipInfo]:
    """The members to test-read: the format's main part first."""
    main = _OOXML_MAIN.get(kind, "OFD.xml" if kind == "ofd" else "")
    first = [i for i in infos if i.filename == main]
    rest = [i for i in infos if i.filename != main and not i.is_dir()]
    return (first + rest)[: limits.probe_members]


def _probe(
    archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], limits: Limits
) -> str:
    for info in infos:
        try:
            with archive.open(info) as member:
                member.read(limits.probe_bytes)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError):
            return f"“{info.filename}”无法读取"
        except NotImplementedError:
            return f"“{info.filename}”使用了不支持的压缩方式"
    return ""


def _ole_kind(ole: Any, ext: str) -> FileKind:
    if str(ole.root.clsid).upper() in _MSI_CLSIDS:
        return FileKind("executable", "file.executable")
    streams = {"/".join(p).lower() for p in ole.listdir(streams=True, storages=True)}
    if "encryptedpackage" in streams:
        kind = _ENCRYPTED_OOXML.get(ext, ext if ext in _OOXML_MAIN else "docx")
        return FileKind(kind, "file.encrypted")
    macro = bool(streams & {"macros", "_vba_project_cur", "vba"})
    if "worddocument" in streams:
        flags = _stream_head(ole, "WordDocument", 12)
        kind = "wps" if ext == "wps" else "doc"
        if len(flags) < 12:
            return FileKind(kind, "file.corrupt", "文档内容不完整")
        encrypted = _WORD_FLAGS.unpack_from(flags, 10)[0] & 0x0100
        return FileKind(kind, "file.encrypted" if encrypted else None, macro=macro)
    book = "workbook" if "workbook" in streams else "book" if "book" in streams else ""
    if book:
        kind = "et" if ext == "et" else "xls"
        head = _stream_head(ole, book, 4096)
        problem = "file.encrypted" if _biff_encrypted(head) else None
        return FileKind(kind, problem, macro=macro)
    if "powerpoint document" in streams:
        kind = "dps" if ext == "dps" else "ppt"
        problem = "file.encrypted" if "encryptedsummary" in streams else None
        return FileKind(kind, problem, macro=macro)
    return FileKind("unknown")


def _stream_head(ole: Any, name: str, size: int) -> bytes:
    """The first ``size`` bytes of a root stream, without loading it whole."""
    entry = next((k for k in ole.root.kids if k.name.lower() == name.lower()), None)
    if entry is None:
        return b""
    if entry.size < ole.minisectorcutoff:
        data: bytes = ole.openstream(entry.name).read(size)
        return data
    chunks: list[bytes] = []
    sector, wanted = entry.isectStart, min(size, entry.size)
    while wanted > 0 and 0 <= sector < len(ole.fat) and len(chunks) < 64:
        ole.fp.seek(ole.sectorsize * (sector + 1))
        chunk = ole.fp.read(min(ole.sectorsize, wanted))
        chunks.append(chunk)
        wanted -= len(chunk)
        sector = ole.fat[sector]
    return b"".join(chunks)


def _biff_encrypted(head: bytes) -> bool:
    """A FILEPASS record in the workbook globals means a password."""
    offset = 0
    while offset + 4 <= len(head):
        record, length = struct.unpack_from("<HH", head, offset)
        if record == _BIFF_FILEPASS:
            return True
        if record == _BIFF_BOUNDSHEET:
            return False
        offset += 4 + length
    return False
