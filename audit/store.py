"""Writing the audit chain: ``AuditWriter``, the ``AuditSink`` the server
uses (and ``AuditLog``, re-exported from ``append``, for direct appends).

One writer thread owns the writing; producers only touch an in-memory
queue, so ``emit`` never waits for the database. The thread commits
whatever is queued in one transaction (group commit, up to ``max_batch``
events), durable events first. A durable event still submitted while the
database is known to be down triggers one prompt attempt, so transfers
resume as soon as the database is back.

When the database fails, the writer fails closed and keeps running (the
outage is logged once at ERROR, again only if its cause changes, and its
end at INFO):

- durable events in the failed batch, and any submitted while the database
  is known to be down, get ``AuditUnavailable`` at once;
- ordinary events go back to the front of the queue and are retried with a
  growing pause (up to ``retry_max`` seconds) until the database returns;
- when the queue is full, a new ordinary event is dropped: it is logged at
  ERROR with all its fields (the operator log is then its only trace), and
  once writing works again an ``events_lost`` entry with the count and time
  range is added to the chain, so the loss itself is on the record.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

import sqlalchemy as sa

from .append import AuditLog
from .chain import check_event
from .chain import format_time
from .checkpoint import SigningKey
from .checkpoint import make_checkpoint
from .events import EVENTS_LOST
from .events import FAILED
from .events import AuditError
from .events import AuditEvent
from .events import AuditUnavailable
from .events import DurableCallback
from .pending import Deadlines
from .pending import OnceCallback
from .pending import Pending
from .pending import PendingQueue

__all__ = ["AuditLog", "AuditWriter", "WriterStats"]

logger = logging.getLogger(__name__)

RETRY_MIN = 0.1
IDLE_TICK = 1.0
# How long a batch of ordinary events waits for a durable one to share its
# commit: a transfer's end event is soon followed by the next transfer's
# start, which then needs no second commit of its own.
GROUP_WINDOW = 0.004

# Errors that mean "the database is not reachable or not usable right now":
# retry later. Anything else is blamed on the batch (see _isolate).
_OUTAGE_ERRORS = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.ProgrammingError,
    sa.exc.InternalError,
    sa.exc.TimeoutError,
    OSError,
    AuditError,
)


class AuditWriter:
    """The database-backed ``AuditSink``: a writer thread with group commit.

    Options (defaults):

    - ``max_queue`` (100000): events held in memory; beyond it ordinary
      events are dropped with an ERROR log and durable ones refused.
    - ``max_batch`` (500): most events committed in one transaction.
    - ``retry_max`` (5.0): longest pause, in seconds, between attempts
      while the database is unavailable.
    - ``durable_timeout`` (10.0): seconds after which ``submit_durable``
      reports failure if the event is still not committed.
    - ``group_window`` (0.004): seconds a batch of ordinary events waits
      for a durable event to share its commit (never delays a durable one).
    - ``checkpoint_key`` (None): if given, a signed checkpoint is made
      after every ``checkpoint_every`` (10000) events, and after
      ``checkpoint_interval`` (600.0) seconds if any event was written.

    ``close()`` must be called; it writes what is queued and stops the
    thread.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        max_queue: int = 100_000,
        max_batch: int = 500,
        retry_max: float = 5.0,
        checkpoint_key: SigningKey | None = None,
        checkpoint_every: int = 10_000,
        checkpoint_interval: float = 600.0,
        durable_timeout: float = 10.0,
        group_window: float = GROUP_WINDOW,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._log = AuditLog(engine)
        self._queue = PendingQueue(max_queue)
        self._max_batch = max_batch
        self._retry_max = retry_max
        self._retry_delay = 0.0
        self._retry_at: float | None = None
        self._outage_reason: str | None = None
        self._last_attempt = 0.0
        self._lost = _LossCounter()
        self._checkpoints = _CheckpointPolicy(
            engine, checkpoint_key, checkpoint_every, checkpoint_interval
        )
        self._durable_timeout = durable_timeout
        self._group_window = group_window
        self._deadlines = Deadlines(self._queue)
        self._stats = WriterStats()
        self._thread = threading.Thread(
            target=self._run, name="censusdrop-audit-writer", daemon=True
        )
        self._thread.start()

    @property
    def is_healthy(self) -> bool:
        """False while the database is known to be failing."""
        return self._retry_at is None

    @property
    def stats(self) -> WriterStats:
        """Commits and events written so far (a copy)."""
        return dataclasses.replace(self._stats)

    @property
    def backlog(self) -> int:
        """Events queued and not yet taken for writing."""
        return len(self._queue)

    def emit(self, event: AuditEvent) -> None:
        """Queue an event; never blocks. Raises only for a malformed event."""
        check_event(event)
        if self._queue.put(event, None) is None:
            reason = "writer closed" if self._queue.is_closed else "queue full"
            self._lost.record(event, reason)

    def emit_durable(self, event: AuditEvent, timeout: float = 10.0) -> None:
        """Return once ``event`` is committed; else raise AuditUnavailable.

        After a timeout the event is withdrawn if the writer has not taken
        it yet; if it was already being written it may still be committed.
        An access refused here can thus appear in the log, never the reverse.
        """
        outcome: list[BaseException | None] = []
        finished = threading.Event()

        def done(exc: BaseException | None) -> None:
            outcome.append(exc)
            finished.set()

        item = self._submit(event, done)
        if item is not None and not finished.wait(timeout):
            self._queue.cancel(item)
            if not finished.is_set():
                raise AuditUnavailable(f"audit event not recorded within {timeout}s")
        error = outcome[0]
        if error is not None:
            raise AuditUnavailable(str(error)) from error

    def submit_durable(self, event: AuditEvent, done: DurableCallback) -> None:
        """Record ``event``; ``done(None)`` once committed, else ``done(exc)``.

        ``done`` is called exactly once: on the writer thread; on the
        deadline thread if the event is not settled within
        ``durable_timeout`` (even if the database hangs); or before this
        returns, on the caller's thread, if the event is refused at once
        (queue full or writer closed).
        """
        once = OnceCallback(done)
        item = self._submit(event, once)
        if item is not None:
            self._deadlines.watch(item, once, self._durable_timeout)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is written; False on timeout."""
        return self._queue.wait_idle(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (one attempt if the DB is down) and stop."""
        self._queue.close()
        self._thread.join(timeout)
        self._deadlines.stop()
        if self._thread.is_alive():
            logger.error("audit writer did not stop within %.1fs", timeout)

    def _submit(self, event: AuditEvent, done: DurableCallback) -> Pending | None:
        check_event(event)
        item = self._queue.put(event, done)
        if item is None:
            reason = "closed" if self._queue.is_closed else "full"
            done(AuditUnavailable(f"audit writer queue {reason}"))
        return item

    def _run(self) -> None:
        while not self._queue.is_closed:
            try:
                self._step()
            except Exception:  # never let the writer thread die
                logger.exception("audit writer: unexpected error")
                time.sleep(RETRY_MIN)
        self._drain()

    def _step(self) -> None:
        wait = self._backoff_wait()
        if wait is not None:
            self._refuse(self._queue.take_durable(), "audit database unavailable")
            self._queue.wait_for_durable(wait)
            return
        batch = self._queue.take(self._max_batch, IDLE_TICK)
        if batch and not any(item.is_durable for item in batch):
            batch += self._join_durable(self._max_batch - len(batch))
        try:
            if batch:
                self._write(batch)
            self._after_write()
        finally:
            self._queue.finish()

    def _join_durable(self, room: int) -> list[Pending]:
        """Durable events submitted within the group window (and whatever
        came with them), to be committed with the batch in hand."""
        if room <= 0 or self._group_window <= 0:
            return []
        self._queue.wait_for_durable(self._group_window)
        if not self._queue.has_durable():
            return []
        return self._queue.take(room, 0)

    def _backoff_wait(self) -> float | None:
        """Seconds to go on refusing durable events without trying the
        database, or None to try it now.

        While it is down, ordinary events wait for the next retry; a durable
        event triggers an attempt at once unless one was just made, so a
        transfer is refused promptly but service resumes as soon as the
        database is back.
        """
        if self._retry_at is None:
            return None
        now = time.monotonic()
        wait = self._retry_at - now
        if wait <= 0:
            return None
        if self._queue.has_durable() and now - self._last_attempt >= RETRY_MIN:
            return None
        return wait

    def _drain(self) -> None:
        while batch := self._queue.take(self._max_batch, 0):
            try:
                written = self._write(batch)
            finally:
                self._queue.finish()
            if not written:
                break
        self._after_write()
        self._refuse(self._queue.take_durable(), "audit writer closed")
        left = self._queue.take(len(self._queue) + 1, 0)
        self._queue.finish()
        if left:
            logger.error("audit writer closed with %d event(s) unwritten", len(left))
            for item in left:
                self._lost.record(item.event, "writer closed")

    def _write(self, batch: list[Pending]) -> bool:
        """Commit a batch; False if the database is unavailable."""
        self._last_attempt = time.monotonic()
        try:
            self._log.append([item.event for item in batch])
        except _OUTAGE_ERRORS as exc:
            self._on_outage(batch, exc)
            return False
        except Exception as exc:
            return self._isolate(batch, exc)
        self._on_committed(batch)
        return True

    def _on_outage(self, batch: list[Pending], exc: BaseException) -> None:
        self._retry_delay = min(max(self._retry_delay * 2, RETRY_MIN), self._retry_max)
        self._retry_at = time.monotonic() + self._retry_delay
        # One ERROR line per outage (and per change of cause), not one per
        # attempt: a busy server retries several times a second.
        reason = _short(exc)
        news = reason != self._outage_reason
        self._outage_reason = reason
        (logger.error if news else logger.debug)(
            "audit database unavailable: %s; queued=%d retry_in=%.1fs",
            reason,
            len(self._queue) + len(batch),
            self._retry_delay,
        )
        self._refuse([i for i in batch if i.is_durable], "audit database unavailable")
        self._queue.requeue(i for i in batch if not i.is_durable)

    def _on_committed(self, batch: list[Pending]) -> None:
        if self._retry_at is not None:
            logger.info("audit database available again")
        self._retry_at, self._retry_delay = None, 0.0
        self._outage_reason = None
        self._checkpoints.count(len(batch))
        self._stats.commits += 1
        self._stats.events += len(batch)
        for item in batch:
            if item.done is not None:
                _call(item.done, None)

    def _isolate(self, batch: list[Pending], exc: BaseException) -> bool:
        """The database rejected the batch: find and drop the bad event(s)."""
        if len(batch) == 1:
            item = batch[0]
            logger.error("audit event rejected by the database: %s", _short(exc))
            self._lost.record(item.event, "rejected by the database")
            if item.done is not None:
                _call(item.done, AuditUnavailable("audit event rejected"))
            return True
        for position, item in enumerate(batch):
            if not self._write([item]):
                rest = batch[position + 1 :]
                self._refuse([i for i in rest if i.is_durable], "audit unavailable")
                self._queue.requeue(i for i in rest if not i.is_durable)
                return False
        return True

    def _after_write(self) -> None:
        if self._retry_at is None and self._lost.pending():
            marker = self._lost.marker()
            try:
                self._log.append([marker])
            except Exception as exc:
                logger.error("cannot record lost audit events: %s", _short(exc))
                self._lost.restore(marker)
        self._checkpoints.maybe_make(healthy=self._retry_at is None)

    def _refuse(self, items: list[Pending], reason: str) -> None:
        for item in items:
            if item.done is not None:
                _call(item.done, AuditUnavailable(reason))


