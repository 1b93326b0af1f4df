"""Quotas per prefecture area: uploads beyond them get 552, nothing lost."""

from __future__ import annotations

import contextlib
import ftplib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import TEST_PASSWORD
from conftest import RunningServer
from conftest import configured_server
from ftpclient import download
from ftpclient import login
from ftpclient import upload


def _running(tmp_path: Path, **overrides: str) -> Iterator[RunningServer]:
    enshi = (("enshi", "prefecture", "422800"),)
    with configured_server(tmp_path, accounts=enshi, **overrides) as running:
        yield running


@pytest.fixture
def one_mib(tmp_path: Path) -> Iterator[RunningServer]:
    yield from _running(tmp_path, area_quota_mib="1")


@pytest.fixture
def three_files(tmp_path: Path) -> Iterator[RunningServer]:
    yield from _running(tmp_path, area_quota_files="3")


def _upload_refused_mid_way(client: ftplib.FTP_TLS, path: str, data: bytes) -> str:
    """The reply to an upload that the server stops while it is being sent:
    the data connection may close before the client has sent everything."""
    client.voidcmd("TYPE I")
    conn = client.transfercmd(f"STOR {path}")
    with contextlib.suppress(OSError):  # ssl.SSLError is an OSError
        conn.sendall(data)
        conn.unwrap()
    conn.close()
    return client.getmultiline()


def test_an_upload_that_would_pass_the_byte_quota_gets_552(one_mib) -> None:
    client = login(one_mib.address, one_mib.cafile, "wuhan", TEST_PASSWORD)
    upload(client, "first.pdf", os.urandom(600_000))
    reply = _upload_refused_mid_way(client, "second.pdf", os.urandom(600_000))
    assert reply.startswith("552"), reply
    assert client.nlst() == ["first.pdf"]
    assert one_mib.services.storage.usage("420100") == (600_000, 1)
    client.quit()


def test_replacing_a_file_counts_only_the_difference(one_mib) -> None:
    client = login(one_mib.address, one_mib.cafile, "wuhan", TEST_PASSWORD)
    upload(client, "scan.pdf", os.urandom(900_000))
    data = os.urandom(1_000_000)
    upload(client, "scan.pdf", data)
    assert download(client, "scan.pdf") == data
    client.quit()


def test_a_full_area_refuses_at_once_and_other_areas_go_on(one_mib) -> None:
    client = login(one_mib.address, one_mib.cafile, "wuhan", TEST_PASSWORD)
    upload(client, "full.pdf", os.urandom(1024 * 1024))
    with pytest.raises(ftplib.error_perm, match="^552"):
        upload(client, "one-more-byte.txt", b"x")
    client.delete("full.pdf")
    upload(client, "after-delete.txt", b"fits again")
    client.quit()
    other = login(one_mib.address, one_mib.cafile, "enshi", TEST_PASSWORD)
    upload(other, "恩施.pdf", os.urandom(900_000))
    other.quit()


def test_the_file_quota_refuses_a_new_file_but_not_a_replacement(three_files) -> None:
    client = login(three_files.address, three_files.cafile, "wuhan", TEST_PASSWORD)
    for index in range(3):
        upload(client, f"{index}.pdf", b"%PDF")
    with pytest.raises(ftplib.error_perm, match="^552"):
        upload(client, "3.pdf", b"%PDF")
    upload(client, "0.pdf", b"%PDF-replaced")
    assert sorted(client.nlst()) == ["0.pdf", "1.pdf", "2.pdf"]
    client.quit()
