"""Exports verify offline, and any one-byte change makes them fail."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from censusdrop.audit import events as ev
from censusdrop.audit.checkpoint import SigningKey
from censusdrop.audit.checkpoint import create_signing_key
from censusdrop.audit.events import AuditEvent
from censusdrop.audit.export import CHECKPOINT_FILE
from censusdrop.audit.export import EVENTS_FILE
from censusdrop.audit.export import PUBLIC_KEY_FILE
from censusdrop.audit.export import ExportError
from censusdrop.audit.export import export_log
from censusdrop.audit.export import verify_export
from censusdrop.audit.schema import metadata
from censusdrop.audit.store import AuditLog
from censusdrop.audit.verify import ProblemKind

EVENTS = 25


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return create_signing_key(tmp_path / "audit.key")


@pytest.fixture
def exported(tmp_path: Path, database_url: str, key: SigningKey) -> Iterator[Path]:
    engine = sa.create_engine(database_url)
    metadata.create_all(engine)
    AuditLog(engine).append(
        [
            AuditEvent(
                ev.DOWNLOAD_END,
                account="专家乙",
                path=f"/恩施州/材料 {n}.xlsx",
                bytes=n * 100,
                details={"note": 'tab\there "quoted"', "n": n},
            )
            for n in range(EVENTS)
        ]
    )
    summary = export_log(engine, key, tmp_path / "export")
    engine.dispose()
    assert summary.events == summary.checkpoint.seq == EVENTS
    yield summary.directory


def test_an_export_verifies_offline(exported: Path, key: SigningKey) -> None:
    for path in (exported, exported / EVENTS_FILE):
        result = verify_export(path, key.public)
        assert result.ok, result.problem
        assert result.events == EVENTS
        assert result.warnings == ()


def test_an_export_is_plain_json_lines_with_the_checkpoint_and_key(
    exported: Path, key: SigningKey
) -> None:
    lines = (exported / EVENTS_FILE).read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    assert len(lines) == EVENTS and first["seq"] == 1 and first["account"] == "专家乙"
    assert json.loads((exported / CHECKPOINT_FILE).read_text())["seq"] == EVENTS
    assert (exported / PUBLIC_KEY_FILE).read_text() == key.public.public_pem()


def test_without_a_pinned_key_the_result_names_the_key_to_compare(
    exported: Path, key: SigningKey
) -> None:
    result = verify_export(exported)
    assert result.ok
    assert any(key.key_id in warning for warning in result.warnings)


@pytest.mark.parametrize("name", [EVENTS_FILE, CHECKPOINT_FILE, PUBLIC_KEY_FILE])
def test_any_one_byte_change_makes_verification_fail(
    exported: Path, key: SigningKey, tmp_path: Path, name: str
) -> None:
    original = (exported / name).read_bytes()
    positions = random.Random(name).sample(range(len(original)), 12)
    positions += [0, len(original) - 1]
    for position in positions:
        copy = tmp_path / f"copy-{position}"
        shutil.copytree(exported, copy)
        damaged = bytearray(original)
        damaged[position] ^= 0x01
        (copy / name).write_bytes(bytes(damaged))
        for pinned in (key.public, None):
            result = verify_export(copy, pinned)
            assert not result.ok, (name, position, pinned)
            assert result.exit_code == 1


def test_an_export_signed_by_another_key_fails_against_the_pinned_key(
    exported: Path, tmp_path: Path
) -> None:
    trusted = create_signing_key(tmp_path / "trusted.key")
    result = verify_export(exported, trusted.public)
    assert result.problem is not None
    assert result.problem.kind == ProblemKind.BAD_CHECKPOINT


def test_entries_added_after_the_signed_end_are_reported(
    exported: Path, key: SigningKey
) -> None:
    events = exported / EVENTS_FILE
    lines = events.read_text(encoding="utf-8").splitlines(keepends=True)
    events.write_text("".join(lines[:-1]), encoding="utf-8")
    problem = verify_export(exported, key.public).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.TRUNCATED, EVENTS)


def test_an_export_needs_an_empty_directory(
    exported: Path, key: SigningKey, tmp_path: Path
) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    metadata.create_all(engine)
    try:
        with pytest.raises(ExportError, match="not empty"):
            export_log(engine, key, exported)
    finally:
        engine.dispose()