@dataclasses.dataclass(slots=True)
class WriterStats:
    """What the writer thread has committed: ``events`` in ``commits``
    transactions (their ratio is the mean group size)."""

    commits: int = 0
    events: int = 0


class _LossCounter:
    """Events that could not be queued or written, for the chain's record."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._first: AuditEvent | None = None
        self._last: AuditEvent | None = None

    def record(self, event: AuditEvent, reason: str) -> None:
        logger.error(
            "audit event dropped (%s): at=%s action=%s outcome=%s account=%s "
            "session=%s remote=%s path=%s bytes=%s digest=%s details=%s",
            reason, format_time(event.at), event.action, event.outcome,
            event.account, event.session, event.remote, event.path,
            event.bytes, event.digest, event.details,
        )  # fmt: skip
        with self._lock:
            self._count += 1
            self._first = self._first or event
            self._last = event

    def pending(self) -> bool:
        return self._count > 0

    def marker(self) -> AuditEvent:
        """Take the count so far as an ``events_lost`` event."""
        with self._lock:
            count, first, last = self._count, self._first, self._last
            self._count, self._first, self._last = 0, None, None
        details: dict[str, Any] = {"count": count}
        if first is not None and last is not None:
            details["first_at"] = format_time(first.at)
            details["last_at"] = format_time(last.at)
        return AuditEvent(action=EVENTS_LOST, outcome=FAILED, details=details)

    def restore(self, marker: AuditEvent) -> None:
        with self._lock:
            self._count += int(marker.details["count"])


class _CheckpointPolicy:
    """When to sign a checkpoint from the writer thread."""

    def __init__(
        self, engine: sa.Engine, key: SigningKey | None, every: int, interval: float
    ) -> None:
        self._engine, self._key = engine, key
        self._every, self._interval = every, interval
        self._written = 0
        self._last = time.monotonic()

    def count(self, events: int) -> None:
        self._written += events

    def maybe_make(self, *, healthy: bool) -> None:
        if self._key is None or not healthy or not self._written:
            return
        overdue = time.monotonic() - self._last >= self._interval
        if self._written < self._every and not overdue:
            return
        try:
            checkpoint = make_checkpoint(self._engine, self._key)
        except Exception as exc:
            logger.error("cannot make audit checkpoint: %s", _short(exc))
            return
        logger.info("audit checkpoint seq=%d", checkpoint.seq)
        self._written, self._last = 0, time.monotonic()


def _call(done: DurableCallback, exc: BaseException | None) -> None:
    try:
        done(exc)
    except Exception:
        logger.exception("audit durable callback failed")


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0] if text else type(exc).__name__
