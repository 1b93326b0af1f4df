"""Chinese names: UTF-8 and GBK clients, NFC, and refused characters."""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import os
import unicodedata

import pytest

from conftest import TEST_PASSWORD
from ftpclient import download
from ftpclient import login
from ftpclient import upload

TREE = {
    "1.武汉市普查领导小组成立文件20200405/成立文件（盖章）.pdf": os.urandom(70_000),
    "10.武汉市清查表（3份）20200405/工业源/基本信息表.xlsx": os.urandom(1000),
    "10.武汉市清查表（3份）20200405/工业源/清查表001.pdf": b"",
    "18.普查成果/武汉市普查公报 2020年4月5日.docx": os.urandom(200_000),
}


def _as(server, user: str, **kwargs) -> ftplib.FTP_TLS:
    return login(server.address, server.cafile, user, TEST_PASSWORD, **kwargs)


def _make_dirs(client: ftplib.FTP, path: str) -> None:
    parts = path.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        with contextlib.suppress(ftplib.error_perm):
            client.mkd("/" + "/".join(parts[:depth]))


def test_chinese_tree_round_trips_byte_for_byte(server) -> None:
    client = _as(server, "wuhan")
    for path, data in TREE.items():
        _make_dirs(client, path)
        upload(client, "/" + path, data)
    for path, data in TREE.items():
        got = download(client, "/" + path)
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), path
    client.quit()


def test_feat_advertises_utf8(sqlite_server) -> None:
    client = _as(sqlite_server, "wuhan")
    assert " UTF8" in client.sendcmd("FEAT")
    client.quit()


def test_gbk_client_names_arrive_as_utf8_and_list_back_in_gbk(sqlite_server) -> None:
    gbk = _as(sqlite_server, "wuhan", encoding="gbk")
    gbk.mkd("2.人员配置")
    upload(gbk, "2.人员配置/专职人员名单.pdf", b"%PDF-1.4")
    assert gbk.nlst("2.人员配置") == ["专职人员名单.pdf"]
    gbk.quit()
    utf8 = _as(sqlite_server, "wuhan")
    assert utf8.nlst() == ["2.人员配置"]
    assert download(utf8, "2.人员配置/专职人员名单.pdf") == b"%PDF-1.4"
    utf8.quit()


def test_nfd_names_are_stored_as_nfc(sqlite_server) -> None:
    client = _as(sqlite_server, "wuhan")
    decomposed = unicodedata.normalize("NFD", "Café报告.txt")
    upload(client, decomposed, b"x")
    assert client.nlst() == [unicodedata.normalize("NFC", "Café报告.txt")]
    assert download(client, unicodedata.normalize("NFC", "Café报告.txt")) == b"x"
    client.quit()


@pytest.mark.parametrize(
    "bad", [b"a\x00b.txt", b"a\rb.txt", b"a\nb.txt", b"a\x1bb.txt"]
)
def test_control_characters_get_501_and_the_session_goes_on(sqlite_server, bad) -> None:
    client = _as(sqlite_server, "wuhan")
    client.sock.sendall(b"MKD " + bad + b"\r\n")
    reply = client.getline()
    while reply[3:4] == "-":
        reply = client.getline()
    assert reply.startswith("501"), reply
    assert client.voidcmd("NOOP").startswith("200")
    assert client.nlst() == []
    client.quit()


@pytest.mark.parametrize(
    "name",
    [
        "a\u202egnp.exe",
        "zero\u200bwidth.txt",
        "CON",
        "aux.txt",
        "trailing.",
        "trailing ",
        "x" * 256,
    ],
)
def test_dangerous_names_are_refused(sqlite_server, name) -> None:
    client = _as(sqlite_server, "wuhan")
    with pytest.raises(ftplib.error_perm, match="^5"):
        client.mkd(name)
    assert client.nlst() == []
    client.quit()


def test_names_with_quotes_and_percent_signs_are_stored_literally(
    sqlite_server,
) -> None:
    client = _as(sqlite_server, "wuhan")
    name = "报告'; DROP TABLE accounts;-- 100%.txt"
    upload(client, name, b"x")
    assert client.nlst() == [name]
    client.quit()


def test_invalid_encoding_is_refused_and_the_session_goes_on(sqlite_server) -> None:
    client = _as(sqlite_server, "wuhan")
    client.sock.sendall(b"MKD \xff\xfe\xfd\r\n")
    assert client.getline().startswith("501")
    assert client.voidcmd("NOOP").startswith("200")
    client.quit()


def test_session_survives_a_very_long_line(sqlite_server) -> None:
    client = _as(sqlite_server, "wuhan")
    client.sock.sendall(b"MKD " + b"a" * 5000 + b"\r\n")
    reply = client.getline()
    assert reply.startswith("5")
    client.sock.settimeout(5)
    assert client.voidcmd("NOOP").startswith("200")
    client.quit()
