"""``censusdrop demo`` and ``serve`` as real processes, stopped by signal."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from ftpclient import download
from ftpclient import login
from ftpclient import upload

CLI = [sys.executable, "-c", "from censusdrop.cli.main import main; main()"]


def _start(args: list[str], cwd: Path) -> tuple[subprocess.Popen[str], list[str]]:
    process = subprocess.Popen(
        [*CLI, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    for _ in range(200):
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("passive ports"):
            return process, lines
    _stop(process, signal.SIGKILL)
    raise AssertionError("server did not start:\n" + "".join(lines))


def _stop(process: subprocess.Popen[str], signum: int) -> int:
    """Signal the server by its PID, wait for it, close its output pipe."""
    os.kill(process.pid, signum)
    try:
        return process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()  # never left running, even when the test fails
        process.wait(10)
        raise
    finally:
        if process.stdout is not None:
            process.stdout.close()


def test_demo_prints_an_account_that_works_and_stops_on_sigterm(tmp_path: Path) -> None:
    process, lines = _start(["demo", "demo", "--port", "0"], tmp_path)
    try:
        text = "".join(lines)
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
        code = _stop(process, signal.SIGTERM)
    assert code == 0


def test_serve_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    from conftest import Instance

    instance = Instance(tmp_path / "i", f"sqlite:///{tmp_path / 'db.sqlite'}")
    process, _ = _start(["--config", str(instance.config), "serve"], tmp_path)
    assert _stop(process, signal.SIGINT) == 0
