"""Verification names the first bad entry for every kind of tampering."""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from censusdrop.audit import events as ev
from censusdrop.audit.chain import canonical_text
from censusdrop.audit.chain import chain_hash
from censusdrop.audit.chain import seal
from censusdrop.audit.checkpoint import SigningKey
from censusdrop.audit.checkpoint import create_signing_key
from censusdrop.audit.checkpoint import make_checkpoint
from censusdrop.audit.events import AuditEvent
from censusdrop.audit.scan import read_ahead
from censusdrop.audit.schema import audit_checkpoints
from censusdrop.audit.schema import audit_events
from censusdrop.audit.schema import metadata
from censusdrop.audit.store import AuditLog
from censusdrop.audit.verify import PARALLEL_THRESHOLD
from censusdrop.audit.verify import ProblemKind
from censusdrop.audit.verify import VerifyResult
from censusdrop.audit.verify import default_jobs
from censusdrop.audit.verify import verify_database

EVENTS = 40
START = dt.datetime(2020, 6, 15, 8, 0, tzinfo=dt.UTC)
t = audit_events


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return create_signing_key(tmp_path / "audit-signing.key")


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database_url)
    metadata.create_all(engine)
    AuditLog(engine).append(
        [
            AuditEvent(
                ev.DOWNLOAD_END,
                at=START + dt.timedelta(seconds=n),
                account=f"expert{n % 3}",
                session=f"s{n // 10}",
                path=f"/420100/材料{n}.pdf",
                bytes=1000 + n,
                digest=f"{n:064x}",
            )
            for n in range(EVENTS)
        ]
    )
    yield engine
    engine.dispose()


def verify(engine: sa.Engine, key: SigningKey, **options: Any) -> VerifyResult:
    return verify_database(engine, key.public, **options)


def rows(engine: sa.Engine) -> dict[int, dict[str, Any]]:
    with engine.connect() as conn:
        result = conn.execute(sa.select(t).order_by(t.c.seq)).mappings()
        return {row["seq"]: dict(row) for row in result}


def set_seq(conn: sa.Connection, mapping: dict[int, int]) -> None:
    """Renumber rows without tripping the primary key mid-way."""
    for old in mapping:
        conn.execute(sa.update(t).where(t.c.seq == old).values(seq=-old))
    for old, new in mapping.items():
        conn.execute(sa.update(t).where(t.c.seq == -old).values(seq=new))


def shift(engine: sa.Engine, first: int, by: int) -> None:
    seqs = [s for s in rows(engine) if s >= first]
    with engine.begin() as conn:
        set_seq(conn, {s: s + by for s in seqs})


def forged_row(seq: int, prev_hash: str, **fields: Any) -> dict[str, Any]:
    event = AuditEvent(ev.DOWNLOAD_END, at=START, account="intruder", **fields)
    row = dict(zip(t.c.keys(), seal(event, seq, prev_hash), strict=True))
    row["at"] = event.at
    return row


def test_an_untouched_chain_verifies(engine: sa.Engine, key: SigningKey) -> None:
    make_checkpoint(engine, key)
    result = verify(engine, key)
    assert result.ok and result.exit_code == 0
    assert result.events == result.head_seq == EVENTS
    assert result.checkpoint is not None and result.checkpoint.seq == EVENTS
    assert result.warnings == ()


def test_a_modified_field_is_named(engine: sa.Engine, key: SigningKey) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.seq == 17).values(account="someone"))
    result = verify(engine, key)
    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq) == (ProblemKind.MODIFIED, 17)
    assert result.exit_code == 1
    assert result.events == 16


@pytest.mark.parametrize(
    ("seq", "values"),
    [
        (5, {"at": START + dt.timedelta(days=1)}),
        (9, {"bytes": 1}),
        (12, {"hash": "0" * 64}),
        (13, {"details": '{"a":1}'}),
        (14, {"prev_hash": "1" * 64}),
    ],
)
def test_a_modified_time_size_detail_or_hash_is_named(
    engine: sa.Engine, key: SigningKey, seq: int, values: dict[str, Any]
) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.seq == seq).values(**values))
    problem = verify(engine, key).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.MODIFIED, seq)


def test_a_deleted_entry_is_named(engine: sa.Engine, key: SigningKey) -> None:
    with engine.begin() as conn:
        conn.execute(sa.delete(t).where(t.c.seq == 23))
    problem = verify(engine, key).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.DELETED, 23)


def test_the_first_entry_deleted_is_named(engine: sa.Engine, key: SigningKey) -> None:
    with engine.begin() as conn:
        conn.execute(sa.delete(t).where(t.c.seq == 1))
    problem = verify(engine, key).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.DELETED, 1)


