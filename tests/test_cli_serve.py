"""``censusdrop demo`` and ``serve`` as real processes, stopped by signal."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

from serverprocess import start
from serverprocess import stop

from ftpclient import download
from ftpclient import login
from ftpclient import upload

CLI = [sys.executable, "-c", "from censusdrop.cli.main import main; main()"]


def test_demo_prints_an_account_that_works_and_stops_on_sigterm(tmp_path: Path) -> None:
    process, text = start([*CLI, "demo", "demo", "--port", "0"], tmp_path)
    try:
        password = re.search(r"password: (\S+)", text)
        address = re.search(r"listening on ([\d.]+):(\d+)", text)
        assert password and address, text
        assert re.search(r"fingerprint: ([0-9A-F]{2}:){31}[0-9A-F]{2}", text)
        cafile = tmp_path / "demo" / "tls" / "server.crt"
        client = login((address[1], int(address[2])), cafile, "demo-wuhan", password[1])
        upload(client, "自评估报告.docx", b"demo")
        assert download(client, "自评估报告.docx") == b"demo"
        client.quit()
    finally:
        code = stop(process)
    assert code == 0


def test_serve_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    from conftest import Instance

    instance = Instance(tmp_path / "i", f"sqlite:///{tmp_path / 'db.sqlite'}")
    process, _ = start([*CLI, "--config", str(instance.config), "serve"], tmp_path)
    assert stop(process, signal.SIGINT) == 0
