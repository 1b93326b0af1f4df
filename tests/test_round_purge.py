"""``round purge``: refused until a verified archive covers the round and
custody is settled; crypto-shreds the round (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from censusdrop.audit.schema import audit_checkpoints
from censusdrop.audit.schema import audit_events
from censusdrop.cli.main import cli
from censusdrop.server.custody import ReviewerDownload
from censusdrop.server.schema import file_versions
from censusdrop.server.schema import metadata as server_metadata
from censusdrop.server.schema import round_purges
from censusdrop.server.storage.errors import KeyDestroyed
from censusdrop.server.storage.keyring import Keyring
from censusdrop.server.storage.pipeline import BATCH_BYTES
from censusdrop.server.storage.pipeline import INLINE_BYTES
from censusdrop.server.storage.store import Storage
from roundkit import ENSHI
from roundkit import REVIEWING
from roundkit import WUHAN
from roundkit import make_round

PASSING = ("submitted", "prereviewed", "distributed", "meeting_held", "passed")
FILES = {
    "自评估报告.txt": ["第一版".encode(), "第二版".encode()],
    "附件/表.csv": [b"a,b\n1,2\n" * 3000],
}


def _cli(instance: Any, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(instance.config), *args])
    return result.exit_code, result.output


@pytest.fixture
def services(instance: Any) -> Any:
    services = instance.services()
    services.storage.prepare(sweep=False)
    yield services
    services.audit.close()
    services.engine.dispose()


def _seed(services: Any, areas: tuple[str, ...] = (WUHAN, ENSHI)) -> None:
    storage = services.storage
    for area in areas:
        storage.ensure_area(area)
        storage.mkdir(area, "附件")
        for path, contents in FILES.items():
            for data in contents:
                storage.write_bytes(area, path, data, "seed")


def _pass_all(services: Any, round_name: str) -> None:
    for entry in services.rounds.get(round_name).entries:
        for state in PASSING:
            services.rounds.advance(
                entry.prefecture,
                state,
                at=REVIEWING,
                actor="t",
                reason="t",
                round_name=round_name,
            )


def _archive(instance: Any, tmp_path: Path, name: str = "2020-hubei") -> Path:
    dest = tmp_path / f"archive-{name}"
    code, out = _cli(instance, "round", "archive", name, str(dest))
    assert code == 0, out
    return dest


def _verify(instance: Any, dest: Path) -> None:
    code, out = _cli(instance, "round", "verify-archive", str(dest))
    assert code == 0 and "recorded as verified" in out, out


def _ready(services: Any, instance: Any, tmp_path: Path) -> None:
    """A round of Wuhan and Enshi, passed, archived and verified."""
    _seed(services)
    make_round(services, (WUHAN, ENSHI))
    _pass_all(services, "2020-hubei")
    _verify(instance, _archive(instance, tmp_path))


def _copy_database(services: Any, target: Path) -> sa.Engine:
    """A copy of the server's tables in a new SQLite file."""
    copy = sa.create_engine(f"sqlite:///{target}")
    server_metadata.create_all(copy)
    with services.engine.connect() as source, copy.begin() as conn:
        for table in server_metadata.sorted_tables:
            rows = [dict(row._mapping) for row in source.execute(sa.select(table))]
            if rows:
                conn.execute(table.insert(), rows)
    return copy


def _read_everything(storage: Storage, area: str) -> int:
    """Read every version of an area through ``storage``; how many."""
    count = 0
    for path in FILES:
        for version in storage.history(area, path):
            with storage.open_version(area, path, version.id) as reader:
                assert reader.read() in FILES[path]
            count += 1
    return count


def test_purge_is_refused_until_archived_verified_and_custody_settled(
    services: Any, instance: Any, tmp_path: Path
) -> None:
    instance.add_account("expert", "reviewer")
    _seed(services, (WUHAN,))
    make_round(services, (WUHAN,))
    _pass_all(services, "2020-hubei")
    services.custody.add(
        ReviewerDownload("expert", WUHAN, "自评估报告.txt", None, 9, True, REVIEWING)
    )
    code, out = _cli(instance, "round", "purge", "2020-hubei")
    assert code == 1
    assert "has no archive" in out and "1 custody item(s)" in out

    dest = _archive(instance, tmp_path)
    code, out = _cli(instance, "round", "purge", "2020-hubei")
    assert code == 1 and "was not verified" in out
    _verify(instance, dest)
    code, out = _cli(instance, "round", "purge", "2020-hubei")
    assert code == 1 and "archive" not in out and "reviewers: expert" in out

    statement = tmp_path / "statement.pdf"
    statement.write_bytes(b"%PDF-1.4 returned and deleted")
    code, out = _cli(
        instance, "custody", "confirm", "expert", "--evidence", str(statement)
    )
    assert code == 0, out
    code, out = _cli(instance, "round", "purge", "2020-hubei")
    assert code == 0, out
    assert "round key round-1 destroyed" in out
    # The signed statement is the record of the round's end: it stays.
    (confirmation,) = services.custody.confirmations("expert")
    stored = services.storage.read_bytes("_custody", confirmation.evidence_path)
    assert stored == statement.read_bytes()
    code, out = _cli(instance, "round", "purge", "2020-hubei")
    assert code == 1 and "already purged" in out