def test_a_deletion_hidden_by_renumbering_is_named(
    engine: sa.Engine, key: SigningKey
) -> None:
    with engine.begin() as conn:
        conn.execute(sa.delete(t).where(t.c.seq == 23))
    shift(engine, 24, -1)
    problem = verify(engine, key).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.DELETED, 23)


def test_an_inserted_entry_that_claims_a_correct_link_is_named(
    engine: sa.Engine, key: SigningKey
) -> None:
    before = rows(engine)
    fake = forged_row(20, before[19]["hash"])
    shift(engine, 20, +1)
    with engine.begin() as conn:
        # The genuine entry must give up its predecessor (UNIQUE prev_hash).
        conn.execute(sa.update(t).where(t.c.seq == 21).values(prev_hash=fake["hash"]))
        conn.execute(sa.insert(t), [fake])
    problem = verify(engine, key).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.INSERTED, 20)


def test_an_inserted_entry_with_an_invented_link_is_named(
    engine: sa.Engine, key: SigningKey
) -> None:
    fake = forged_row(20, "9" * 64)
    shift(engine, 20, +1)
    with engine.begin() as conn:
        conn.execute(sa.insert(t), [fake])
    problem = verify(engine, key).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.INSERTED, 20)


def test_two_swapped_entries_are_named(engine: sa.Engine, key: SigningKey) -> None:
    with engine.begin() as conn:
        set_seq(conn, {30: 31, 31: 30})
    problem = verify(engine, key).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.REORDERED, 30)


def test_entries_swapped_far_apart_are_named(
    engine: sa.Engine, key: SigningKey
) -> None:
    with engine.begin() as conn:
        set_seq(conn, {8: 33, 33: 8})
    problem = verify(engine, key).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.REORDERED, 8)


def test_an_entry_rewritten_with_a_fresh_hash_is_named(
    engine: sa.Engine, key: SigningKey
) -> None:
    rewrite_chain(engine, start=14, stop=14)
    problem = verify(engine, key).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.MODIFIED, 14)


def test_a_tail_cut_after_a_checkpoint_is_detected(
    engine: sa.Engine, key: SigningKey
) -> None:
    make_checkpoint(engine, key)
    with engine.begin() as conn:
        conn.execute(sa.delete(t).where(t.c.seq > 35))
    problem = verify(engine, key).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.TRUNCATED, 36)


def test_without_a_checkpoint_a_cut_tail_goes_unseen_and_the_result_says_so(
    engine: sa.Engine, key: SigningKey
) -> None:
    with engine.begin() as conn:
        conn.execute(sa.delete(t).where(t.c.seq > 35))
    result = verify(engine, key)
    assert result.ok
    assert any("no signed checkpoint" in w for w in result.warnings)


def test_a_fully_rehashed_chain_no_longer_matches_the_checkpoint(
    engine: sa.Engine, key: SigningKey
) -> None:
    make_checkpoint(engine, key)
    rewrite_chain(engine, start=10, stop=EVENTS)
    assert verify_database(engine, None).ok, "the forged chain is consistent"

    problem = verify(engine, key).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.REWRITTEN, EVENTS)
    assert "between seq 1 and 40" in problem.message


def test_checkpoints_narrow_down_where_a_rewrite_happened(
    engine: sa.Engine, key: SigningKey
) -> None:
    make_checkpoint(engine, key)  # at 40
    AuditLog(engine).append([AuditEvent(ev.LIST) for _ in range(10)])
    make_checkpoint(engine, key)  # at 50
    rewrite_chain(engine, start=45, stop=50)
    problem = verify(engine, key).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.REWRITTEN, 50)
    assert "between seq 41 and 50" in problem.message


def test_a_forged_checkpoint_is_detected(engine: sa.Engine, key: SigningKey) -> None:
    make_checkpoint(engine, key)
    rewrite_chain(engine, start=10, stop=EVENTS)
    head = rows(engine)[EVENTS]["hash"]
    with engine.begin() as conn:
        conn.execute(sa.update(audit_checkpoints).values(head_hash=head))
    problem = verify(engine, key).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.BAD_CHECKPOINT, EVENTS)


def test_a_checkpoint_the_auditor_kept_catches_what_the_database_hides(
    engine: sa.Engine, key: SigningKey
) -> None:
    kept = make_checkpoint(engine, key)
    with engine.begin() as conn:
        conn.execute(sa.delete(audit_checkpoints))
        conn.execute(sa.delete(t).where(t.c.seq > 30))
    assert verify(engine, key).ok

    problem = verify(engine, key, extra=kept).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.TRUNCATED, 31)


