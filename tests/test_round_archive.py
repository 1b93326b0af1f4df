"""Per-round keys, re-keying of files that predate a round, and the round
archive with its offline verification (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from censusdrop.audit.schema import audit_events
from censusdrop.cli.main import cli
from censusdrop.server.archive.keys import round_key_name
from censusdrop.server.archive.verify import verify_archive
from censusdrop.server.custody import ReviewerDownload
from censusdrop.server.roundmodel import RoundError
from censusdrop.server.schema import round_archives
from censusdrop.server.storage import index
from censusdrop.server.storage.crypto import DecryptingReader
from censusdrop.server.storage.crypto import read_header
from censusdrop.server.storage.errors import StorageError
from censusdrop.server.storage.keyring import Keyring
from conftest import TEST_PASSWORD
from ftpclient import login
from ftpclient import upload
from roundkit import ENSHI
from roundkit import REVIEWING
from roundkit import SUBMITTING
from roundkit import WUHAN
from roundkit import YICHANG
from roundkit import china
from roundkit import fixed_clock
from roundkit import make_round

PASSING = ("submitted", "prereviewed", "distributed", "meeting_held", "passed")


def _cli(instance: Any, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(instance.config), *args])
    return result.exit_code, result.output


def _key_of(path: Path) -> str:
    with path.open("rb") as raw:
        return read_header(raw).round_name


def _blobs(services: Any, area: str) -> list[Path]:
    storage = services.storage
    with services.engine.connect() as conn:
        paths = conn.execute(
            sa.select(index.file_versions.c.blob).where(
                index.file_versions.c.area == area
            )
        ).scalars()
        return [storage.layout.blob(blob) for blob in paths]


def _pass(services: Any, prefecture: str, round_name: str = "2020-hubei") -> None:
    for state in PASSING:
        services.rounds.advance(
            prefecture,
            state,
            at=REVIEWING,
            actor="test",
            reason="test",
            round_name=round_name,
        )


@pytest.fixture
def services(instance: Any) -> Any:
    services = instance.services()
    services.storage.prepare(sweep=False)
    yield services
    services.audit.close()
    services.engine.dispose()


def _seed(services: Any) -> None:
    storage = services.storage
    for area in (WUHAN, ENSHI):
        storage.ensure_area(area)
        storage.write_bytes(area, "自评估报告.txt", f"{area} 第一版".encode(), "seed")
        storage.write_bytes(area, "自评估报告.txt", f"{area} 第二版".encode(), "seed")
        storage.mkdir(area, "附件")
        storage.write_bytes(area, "附件/表.csv", b"a,b\n1,2\n" * 500, "seed")


# --- keys


def test_uploads_land_under_the_key_of_the_round(sqlite_server: Any) -> None:
    services = sqlite_server.services
    round_ = make_round(services, (WUHAN,))
    fixed_clock(sqlite_server, SUBMITTING)
    wuhan = login(sqlite_server.address, sqlite_server.cafile, "wuhan", TEST_PASSWORD)
    upload(wuhan, "材料.txt", "武汉材料".encode())
    wuhan.quit()

    stored = services.storage.layout.local(WUHAN, "材料.txt")
    assert _key_of(stored) == round_key_name(round_.id) == f"round-{round_.id}"
    assert services.storage.read_bytes(WUHAN, "材料.txt") == "武汉材料".encode()
    # An area in no round (here the custody area) keeps the default key.
    services.storage.ensure_area("_custody")
    services.storage.write_bytes("_custody", "x.txt", b"x", None)
    assert _key_of(services.storage.layout.local("_custody", "x.txt")) == "default"


def test_files_that_predate_the_round_are_rekeyed(
    services: Any, tmp_path: Path
) -> None:
    _seed(services)
    before = _blobs(services, WUHAN)
    assert len(before) == 3 and {_key_of(p) for p in before} == {"default"}
    copy = tmp_path / "copy-before"
    shutil.copytree(services.storage.root, copy)

    round_ = make_round(services, (WUHAN,))

    key = round_key_name(round_.id)
    assert services.storage.keyring.has_round_key(key)
    assert {_key_of(p) for p in _blobs(services, WUHAN)} == {key}
    assert {_key_of(p) for p in _blobs(services, ENSHI)} == {"default"}
    storage = services.storage
    assert storage.read_bytes(WUHAN, "自评估报告.txt") == f"{WUHAN} 第二版".encode()
    (old,) = [v for v in storage.history(WUHAN, "自评估报告.txt") if v.number == 1]
    with storage.open_version(WUHAN, "自评估报告.txt", old.id) as reader:
        assert reader.read() == f"{WUHAN} 第一版".encode()
    # Documented: a copy taken before the re-key stays readable with the
    # old key (default), which no purge destroys.
    copied = copy / "areas" / WUHAN / "自评估报告.txt"
    with DecryptingReader(copied.open("rb"), storage.keyring) as reader:
        assert reader.read() == f"{WUHAN} 第二版".encode()
    with services.engine.connect() as conn:
        events = conn.execute(
            sa.select(audit_events.c.details).where(
                audit_events.c.action == "round_rekey"
            )
        ).scalars()
        (details,) = [json.loads(text) for text in events]
    assert (details["round"], details["rekeyed"]) == ("2020-hubei", 3)


def test_a_newer_round_takes_over_the_area_and_its_key(services: Any) -> None:
    _seed(services)
    first = make_round(services, (WUHAN,), name="first")
    second = make_round(services, (WUHAN,), name="second")
    keys = {_key_of(p) for p in _blobs(services, WUHAN)}
    assert keys == {round_key_name(second.id)} != {round_key_name(first.id)}
    services.storage.write_bytes(WUHAN, "新.txt", b"new", "seed")
    assert _key_of(services.storage.layout.local(WUHAN, "新.txt")) == (
        round_key_name(second.id)
    )


# --- archive


def _archived(services: Any, instance: Any, dest: Path) -> tuple[int, str]:
    _seed(services)
    make_round(services, (WUHAN, ENSHI))
    services.custody.add(
        ReviewerDownload("expert", WUHAN, "自评估报告.txt", None, 10, True, REVIEWING)
    )
    for code in (WUHAN, ENSHI):
        _pass(services, code)
    return _cli(instance, "round", "archive", "2020-hubei", str(dest))


def test_archive_holds_every_version_and_verifies(
    services: Any, instance: Any, tmp_path: Path
) -> None:
    dest = tmp_path / "archive"
    code, out = _archived(services, instance, dest)
    assert code == 0, out
    assert "archive written" in out and f"archived: {WUHAN} {ENSHI}" in out

    manifest = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    files = {entry["file"]: entry for entry in manifest["files"]}
    current = files[f"files/{WUHAN}/current/自评估报告.txt"]
    assert (current["state"], current["number"]) == ("current", 2)
    versions = [e for e in files.values() if e.get("state") == "superseded"]
    assert len(versions) == 2
    first = dest / versions[0]["file"]
    assert first.read_bytes().endswith("第一版".encode())
    assert "audit/events.jsonl" in files and "custody/ledger.json" in files
    ledger = json.loads((dest / "custody" / "ledger.json").read_text("utf-8"))
    assert [item["path"] for item in ledger["items"]] == ["自评估报告.txt"]
    ours = (dest / "audit" / "round-events.jsonl").read_text(encoding="utf-8")
    assert '"round_state"' in ours and '"round_rekey"' in ours

    check = verify_archive(dest)
    assert check.ok, check.problems
    assert check.files == len(files)
    code, out = _cli(instance, "round", "verify-archive", str(dest))
    assert code == 0, out
    assert "recorded as verified" in out
    with services.engine.connect() as conn:
        (row,) = conn.execute(sa.select(round_archives)).all()
    assert row.verified_at is not None and row.path == str(dest.resolve())
    states = {e.state for e in services.rounds.get("2020-hubei").entries}
    assert states == {"archived"}


def test_archive_refuses_a_round_not_passed_unless_forced(
    services: Any, instance: Any, tmp_path: Path
) -> None:
    make_round(services, (WUHAN, YICHANG))
    _pass(services, WUHAN)
    code, out = _cli(instance, "round", "archive", "2020-hubei", str(tmp_path / "a"))
    assert code == 1 and f"not passed yet: {YICHANG}" in out
    assert not (tmp_path / "a").exists()
    code, out = _cli(
        instance, "round", "archive", "2020-hubei", str(tmp_path / "a"), "--force"
    )
    assert code == 2 and "--force needs --reason" in out

    code, out = _cli(
        instance,
        "round",
        "archive",
        "2020-hubei",
        str(tmp_path / "a"),
        "--force",
        "--reason",
        "宜昌市退出本批次",
    )
    assert code == 0, out
    with services.engine.connect() as conn:
        (row,) = conn.execute(sa.select(round_archives)).all()
        details = [
            json.loads(text)
            for text in conn.execute(
                sa.select(audit_events.c.details).where(
                    audit_events.c.action == "round_state",
                    audit_events.c.prefecture == YICHANG,
                )
            ).scalars()
        ]
    assert row.forced_reason == "宜昌市退出本批次"
    assert details[-1]["to"] == "archived" and details[-1]["forced"] is True
    assert details[-1]["reason"] == "宜昌市退出本批次"


def test_archive_refuses_a_folder_that_is_not_empty(
    services: Any, instance: Any, tmp_path: Path
) -> None:
    make_round(services, (WUHAN,))
    _pass(services, WUHAN)
    dest = tmp_path / "full"
    dest.mkdir()
    (dest / "old.txt").write_text("x")
    code, out = _cli(instance, "round", "archive", "2020-hubei", str(dest))
    assert code == 1 and "is not an empty folder" in out
    code, out = _cli(instance, "round", "archive", "nosuch", str(tmp_path / "b"))
    assert code == 1 and "no round named 'nosuch'" in out


def _damage_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def archive_dir(services: Any, instance: Any, tmp_path: Path) -> Path:
    dest = tmp_path / "archive"
    code, out = _archived(services, instance, dest)
    assert code == 0, out
    return dest


@pytest.mark.parametrize(
    "target",
    [
        f"files/{WUHAN}/current/附件/表.csv",
        "manifest.json",
        "manifest.sig",
        "audit/events.jsonl",
        "audit/round-events.jsonl",
        "custody/ledger.json",
    ],
)
def test_verify_fails_after_a_one_byte_change(archive_dir: Path, target: str) -> None:
    _damage_one_byte(archive_dir / target)
    check = verify_archive(archive_dir)
    assert not check.ok
    assert len(check.problems) >= 1


def test_verify_names_a_removed_and_an_extra_file(
    archive_dir: Path, instance: Any
) -> None:
    (archive_dir / "files" / WUHAN / "current" / "附件" / "表.csv").unlink()
    (archive_dir / "files" / ENSHI / "extra.txt").write_text("not ours")
    code, out = _cli(instance, "round", "verify-archive", str(archive_dir))
    assert code == 1
    lines = [line for line in out.splitlines() if line.startswith("problem:")]
    assert lines == [
        f"problem: files/{WUHAN}/current/附件/表.csv: missing",
        f"problem: files/{ENSHI}/extra.txt: not listed in the manifest",
    ]


def test_verify_pins_the_trusted_public_key(archive_dir: Path, tmp_path: Path) -> None:
    from censusdrop.audit.checkpoint import create_signing_key

    stranger = create_signing_key(tmp_path / "other.key")
    assert (
        verify_archive(archive_dir, stranger.public)
        .problems[0]
        .startswith("public-key.pem: key")
    )
    own = (archive_dir / "public-key.pem").read_text()
    pem = tmp_path / "trusted.pem"
    pem.write_text(own)
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "--config",
            str(tmp_path / "none.toml"),
            "round",
            "verify-archive",
            str(archive_dir),
            "--public-key",
            str(pem),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "not recorded (no database at hand" in result.output


def test_a_forged_manifest_with_a_new_key_fails_against_the_pinned_key(
    archive_dir: Path, tmp_path: Path, services: Any
) -> None:
    from censusdrop.audit.checkpoint import create_signing_key
    from censusdrop.audit.checkpoint import load_verify_key
    from censusdrop.server.archive import manifest

    settings = services.settings
    trusted = load_verify_key(settings.path(settings.audit.signing_key))
    forger = create_signing_key(tmp_path / "forger.key")
    body = (archive_dir / "manifest.json").read_bytes()
    (archive_dir / "manifest.sig").write_bytes(manifest.sign(forger, body))
    (archive_dir / "public-key.pem").write_text(forger.public.public_pem())
    assert not verify_archive(archive_dir, trusted).ok
    unpinned = verify_archive(archive_dir)
    assert not unpinned.ok  # the manifest names the real key's id
    assert any("another signing key" in p for p in unpinned.problems)


def test_archiving_a_purged_round_is_refused(services: Any, tmp_path: Path) -> None:
    from censusdrop.audit.checkpoint import load_signing_key
    from censusdrop.server.archive.writer import write_archive
    from censusdrop.server.purge import purge_round

    key = load_signing_key(services.settings.path(services.settings.audit.signing_key))
    round_ = make_round(services, (WUHAN,))
    purge_round(
        services, "2020-hubei", key=key, at=REVIEWING, operator="t", forced_reason="t"
    )
    with pytest.raises(RoundError, match="was purged"):
        write_archive(
            services,
            round_,
            tmp_path / "a",
            key=key,
            at=china(2020, 7, 2),
            operator="t",
            forced_reason="t",
        )


def test_a_keyring_without_the_round_key_cannot_read_rekeyed_files(
    services: Any, tmp_path: Path
) -> None:
    _seed(services)
    make_round(services, (WUHAN,))
    keys_copy = tmp_path / "keys"
    shutil.copytree(services.storage.keyring.keys_dir, keys_copy)
    for path in (keys_copy / "rounds").glob("round-*.key"):
        path.unlink()
    other = Keyring.open(keys_copy)
    blob = services.storage.layout.local(WUHAN, "自评估报告.txt")
    with blob.open("rb") as raw, pytest.raises(StorageError):
        DecryptingReader(raw, other)
