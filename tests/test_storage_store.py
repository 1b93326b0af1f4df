"""The storage API: partials, expiry, sweeping, crash recovery, versions."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from censusdrop.server.storage.errors import ResumeRefused
from censusdrop.server.storage.partials import PartialKey
from censusdrop.server.storage.pipeline import BATCH_BYTES
from censusdrop.server.storage.pipeline import INLINE_BYTES
from censusdrop.server.storage.staging import Staging
from censusdrop.server.storage.store import Storage
from conftest import Instance
from conftest import open_storage

AREA = "420100"
CHUNK = 64 * 1024
T0 = dt.datetime(2020, 4, 20, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def storage(instance: Instance) -> Iterator[Storage]:
    with open_storage(instance, AREA) as store:
        yield store


def _staging(storage: Storage) -> list[str]:
    return sorted(p.name for p in storage.layout.staging.iterdir())


def _interrupt(storage: Storage, path: str, data: bytes, at: dt.datetime = T0) -> int:
    upload = storage.begin_upload(AREA, path, "wuhan", resumable=True, at=at)
    upload.write(data)
    offset = upload.suspend(at=at)
    assert offset is not None
    return offset


def test_an_interrupted_upload_resumes_to_the_digest_of_the_whole(
    storage: Storage,
) -> None:
    data = os.urandom(5 * CHUNK + 100)
    assert _interrupt(storage, "a.pdf", data[: 3 * CHUNK + 7]) == 3 * CHUNK
    assert storage.resumable_offset(AREA, "a.pdf", "wuhan", at=T0) == 3 * CHUNK
    assert storage.list(AREA, "") == []

    upload = storage.resume_upload(AREA, "a.pdf", "wuhan", 3 * CHUNK, at=T0)
    assert upload.resumed_from == 3 * CHUNK
    upload.write(data[3 * CHUNK :])
    version = upload.commit()
    assert version.sha256 == hashlib.sha256(data).hexdigest()
    assert storage.read_bytes(AREA, "a.pdf") == data
    assert storage.resumable_offset(AREA, "a.pdf", "wuhan", at=T0) is None
    assert _staging(storage) == []


def test_resume_at_another_offset_is_refused_and_keeps_the_partial(
    storage: Storage,
) -> None:
    _interrupt(storage, "b.pdf", os.urandom(2 * CHUNK + 1))
    with pytest.raises(ResumeRefused) as refused:
        storage.resume_upload(AREA, "b.pdf", "wuhan", 100, at=T0)
    assert refused.value.offset == 2 * CHUNK
    assert storage.resumable_offset(AREA, "b.pdf", "wuhan", at=T0) == 2 * CHUNK
    with pytest.raises(ResumeRefused) as nothing:
        storage.resume_upload(AREA, "b.pdf", "enshi", 2 * CHUNK, at=T0)
    assert nothing.value.offset is None


def test_a_partial_expires_and_is_swept(storage: Storage) -> None:
    _interrupt(storage, "c.pdf", os.urandom(2 * CHUNK))
    later = T0 + dt.timedelta(hours=23)
    assert storage.resumable_offset(AREA, "c.pdf", "wuhan", at=later) == 2 * CHUNK
    assert storage.sweep(at=later, grace=dt.timedelta(0)) == 0

    expired = T0 + dt.timedelta(hours=25)
    assert storage.resumable_offset(AREA, "c.pdf", "wuhan", at=expired) is None
    with pytest.raises(ResumeRefused):
        storage.resume_upload(AREA, "c.pdf", "wuhan", 2 * CHUNK, at=expired)
    assert storage.sweep(at=expired, grace=dt.timedelta(0)) == 1
    assert _staging(storage) == []


def test_resuming_restarts_the_lifetime(storage: Storage) -> None:
    _interrupt(storage, "d.pdf", os.urandom(2 * CHUNK))
    later = T0 + dt.timedelta(hours=20)
    upload = storage.resume_upload(AREA, "d.pdf", "wuhan", 2 * CHUNK, at=later)
    upload.write(os.urandom(CHUNK))
    assert upload.suspend(at=later) == 3 * CHUNK
    still = T0 + dt.timedelta(hours=30)
    assert storage.resumable_offset(AREA, "d.pdf", "wuhan", at=still) == 3 * CHUNK


def test_what_is_not_resumable_is_never_kept(storage: Storage) -> None:
    small = storage.begin_upload(AREA, "e.pdf", "wuhan", resumable=True)
    small.write(b"less than one chunk")
    small.close()
    internal = storage.begin_upload(AREA, "f.pdf", None)
    internal.write(os.urandom(3 * CHUNK))
    internal.close()
    assert _staging(storage) == []


def test_a_new_upload_replaces_the_partial_and_append_continues_it(
    storage: Storage,
) -> None:
    data = os.urandom(3 * CHUNK)
    _interrupt(storage, "g.pdf", data[: 2 * CHUNK])
    appending = storage.begin_upload(
        AREA, "g.pdf", "wuhan", append=True, resumable=True, at=T0
    )
    assert appending.resumed_from == 2 * CHUNK
    appending.write(data[2 * CHUNK :])
    appending.commit()
    assert storage.read_bytes(AREA, "g.pdf") == data

    _interrupt(storage, "g.pdf", os.urandom(2 * CHUNK))
    storage.begin_upload(AREA, "g.pdf", "wuhan", resumable=True, at=T0).discard()
    assert storage.resumable_offset(AREA, "g.pdf", "wuhan", at=T0) is None


def test_a_partial_is_taken_by_one_upload_only(storage: Storage) -> None:
    _interrupt(storage, "h.pdf", os.urandom(2 * CHUNK))
    first = storage.resume_upload(AREA, "h.pdf", "wuhan", 2 * CHUNK, at=T0)
    with pytest.raises(ResumeRefused):
        storage.resume_upload(AREA, "h.pdf", "wuhan", 2 * CHUNK, at=T0)
    assert storage.partials.take(PartialKey(AREA, "h.pdf", "wuhan"), at=T0) is None
    first.discard()


def test_a_sweep_leaves_live_uploads_alone(storage: Storage) -> None:
    upload = storage.begin_upload(AREA, "i.pdf", "wuhan", resumable=True)
    upload.write(os.urandom(2 * CHUNK))
    assert storage.sweep(grace=dt.timedelta(0)) == 0
    upload.write(b"end")
    upload.commit()
    assert storage.read_bytes(AREA, "i.pdf")[-3:] == b"end"


def test_only_an_upload_with_a_writer_thread_stays_resumable_after_a_crash(
    storage: Storage,
) -> None:
    # The writer thread starts with the first batch past INLINE_BYTES, and
    # writes the sidecar first.
    small = storage.begin_upload(AREA, "n.pdf", "wuhan", resumable=True)
    small.write(os.urandom(2 * CHUNK))
    large = storage.begin_upload(AREA, "o.pdf", "wuhan", resumable=True)
    large.write(os.urandom(INLINE_BYTES + BATCH_BYTES - 1))
    assert not any(name.endswith(".json") for name in _staging(storage))
    large.write(b"x")
    large._writer.join()  # the thread has written what it took
    assert f"{large.file_id}.json" in _staging(storage)

    # The process dies: its descriptors, and the writers' locks, go with it.
    for upload in (small, large):
        upload._raw.close()
    assert storage.sweep(grace=dt.timedelta(0)) == 1  # the small one
    assert storage.resumable_offset(AREA, "n.pdf", "wuhan") is None
    assert (
        storage.resumable_offset(AREA, "o.pdf", "wuhan") == INLINE_BYTES + BATCH_BYTES
    )
    assert [n for n in _staging(storage) if not n.startswith("resume-")] == []


def test_a_commit_cut_off_after_its_row_is_finished_by_the_sweep(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.write_bytes(AREA, "j.pdf", b"version one", "wuhan")

    def crash(self: Staging, area: str, path: str, staged: Path) -> None:
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(Staging, "settle", crash)
    upload = storage.begin_upload(AREA, "j.pdf", "wuhan")
    upload.write(b"version two")
    with pytest.raises(OSError):
        upload.commit()
    monkeypatch.undo()

    assert storage.prepare() == 0  # as at the next start-up
    assert storage.read_bytes(AREA, "j.pdf") == b"version two"
    history = storage.history(AREA, "j.pdf")
    assert [v.state for v in history] == ["current", "superseded"]
    with storage.open_version(AREA, "j.pdf", history[1].id) as old:
        assert old.read() == b"version one"
    assert _staging(storage) == []


def test_restore_makes_an_earlier_version_current_again(storage: Storage) -> None:
    first = storage.write_bytes(AREA, "k.pdf", b"one", "wuhan")
    storage.write_bytes(AREA, "k.pdf", b"two", "wuhan")
    storage.remove(AREA, "k.pdf", "wuhan")
    restored = storage.restore(AREA, "k.pdf", first.id, "admin")
    assert restored.number == 3 and restored.sha256 == first.sha256
    assert storage.read_bytes(AREA, "k.pdf") == b"one"
    states = [v.state for v in storage.history(AREA, "k.pdf")]
    assert states == ["current", "deleted", "superseded"]


def test_rename_over_a_file_keeps_it_as_a_version(storage: Storage) -> None:
    storage.write_bytes(AREA, "l.pdf", b"moved", "wuhan")
    replaced = storage.write_bytes(AREA, "m.pdf", b"replaced", "wuhan")
    storage.rename(AREA, "l.pdf", "m.pdf", "wuhan")
    assert storage.read_bytes(AREA, "m.pdf") == b"moved"
    with storage.open_version(AREA, "m.pdf", replaced.id) as old:
        assert old.read() == b"replaced"


@pytest.mark.parametrize("change", ["delete", "rename", "rename folder"])
def test_a_delete_or_rename_waits_for_a_commit_of_the_same_path(
    storage: Storage, change: str
) -> None:
    storage.mkdir(AREA, "dir")
    storage.write_bytes(AREA, "dir/a.pdf", b"first", account="u")
    actions = {
        "delete": lambda: storage.remove(AREA, "dir/a.pdf", account="u"),
        "rename": lambda: storage.rename(AREA, "dir/a.pdf", "dir/b.pdf", "u"),
        "rename folder": lambda: storage.rename(AREA, "dir", "moved", "u"),
    }
    worker = threading.Thread(target=actions[change])
    # Held as a commit of dir/a.pdf holds it between its row and its move.
    with storage.staging.holding(AREA, "dir/a.pdf"):
        worker.start()
        worker.join(0.5)
        assert worker.is_alive(), "the change did not wait for the commit"
    worker.join(10)
    assert not worker.is_alive()
    assert not storage.exists(AREA, "dir/a.pdf")