def test_a_checkpoint_by_another_key_is_not_trusted(
    engine: sa.Engine, key: SigningKey, tmp_path: Path
) -> None:
    other = create_signing_key(tmp_path / "other.key")
    foreign = make_checkpoint(engine, other)
    result = verify(engine, key)
    assert result.ok and any("another key" in w for w in result.warnings)

    problem = verify(engine, key, extra=foreign).problem
    assert problem is not None and problem.kind == ProblemKind.BAD_CHECKPOINT


def test_parallel_verification_finds_the_same_first_problem(
    engine: sa.Engine, key: SigningKey
) -> None:
    make_checkpoint(engine, key)
    assert verify(engine, key, jobs=2).events == EVENTS
    with engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.seq == 31).values(path="/x"))
        conn.execute(sa.delete(t).where(t.c.seq == 7))
    problem = verify(engine, key, jobs=3).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.DELETED, 7)


def test_a_boundary_between_parallel_segments_is_checked(
    engine: sa.Engine, key: SigningKey
) -> None:
    with engine.begin() as conn:  # segments of 2 workers: 1-20 and 21-40
        conn.execute(sa.delete(t).where(t.c.seq == 20))
    problem = verify(engine, key, jobs=2, batch_size=7).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.DELETED, 20)


def rewrite_chain(engine: sa.Engine, start: int, stop: int) -> None:
    """What an intruder with the code but not the key can do: change an
    entry and recompute the hashes from there to ``stop``."""
    stored = rows(engine)
    prev = stored[start]["prev_hash"]
    with engine.begin() as conn:
        for seq in range(start, stop + 1):
            row = stored[seq]
            if seq == start:
                row["account"] = "someone else"
            content = (seq, _time_text(row["at"]), *[row[c] for c in _CONTENT])
            digest = chain_hash(prev, canonical_text(content))
            conn.execute(
                sa.update(t)
                .where(t.c.seq == seq)
                .values(account=row["account"], prev_hash=prev, hash=digest)
            )
            prev = digest


_CONTENT = (
    "account role prefecture session remote action path version bytes digest "
    "outcome details"
).split()


def _time_text(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "censusdrop-verify-reader"]


def test_reading_ahead_keeps_the_order_and_hands_over_a_reader_error() -> None:
    def batches() -> Iterator[list[int]]:
        yield [1, 2]
        yield [3]
        raise sa.exc.OperationalError("SELECT", None, Exception("connection lost"))

    got: list[list[int]] = []
    with pytest.raises(sa.exc.OperationalError):
        got.extend(read_ahead(batches(), depth=1))

    assert got == [[1, 2], [3]]
    assert reader_threads() == []


def test_closing_a_read_ahead_early_stops_its_reader() -> None:
    produced: list[int] = []

    def batches() -> Iterator[int]:
        for number in range(1000):
            produced.append(number)
            yield number

    ahead = read_ahead(batches(), depth=2)
    assert next(ahead) == 0
    ahead.close()

    assert reader_threads() == []
    assert len(produced) <= 4


def test_a_verification_stopped_by_a_problem_leaves_no_reader_running(
    engine: sa.Engine, key: SigningKey
) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.seq == 3).values(account="x"))

    result = verify(engine, key, batch_size=4)

    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq) == (ProblemKind.MODIFIED, 3)
    assert reader_threads() == []


# Parallel verification: with 7 slices of at most 6 entries over the 40
# (1-5, 6-11, 12-17, 18-22, 23-28, 29-34, 35-40), tampering at a slice's
# first or last entry, across a seam or over a whole slice must be named
# exactly as one pass names it.
PARALLEL = {"jobs": 2, "slice_size": 6, "batch_size": 4}


def modify_last_of_a_slice(engine: sa.Engine, key: SigningKey) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.seq == 17).values(bytes=1))


def modify_a_hash(engine: sa.Engine, key: SigningKey) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.seq == 29).values(hash="0" * 64))


def delete_first_of_a_slice(engine: sa.Engine, key: SigningKey) -> None:
    with engine.begin() as conn:
        conn.execute(sa.delete(t).where(t.c.seq == 23))


def delete_a_whole_slice(engine: sa.Engine, key: SigningKey) -> None:
    with engine.begin() as conn:
        conn.execute(sa.delete(t).where(t.c.seq.between(6, 11)))


def delete_and_renumber(engine: sa.Engine, key: SigningKey) -> None:
    with engine.begin() as conn:
        conn.execute(sa.delete(t).where(t.c.seq == 18))
    shift(engine, 19, -1)


