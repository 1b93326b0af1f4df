"""The queue between event producers and the audit writer thread.

Two lanes share one bound: durable events (a transfer is waiting for them)
are taken before ordinary ones, so a backlog of ordinary events does not
delay a transfer's start record. Within a batch, events keep the order in
which they were submitted. Producers never wait: ``put`` returns ``None``
when the queue is full or closed, and the caller decides what that means.
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Iterable

from .events import AuditEvent
from .events import AuditUnavailable
from .events import DurableCallback


class State(enum.Enum):
    QUEUED = "queued"
    TAKEN = "taken"
    CANCELLED = "cancelled"


@dataclasses.dataclass(eq=False, slots=True)
class Pending:
    """One submitted event and, for a durable one, whom to tell."""

    event: AuditEvent
    done: DurableCallback | None
    order: int
    state: State = State.QUEUED

    @property
    def is_durable(self) -> bool:
        return self.done is not None


class PendingQueue:
    """A bounded two-lane queue with batch take and idle tracking."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        self._normal: deque[Pending] = deque()
        self._durable: deque[Pending] = deque()
        self._cond = threading.Condition()
        self._counter = itertools.count()
        self._closed = False
        self._busy = False
        self._wake_on_normal = True

    def __len__(self) -> int:
        with self._cond:
            return len(self._normal) + len(self._durable)

    @property
    def is_closed(self) -> bool:
        return self._closed

    def put(self, event: AuditEvent, done: DurableCallback | None) -> Pending | None:
        """Queue an event; ``None`` if the queue is full or closed."""
        with self._cond:
            if self._closed or len(self._normal) + len(self._durable) >= self._limit:
                return None
            item = Pending(event, done, next(self._counter))
            lane = self._durable if done is not None else self._normal
            lane.append(item)
            if done is not None or self._wake_on_normal:
                self._cond.notify_all()
            return item

    def cancel(self, item: Pending) -> bool:
        """Withdraw an item the writer has not taken yet."""
        with self._cond:
            if item.state is State.QUEUED:
                item.state = State.CANCELLED
                return True
            return False

    def take(self, limit: int, timeout: float | None) -> list[Pending]:
        """Up to ``limit`` items, durable first, in submission order.

        Waits up to ``timeout`` for the first item; returns ``[]`` on
        timeout or when closed and empty. Marks the queue busy until
        ``finish`` is called.
        """
        with self._cond:
            self._wake_on_normal = True
            self._cond.wait_for(self._has_work, timeout)
            batch = self._pop(self._durable, limit)
            batch += self._pop(self._normal, limit - len(batch))
            self._busy = bool(batch)
        batch.sort(key=lambda item: item.order)
        return batch

    def has_durable(self) -> bool:
        with self._cond:
            return any(item.state is State.QUEUED for item in self._durable)

    def take_durable(self) -> list[Pending]:
        """Every queued durable item (to refuse them while the DB is down)."""
        with self._cond:
            return self._pop(self._durable, len(self._durable))

    def wait_for_durable(self, timeout: float) -> None:
        """Sleep until a durable item arrives, the queue closes, or timeout."""
        with self._cond:
            self._wake_on_normal = False
            self._cond.wait_for(lambda: self._closed or bool(self._durable), timeout)

    def requeue(self, items: Iterable[Pending]) -> None:
        """Put ordinary items back at the front, keeping their order."""
        with self._cond:
            for item in sorted(items, key=lambda i: i.order, reverse=True):
                item.state = State.QUEUED
                self._normal.appendleft(item)

    def finish(self) -> None:
        """The batch from the last ``take`` is done (committed or not)."""
        with self._cond:
            self._busy = False
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until nothing is queued or being written."""
        with self._cond:
            return self._cond.wait_for(self._is_idle, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _has_work(self) -> bool:
        return self._closed or bool(self._durable) or bool(self._normal)

    def _is_idle(self) -> bool:
        return not (self._busy or self._durable or self._normal)

    @staticmethod
    def _pop(lane: deque[Pending], limit: int) -> list[Pending]:
        batch: list[Pending] = []
        while lane and len(batch) < limit:
            item = lane.popleft()
            if item.state is State.QUEUED:
                item.state = State.TAKEN
                batch.append(item)
        return batch


class OnceCallback:
    """A durable callback that runs at most once, whoever calls it first
    (the writer with the outcome, or the deadline watchdog)."""

    def __init__(self, done: DurableCallback) -> None:
        self._done = done
        self._lock = threading.Lock()
        self._called = False

    def __call__(self, exc: BaseException | None) -> None:
        with self._lock:
            if self._called:
                return
            self._called = True
        self._done(exc)


class Deadlines:
    """A watchdog thread that fails durable events not settled in time,
    even while the writer thread is stuck in a database call that hangs."""

    def __init__(self, queue: PendingQueue) -> None:
        self._queue = queue
        self._heap: list[tuple[float, int, Pending, OnceCallback]] = []
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(
            target=self._run, name="censusdrop-audit-deadlines", daemon=True
        )
        self._thread.start()

    def watch(self, item: Pending, done: OnceCallback, timeout: float) -> None:
        with self._cond:
            deadline = time.monotonic() + timeout
            heapq.heappush(self._heap, (deadline, item.order, item, done))
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(5)

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, _, item, done = heapq.heappop(self._heap)
                    self._queue.cancel(item)
                    done(AuditUnavailable("audit event not recorded in time"))
                wait = self._heap[0][0] - now if self._heap else None
                self._cond.wait(wait)
