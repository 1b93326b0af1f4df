"""The keyring: key files, permissions, wrong keys, destroy, rotation.

Real key files in tmp_path. Crashes during a rotation are simulated by
making the n-th durable write fail, for every n, and reopening after.
"""

from __future__ import annotations

import base64
import logging
import os
import pickle
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from censusdrop.server.storage import keyfiles
from censusdrop.server.storage.errors import INTEGRITY_MESSAGE
from censusdrop.server.storage.errors import FormatError
from censusdrop.server.storage.errors import IntegrityError
from censusdrop.server.storage.errors import KeyDestroyed
from censusdrop.server.storage.errors import KeyNotFound
from censusdrop.server.storage.errors import KeyringError
from censusdrop.server.storage.errors import MasterKeyError
from censusdrop.server.storage.keyfiles import Secret
from censusdrop.server.storage.keyring import Keyring
from censusdrop.server.storage.keyring import decode_master_key
from censusdrop.server.storage.keyring import encode_master_key
from censusdrop.server.storage.keyring import generate_master_key
from censusdrop.server.storage.keyring import master_key_id
from censusdrop.server.storage.keyring import validate_round_name

ROUNDS = ("default", "2020-hubei", "2020_rectification")


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def keyring(keys_dir: Path) -> Keyring:
    keyring = Keyring.create(keys_dir)
    for name in ROUNDS:
        keyring.ensure_round_key(name)
    return keyring


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A permissive umask, to show modes do not depend on it."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def round_keys(keyring: Keyring) -> dict[str, bytes]:
    return {name: keyring.round_key(name) for name in keyring.round_names()}


def files_under(path: Path) -> list[Path]:
    return [item for item in path.rglob("*") if item.is_file()]


# -- creation and permissions --------------------------------------------


def test_keys_are_created_private_whatever_the_umask(
    keys_dir: Path, open_umask: None
) -> None:
    keyring = Keyring.create(keys_dir)
    keyring.ensure_round_key("default")

    assert mode_of(keys_dir) == 0o700
    assert mode_of(keys_dir / "rounds") == 0o700
    assert mode_of(keys_dir / "master.key") == 0o600
    assert mode_of(keys_dir / "rounds" / "default.key") == 0o600
    keyring.rotate_master()
    keyring.destroy_round_key("default")
    for path in files_under(keys_dir):
        assert mode_of(path) == 0o600, path


def test_an_empty_existing_directory_is_tightened_to_0700(
    keys_dir: Path, open_umask: None
) -> None:
    keys_dir.mkdir(mode=0o755)
    Keyring.create(keys_dir)
    assert mode_of(keys_dir) == 0o700


def test_a_shared_non_empty_directory_is_refused_not_chmodded(
    keys_dir: Path, open_umask: None
) -> None:
    keys_dir.mkdir(mode=0o755)
    (keys_dir / "notes.txt").write_text("someone else's")
    with pytest.raises(KeyringError, match="chmod 700"):
        Keyring.create(keys_dir)
    assert mode_of(keys_dir) == 0o755


def test_creating_over_an_existing_keyring_is_refused(keyring: Keyring) -> None:
    with pytest.raises(KeyringError):
        Keyring.create(keyring.keys_dir)


def test_reopened_keyring_gives_the_same_keys(keyring: Keyring) -> None:
    reopened = Keyring.open(keyring.keys_dir)
    assert reopened.master_key_id == keyring.master_key_id
    assert round_keys(reopened) == round_keys(keyring)
    assert reopened.round_names() == sorted(ROUNDS)


def test_ensure_round_key_twice_keeps_the_first_key(keyring: Keyring) -> None:
    before = keyring.round_key("default")
    keyring.ensure_round_key("default")
    assert keyring.round_key("default") == before


def test_an_unknown_round_key_is_not_found(keyring: Keyring) -> None:
    with pytest.raises(KeyNotFound):
        keyring.round_key("2019-hubei")
    assert not keyring.has_round_key("2019-hubei")


@pytest.mark.parametrize(
    "name",
    ["", "Default", "../default", "a/b", "a.b", "-a", "a b", "名字", "a\n", "x" * 65],
)
def test_invalid_round_names_are_refused(keyring: Keyring, name: str) -> None:
    with pytest.raises(ValueError):
        validate_round_name(name)
    with pytest.raises(ValueError):
        keyring.ensure_round_key(name)