def insert_at_a_seam(engine: sa.Engine, key: SigningKey) -> None:
    fake = forged_row(12, rows(engine)[11]["hash"])
    shift(engine, 12, +1)
    with engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.seq == 13).values(prev_hash=fake["hash"]))
        conn.execute(sa.insert(t), [fake])


def swap_across_a_seam(engine: sa.Engine, key: SigningKey) -> None:
    with engine.begin() as conn:
        set_seq(conn, {34: 35, 35: 34})


def swap_far_apart(engine: sa.Engine, key: SigningKey) -> None:
    with engine.begin() as conn:
        set_seq(conn, {9: 38, 38: 9})


def cut_the_tail(engine: sa.Engine, key: SigningKey) -> None:
    make_checkpoint(engine, key)
    with engine.begin() as conn:
        conn.execute(sa.delete(t).where(t.c.seq > 28))


def rehash_everything(engine: sa.Engine, key: SigningKey) -> None:
    make_checkpoint(engine, key)
    rewrite_chain(engine, start=1, stop=EVENTS)


def rehash_up_to_a_checkpoint_mid_chain(engine: sa.Engine, key: SigningKey) -> None:
    with engine.begin() as conn:
        conn.execute(sa.delete(t).where(t.c.seq > 20))
    make_checkpoint(engine, key)
    AuditLog(engine).append([AuditEvent(ev.LIST) for _ in range(20)])
    make_checkpoint(engine, key)
    rewrite_chain(engine, start=3, stop=EVENTS)


def two_problems(engine: sa.Engine, key: SigningKey) -> None:
    with engine.begin() as conn:  # in two slices: the lower one is named
        conn.execute(sa.update(t).where(t.c.seq == 36).values(account="x"))
        conn.execute(sa.update(t).where(t.c.seq == 2).values(path="/x"))


@pytest.mark.parametrize(
    ("tamper", "kind", "seq"),
    [
        (modify_last_of_a_slice, ProblemKind.MODIFIED, 17),
        (modify_a_hash, ProblemKind.MODIFIED, 29),
        (delete_first_of_a_slice, ProblemKind.DELETED, 23),
        (delete_a_whole_slice, ProblemKind.DELETED, 6),
        (delete_and_renumber, ProblemKind.DELETED, 18),
        (insert_at_a_seam, ProblemKind.INSERTED, 12),
        (swap_across_a_seam, ProblemKind.REORDERED, 34),
        (swap_far_apart, ProblemKind.REORDERED, 9),
        (cut_the_tail, ProblemKind.TRUNCATED, 29),
        (rehash_everything, ProblemKind.REWRITTEN, EVENTS),
        (rehash_up_to_a_checkpoint_mid_chain, ProblemKind.REWRITTEN, 20),
        (two_problems, ProblemKind.MODIFIED, 2),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
def test_parallel_slices_name_the_same_first_problem_as_one_pass(
    engine: sa.Engine, key: SigningKey, tamper: Any, kind: ProblemKind, seq: int
) -> None:
    tamper(engine, key)

    serial = verify(engine, key, jobs=1)
    parallel = verify(engine, key, **PARALLEL)

    assert serial.problem is not None
    assert (serial.problem.kind, serial.problem.seq) == (kind, seq)
    assert parallel == serial


def test_an_intact_chain_verifies_the_same_in_slices(
    engine: sa.Engine, key: SigningKey
) -> None:
    make_checkpoint(engine, key)

    parallel = verify(engine, key, **PARALLEL)

    assert parallel.ok
    assert parallel == verify(engine, key, jobs=1)
    assert (parallel.events, parallel.head_seq) == (EVENTS, EVENTS)


@pytest.mark.parametrize("options", [{"jobs": 1, "batch_size": 7}, PARALLEL])
def test_progress_is_reported_up_to_the_whole_chain(
    engine: sa.Engine, key: SigningKey, options: dict[str, int]
) -> None:
    calls: list[tuple[int, int]] = []

    verify(
        engine, key, progress=lambda done, total: calls.append((done, total)), **options
    )

    done = [d for d, _ in calls]
    assert len(calls) >= 2 and done == sorted(done)
    assert calls[-1] == (EVENTS, EVENTS)


def test_a_short_chain_is_verified_in_one_process_by_default() -> None:
    assert default_jobs(PARALLEL_THRESHOLD) == 1
    assert default_jobs(PARALLEL_THRESHOLD + 1) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("options", [{"jobs": 0}, {"slice_size": 0}])
def test_nonsense_job_or_slice_counts_are_refused(
    engine: sa.Engine, key: SigningKey, options: dict[str, int]
) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        verify(engine, key, **options)
