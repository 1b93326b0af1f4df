"""Each account sees only what it may: no path leaves its tree."""

from __future__ import annotations

import ftplib

import pytest

from conftest import TEST_PASSWORD
from ftpclient import download
from ftpclient import login
from ftpclient import upload

ESCAPES = [
    "../420100/x.txt",
    "../../etc/passwd",
    "/../../etc/passwd",
    "/etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "....//....//etc/passwd",
    "/areas/420100/x.txt",
]


def _as(server, user: str) -> ftplib.FTP_TLS:
    return login(server.address, server.cafile, user, TEST_PASSWORD)


def test_prefecture_sees_its_own_area_as_root(server) -> None:
    wuhan = _as(server, "wuhan")
    upload(wuhan, "自评估报告.txt", "武汉".encode())
    assert wuhan.nlst() == ["自评估报告.txt"]
    enshi = _as(server, "enshi")
    assert enshi.nlst() == []
    wuhan.quit()
    enshi.quit()


@pytest.mark.parametrize("path", ESCAPES)
def test_traversal_from_a_prefecture_never_reaches_another_area(
    sqlite_server, path
) -> None:
    wuhan = _as(sqlite_server, "wuhan")
    upload(wuhan, "x.txt", b"secret of wuhan")
    enshi = _as(sqlite_server, "enshi")
    with pytest.raises(ftplib.error_perm):
        download(enshi, path)
    with pytest.raises(ftplib.error_perm):
        enshi.cwd(path.rsplit("/", 1)[0] or "/..")
        download(enshi, "x.txt")
    wuhan.quit()
    enshi.quit()


def test_cdup_at_the_root_stays_at_the_root(sqlite_server) -> None:
    client = _as(sqlite_server, "wuhan")
    client.sendcmd("CDUP")
    client.cwd("..")
    assert client.pwd() == "/"
    client.quit()


def test_reviewer_sees_one_folder_per_assigned_prefecture(server) -> None:
    wuhan = _as(server, "wuhan")
    upload(wuhan, "材料.txt", b"data")
    wuhan.quit()
    reviewer = _as(server, "expert")
    assert reviewer.nlst() == ["武汉市"]
    assert download(reviewer, "/武汉市/材料.txt") == b"data"
    reviewer.quit()


def test_reviewer_cannot_write(sqlite_server) -> None:
    wuhan = _as(sqlite_server, "wuhan")
    upload(wuhan, "材料.txt", b"data")
    wuhan.quit()
    reviewer = _as(sqlite_server, "expert")
    with pytest.raises(ftplib.error_perm, match="^550"):
        upload(reviewer, "/武汉市/new.txt", b"x")
    with pytest.raises(ftplib.error_perm, match="^550"):
        reviewer.delete("/武汉市/材料.txt")
    with pytest.raises(ftplib.error_perm, match="^550"):
        reviewer.mkd("/武汉市/新目录")
    with pytest.raises(ftplib.error_perm, match="^550"):
        reviewer.rename("/武汉市/材料.txt", "/武汉市/改名.txt")
    with pytest.raises(ftplib.error_perm, match="^550"):
        upload(reviewer, "/x.txt", b"x")
    reviewer.quit()


def test_reviewer_cannot_see_an_unassigned_prefecture(sqlite_server) -> None:
    enshi = _as(sqlite_server, "enshi")
    upload(enshi, "恩施材料.txt", b"enshi")
    enshi.quit()
    reviewer = _as(sqlite_server, "expert")
    for name in ("恩施土家族苗族自治州", "恩施州", "422800"):
        with pytest.raises(ftplib.error_perm, match="^550"):
            reviewer.cwd(f"/{name}")
        with pytest.raises(ftplib.error_perm, match="^550"):
            download(reviewer, f"/{name}/恩施材料.txt")
    with pytest.raises(ftplib.error_perm):
        download(reviewer, "/武汉市/../恩施州/恩施材料.txt")
    reviewer.quit()


@pytest.mark.parametrize("path", ESCAPES)
def test_traversal_from_a_reviewer_is_refused(sqlite_server, path) -> None:
    reviewer = _as(sqlite_server, "expert")
    with pytest.raises(ftplib.error_perm):
        download(reviewer, path)
    reviewer.quit()


def test_prefecture_manages_its_tree(server) -> None:
    client = _as(server, "wuhan")
    client.mkd("1.武汉市机构设置20200405")
    client.cwd("1.武汉市机构设置20200405")
    upload(client, "文件.pdf", b"%PDF-1.4 first")
    upload(client, "文件.pdf", b"%PDF-1.4 second")
    assert download(client, "文件.pdf") == b"%PDF-1.4 second"
    client.rename("文件.pdf", "成立文件.pdf")
    assert client.nlst() == ["成立文件.pdf"]
    client.voidcmd("TYPE I")
    assert client.size("成立文件.pdf") == len(b"%PDF-1.4 second")
    client.delete("成立文件.pdf")
    client.cwd("/")
    client.rmd("1.武汉市机构设置20200405")
    assert client.nlst() == []
    client.quit()


def test_root_of_an_area_cannot_be_removed_or_renamed(sqlite_server) -> None:
    client = _as(sqlite_server, "wuhan")
    with pytest.raises(ftplib.error_perm):
        client.rmd("/")
    with pytest.raises(ftplib.error_perm):
        client.rename("/", "/x")
    client.quit()