def test_round_names_up_to_64_characters_are_accepted() -> None:
    assert validate_round_name("a" * 64) == "a" * 64


# -- master key problems -------------------------------------------------


def test_opening_a_directory_without_a_keyring_is_a_clear_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(MasterKeyError, match="no keyring"):
        Keyring.open(tmp_path)


def test_a_wrong_master_key_is_a_clear_error(keyring: Keyring) -> None:
    with pytest.raises(MasterKeyError, match="wrong master key"):
        Keyring.open(keyring.keys_dir, generate_master_key())


def test_a_corrupt_master_key_file_is_a_clear_error(keyring: Keyring) -> None:
    path = keyring.keys_dir / "master.key"
    text = path.read_text()
    key_line = next(line for line in text.splitlines() if line.startswith("key: "))
    other = base64.b64encode(generate_master_key()).decode()
    path.write_text(text.replace(key_line, f"key: {other}"))

    with pytest.raises(MasterKeyError, match="corrupt") as caught:
        Keyring.open(keyring.keys_dir)
    assert caught.value.__cause__ is None


def test_a_garbled_master_key_file_is_a_clear_error(keyring: Keyring) -> None:
    path = keyring.keys_dir / "master.key"
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(MasterKeyError, match="corrupt"):
        Keyring.open(keyring.keys_dir)


def test_a_master_key_file_readable_by_others_is_refused(keyring: Keyring) -> None:
    os.chmod(keyring.keys_dir / "master.key", 0o644)
    with pytest.raises(MasterKeyError, match="chmod 600"):
        Keyring.open(keyring.keys_dir)


def test_a_round_key_wrapped_by_another_master_is_a_clear_error(
    tmp_path: Path, keyring: Keyring
) -> None:
    stranger = Keyring.create(tmp_path / "other")
    stranger.ensure_round_key("default")
    foreign = stranger.keys_dir / "rounds" / "default.key"
    (keyring.keys_dir / "rounds" / "default.key").write_bytes(foreign.read_bytes())

    with pytest.raises(MasterKeyError, match="wrapped by master key"):
        keyring.round_key("default")


def test_a_round_key_file_edited_by_hand_fails_authentication(
    keyring: Keyring,
) -> None:
    path = keyring.keys_dir / "rounds" / "default.key"
    path.write_text(path.read_text().replace("name: default", "name: other"))
    (keyring.keys_dir / "rounds" / "other.key").write_text(path.read_text())

    with pytest.raises(IntegrityError):
        keyring.round_key("other")
    with pytest.raises(FormatError):
        keyring.round_key("default")


# -- master key from the environment -------------------------------------


def test_environment_master_key_is_never_written_to_disk(keys_dir: Path) -> None:
    master = generate_master_key()
    keyring = Keyring.create(keys_dir, master_key=master)
    keyring.ensure_round_key("default")

    for path in files_under(keys_dir):
        content = path.read_bytes()
        assert master not in content
        assert encode_master_key(master).encode() not in content
    assert keyring.is_master_from_environment


def test_environment_keyring_needs_the_right_key_to_open(keys_dir: Path) -> None:
    master = generate_master_key()
    Keyring.create(keys_dir, master_key=master).ensure_round_key("default")

    with pytest.raises(MasterKeyError, match="none was given"):
        Keyring.open(keys_dir)
    with pytest.raises(MasterKeyError, match="wrong master key"):
        Keyring.open(keys_dir, generate_master_key())
    text = encode_master_key(master)
    assert Keyring.open(keys_dir, decode_master_key(text)).round_key("default")


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"short").decode()])
def test_a_malformed_environment_value_is_a_clear_error(value: str) -> None:
    with pytest.raises(MasterKeyError):
        decode_master_key(value)


# -- secrecy -------------------------------------------------------------


def test_key_material_stays_out_of_reprs_and_pickles(keyring: Keyring) -> None:
    master = Keyring.open(keyring.keys_dir)._masters[keyring.master_key_id]
    key_text = (keyring.keys_dir / "master.key").read_text().split("key: ")[1]

    assert key_text.strip() not in repr(keyring)
    assert "*" in repr(master) and "*" in str(master)
    assert master.reveal().hex() not in repr(master)
    with pytest.raises(TypeError):
        pickle.dumps(master)
    with pytest.raises(TypeError):
        Secret(cast(bytes, "text"))


