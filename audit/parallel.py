"""Verifying a long chain in slices, in this process and worker processes.

The chain is cut into consecutive slices checked at once, each with its
own database connection. A slice starts from the stored row just before
it and reads one row past its end, so every link across a seam is checked
exactly as in one pass. Slices are combined in seq order: while all
slices below one are intact, its predecessor row is a verified one and
its scan is the serial scan of the same rows, so the first problem of the
lowest failing slice is the one a single pass names (same seq, kind and
message), and the slices above it are dropped.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import multiprocessing
from collections.abc import Callable

import sqlalchemy as sa

from .chain import Row
from .scan import ScanResult
from .scan import scan_segment

# Called with (entries checked so far, entries in the chain).
Progress = Callable[[int, int], None]

# In a worker process: its engine for each database URL.
_worker_engines: dict[str, sa.Engine] = {}


def slices(head: int, jobs: int, slice_size: int) -> list[tuple[int, int]]:
    """Consecutive (low, high) seq ranges covering 1 to ``head``: at least
    one per job, none longer than ``slice_size``, none empty."""
    count = min(head, max(jobs, -(-head // slice_size)))
    bounds = [head * i // count for i in range(count + 1)]
    return [(low + 1, high) for low, high in itertools.pairwise(bounds)]


def scan_parallel(
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
