"""Windows over FTPS: prefectures write only while a window is open,
reviewers see only what is distributed to them during the review window.
The server's clock is a FixedClock that the tests move."""

from __future__ import annotations

import datetime as dt
import ftplib
import json
from typing import Any

import pytest

from conftest import TEST_PASSWORD
from ftpclient import download
from ftpclient import login
from ftpclient import upload
from roundkit import AFTER
from roundkit import BEFORE
from roundkit import ENSHI
from roundkit import REVIEWING
from roundkit import SUBMITTING
from roundkit import WUHAN
from roundkit import YICHANG
from roundkit import audit_events
from roundkit import china
from roundkit import distribute
from roundkit import fixed_clock
from roundkit import make_round


def _as(running: Any, user: str) -> ftplib.FTP_TLS:
    return login(running.address, running.cafile, user, TEST_PASSWORD)


def _refused_rules(running: Any) -> list[str]:
    rows = audit_events(running, "refused")
    return [json.loads(row.details).get("rule") for row in rows]


def test_prefecture_writes_only_while_its_submission_window_is_open(server) -> None:
    clock = fixed_clock(server, BEFORE)
    make_round(server.services)
    wuhan = _as(server, "wuhan")

    with pytest.raises(ftplib.error_perm, match="^550 提交期尚未开始"):
        upload(wuhan, "自评估报告.txt", b"early")
    assert wuhan.nlst() == []  # reading its own area still works

    clock.set(SUBMITTING)
    assert upload(wuhan, "自评估报告.txt", b"in time").startswith("226")
    wuhan.mkd("1.武汉市普查验收资料20200425")

    clock.set(REVIEWING)
    with pytest.raises(ftplib.error_perm, match="^550 提交期已于2020年5月10日24时截止"):
        upload(wuhan, "补充.txt", b"late")
    for refused in (
        lambda: wuhan.delete("自评估报告.txt"),
        lambda: wuhan.rename("自评估报告.txt", "x.txt"),
        lambda: wuhan.rmd("1.武汉市普查验收资料20200425"),
    ):
        with pytest.raises(ftplib.error_perm, match="^550 提交期已于"):
            refused()
    assert download(wuhan, "自评估报告.txt") == b"in time"
    wuhan.quit()
    assert _refused_rules(server).count("write_window") == 5


def test_rectification_window_reopens_writes_until_the_deadline(sqlite_server) -> None:
    running = sqlite_server
    clock = fixed_clock(running, china(2020, 6, 24, 18))
    make_round(running.services)
    distribute(running.services, WUHAN)
    wuhan = _as(running, "wuhan")
    with pytest.raises(ftplib.error_perm, match="整改期内方可上传"):
        upload(wuhan, "整改说明.txt", b"before the meeting")

    running.services.rounds.record_meeting(
        WUHAN, dt.date(2020, 6, 24), at=clock.now(), actor="admin"
    )
    running.server.guard.check_now()  # the session sees the new state now
    clock.set(china(2020, 6, 30, 23, 59))
    assert upload(wuhan, "整改说明.txt", b"fixed").startswith("226")

    clock.set(AFTER)
    with pytest.raises(ftplib.error_perm, match="整改期已于2020年6月30日24时截止"):
        upload(wuhan, "整改说明.txt", b"too late")
    wuhan.quit()


def test_prefecture_outside_the_round_cannot_write(sqlite_server) -> None:
    fixed_clock(sqlite_server, SUBMITTING)
    make_round(sqlite_server.services, (WUHAN,))
    enshi = _as(sqlite_server, "enshi")
    with pytest.raises(ftplib.error_perm, match="^550 本地区未列入验收批次"):
        upload(enshi, "材料.txt", b"x")
    enshi.quit()


def _seed(running: Any) -> None:
    """Files in three areas; expert assigned to Wuhan and Enshi."""
    storage = running.services.storage
    for area in (WUHAN, ENSHI, YICHANG):
        storage.ensure_area(area)
        storage.write_bytes(area, "材料.txt", area.encode(), "seed")
    running.services.accounts.assign("expert", ENSHI, at=BEFORE)


def test_reviewer_sees_only_assigned_and_distributed_prefectures(server) -> None:
    fixed_clock(server, REVIEWING)
    _seed(server)
    make_round(server.services)
    distribute(server.services, WUHAN)
    distribute(server.services, YICHANG)  # distributed, but not assigned

    expert = _as(server, "expert")
    assert expert.nlst() == ["武汉市"]
    assert download(expert, "/武汉市/材料.txt") == WUHAN.encode()
    for hidden in ("/恩施土家族苗族自治州", "/宜昌市"):
        with pytest.raises(ftplib.error_perm, match="^550"):
            expert.cwd(hidden)
        with pytest.raises(ftplib.error_perm, match="^550"):
            download(expert, f"{hidden}/材料.txt")
    expert.quit()


def test_reviewer_cannot_log_in_outside_the_review_window(server) -> None:
    clock = fixed_clock(server, SUBMITTING)
    make_round(server.services)
    distribute(server.services, WUHAN)
    for at in (SUBMITTING, AFTER):
        clock.set(at)
        with pytest.raises(ftplib.error_perm, match="^530 登录失败"):
            _as(server, "expert")
    clock.set(REVIEWING)
    _as(server, "expert").quit()

    failures = audit_events(server, "login_failed")
    reasons = [json.loads(row.details)["reason"] for row in failures]
    assert reasons == ["outside_review_window", "outside_review_window"]
    assert {row.account for row in failures} == {"expert"}


def test_the_review_window_ending_hides_folders_before_the_check_runs(
    sqlite_server,
) -> None:
    running = sqlite_server
    running.server.guard.stop()  # only the policy itself acts here
    clock = fixed_clock(running, china(2020, 6, 30, 23))
    _seed(running)
    make_round(running.services)
    distribute(running.services, WUHAN)
    expert = _as(running, "expert")
    assert expert.nlst() == ["武汉市"]
    clock.set(AFTER)
    assert expert.nlst() == []
    with pytest.raises(ftplib.error_perm, match="^550"):
        download(expert, "/武汉市/材料.txt")
    expert.close()
