"""Realistic submission trees with real small files, for the validator tests.

The makers return small real files: PDF, JPEG, PNG, TIFF, MP4, MP3, xlsx,
csv, docx, pptx, OFD, and OLE2 containers (xls in BIFF8, doc/wps,
encrypted OOXML) from a minimal compound-file writer; ``file``, olefile
and xlrd all read them. :func:`build_submission` lays out a complete,
passing submission of a prefecture (all 22 items, sub-items, counted
materials split by source with their 基本信息表, the self-assessment
report with links), which each test then breaks in one way.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime as dt
import io
import shutil
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape
from xml.sax.saxutils import quoteattr
from zoneinfo import ZoneInfo

import openpyxl

from censusdrop.config.checklist import bundled_checklist_path
from censusdrop.config.checklist import load_checklist
from censusdrop.config.prefectures import load_prefectures
from censusdrop.server.validation import DirectorySource
from censusdrop.server.validation import Prefecture
from censusdrop.server.validation import Report
from censusdrop.server.validation import validate

# --- PDF -------------------------------------------------------------------


def pdf_bytes(text: str = "census", *, encrypted: bool = False) -> bytes:
    """A one-page PDF with a correct cross-reference table."""
    content = f"BT /F1 12 Tf 20 50 Td ({text}) Tj ET".encode("latin-1", "replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 100] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    if encrypted:
        objects.append(
            b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P -44 >>"
            % (b"00" * 32, b"11" * 32)
        )
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    extra = b" /Encrypt 6 0 R /ID [<01><01>]" if encrypted else b""
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\n" % (len(objects) + 1, extra)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


# --- images and media -------------------------------------------------------


def jpeg_bytes() -> bytes:
    """A 1x1 grey baseline JPEG: one Huffman code each for DC 0 and EOB."""
    segments = [
        b"\xff\xd8",
        b"\xff\xe0" + struct.pack(">H5sBBBHHBB", 16, b"JFIF\0", 1, 1, 0, 1, 1, 0, 0),
        b"\xff\xdb" + struct.pack(">HB", 67, 0) + bytes([1] * 64),
        b"\xff\xc0" + struct.pack(">HBHHBBBB", 11, 8, 1, 1, 1, 1, 0x11, 0),
        b"\xff\xc4" + struct.pack(">HB", 20, 0x00) + bytes([1] + [0] * 15) + b"\x00",
        b"\xff\xc4" + struct.pack(">HB", 20, 0x10) + bytes([1] + [0] * 15) + b"\x00",
        b"\xff\xda" + struct.pack(">HBBBBBB", 8, 1, 1, 0x00, 0, 63, 0),
        b"\x3f",  # DC "0", EOB "0", padded with ones
        b"\xff\xd9",
    ]
    return b"".join(segments)


def png_bytes() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
        + chunk(b"IEND", b"")
    )


def tiff_bytes() -> bytes:
    """A 1x1 grey uncompressed TIFF, little-endian."""
    tags = [
        (256, 3, 1, 1),  # width
        (257, 3, 1, 1),  # height
        (258, 3, 1, 8),  # bits per sample
        (259, 3, 1, 1),  # no compression
        (262, 3, 1, 1),  # black is zero
        (273, 4, 1, 8 + 2 + 12 * 8 + 4),  # strip offset: after the IFD
        (278, 3, 1, 1),  # rows per strip
        (279, 4, 1, 1),  # strip byte count
    ]
    ifd = struct.pack("<H", len(tags))
    ifd += b"".join(struct.pack("<HHII", *t) for t in tags) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x80"


def mp4_bytes() -> bytes:
    ftyp = struct.pack(">I4s4sI", 24, b"ftyp", b"isom", 512) + b"isommp41"
    return ftyp + struct.pack(">I4s", 16, b"mdat") + bytes(8)


def mp3_bytes() -> bytes:
    tag = b"ID3\x03\x00\x00\x00\x00\x00\x00"
    frame = b"\xff\xfb\x90\x64" + bytes(413)
    return tag + frame * 2


def exe_bytes() -> bytes:
    dos = bytearray(128)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x80)
    return bytes(dos) + b"PE\0\0" + bytes(60)


# --- zip-based documents ----------------------------------------------------


def _zip(members: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


_CT = "http://schemas.openxmlformats.org/package/2006/content-types"
_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
_OD = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def _content_types(part: str, content_type: str) -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Types xmlns="{_CT}">'
        '<Default Extension="rels" ContentType='
        '"application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/{part}" ContentType="{content_type}"/></Types>'
    )


def _package_rels(part: str) -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{_REL}">'
        f'<Relationship Id="rId1" Type="{_OD}/officeDocument" Target="{part}"/>'
        "</Relationships>"
    )


def docx_bytes(text: str = "报告", links: Sequence[tuple[str, str]] = ()) -> bytes:
    """A Word document; ``links`` are (shown text, target) hyperlinks."""
    paragraphs = f"<w:p><w:r><w:t>{escape(text)}</w:t></w:r></w:p>"
    rels = []
    for n, (shown, target) in enumerate(links, 1):
        paragraphs += (
            f'<w:p><w:hyperlink r:id="rId{n}"><w:r><w:t>{escape(shown)}</w:t>'
            "</w:r></w:hyperlink></w:p>"
        )
        rels.append(
            f'<Relationship Id="rId{n}" Type="{_OD}/hyperlink" '
            f'Target={quoteattr(target)} TargetMode="External"/>'
        )
    document = (
        f'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="{_W}" '
        f'xmlns:r="{_OD}"><w:body>{paragraphs}</w:body></w:document>'
    )
    main = "application/vnd.openxmlformats-officedocument.wordprocessingml"
    return _zip(
        {
            "[Content_Types].xml": _content_types(
                "word/document.xml", f"{main}.document.main+xml"
            ),
            "_rels/.rels": _package_rels("word/document.xml"),
            "word/document.xml": document,
            "word/_rels/document.xml.rels": (
                f'<?xml version="1.0" encoding="UTF-8"?>'
                f'<Relationships xmlns="{_REL}">{"".join(rels)}</Relationships>'
            ),
        }
    )


def pptx_bytes() -> bytes:
    p = "http://schemas.openxmlformats.org/presentationml/2006/main"
    main = "application/vnd.openxmlformats-officedocument.presentationml"
    return _zip(
        {
            "[Content_Types].xml": _content_types(
                "ppt/presentation.xml", f"{main}.presentation.main+xml"
            ),
            "_rels/.rels": _package_rels("ppt/presentation.xml"),
            "ppt/presentation.xml": (
                f'<?xml version="1.0" encoding="UTF-8"?><p:presentation xmlns:p="{p}">'
                '<p:sldSz cx="9144000" cy="6858000"/></p:presentation>'
            ),
        }
    )


def ofd_bytes() -> bytes:
    ns = "http://www.ofdspec.org/2016"
    return _zip(
        {
            "OFD.xml": (
                f'<?xml version="1.0" encoding="UTF-8"?><ofd:OFD xmlns:ofd="{ns}" '
                'Version="1.0" DocType="OFD"><ofd:DocBody><ofd:DocRoot>'
                "Doc_0/Document.xml</ofd:DocRoot></ofd:DocBody></ofd:OFD>"
            ),
            "Doc_0/Document.xml": (
                f'<?xml version="1.0" encoding="UTF-8"?><ofd:Document xmlns:ofd="{ns}">'
                "<ofd:CommonData><ofd:MaxUnitID>1</ofd:MaxUnitID></ofd:CommonData>"
                "</ofd:Document>"
            ),
        }
    )


def xlsx_bytes(rows: Sequence[Sequence[Any]], title: str = "基本信息") -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = title
    for row in rows:
        sheet.append(list(row))
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def csv_bytes(rows: Sequence[Sequence[Any]], encoding: str = "utf-8-sig") -> bytes:
    lines = [",".join(str(cell) for cell in row) for row in rows]
    return ("\r\n".join(lines) + "\r\n").encode(encoding)


def zip_bomb_bytes(size: int = 24 << 20) -> bytes:
    """An honest zip of ``size`` zero bytes: a compression ratio near 1000."""
    buffer = io.BytesIO()
    block = bytes(1 << 20)
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("data.bin", "w") as member,
    ):
        for _ in range(size >> 20):
            member.write(block)
    return buffer.getvalue()


# --- OLE2 (compound file) ---------------------------------------------------

_SECTOR = 512
_END = 0xFFFFFFFE
_FREE = 0xFFFFFFFF
_FATSECT = 0xFFFFFFFD
_NONE = 0xFFFFFFFF
_MIN_STREAM = 4096  # below this a stream would live in the mini stream


def ole2_bytes(streams: dict[str, bytes], clsid: bytes = bytes(16)) -> bytes:
    """A version-3 compound file holding ``streams`` at the root.

    Streams are padded to 4 KB so that none needs the mini stream; the
    siblings form a simple right-leaning chain, which readers accept.
    """
    blobs = [_pad(data) for data in streams.values()]
    fat: list[int] = []
    starts = []
    for blob in blobs:
        starts.append(len(fat))
        count = len(blob) // _SECTOR
        fat += [len(fat) + k + 1 for k in range(count - 1)] + [_END]
    names = list(streams)
    entries = [_dir_entry("Root Entry", 5, child=1 if names else _NONE, clsid=clsid)]
    for n, name in enumerate(names):
        right = n + 2 if n + 1 < len(names) else _NONE
        entries.append(
            _dir_entry(name, 2, right=right, start=starts[n], size=len(blobs[n]))
        )
    while len(entries) % 4:
        entries.append(_dir_entry("", 0, start=0))
    directory = b"".join(entries)
    dir_start = len(fat)
    count = len(directory) // _SECTOR
    fat += [dir_start + k + 1 for k in range(count - 1)] + [_END]
    fat_sectors = 1
    while len(fat) + fat_sectors > fat_sectors * 128:
        fat_sectors += 1
    fat_start = len(fat)
    fat += [_FATSECT] * fat_sectors
    fat += [_FREE] * (fat_sectors * 128 - len(fat))
    difat = [fat_start + k for k in range(fat_sectors)]
    difat += [_FREE] * (109 - len(difat))
    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII",
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        bytes(16),
        0x3E,
        3,
        0xFFFE,
        9,
        6,
        bytes(6),
        0,
        fat_sectors,
        dir_start,
        0,
        _MIN_STREAM,
        _END,
        0,
        _END,
        0,
    ) + struct.pack("<109I", *difat)
    body = b"".join(blobs) + directory + struct.pack(f"<{len(fat)}I", *fat)
    return header + body


def _pad(data: bytes) -> bytes:
    size = max(len(data), _MIN_STREAM)
    size = -(-size // _SECTOR) * _SECTOR
    return data.ljust(size, b"\0")


def _dir_entry(
    name: str,
    kind: int,
    *,
    right: int = _NONE,
    child: int = _NONE,
    start: int = _END,
    size: int = 0,
    clsid: bytes = bytes(16),
) -> bytes:
    raw = name.encode("utf-16-le") + b"\0\0" if name else b""
    return struct.pack(
        "<64sHBBIII16sIQQIQ",
        raw.ljust(64, b"\0"),
        len(raw),
        kind,
        1,
        _NONE,
        right,
        child,
        clsid,
        0,
        0,
        0,
        start,
        size,
    )


def biff8_workbook(rows: Sequence[Sequence[str]], sheet: str = "Sheet1") -> bytes:
    """A BIFF8 workbook stream with text cells (LABEL records)."""

    def record(kind: int, data: bytes) -> bytes:
        return struct.pack("<HH", kind, len(data)) + data

    def bof(kind: int) -> bytes:
        return record(
            0x0809, struct.pack("<HHHHII", 0x0600, kind, 0x0DBB, 0x07CC, 0, 6)
        )

    name = struct.pack("<BB", len(sheet), 1) + sheet.encode("utf-16-le")
    codepage = record(0x0042, struct.pack("<H", 1200))
    eof = record(0x000A, b"")
    head = bof(0x0005) + codepage
    offset = len(head) + 4 + 6 + len(name) + len(eof)
    globals_ = head + record(0x0085, struct.pack("<IBB", offset, 0, 0) + name) + eof
    width = max((len(r) for r in rows), default=0)
    cells = b"".join(
        record(
            0x0204,
            struct.pack("<HHHHB", r, c, 0, len(text), 1) + text.encode("utf-16-le"),
        )
        for r, row in enumerate(rows)
        for c, text in enumerate(row)
    )
    dims = record(0x0200, struct.pack("<IIHHH", 0, len(rows), 0, width, 0))
    return globals_ + bof(0x0010) + dims + cells + eof


def xls_bytes(rows: Sequence[Sequence[str]]) -> bytes:
    return ole2_bytes({"Workbook": biff8_workbook(rows)})


def doc_bytes(*, encrypted: bool = False) -> bytes:
    """A Word 97 container: a WordDocument stream starting with its FIB."""
    flags = 0x0100 if encrypted else 0
    fib = struct.pack("<HHHHHH", 0xA5EC, 0x00C1, 0, 0x0804, 0, flags)
    return ole2_bytes({"WordDocument": fib, "1Table": b"\0" * 64})


def encrypted_ooxml_bytes() -> bytes:
    """What Office writes for a password-protected docx/xlsx/pptx."""
    return ole2_bytes(
        {
            "EncryptionInfo": b"\x04\x00\x04\x00\x40\x00\x00\x00",
            "EncryptedPackage": b"x",
        }
    )


# --- Hubei and a complete submission -----------------------------------------

SHANGHAI = ZoneInfo("Asia/Shanghai")
AT = dt.datetime(2020, 4, 20, 10, 0, tzinfo=SHANGHAI)
DATE = "20200405"

# The validator's view of the bundled prefecture list, aliases included.
HUBEI = tuple(
    Prefecture(p.code, p.name, p.short_name, p.aliases)
    for p in load_prefectures("hubei")
)
WUHAN = HUBEI[0]
ENSHI = HUBEI[12]

HEADER = ["序号", "普查小区编号", "企业名称", "地址", "地理信息", "联系人", "联系方式"]
HEADER_LATLON = [
    "普查小区编码",
    "单位名称",
    "详细地址",
    "经度",
    "纬度",
    "联系人",
    "联系电话",
]


def basic_info_rows(title: str, header: Sequence[str] = HEADER) -> list[list[str]]:
    row = ["1", "420102001001", "某某化工有限公司", "江岸区某路1号", "114.30,30.60"]
    row += ["张三", "027-12345678"]
    return [[title], list(header), row[: len(header)]]


Maker = Callable[[], bytes]


def _spec(p: str, d: str, per_source: int) -> dict[str, Maker]:
    """The complete submission: relative path -> maker of its bytes."""
    pdf, jpg, png, docx = pdf_bytes, jpeg_bytes, png_bytes, docx_bytes
    s: dict[str, Maker] = {}

    def item(number: int, title: str, files: dict[str, Maker]) -> str:
        folder = f"{number}.{p}{title}{d}"
        for name, maker in files.items():
            s[f"{folder}/{name}"] = maker
        return folder

    def table(title: str, kind: str = "xlsx", header: Sequence[str] = HEADER) -> Maker:
        rows = basic_info_rows(title, header)
        if kind == "csv":
            return lambda: csv_bytes(rows)
        if kind in ("xls", "et"):
            return lambda: xls_bytes(rows)
        return lambda: xlsx_bytes(rows)

    def sheets(folder: str, source: str, n: int, kind: str = "xlsx") -> None:
        s[f"{folder}/{p}{source}基本信息表{d}.{kind}"] = table(
            f"{p}{source}基本信息表", kind
        )
        for k in range(1, n + 1):
            s[f"{folder}/{p}第{k}号企业{source}表{d}.pdf"] = pdf

    links = [
        ("机构设置", f"1.{p}机构设置{d}/{p}普查领导小组成立文件{d}.pdf"),
        ("实施方案", quote(f"3.{p}实施方案{d}/{p}污染源普查实施方案{d}.ofd")),
        ("普查公报", f"file:///D:/验收资料/18.{p}普查成果{d}/{p}普查公报{d}.docx"),
        ("省厅网站", "http://sthjt.hubei.gov.cn/"),
    ]
    s[f"{p}验收自评估报告{d}.docx"] = lambda: docx("自评估", links)
    item(1, "机构设置", {f"{p}普查领导小组成立文件{d}.pdf": pdf})
    item(
        2,
        "人员配置",
        {f"{p}普查人员配备文件{d}.pdf": pdf, f"{p}第三方机构管理文件{d}.jpg": jpg},
    )
    item(3, "实施方案", {f"{p}污染源普查实施方案{d}.ofd": ofd_bytes})
    item(
        4,
        "经费落实",
        {
            f"{p}经费预算和使用明细{d}.xlsx": table("经费"),
            f"{p}经费审计报告{d}.pdf": pdf,
        },
    )
    item(
        5,
        "两员管理",
        {
            f"{p}两员选聘管理文件{d}.docx": docx,
            f"{p}两员信息统计表{d}.xls": table("两员", "xls"),
        },
    )
    item(
        6,
        "宣传",
        {
            f"{p}普查宣传照片{d}.jpg": jpg,
            f"{p}普查宣传视频{d}.mp4": mp4_bytes,
            f"{p}普查宣传音频{d}.mp3": mp3_bytes,
        },
    )
    item(
        7,
        "培训",
        {
            f"{p}培训实施方案{d}.wps": doc_bytes,
            f"{p}培训课件{d}.pptx": pptx_bytes,
            f"{p}培训照片{d}.png": png,
        },
    )
    item(8, "基本名录库建立", {
        f"①{p}名录筛查证明材料{d}/{p}名录筛查记录{d}.pdf": pdf,
        f"②{p}七表合一{d}.xlsx": table("七表合一"),
        f"③{p}逐户摸底照片和简报{d}/{p}逐户摸底照片{d}.jpg": jpg,
    })  # fmt: skip
    item(9, "清查质量核查", {f"{p}清查质量核查报告{d}.tif": tiff_bytes})
    ten = item(10, "清查表", {f"{p}清查表确认文件{d}.pdf": pdf})
    sheets(f"{ten}/{p}工业源清查表（{per_source}份）{d}", "工业源", per_source)
    life = f"{ten}/{p}生活源清查表（{2 * per_source}份）{d}"
    s[f"{life}/{p}生活源基本信息表{d}.csv"] = table("生活源基本信息表", "csv")
    sheets(
        f"{life}/{p}江岸区生活源清查表（{per_source}份）{d}",
        "江岸区生活源",
        per_source,
        "xls",
    )
    sheets(
        f"{life}/{p}武昌区生活源清查表（{per_source}份）{d}",
        "武昌区生活源",
        per_source,
        "et",
    )
    item(11, "入河排污口和锅炉清查", {
        f"①{p}排污口检测报告{d}/{p}排污口检测报告{d}.pdf": pdf,
        f"②{p}锅炉信息统计表{d}.pdf": pdf,
    })  # fmt: skip
    twelve = item(12, "入户调查与数据采集", {
        f"①{p}普查表扫描件{d}/{p}普查表确认文件{d}.pdf": pdf,
        f"②{p}两员指导填报记录{d}/{p}入户普查工作简报{d}.pdf": pdf,
        f"③{p}地理信息采集记录{d}/{p}地理信息采集截图{d}.png": png,
        f"④{p}数据移交文件{d}/{p}数据移交文件{d}.pdf": pdf,
    })  # fmt: skip
    scans = f"{twelve}/①{p}普查表扫描件{d}"
    sheets(f"{scans}/{p}工业源普查表（{per_source}份）{d}", "工业源", per_source)
    farm = f"{scans}/{p}农业源普查表（{per_source}份）{d}"
    s[f"{farm}/{p}农业源基本信息表{d}.xlsx"] = table("农业源", header=HEADER_LATLON)
    for k in range(1, per_source + 1):
        s[f"{farm}/{p}第{k}号农业源普查表{d}.pdf"] = pdf
    item(13, "数据审核", {
        f"①{p}数据审核会议纪要{d}/{p}审核会议纪要{d}.pdf": pdf,
        f"②{p}市级问题清单及整改{d}/{p}整改复核报告{d}.docx": docx,
        f"③{p}省级问题清单及整改{d}/{p}整改复核报告{d}.pdf": pdf,
        f"④{p}国家问题清单及整改{d}/{p}整改报告{d}.pdf": pdf,
        f"⑤{p}名录比对报告{d}/{p}名录比对报告{d}.pdf": pdf,
    })  # fmt: skip
    fourteen = item(14, "三种状态企业佐证材料", {f"{p}三种状态企业清单{d}.pdf": pdf})
    sheets(
        f"{fourteen}/{p}工业源三种状态佐证材料（{per_source}份）{d}",
        "工业源",
        per_source,
    )
    item(15, "入户调查及数据采集质量核查", {f"{p}质量核查报告{d}.pdf": pdf})
    item(16, "数据汇总", {
        f"①{p}数据汇总审核材料{d}/{p}汇总审核通知{d}.pdf": pdf,
        f"②{p}宏观数据比对{d}/{p}宏观数据比对资料{d}.xlsx": table("比对"),
        f"③{p}周调度月调度材料{d}/{p}月调度通报{d}.pdf": pdf,
    })  # fmt: skip
    item(17, "数据汇总质量核查", {f"{p}数据汇总质量核查报告{d}.pdf": pdf})
    item(18, "普查成果", {
        f"{p}普查公报{d}.docx": docx,
        f"{p}普查总结报告{d}.docx": docx,
        f"{p}普查技术报告{d}.pdf": pdf,
        f"{p}数据审核报告{d}.docx": docx,
        f"{p}普查成果汇报{d}.pptx": pptx_bytes,
    })  # fmt: skip
    item(19, "特色亮点", {f"{p}特色工作简报{d}.jpg": jpg})
    item(20, "档案整理", {f"{p}档案整理照片{d}.png": png})
    item(21, "县区普查工作验收", {f"{p}县区验收评估报告{d}.pdf": pdf})
    item(22, "成果开发和其他特色工作", {f"{p}成果应用专题报告{d}.docx": docx})
    return s


@dataclasses.dataclass
class Submission:
    root: Path
    prefecture: Prefecture = WUHAN
    date: str = DATE

    def path(self, relative: str) -> Path:
        return self.root / relative

    def item(self, number: int) -> Path:
        """The folder of item ``number`` (its name starts with ``N.``)."""
        prefix = f"{number}."
        return next(p for p in self.root.iterdir() if p.name.startswith(prefix))

    def find(self, text: str) -> Path:
        """The one file or folder whose name contains ``text``."""
        hits = [p for p in self.root.rglob("*") if text in p.name]
        assert len(hits) == 1, hits
        return hits[0]

    def write(self, relative: str, data: bytes) -> Path:
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return target

    def validate(self, **options: Any) -> Report:
        options.setdefault("at", AT)
        options.setdefault("others", HUBEI)
        return validate(
            DirectorySource(self.root), CHECKLIST, self.prefecture, **options
        )


CHECKLIST = load_checklist(bundled_checklist_path())


def build_submission(
    root: Path,
    prefecture: Prefecture = WUHAN,
    *,
    date: str = DATE,
    per_source: int = 2,
    written_name: str | None = None,
) -> Submission:
    """A complete, passing submission under ``root``.

    ``written_name`` is the form of the prefecture's name used in file
    names (default: the full name); ``per_source`` the number of scans in
    each counted source folder. Each distinct tree is built once and then
    copied, which keeps the tests fast.
    """
    key = (prefecture, date, per_source, written_name)
    template = _TEMPLATES.get(key)
    if template is None:
        template = Path(tempfile.mkdtemp(prefix="censusdrop-tree-")) / "area"
        _write_tree(template, _spec(written_name or prefecture.name, date, per_source))
        _TEMPLATES[key] = template
        atexit.register(shutil.rmtree, template.parent, True)
    shutil.copytree(template, root)
    return Submission(root, prefecture, date)


_TEMPLATES: dict[tuple[Prefecture, str, int, str | None], Path] = {}


def _write_tree(root: Path, spec: dict[str, Maker]) -> None:
    made: dict[Maker, bytes] = {}
    for relative, maker in spec.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if maker not in made:
            made[maker] = maker()
        target.write_bytes(made[maker])


def rules(report: Report, severity: str | None = None) -> set[str]:
    return {f.rule for f in report.findings if severity in (None, f.severity.value)}


def errors(report: Report) -> set[str]:
    return rules(report, "error")


def describe(report: Report) -> str:
    """The findings, one a line, for assertion messages."""
    return "\n".join(
        f"{f.severity} {f.rule} {f.path}: {f.message}" for f in report.findings
    )
