"""Verifying the audit chain in the database.

``verify_database`` recomputes every hash from seq 1 to the head and checks
the chain against the signed checkpoints; the first problem stops it and is
explained by ``diagnose`` (see there for the kinds of problem). The result
is a ``VerifyResult`` whose ``exit_code`` is 0 when the chain is intact.

Speed: the rows are read a batch ahead of the hashing (``scan``), and the
rest is CPU in Python (decoding the row, the canonical JSON, SHA-256: 4-8
µs an entry), so a long chain is checked in slices by this process and
worker processes at once (``parallel``), with the same result as one pass.

A chain alone cannot show that its last entries were removed, or that all
of it was recomputed; checkpoints signed with a key kept apart from the
database can (see ``checkpoint``). Without one, the result says so.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import sqlalchemy as sa

from .chain import GENESIS_HASH
from .chain import Row
from .checkpoint import Checkpoint
from .checkpoint import VerifyKey
from .checkpoint import list_checkpoints
from .diagnose import Problem
from .diagnose import ProblemKind
from .locking import read_connection
from .parallel import Progress
from .parallel import scan_parallel
from .parallel import slices
from .scan import BATCH_SIZE
from .scan import ScanResult
from .scan import scan_segment
from .schema import read_head

# Entries per slice of a parallel verification: small enough to share the
# work evenly and report progress, large enough that the query per slice
# does not count.
SLICE_SIZE = 100_000
# Up to this many entries, starting worker processes costs more than it saves.
PARALLEL_THRESHOLD = 200_000

__all__ = [
    "Problem",
    "ProblemKind",
    "Progress",
    "VerifyResult",
    "default_jobs",
    "verify_database",
]


@dataclasses.dataclass(frozen=True, slots=True)
class VerifyResult:
    """What a verification found. ``exit_code`` is 0 if intact, else 1."""

    events: int
    head_seq: int
    head_hash: str
    problem: Problem | None = None
    checkpoint: Checkpoint | None = None
    key_id: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def exit_code(self) -> int:
        return 0 if self.problem is None else 1


def verify_database(
    engine: sa.Engine,
    key: VerifyKey | None,
    *,
    extra: Checkpoint | None = None,
    jobs: int | None = None,
    batch_size: int = BATCH_SIZE,
    slice_size: int = SLICE_SIZE,
    progress: Progress | None = None,
) -> VerifyResult:
    """Verify the chain against its stored checkpoints signed by ``key``
    and against ``extra`` (a checkpoint the auditor kept).

    ``jobs``: worker processes; 1 checks the chain in this process. By
    default, one per CPU for chains longer than ``PARALLEL_THRESHOLD``,
    else 1. ``slice_size``: entries per slice handed to a worker.
    ``progress`` is called now and then with the entries checked so far.
    """
    if jobs is not None and jobs < 1:
        raise ValueError("jobs must be at least 1")
    if slice_size < 1 or batch_size < 1:
        raise ValueError("slice_size and batch_size must be at least 1")
    # Checkpoints first: one made after the head is read could lie beyond it.
    required = [extra] if extra is not None else []
    marks = CheckpointMarks.build(list_checkpoints(engine), key, required)
    if marks.problem is not None:
        return marks.result(ScanResult(0, None, marks.problem))
    with read_connection(engine) as conn:
        head = read_head(conn).seq
    report = progress or _no_progress
    count = jobs if jobs is not None else default_jobs(head)
    if count > 1 and head > 1:
        parts = slices(head, count, slice_size)
        scan = scan_parallel(engine, parts, marks.heads, count, batch_size, report)
    else:
        scan = _scan_serial(engine, head, marks.heads, batch_size, report)
    return marks.result(scan)


def default_jobs(head: int) -> int:
    """Worker processes that pay for a chain whose head is ``head``."""
    if head <= PARALLEL_THRESHOLD:
        return 1
    return _usable_cpus()


@dataclasses.dataclass
class CheckpointMarks:
    """The trusted checkpoints (``heads``: seq -> signed head hash), the
    latest of them, and what was wrong with the others."""

    heads: dict[int, str]
    latest: Checkpoint | None
    key_id: str | None
    problem: Problem | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def build(
        cls,
        stored: Sequence[Checkpoint],
        key: VerifyKey | None,
        required: Sequence[Checkpoint] = (),
    ) -> CheckpointMarks:
        """Marks from ``stored`` checkpoints (those by other keys are
        skipped) and ``required`` ones (which must be signed by ``key``)."""
        marks = cls({}, None, key.key_id if key else None)
        if key is None:
            if stored or required:
                marks.warnings.append("no public key: checkpoints were not checked")
            return marks
        others = [c for c in stored if c.key_id != key.key_id]
        if others:
            marks.warnings.append(
                f"{len(others)} checkpoint(s) signed by another key were skipped"
            )
        for checkpoint in required:
            if checkpoint.key_id != key.key_id:
                marks.problem = Problem(
                    ProblemKind.BAD_CHECKPOINT,
                    checkpoint.seq,
                    f"the checkpoint was signed by key {checkpoint.key_id[:16]}…, "
                    f"not by the trusted key {key.key_id[:16]}…",
                )
                return marks
        for checkpoint in [*stored, *required]:
            if checkpoint.key_id == key.key_id and marks.problem is None:
                marks.add(checkpoint, key)
        if not marks.heads and marks.problem is None:
            marks.warnings.append(
                "no signed checkpoint: a cut-off tail or a re-hashed chain "
                "cannot be detected"
            )
        return marks

    def add(self, checkpoint: Checkpoint, key: VerifyKey) -> None:
        seq = checkpoint.seq
        if not checkpoint.is_signed_by(key):
            self.problem = Problem(
                ProblemKind.BAD_CHECKPOINT,
                seq,
                "checkpoint signature does not verify (forged or altered)",
            )
        elif self.heads.setdefault(seq, checkpoint.head_hash) != checkpoint.head_hash:
            self.problem = Problem(
                ProblemKind.BAD_CHECKPOINT,
                seq,
                "two validly signed checkpoints disagree (is the key leaked?)",
            )
        elif self.latest is None or seq >= self.latest.seq:
            self.latest = checkpoint

    def result(self, scan: ScanResult) -> VerifyResult:
        last = scan.last
        problem = scan.problem or self._beyond_end(last)
        return VerifyResult(
            events=scan.events,
            head_seq=0 if last is None else int(last[0]),
            head_hash=GENESIS_HASH if last is None else str(last[15]),
            problem=problem,
            checkpoint=self.latest,
            key_id=self.key_id,
            warnings=tuple(self.warnings),
        )

    def _beyond_end(self, last: Row | None) -> Problem | None:
        end = 0 if last is None else int(last[0])
        beyond = [seq for seq in self.heads if seq > end]
        if not beyond:
            return None
        return Problem(
            ProblemKind.TRUNCATED,
            end + 1,
            f"the chain ends at seq {end} but a signed checkpoint covers "
            f"seq {max(beyond)}: entries were cut off",
        )


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _no_progress(done: int, total: int) -> None:
    pass


def _scan_serial(
    engine: sa.Engine,
    head: int,
    heads: dict[int, str],
    batch_size: int,
    progress: Progress,
) -> ScanResult:
    done = 0

    def advance(rows: int) -> None:
        nonlocal done
        done = min(done + rows, head)
        progress(done, head)

    return scan_segment(engine, 1, head, heads, batch_size, on_batch=advance)