def test_no_key_material_reaches_the_logs(
    keys_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    keyring = Keyring.create(keys_dir)
    keyring.ensure_round_key("default")
    secrets = [keyring.round_key("default")]
    secrets.append(Keyring.open(keys_dir)._masters[keyring.master_key_id].reveal())
    keyring.rotate_master()
    secrets.append(keyring._masters[keyring.master_key_id].reveal())
    keyring.destroy_round_key("default")

    assert caplog.records
    for secret in secrets:
        for form in (secret.hex(), base64.b64encode(secret).decode(), repr(secret)):
            assert form not in caplog.text


def test_master_key_ids_are_stable_fingerprints() -> None:
    master = generate_master_key()
    assert master_key_id(master) == master_key_id(bytes(master))
    assert master_key_id(master) != master_key_id(generate_master_key())
    assert len(master_key_id(master)) == 16


# -- file keys -----------------------------------------------------------


def test_file_keys_unwrap_only_with_the_same_round_and_aad(keyring: Keyring) -> None:
    file_key = os.urandom(32)
    wrapped = keyring.wrap_file_key("default", file_key, b"header")

    assert keyring.unwrap_file_key("default", wrapped, b"header") == file_key
    for round_name, blob, aad in [
        ("default", wrapped, b"headex"),
        ("2020-hubei", wrapped, b"header"),
        ("default", wrapped[:-1] + bytes([wrapped[-1] ^ 1]), b"header"),
        ("default", wrapped[:10], b"header"),
    ]:
        with pytest.raises(IntegrityError) as caught:
            keyring.unwrap_file_key(round_name, blob, aad)
        assert str(caught.value) == INTEGRITY_MESSAGE


# -- destroy -------------------------------------------------------------


def test_destroyed_round_key_is_gone_for_every_process(keyring: Keyring) -> None:
    other_process = Keyring.open(keyring.keys_dir)
    wrapped_before = (keyring.keys_dir / "rounds" / "default.key").read_bytes()
    keyring.destroy_round_key("default")

    assert not (keyring.keys_dir / "rounds" / "default.key").exists()
    for instance in (keyring, other_process, Keyring.open(keyring.keys_dir)):
        with pytest.raises(KeyDestroyed):
            instance.round_key("default")
        with pytest.raises(KeyDestroyed):
            instance.unwrap_file_key("default", b"\0" * 60, b"")
    for path in files_under(keyring.keys_dir):
        assert wrapped_before.split(b"key: ")[-1].strip() not in path.read_bytes()
    assert "default" not in keyring.round_names()


def test_a_destroyed_round_name_cannot_be_reused(keyring: Keyring) -> None:
    keyring.destroy_round_key("default")
    with pytest.raises(KeyDestroyed):
        keyring.ensure_round_key("default")


def test_destroy_is_idempotent_but_unknown_names_are_errors(
    keyring: Keyring,
) -> None:
    keyring.destroy_round_key("default")
    keyring.destroy_round_key("default")
    with pytest.raises(KeyNotFound):
        keyring.destroy_round_key("never-existed")


def test_destroy_also_shreds_crash_leftovers_of_the_round_key(
    keyring: Keyring,
) -> None:
    path = keyring.keys_dir / "rounds" / "default.key"
    leftover = keyfiles.temporary_name(path)
    leftover.write_bytes(path.read_bytes())
    keyring.destroy_round_key("default")
    assert not leftover.exists()


def test_destroy_leaves_other_rounds_alone(keyring: Keyring) -> None:
    before = round_keys(keyring)
    keyring.destroy_round_key("default")
    after = round_keys(keyring)
    assert after == {name: before[name] for name in after}
    assert set(after) == set(ROUNDS) - {"default"}


# -- rotation ------------------------------------------------------------


def test_rotation_keeps_round_keys_and_changes_the_master_id(
    keyring: Keyring,
) -> None:
    before = round_keys(keyring)
    old_master = (keyring.keys_dir / "master.key").read_text()
    old_id = keyring.master_key_id

    new_id = keyring.rotate_master()

    assert new_id == keyring.master_key_id != old_id
    assert round_keys(keyring) == before
    assert round_keys(Keyring.open(keyring.keys_dir)) == before
    keyring.verify()
    for name in ROUNDS:
        text = (keyring.keys_dir / "rounds" / f"{name}.key").read_text()
        assert f"master-id: {new_id}" in text
    master_text = (keyring.keys_dir / "master.key").read_text()
    assert "previous" not in master_text
    assert old_master.split("key: ")[1] not in master_text


def test_rotation_is_seen_by_another_process(keyring: Keyring) -> None:
    other_process = Keyring.open(keyring.keys_dir)
    before = round_keys(other_process)
    keyring.rotate_master()
    assert round_keys(other_process) == before
    assert other_process.master_key_id == keyring.master_key_id


def test_environment_rotation_needs_the_new_key_and_then_only_it(
    keys_dir: Path,
) -> None:
    old = generate_master_key()
    keyring = Keyring.create(keys_dir, master_key=old)
    keyring.ensure_round_key("default")
    before = keyring.round_key("default")
    with pytest.raises(ValueError):
        keyring.rotate_master()

    new = generate_master_key()
    assert keyring.rotate_master(new) == master_key_id(new)

    with pytest.raises(MasterKeyError, match="wrong master key"):
        Keyring.open(keys_dir, old)
    assert Keyring.open(keys_dir, new).round_key("default") == before


def test_rotating_to_the_current_key_is_refused(keys_dir: Path) -> None:
    master = generate_master_key()
    keyring = Keyring.create(keys_dir, master_key=master)
    with pytest.raises(ValueError):
        keyring.rotate_master(master)


class Crash(Exception):
    """Stands for the process dying at a durable write."""


def crash_at_write(monkeypatch: pytest.MonkeyPatch, allowed: int) -> None:
    """Make the durable write after ``allowed`` successful ones crash."""
    real = keyfiles.write_atomic
    calls = {"count": 0}

    def write_atomic(path: Path, data: bytes, **options: bool) -> None:
        if calls["count"] == allowed:
            raise Crash(path.name)
        calls["count"] += 1
        real(path, data, **options)

    monkeypatch.setattr(keyfiles, "write_atomic", write_atomic)


# Writes in a rotation: master.key, one per round, master.key again.
@pytest.mark.parametrize("allowed", range(len(ROUNDS) + 2))
def test_a_crash_at_any_point_of_a_rotation_loses_no_round_key(
    keyring: Keyring, monkeypatch: pytest.MonkeyPatch, allowed: int
) -> None:
    before = round_keys(keyring)
    crash_at_write(monkeypatch, allowed)
    with pytest.raises(Crash):
        keyring.rotate_master()
    monkeypatch.undo()

    reopened = Keyring.open(keyring.keys_dir)
    assert round_keys(reopened) == before
    reopened.verify()
    assert "previous" not in (keyring.keys_dir / "master.key").read_text()
    assert not keyfiles.leftover_temporaries(keyring.keys_dir / "master.key")


@pytest.mark.parametrize("allowed", range(1, len(ROUNDS) + 2))
def test_an_interrupted_environment_rotation_finishes_with_the_new_key(
    keys_dir: Path, monkeypatch: pytest.MonkeyPatch, allowed: int
) -> None:
    old, new = generate_master_key(), generate_master_key()
    keyring = Keyring.create(keys_dir, master_key=old)
    for name in ROUNDS:
        keyring.ensure_round_key(name)
    before = round_keys(keyring)
    crash_at_write(monkeypatch, allowed)
    with pytest.raises(Crash):
        keyring.rotate_master(new)
    monkeypatch.undo()

    with pytest.raises(MasterKeyError, match="rotation"):
        Keyring.open(keys_dir, old)
    reopened = Keyring.open(keys_dir, new)
    assert round_keys(reopened) == before
    reopened.verify()


def test_open_shreds_stale_copies_of_the_master_key_but_not_the_live_one(
    keyring: Keyring,
) -> None:
    master = keyring.keys_dir / "master.key"
    before = round_keys(keyring)
    stale = keyfiles.temporary_name(master)
    stale.write_bytes(master.read_bytes())
    second_link = keyfiles.temporary_name(master)
    os.link(master, second_link)

    reopened = Keyring.open(keyring.keys_dir)

    assert not stale.exists() and not second_link.exists()
    assert round_keys(reopened) == before
