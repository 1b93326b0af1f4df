"""``censusdrop files history|restore`` and ``censusdrop import``, in-process."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from censusdrop.cli.context import operator
from censusdrop.cli.main import cli
from censusdrop.server.db import make_engine
from censusdrop.server.storage import intake
from censusdrop.server.storage.keyring import Keyring
from censusdrop.server.storage.store import Storage
from conftest import Instance

AREA = "422800"  # 恩施州

TREE = {
    "1.恩施州机构设置20200405/成立文件.pdf": b"%PDF-1.7 establishment" * 300,
    "10.恩施州清查表（2份）20200405/工业源/基本信息表.xlsx": os.urandom(70_000),
    "10.恩施州清查表（2份）20200405/工业源/清查表 001.pdf": b"x",
    "空文件.txt": b"",
}


@pytest.fixture
def instance(tmp_path: Path, database_url: str) -> Instance:
    return Instance(tmp_path / "inst", database_url)


@pytest.fixture
def sqlite_instance(tmp_path: Path) -> Instance:
    return Instance(tmp_path / "inst", f"sqlite:///{tmp_path / 'cli.db'}")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "usb" / "恩施州验收材料"
    for name, data in TREE.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "空目录").mkdir()
    return root


def run(instance: Instance, *args: str) -> tuple[int, str]:
    runner = CliRunner(env={"COLUMNS": "200"})  # rich tables fit on one line
    result = runner.invoke(cli, ["--config", str(instance.config), *args])
    return result.exit_code, result.output


def storage_of(instance: Instance) -> Iterator[Storage]:
    settings = instance.settings
    engine = make_engine(settings.database_url)
    keyring = Keyring.open(settings.path(settings.storage.keys_dir), None)
    try:
        yield Storage(settings.path(settings.storage.data_root), keyring, engine)
    finally:
        engine.dispose()


def admin_events(instance: Instance) -> list[dict[str, object]]:
    engine = make_engine(instance.settings.database_url)
    query = sa.text(
        "SELECT account, details FROM audit_events WHERE action = 'admin' ORDER BY seq"
    )
    try:
        with engine.connect() as conn:
            rows = conn.execute(query).all()
    finally:
        engine.dispose()
    return [{"target": row[0], **json.loads(row[1])} for row in rows]


def test_import_of_a_chinese_tree_round_trips(instance: Instance, source: Path) -> None:
    code, out = run(instance, "import", "恩施州", str(source))
    assert code == 0, out
    assert "4 files imported" in out and "0 skipped" in out, out
    for storage in storage_of(instance):
        for name, data in TREE.items():
            assert storage.read_bytes(AREA, name) == data, name
            [version] = storage.history(AREA, name)
            assert version.account == f"import:{operator()}"
        assert storage.stat(AREA, "空目录").is_dir
        raw = (instance.folder / "data" / "areas" / AREA / "空文件.txt").read_bytes()
        assert b"establishment" not in raw
    [event] = admin_events(instance)
    assert event["act"] == "files.import" and event["operator"] == operator()
    assert event["target"] == AREA and len(event["imported"]) == 4  # type: ignore[arg-type]


def test_running_an_import_again_changes_nothing(
    sqlite_instance: Instance, source: Path
) -> None:
    run(sqlite_instance, "import", "422800", str(source))
    code, out = run(sqlite_instance, "import", "422800", str(source))
    assert code == 0, out
    assert "0 files imported" in out and "4 unchanged" in out, out

    (source / "空文件.txt").write_bytes(b"now with content")
    code, out = run(sqlite_instance, "import", "422800", str(source))
    assert "1 files imported" in out and "3 unchanged" in out, out
    for storage in storage_of(sqlite_instance):
        states = [v.state for v in storage.history(AREA, "空文件.txt")]
        assert states == ["current", "superseded"]
        assert len(storage.history(AREA, "1.恩施州机构设置20200405/成立文件.pdf")) == 1


def test_import_reports_what_it_skipped_and_why(
    sqlite_instance: Instance, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (source / "链接.pdf").symlink_to(source / "空文件.txt")
    (source / "链接目录").symlink_to(source / "空目录")
    os.mkfifo(source / "管道")
    (source / "CON.txt").write_bytes(b"reserved device name")
    (source / "结尾点.").write_bytes(b"trailing dot")
    (source / "预审报告.txt").write_bytes(b"a forged report")
    (source / "坏目录 ").mkdir()
    (source / "坏目录 " / "内部.pdf").write_bytes(b"never seen")
    (source / "锁定.pdf").write_bytes(b"cannot be read")
    real_open = intake.open_source

    def open_source(path: Path):  # type: ignore[no-untyped-def]
        if path.name == "锁定.pdf":
            raise PermissionError(13, "Permission denied")
        return real_open(path)

    monkeypatch.setattr(intake, "open_source", open_source)
    code, out = run(sqlite_instance, "import", "恩施州", str(source))
    assert code == 0, out
    assert "4 files imported" in out and "8 skipped" in out, out
    reasons = dict(re.findall(r"skipped .*/([^/]+?): (.+)", out))
    assert reasons["链接.pdf"].startswith("symbolic link")
    assert reasons["链接目录"].startswith("symbolic link")
    assert reasons["管道"] == "special file (FIFO)"
    assert reasons["CON.txt"].startswith("name refused (reserved_name)")
    assert reasons["结尾点."].startswith("name refused (trailing_dot)")
    assert reasons["预审报告.txt"].startswith("name reserved")
    assert reasons["坏目录 "].startswith("name refused")
    assert reasons["锁定.pdf"] == "unreadable: Permission denied"
    for storage in storage_of(sqlite_instance):
        names = {path for path, _ in storage.walk(AREA)}
        assert "锁定.pdf" not in names and "预审报告.txt" not in names
    [event] = admin_events(sqlite_instance)
    assert len(event["skipped"]) == 8  # type: ignore[arg-type]


def test_history_lists_versions_in_china_time_and_as_json(
    sqlite_instance: Instance, source: Path
) -> None:
    run(sqlite_instance, "import", "恩施州", str(source))
    (source / "空文件.txt").write_bytes(b"second")
    run(sqlite_instance, "import", "恩施州", str(source))

    code, out = run(
        sqlite_instance, "files", "history", "422800", "空文件.txt", "--json"
    )
    assert code == 0, out
    versions = json.loads(out)
    assert [v["number"] for v in versions] == [2, 1]
    assert versions[1]["sha256"] == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert versions[0]["account"] == f"import:{operator()}"

    code, out = run(sqlite_instance, "files", "history", "恩施州", "/空文件.txt")
    assert code == 0, out
    assert "time (Asia/Shanghai)" in out
    assert re.search(r"│ 2 │ [0-9a-f]{32} │ +6 │ [0-9a-f]{12} │ 20.*│ current", out)
    assert re.search(r"│ 1 │ [0-9a-f]{32} │ +0 │ e3b0c44298fc │ 20.*│ superseded", out)
    china = ZoneInfo("Asia/Shanghai")
    created = dt.datetime.fromisoformat(versions[0]["created_at"]).astimezone(china)
    assert created.strftime("%Y-%m-%d %H:%M:%S") in out


def test_restore_brings_an_earlier_version_back_and_is_recorded(
    sqlite_instance: Instance, source: Path
) -> None:
    run(sqlite_instance, "import", "恩施州", str(source))
    (source / "空文件.txt").write_bytes(b"second")
    run(sqlite_instance, "import", "恩施州", str(source))

    code, out = run(sqlite_instance, "files", "restore", "恩施州", "空文件.txt", "1")
    assert code == 0, out
    assert "version 1 restored as version 3" in out
    for storage in storage_of(sqlite_instance):
        assert storage.read_bytes(AREA, "空文件.txt") == b""
        first = storage.history(AREA, "空文件.txt")[-1]
    code, out = run(
        sqlite_instance, "files", "restore", "恩施州", "空文件.txt", first.id[:8]
    )
    assert code == 0, out
    event = admin_events(sqlite_instance)[-1]
    assert event["act"] == "files.restore" and event["restored"] == first.id
    assert event["operator"] == operator()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("files", "history", "火星市", "a.pdf"), "unknown prefecture"),
        (("files", "history", "恩施州", "nothing.pdf"), "no version"),
        (("files", "history", "恩施州", "bad\u202epath"), "control_character"),
        (("files", "restore", "恩施州", "空文件.txt", "9"), "no version '9'"),
        (("import", "火星市", "."), "unknown prefecture"),
    ],
)
def test_errors_are_one_line_with_a_non_zero_exit(
    sqlite_instance: Instance, source: Path, args: tuple[str, ...], message: str
) -> None:
    run(sqlite_instance, "import", "恩施州", str(source))
    code, out = run(sqlite_instance, *args)
    assert code != 0
    assert out.startswith("Error: ") and message in out, out
    assert len(out.strip().splitlines()) == 1, out


def test_every_command_has_an_example_in_its_help(sqlite_instance: Instance) -> None:
    for command in (("files", "history"), ("files", "restore"), ("import",)):
        code, out = run(sqlite_instance, *command, "--help")
        assert code == 0 and "Example:" in out and "censusdrop " in out, command
