"""``censusdrop keys status|rotate``, in-process against a real instance."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from censusdrop.audit.schema import audit_events
from censusdrop.cli.main import cli
from censusdrop.server.db import make_engine
from censusdrop.server.storage.errors import MasterKeyError
from censusdrop.server.storage.keyring import Keyring
from censusdrop.server.storage.store import Storage
from conftest import Instance

AREA = "420100"
CONTENT = os.urandom(200_000)


def run(
    instance: Instance, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str]:
    runner = CliRunner(env={"COLUMNS": "200", **(env or {})})
    result = runner.invoke(cli, ["--config", str(instance.config), *args])
    return result.exit_code, result.output


def keys_dir(instance: Instance) -> Path:
    return instance.settings.path(instance.settings.storage.keys_dir)


def store_file(instance: Instance, master_key: bytes | None = None) -> None:
    settings = instance.settings
    engine = make_engine(settings.database_url)
    try:
        keyring = Keyring.open(keys_dir(instance), master_key)
        storage = Storage(settings.path(settings.storage.data_root), keyring, engine)
        storage.prepare(sweep=False)
        storage.ensure_area(AREA)
        storage.write_bytes(AREA, "材料.pdf", CONTENT, account="admin")
    finally:
        engine.dispose()


def read_file(instance: Instance, master_key: bytes | None = None) -> bytes:
    settings = instance.settings
    engine = make_engine(settings.database_url)
    try:
        keyring = Keyring.open(keys_dir(instance), master_key)
        storage = Storage(settings.path(settings.storage.data_root), keyring, engine)
        return storage.read_bytes(AREA, "材料.pdf")
    finally:
        engine.dispose()


def rotations(instance: Instance) -> list[dict[str, object]]:
    engine = make_engine(instance.settings.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(audit_events.c.details)).all()
    finally:
        engine.dispose()
    found = []
    for (details,) in rows:
        data = json.loads(details) if isinstance(details, str) else details
        if data and data.get("act") == "keys.rotate":
            found.append(data)
    return found


@pytest.fixture
def instance(tmp_path: Path, database_url: str) -> Instance:
    return Instance(tmp_path / "inst", database_url)


def test_status_shows_the_master_key_and_round_keys(instance: Instance) -> None:
    store_file(instance)
    code, out = run(instance, "keys", "status", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["source"] == "file"
    assert data["master_key_id"] == Keyring.open(keys_dir(instance)).master_key_id
    states = {key["key"]: key["state"] for key in data["round_keys"]}
    assert states.get("default") == "active"

    code, out = run(instance, "keys", "status")
    assert code == 0, out
    assert data["master_key_id"] in out and "default" in out


def test_rotate_rewraps_round_keys_and_files_stay_readable(instance: Instance) -> None:
    store_file(instance)
    before = Keyring.open(keys_dir(instance)).master_key_id
    old_copy = keys_dir(instance).parent / "keys-before"
    shutil.copytree(keys_dir(instance), old_copy)

    code, out = run(instance, "keys", "rotate")
    assert code == 0, out
    after = Keyring.open(keys_dir(instance)).master_key_id
    assert after != before and f"{before} -> {after}" in out

    keyring = Keyring.open(keys_dir(instance))
    keyring.verify()  # every round key is wrapped under the new master key
    assert read_file(instance) == CONTENT
    # The old master key no longer opens the rewrapped round keys.
    old_master = Keyring.open(old_copy)
    shutil.copy2(keys_dir(instance) / "rounds" / "default.key", old_copy / "rounds")
    with pytest.raises(MasterKeyError):
        old_master.round_key("default")

    [event] = rotations(instance)
    assert event["old_id"] == before and event["new_id"] == after
    assert event["operator"]


def test_rotate_with_an_environment_key_writes_the_new_one(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    master = os.urandom(32)
    env = {"CENSUSDROP_MASTER_KEY": base64.b64encode(master).decode()}
    monkeypatch.setenv("CENSUSDROP_MASTER_KEY", env["CENSUSDROP_MASTER_KEY"])
    instance = Instance(tmp_path / "inst", database_url)
    assert not (keys_dir(instance) / "master.key").read_text().count("key: ")
    store_file(instance, master)

    code, out = run(instance, "keys", "rotate", env=env)
    assert code == 1 and "--new-key-file" in out

    new_file = tmp_path / "new-master.key"
    code, out = run(
        instance, "keys", "rotate", "--new-key-file", str(new_file), env=env
    )
    assert code == 0, out
    assert new_file.stat().st_mode & 0o777 == 0o600
    new_key = base64.b64decode(new_file.read_text().strip())
    assert read_file(instance, new_key) == CONTENT
    with pytest.raises(MasterKeyError):
        Keyring.open(keys_dir(instance), master)

    # An existing file is never overwritten.
    code, out = run(
        instance,
        "keys",
        "rotate",
        "--new-key-file",
        str(new_file),
        env={"CENSUSDROP_MASTER_KEY": base64.b64encode(new_key).decode()},
    )
    assert code == 1 and "exists" in out
    assert base64.b64decode(new_file.read_text().strip()) == new_key


def test_status_reports_a_damaged_round_key(instance: Instance) -> None:
    store_file(instance)
    (keys_dir(instance) / "rounds" / "default.key").write_text("garbage\n")
    code, out = run(instance, "keys", "status", "--json")
    assert code == 1
    [key] = [k for k in json.loads(out)["round_keys"] if k["key"] == "default"]
    assert key["state"] == "damaged" and "default.key" in key["problem"]


def test_file_flag_is_refused_for_a_file_backed_master_key(instance: Instance) -> None:
    code, out = run(instance, "keys", "rotate", "--new-key-file", "x.key")
    assert code == 1 and "only for a master key given by the environment" in out
