"""The report opens in a real browser: headless Chromium renders it to a
screenshot and prints it to PDF (A4, one section per page or more).

Without Chromium the test skips with the reason, unless
``CENSUSDROP_REQUIRE_ALL`` is set (CI installs ``chromium`` and
``fonts-noto-cjk``). The database does not matter here: SQLite only.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

import reportkit as kit
from censusdrop.audit.checkpoint import create_signing_key
from censusdrop.audit.checkpoint import make_checkpoint
from censusdrop.audit.report import Period
from censusdrop.audit.report import ReportOptions
from censusdrop.audit.report import build_report
from censusdrop.audit.report import write_report
from censusdrop.audit.schema import metadata
from censusdrop.audit.store import AuditLog
from censusdrop.config.prefectures import load_prefectures
from conftest import skip_or_fail

pytestmark = [pytest.mark.external, pytest.mark.slow]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Sections that start a printed page: findings, timeline, prefectures,
# accounts, downloads, refusals, notes, after the cover.
SECTIONS = 8


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path is not None:
            return path
    skip_or_fail("chromium is not installed (apt-get install chromium fonts-noto-cjk)")
    raise AssertionError("unreachable")


def headless(browser: str, profile: Path, *args: str) -> list[str]:
    return [
        browser, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--no-first-run",
        "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", *args,
    ]  # fmt: skip


def make_report(folder: Path) -> Path:
    engine = sa.create_engine(f"sqlite:///{folder / 'audit.db'}")
    try:
        metadata.create_all(engine)
        AuditLog(engine).append(kit.realistic_log())
        key = create_signing_key(folder / "audit-signing.key")
        at = kit.china("10-12", "09:30")
        make_checkpoint(engine, key, at=at)
        options = ReportOptions(
            Period(kit.PERIOD_START, kit.PERIOD_END), prefectures=load_prefectures()
        )
        report = build_report(engine, key.public, options, at=at, operator="auditor")
    finally:
        engine.dispose()
    target = folder / "审计报告.html"
    write_report(report, target)
    return target


def test_the_report_renders_and_prints_in_headless_chromium(tmp_path: Path) -> None:
    browser = chromium()
    page = make_report(tmp_path)
    url = page.resolve().as_uri()
    shot, pdf = tmp_path / "report.png", tmp_path / "report.pdf"
    runs = [
        headless(browser, tmp_path / "profile-1", f"--screenshot={shot}",
                 "--window-size=1280,2000", url),
        headless(browser, tmp_path / "profile-2", f"--print-to-pdf={pdf}",
                 "--no-pdf-header-footer", url),
    ]  # fmt: skip
    started = dt.datetime.now()
    processes = [
        subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for args in runs
    ]
    for process in processes:
        _, errors = process.communicate(timeout=60)
        assert process.returncode == 0, errors.decode(errors="replace")[-2000:]
    assert dt.datetime.now() - started < dt.timedelta(seconds=30)

    image = shot.read_bytes()
    assert image.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", image[16:24])
    assert (width, height) == (1280, 2000)
    assert len(image) > 50_000  # text, tables and a chart, not a blank page

    document = pdf.read_bytes()
    assert document.startswith(b"%PDF-")
    pages = re.findall(rb"/Type\s*/Page[^s]", document)
    assert len(pages) >= SECTIONS
    # The Chinese text was set in a CJK font, not as missing glyphs.
    fonts = re.findall(rb"/FontName\s*/[A-Z]+\+([A-Za-z0-9_-]+)", document)
    assert any(b"CJK" in font for font in fonts), fonts