def test_purge_is_refused_when_files_changed_after_the_archive(
    services: Any, instance: Any, tmp_path: Path
) -> None:
    _ready(services, instance, tmp_path)
    services.storage.write_bytes(WUHAN, "迟交.txt", b"late", "import:admin")
    code, out = _cli(instance, "round", "purge", "2020-hubei")
    assert code == 1 and "changed since its verified archive" in out
    _verify(instance, _archive(instance, tmp_path / "again"))
    code, out = _cli(instance, "round", "purge", "2020-hubei")
    assert code == 0, out


def test_a_forced_purge_needs_a_reason_and_records_it_signed(
    services: Any, instance: Any
) -> None:
    _seed(services, (WUHAN,))
    make_round(services, (WUHAN,))
    code, out = _cli(instance, "round", "purge", "2020-hubei", "--force")
    assert code == 2 and "--force needs --reason" in out
    code, out = _cli(
        instance, "round", "purge", "2020-hubei", "--force", "--reason", "提前销毁"
    )
    assert code == 0, out

    with services.engine.connect() as conn:
        (purge,) = conn.execute(sa.select(round_purges)).all()
        event = conn.execute(
            sa.select(audit_events).where(audit_events.c.action == "round_purge")
        ).one()
        last = conn.execute(
            sa.select(audit_checkpoints).order_by(audit_checkpoints.c.id.desc())
        ).first()
        states = set(conn.execute(sa.select(file_versions.c.state)).scalars())
    assert purge.forced_reason == "提前销毁" and purge.versions == 3
    details = json.loads(event.details)
    assert details["forced_reason"] == "提前销毁"
    assert "has no archive" in " ".join(details["refusals_overridden"])
    assert last is not None and last.seq == event.seq
    assert states == {"purged"}


def test_after_a_purge_copies_taken_before_cannot_be_decrypted(
    services: Any, instance: Any, tmp_path: Path
) -> None:
    _ready(services, instance, tmp_path)
    root_copy = tmp_path / "data-copy"
    shutil.copytree(services.storage.root, root_copy)
    db_copy = _copy_database(services, tmp_path / "db-copy.sqlite")
    keys_dir = services.storage.keyring.keys_dir
    copied = Storage(root_copy, Keyring.open(keys_dir), db_copy)
    assert _read_everything(copied, WUHAN) == 3  # the copy is readable now

    code, out = _cli(instance, "round", "purge", "2020-hubei")
    assert code == 0, out

    copied = Storage(root_copy, Keyring.open(keys_dir), db_copy)
    for area in (WUHAN, ENSHI):
        for path in FILES:
            for version in copied.history(area, path):
                with pytest.raises(KeyDestroyed, match="round key 'round-1' was"):
                    copied.open_version(area, path, version.id)
    with pytest.raises(KeyDestroyed):
        copied.read_bytes(WUHAN, "自评估报告.txt")
    db_copy.dispose()

    layout = services.storage.layout
    assert list(layout.area_dir(WUHAN).iterdir()) == []
    assert not (layout.root / "versions" / WUHAN).exists()
    assert services.storage.history(WUHAN, "自评估报告.txt")[0].state == "purged"


def test_an_area_that_joined_a_newer_round_is_left_alone(
    services: Any, instance: Any, tmp_path: Path
) -> None:
    _seed(services)
    make_round(services, (WUHAN, ENSHI), name="first")
    _pass_all(services, "first")
    _verify(instance, _archive(instance, tmp_path, "first"))
    services.rounds.create(
        "second", at=REVIEWING + dt.timedelta(days=1), prefectures=[WUHAN]
    )
    code, out = _cli(instance, "round", "purge", "first")
    assert code == 1 and "changed since its verified archive" in out
    _verify(instance, _archive(instance, tmp_path / "again", "first"))

    code, out = _cli(instance, "round", "purge", "first")
    assert code == 0, out
    assert f"left in place (now in a newer round): {WUHAN}" in out
    assert _read_everything(services.storage, WUHAN) == 3
    assert services.storage.history(ENSHI, "自评估报告.txt")[0].state == "purged"


def test_a_purge_removes_the_uploads_a_crash_left_in_progress(
    services: Any, instance: Any, tmp_path: Path
) -> None:
    _ready(services, instance, tmp_path)
    storage = services.storage
    small = storage.begin_upload(WUHAN, "小.pdf", "wuhan", resumable=True)
    small.write(b"a" * 1000)  # no sidecar: encrypted under the round's key
    large = storage.begin_upload(WUHAN, "大.pdf", "wuhan", resumable=True)
    large.write(b"b" * (INLINE_BYTES + BATCH_BYTES))  # a writer thread and a sidecar
    large._writer.join()
    live = storage.begin_upload(ENSHI, "在传.pdf", "enshi", resumable=True)
    live.write(b"c" * 1000)
    for crashed in (small, large):  # the descriptor, and the lock, are gone
        crashed._raw.close()

    code, out = _cli(instance, "round", "purge", "2020-hubei")
    assert code == 0, out
    left = sorted(p.name for p in storage.layout.staging.iterdir())
    assert left == [live.staged.name]
    live.discard()
