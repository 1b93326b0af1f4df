"""The signing key file and signed checkpoints."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization

from censusdrop.audit.chain import GENESIS_HASH
from censusdrop.audit.checkpoint import CheckpointFileError
from censusdrop.audit.checkpoint import KeyFileError
from censusdrop.audit.checkpoint import create_signing_key
from censusdrop.audit.checkpoint import latest_checkpoint
from censusdrop.audit.checkpoint import load_signing_key
from censusdrop.audit.checkpoint import load_verify_key
from censusdrop.audit.checkpoint import make_checkpoint
from censusdrop.audit.checkpoint import read_checkpoint_file
from censusdrop.audit.checkpoint import sign_checkpoint
from censusdrop.audit.checkpoint import write_checkpoint_file
from censusdrop.audit.events import AuditEvent
from censusdrop.audit.schema import metadata
from censusdrop.audit.store import AuditLog

AT = dt.datetime(2020, 6, 20, 9, 0, tzinfo=dt.UTC)


def test_a_new_key_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    key = create_signing_key(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_signing_key(path).key_id == key.key_id
    assert "PRIVATE" not in repr(key) and key.key_id[:16] in repr(key)


def test_an_existing_key_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    create_signing_key(path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        create_signing_key(path)
    assert path.read_bytes() == before


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    create_signing_key(path)
    os.chmod(path, 0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_signing_key(path)


@pytest.mark.parametrize("content", [b"", b"not a key", b"-----BEGIN PRIVATE KEY-----"])
def test_a_damaged_key_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "audit.key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError):
        load_signing_key(path)


def test_a_missing_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no key file"):
        load_signing_key(tmp_path / "absent.key")


def test_the_key_id_is_the_sha256_of_the_raw_public_key(tmp_path: Path) -> None:
    key = create_signing_key(tmp_path / "audit.key")
    public = serialization.load_pem_public_key(key.public.public_pem().encode())
    raw = public.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert key.key_id == hashlib.sha256(raw).hexdigest()


def test_the_public_key_loads_from_its_pem_or_from_the_signing_key(
    tmp_path: Path,
) -> None:
    key = create_signing_key(tmp_path / "audit.key")
    pem = tmp_path / "audit.pem"
    pem.write_text(key.public.public_pem())

    assert load_verify_key(pem).key_id == key.key_id
    assert load_verify_key(tmp_path / "audit.key").key_id == key.key_id


def test_a_checkpoint_verifies_only_unaltered_and_under_its_key(tmp_path: Path) -> None:
    key = create_signing_key(tmp_path / "audit.key")
    other = create_signing_key(tmp_path / "other.key")
    checkpoint = sign_checkpoint(key, 12, "ab" * 32, AT)

    assert checkpoint.is_signed_by(key.public)
    assert not checkpoint.is_signed_by(other.public)
    for change in (
        {"seq": 13},
        {"head_hash": "cd" * 32},
        {"made_at": AT + dt.timedelta(seconds=1)},
        {"signature": "AAAA" + checkpoint.signature[4:]},
        {"signature": "not base64!"},
    ):
        altered = dataclasses.replace(checkpoint, **change)  # type: ignore[arg-type]
        assert not altered.is_signed_by(key.public), change


def test_make_checkpoint_signs_and_stores_the_current_head(
    tmp_path: Path, database_url: str
) -> None:
    engine = sa.create_engine(database_url)
    metadata.create_all(engine)
    key = create_signing_key(tmp_path / "audit.key")
    try:
        empty = make_checkpoint(engine, key, at=AT)
        assert (empty.seq, empty.head_hash) == (0, GENESIS_HASH)
        log = AuditLog(engine)
        log.append([AuditEvent("login"), AuditEvent("list")])

        checkpoint = make_checkpoint(engine, key, at=AT)

        assert checkpoint.seq == 2 and checkpoint.head_hash == log.head().hash
        assert checkpoint.made_at == AT
        assert checkpoint.is_signed_by(key.public)
        assert latest_checkpoint(engine) == checkpoint
    finally:
        engine.dispose()


def test_a_checkpoint_file_round_trips_with_its_public_key(tmp_path: Path) -> None:
    key = create_signing_key(tmp_path / "audit.key")
    checkpoint = sign_checkpoint(key, 5, "ef" * 32, AT)
    path = tmp_path / "kept.json"

    write_checkpoint_file(checkpoint, path, key.public)
    loaded, public = read_checkpoint_file(path)

    assert loaded == checkpoint
    assert public is not None and public.key_id == key.key_id


@pytest.mark.parametrize("text", ["", "{}", '{"format": "other"}', "[1]"])
def test_a_damaged_checkpoint_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "kept.json"
    path.write_text(text)
    with pytest.raises(CheckpointFileError):
        read_checkpoint_file(path)
