"""Reading and recomputing stretches of the audit chain.

``scan_rows`` recomputes the hashes of consecutive rows and stops at the
first problem (named by ``diagnose``); ``scan_segment`` does it for a seq
range of the database, linked to the row before it. Rows are read in
keyset-paginated batches through a raw DBAPI cursor, on a reader thread
that stays a batch ahead, so that the database produces the next batch
while this one is hashed (the drivers let go of the GIL while they wait).

Trusts nothing in the rows: every field goes into the recomputed hash.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import queue
import threading
from collections.abc import Callable
from collections.abc import Generator
from collections.abc import Iterable
from collections.abc import Iterator
from typing import Any
from typing import TypeVar

import sqlalchemy as sa

from .chain import GENESIS_HASH
from .chain import Row
from .chain import canonical_text
from .diagnose import HashLookup
from .diagnose import Problem
from .diagnose import ProblemKind
from .diagnose import diagnose
from .locking import read_connection
from .schema import audit_events
from .schema import chain_rows_select
from .schema import read_head

BATCH_SIZE = 20_000
# How often a reader waiting for room checks that its consumer is still there.
OFFER_TICK = 0.1

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class ScanResult:
    """One pass over consecutive rows: how many were intact, the last
    intact one, and the problem that stopped the pass, if any."""

    events: int
    last: Row | None
    problem: Problem | None


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


def _mismatch(heads: dict[int, str], seq: int) -> Problem:
    since = max((s for s in heads if s < seq), default=0) + 1
    return Problem(
        ProblemKind.REWRITTEN,
        seq,
        "the chain no longer has the head hash signed at this seq: it was "
        f"re-hashed after a change between seq {since} and {seq}",
    )
