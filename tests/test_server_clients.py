"""Real FTP clients against a real server: lftp and curl."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from conftest import TEST_PASSWORD
from conftest import require_tool
from ftpclient import curl_command
from ftpclient import download
from ftpclient import lftp_command
from ftpclient import login
from ftpclient import upload

pytestmark = pytest.mark.external


def _lftp(server, script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        lftp_command(server, script),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _curl(server, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        curl_command(server, *args),
        capture_output=True,
        timeout=60,
        check=False,
    )


def _tree(root: Path) -> dict[str, bytes]:
    files = {
        "1.武汉市机构设置20200405/成立文件.pdf": os.urandom(150_000),
        "10.武汉市清查表（2份）20200405/工业源/基本信息表.xlsx": os.urandom(5_000),
        "10.武汉市清查表（2份）20200405/工业源/清查表 001.pdf": os.urandom(1),
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def test_lftp_mirrors_a_chinese_tree_up_and_down(server, tmp_path: Path) -> None:
    up, down = tmp_path / "up", tmp_path / "down"
    up.mkdir()
    down.mkdir()
    files = _tree(up)
    result = _lftp(server, "mirror -R --no-perms . /", up)
    assert result.returncode == 0, result.stderr
    result = _lftp(server, "mirror --no-perms / .", down)
    assert result.returncode == 0, result.stderr
    for name, data in files.items():
        assert (down / name).is_file(), name
        assert (down / name).read_bytes() == data, name


def test_lftp_puts_several_files_in_one_session(sqlite_server, tmp_path: Path) -> None:
    files = _tree(tmp_path)
    folders = sorted({str(Path(name).parent) for name in files})
    script = "; ".join(
        [f'mkdir -p -f "{folder}"' for folder in folders]
        + [f'put "{name}" -o "/{name}"' for name in files]
    )
    result = _lftp(sqlite_server, script, tmp_path)
    assert result.returncode == 0, result.stderr
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    for name, data in files.items():
        assert download(client, "/" + name) == data, name
    client.quit()


def test_lftp_gets_a_chinese_named_file(sqlite_server, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    client = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    client.mkd("18.普查成果")
    upload(client, "18.普查成果/普查公报.docx", data)
    client.quit()
    result = _lftp(
        sqlite_server, "get 18.普查成果/普查公报.docx -o 公报.docx", tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "公报.docx").read_bytes() == data


def test_curl_uploads_and_downloads_byte_for_byte(server, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    source = tmp_path / "扫描件.pdf"
    source.write_bytes(data)
    host, port = server.address
    url = f"ftp://{host}:{port}/%E6%89%AB%E6%8F%8F%E4%BB%B6.pdf"
    result = _curl(server, "-T", str(source), url)
    assert result.returncode == 0, result.stderr
    result = _curl(server, url)
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(data).digest()
    client = login(server.address, server.cafile, "wuhan", TEST_PASSWORD)
    assert download(client, "扫描件.pdf") == data
    client.quit()


def test_curl_without_tls_is_refused(sqlite_server) -> None:
    host, port = sqlite_server.address
    result = subprocess.run(
        [
            require_tool("curl"),
            "--silent",
            "--user",
            f"wuhan:{TEST_PASSWORD}",
            "--max-time",
            "10",
            f"ftp://{host}:{port}/",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0


def test_lftp_refuses_nothing_it_should_not(sqlite_server, tmp_path: Path) -> None:
    result = _lftp(sqlite_server, "mkdir 新建目录; cls -1", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "新建目录" in result.stdout
