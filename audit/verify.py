"""Verifying the audit chain in the database.

``verify_database`` recomputes every hash from seq 1 to the head and checks
the chain against the signed checkpoints; the first problem stops it and is
explained by ``diagnose`` (see there for the kinds of problem). The result
is a ``VerifyResult`` whose ``exit_code`` is 0 when the chain is intact.

Speed: rows are read in keyset-paginated batches through a raw DBAPI
cursor, on a reader thread that stays a batch ahead, so that the
database produces the next batch while this one is hashed (the drivers let
go of the GIL while they wait). The rest is CPU in Python (decoding the
row, the canonical JSON, SHA-256: about 6 µs an entry), so a long chain is
split into consecutive slices checked at once by this process and worker
processes, each with its own connection. A slice starts from the stored
row just before it and reads one row past its end, so every link across a
seam is checked exactly as in one pass. Slices are combined in seq order:
while all slices below one are intact, its predecessor row is a verified
one and its scan is the serial scan of the same rows, so the first problem
of the lowest failing slice is the one a single pass names (same seq, kind
and message), and the slices above it are dropped.

A chain alone cannot show that its last entries were removed, or that all
of it was recomputed; checkpoints signed with a key kept apart from the
database can (see ``checkpoint``). Without one, the result says so.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import itertools
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable
from collections.abc import Generator
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from typing import Any
from typing import TypeVar

import sqlalchemy as sa

from .chain import GENESIS_HASH
from .chain import Row
from .chain import canonical_text
from .checkpoint import Checkpoint
from .checkpoint import VerifyKey
from .checkpoint import list_checkpoints
from .diagnose import HashLookup
from .diagnose import Problem
from .diagnose import ProblemKind
from .diagnose import diagnose
from .locking import read_connection
from .schema import audit_events
from .schema import chain_rows_select
from .schema import read_head

BATCH_SIZE = 20_000
# Entries per slice of a parallel verification: small enough to share the
# work evenly and report progress, large enough that the query per slice
# does not count.
SLICE_SIZE = 100_000
# Up to this many entries, starting worker processes costs more than it saves.
PARALLEL_THRESHOLD = 200_000
# How often a reader waiting for room checks that its consumer is still there.
OFFER_TICK = 0.1

T = TypeVar("T")
# Called with (entries checked so far, entries in the chain).
Progress = Callable[[int, int], None]

# In a worker process: its engine for each database URL.
_worker_engines: dict[str, sa.Engine] = {}

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


@dataclasses.dataclass(frozen=True, slots=True)
class ScanResult:
    """One pass over consecutive rows: how many were intact, the last
    intact one, and the problem that stopped the pass, if any."""

    events: int
    last: Row | None
    problem: Problem | None


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
        slices = _slices(head, count, slice_size)
        scan = _scan_parallel(engine, slices, marks.heads, count, batch_size, report)
    else:
        scan = _scan_serial(engine, head, marks.heads, batch_size, report)
    return marks.result(scan)


def default_jobs(head: int) -> int:
    """Worker processes that pay for a chain whose head is ``head``."""
    if head <= PARALLEL_THRESHOLD:
        return 1
    return _usable_cpus()


def scan_rows(
    rows: Iterable[Row],
    heads: dict[int, str],
    lookup: HashLookup,
    *,
    previous: Row | None = None,
    stop: int | None = None,
) -> ScanResult:
    """Recompute the chain over ``rows``, which follow ``previous`` (or
    start the chain), up to seq ``stop``; stop at the first problem.

    ``heads`` maps a checkpoint's seq to the hash it signed. This loop is
    the hot path of verification.
    """
    canonical, sha256 = canonical_text, hashlib.sha256
    expected = 1 if previous is None else int(previous[0]) + 1
    prev_hash = GENESIS_HASH if previous is None else previous[15]
    first, last_seq = expected, stop if stop is not None else float("inf")
    try:
        prev_raw = bytes.fromhex(prev_hash)
    except (TypeError, ValueError):
        # The row before is damaged; the segment before reports it.
        problem = Problem(ProblemKind.MALFORMED, expected - 1, "bad hash")
        return ScanResult(0, previous, problem)
    rows = iter(rows)
    for row in rows:
        if expected > last_seq:
            break
        digest = b""
        if row[0] == expected and row[14] == prev_hash:
            try:
                digest = sha256(prev_raw + canonical(row).encode()).digest()
            except (TypeError, ValueError, UnicodeEncodeError):
                digest = b""
        if not digest or digest.hex() != row[15]:
            following = next(rows, None)
            problem = diagnose(expected, prev_hash, previous, row, following, lookup)
            return ScanResult(expected - first, previous, problem)
        if expected in heads and heads[expected] != row[15]:
            return ScanResult(expected - first, previous, _mismatch(heads, expected))
        previous, prev_hash, prev_raw = row, row[15], digest
        expected += 1
    return ScanResult(expected - first, previous, None)


def scan_segment(
    engine: sa.Engine,
    low: int,
    high: int,
    heads: dict[int, str],
    batch_size: int = BATCH_SIZE,
    on_batch: Callable[[int], None] | None = None,
) -> ScanResult:
    """Verify seq ``low`` to ``high``, linking to the row before ``low``.

    ``on_batch`` is called with the number of rows of each batch read."""
    previous = _row_before(engine, low) if low > 1 else None
    start = low - 1 if previous is None else int(previous[0])
    # One row past the end, so that a problem at the end has a follower.
    rows = iter_chain_rows(
        engine, after=start, until=high + 1, batch_size=batch_size, on_batch=on_batch
    )

    def lookup(digest: str) -> int | None:
        return find_seq_of_hash(engine, digest)

    with contextlib.closing(rows):
        return scan_rows(rows, heads, lookup, previous=previous, stop=high)


def iter_chain_rows(
    engine: sa.Engine,
    *,
    after: int = 0,
    until: int | None = None,
    batch_size: int = BATCH_SIZE,
    on_batch: Callable[[int], None] | None = None,
) -> Generator[Row, None, None]:
    """Chain rows (plain tuples) with ``after < seq <= until`` (default: the
    head) in seq order.

    Batches are seq ranges, so no cursor or transaction stays open and each
    query is an index range scan whatever the planner's statistics say (a
    LIMIT query on a freshly filled PostgreSQL table may sort the whole
    table for every batch). Each batch goes through a raw DBAPI cursor,
    which is much faster than result rows for millions of rows.
    ``on_batch`` is told the size of each batch once its rows are consumed.
    """
    if until is None:
        with read_connection(engine) as conn:
            until = read_head(conn).seq
    batches = _chain_batches(engine, after, until, batch_size)
    with contextlib.closing(read_ahead(batches)) as ahead:
        for rows in ahead:
            yield from rows
            if on_batch is not None:
                on_batch(len(rows))


def read_ahead(batches: Iterator[T], depth: int = 1) -> Generator[T, None, None]:
    """The items of ``batches``, produced on a thread up to ``depth`` ahead
    of the consumer, so that the database reads the next batch while this
    one is being hashed. Closing the iterator stops the thread.

    At most ``depth + 2`` batches are in memory at once: the consumer's,
    those waiting, and the one being read."""
    slots: queue.Queue[tuple[bool, Any]] = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                if not _offer(slots, stop, (True, batch)):
                    return
        except BaseException as exc:  # handed over to the consumer
            _offer(slots, stop, (False, exc))
            return
        _offer(slots, stop, (False, None))

    thread = threading.Thread(target=produce, name="censusdrop-verify-reader")
    thread.start()
    try:
        while True:
            is_batch, item = slots.get()
            if not is_batch:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        thread.join()


def find_seq_of_hash(engine: sa.Engine, digest: str) -> int | None:
    """The seq of the row whose stored hash is ``digest``, if any."""
    query = sa.select(audit_events.c.seq).where(audit_events.c.hash == digest)
    with read_connection(engine) as conn:
        seq = conn.execute(query).scalar()
    return None if seq is None else int(seq)


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


def _mismatch(heads: dict[int, str], seq: int) -> Problem:
    since = max((s for s in heads if s < seq), default=0) + 1
    return Problem(
        ProblemKind.REWRITTEN,
        seq,
        "the chain no longer has the head hash signed at this seq: it was "
        f"re-hashed after a change between seq {since} and {seq}",
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


def _slices(head: int, jobs: int, slice_size: int) -> list[tuple[int, int]]:
    """Consecutive (low, high) seq ranges covering 1 to ``head``: at least
    one per job, none longer than ``slice_size``, none empty."""
    count = min(head, max(jobs, -(-head // slice_size)))
    bounds = [head * i // count for i in range(count + 1)]
    return [(low + 1, high) for low, high in itertools.pairwise(bounds)]


def _scan_parallel(
    engine: sa.Engine,
    slices: list[tuple[int, int]],
    heads: dict[int, str],
    jobs: int,
    batch_size: int,
    progress: Progress,
) -> ScanResult:
    """Check ``slices`` in ``jobs - 1`` worker processes and this one.

    This process takes the lowest slice not yet handed out whenever it is
    free, so its work starts at once while the workers start up, and keeps
    each worker two slices ahead so that none waits for it."""
    url = engine.url.render_as_string(hide_password=False)
    workers = jobs - 1
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
    merged = SliceResults(len(slices), slices[-1][1], progress)
    pending = collections.deque(range(len(slices)))
    running: dict[concurrent.futures.Future[ScanResult], int] = {}

    def hand_out() -> None:
        while len(running) < 2 * workers:
            index = _take(pending, merged.limit)
            if index is None:
                return
            low, high = slices[index]
            future = pool.submit(_scan_in_worker, url, low, high, heads, batch_size)
            running[future] = index

    try:
        while merged.final is None:
            own = _take(pending, merged.limit)
            hand_out()
            if own is not None:
                low, high = slices[own]
                merged.add(own, scan_segment(engine, low, high, heads, batch_size))
            elif running:
                concurrent.futures.wait(
                    running, return_when=concurrent.futures.FIRST_COMPLETED
                )
            else:
                raise RuntimeError("parallel verification lost track of a slice")
            for future in [f for f in running if f.done()]:
                merged.add(running.pop(future), future.result())
        return merged.final
    finally:
        # Slices above a problem (or all, after an error) are not needed.
        pool.shutdown(wait=True, cancel_futures=True)


class SliceResults:
    """The results of slices, arriving in any order, combined in seq order
    up to the first problem (``final`` once known)."""

    def __init__(self, count: int, head: int, progress: Progress) -> None:
        self.final: ScanResult | None = None
        # Slices from this index on are not needed (one below has a problem).
        self.limit = count
        self._results: dict[int, ScanResult] = {}
        self._next = self._events = 0
        self._last: Row | None = None
        self._head, self._progress = head, progress

    def add(self, index: int, result: ScanResult) -> None:
        self._results[index] = result
        if result.problem is not None:
            self.limit = min(self.limit, index + 1)
        while self.final is None and self._next in self._results:
            result = self._results.pop(self._next)
            self._next += 1
            self._events += result.events
            self._last = result.last
            if result.problem is None:
                self._progress(min(self._events, self._head), self._head)
            if result.problem is not None or self._next == self.limit:
                self.final = ScanResult(self._events, self._last, result.problem)


def _take(pending: collections.deque[int], limit: int) -> int | None:
    """The lowest slice still to hand out, if it is below ``limit``."""
    if pending and pending[0] < limit:
        return pending.popleft()
    return None


def _scan_in_worker(
    url: str, low: int, high: int, heads: dict[int, str], batch_size: int
) -> ScanResult:
    engine = _worker_engine(url)
    return scan_segment(engine, low, high, heads, batch_size)


def _worker_engine(url: str) -> sa.Engine:
    """One engine per worker process (it checks several slices); no pooled
    connection outlives a slice."""
    engine = _worker_engines.get(url)
    if engine is None:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        _worker_engines[url] = engine
    return engine


def _chain_batches(
    engine: sa.Engine, after: int, until: int, batch_size: int
) -> Iterator[list[Row]]:
    seq = audit_events.c.seq
    base = chain_rows_select(engine.dialect).order_by(seq)
    while after < until:
        upper = min(after + batch_size, until)
        query = base.where(seq > _int(after), seq <= _int(upper))
        rows = _fetch_all(engine, _literal_sql(engine, query))
        yield rows
        after = upper if rows else _next_seq(engine, upper) - 1


def _offer(slots: queue.Queue[Any], stop: threading.Event, item: Any) -> bool:
    """Put ``item`` once there is room; False if the consumer has gone."""
    while not stop.is_set():
        try:
            slots.put(item, timeout=OFFER_TICK)
        except queue.Full:
            continue
        return True
    return False


def _int(value: int) -> sa.ColumnElement[int]:
    return sa.literal(value, sa.BigInteger())


def _next_seq(engine: sa.Engine, after: int) -> int:
    """The first seq above ``after`` (to skip a gap at once), or a huge one."""
    query = sa.select(sa.func.min(audit_events.c.seq)).where(audit_events.c.seq > after)
    with read_connection(engine) as conn:
        found = conn.execute(query).scalar()
    return int(found) if found is not None else 2**63 - 1


def _row_before(engine: sa.Engine, seq: int) -> Row | None:
    column = audit_events.c.seq
    query = (
        chain_rows_select(engine.dialect)
        .where(column < _int(seq))
        .order_by(column.desc())
        .limit(1)
    )
    rows = _fetch_all(engine, _literal_sql(engine, query))
    return rows[0] if rows else None


def _literal_sql(engine: sa.Engine, query: sa.Select[Any]) -> str:
    # Only integers and constant text are inlined.
    compiled = query.compile(
        dialect=engine.dialect, compile_kwargs={"literal_binds": True}
    )
    return str(compiled)


def _fetch_all(engine: sa.Engine, sql: str) -> list[Row]:
    with contextlib.closing(engine.raw_connection()) as raw:
        cursor = raw.cursor()
        try:
            cursor.execute(sql)
            return list(cursor.fetchall())
        finally:
            cursor.close()
