"""Debouncing per prefecture: run once the area has been quiet for a while.

``Debouncer.touch(key)`` may be called from any thread (the watchdog
observer's) and only records the time; it never waits on a run. One
scheduler thread starts a run of ``job(key)`` once ``key`` has had no touch
for ``quiet`` seconds, on a small worker pool, so neither the FTP event
loop nor the observer ever waits for a validation.

Guarantees:

- never two runs of one key at once: a key touched while it runs is due
  again ``quiet`` seconds after its last touch, and runs once the current
  run is over;
- a run that raises is logged and the key and every other key go on;
- ``stop`` waits for the runs in progress and drops what is still due
  (the server catches up on start, see ``records.stale_areas``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class Debouncer:
    """Runs ``job(key)`` after ``quiet`` seconds without ``touch(key)``.

    Options: ``workers`` (2) runs of different keys at once; ``clock``
    (``time.monotonic``) the time source; ``name`` ("prereview") the prefix
    of the thread names.
    """

    def __init__(
        self,
        job: Callable[[str], object],
        quiet: float,
        *,
        workers: int = 2,
        clock: Clock = time.monotonic,
        name: str = "prereview",
    ) -> None:
        if quiet < 0:
            raise ValueError(f"quiet must not be negative, got {quiet}")
        self._job = job
        self._quiet = quiet
        self._clock = clock
        self._name = name
        self._workers = workers
        self._due: dict[str, float] = {}
        self._running: set[str] = set()
        self._changed = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    def touch(self, key: str) -> None:
        """Note a change of ``key``; its run waits for ``quiet`` more seconds."""
        with self._changed:
            self._due[key] = self._clock() + self._quiet
            self._changed.notify_all()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("debouncer already started")
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix=self._name)
        self._thread = threading.Thread(
            target=self._schedule, name=f"{self._name}-scheduler", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop scheduling, wait for runs in progress, drop pending ones."""
        with self._changed:
            self._stopping = True
            dropped = sorted(self._due)
            self._due.clear()
            self._changed.notify_all()
        if dropped:
            logger.info("prereview stopping dropped=%s", ",".join(dropped))
        if self._thread is not None:
            self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is due or running; False if ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._due or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def pending(self) -> set[str]:
        """The keys due or running now."""
        with self._changed:
            return set(self._due) | self._running

    # --- the scheduler thread and the runs

    def _schedule(self) -> None:
        while True:
            with self._changed:
                if self._stopping:
                    return
                ready = self._take_ready()
                if not ready:
                    self._changed.wait(self._wait_time())
                    continue
            for key in ready:
                self._submit(key)

    def _take_ready(self) -> list[str]:
        """Keys whose quiet period is over and that are not running."""
        now = self._clock()
        ready = [
            key
            for key, due in self._due.items()
            if due <= now and key not in self._running
        ]
        for key in ready:
            del self._due[key]
            self._running.add(key)
        return ready

    def _wait_time(self) -> float | None:
        waiting = [due for key, due in self._due.items() if key not in self._running]
        if not waiting:
            return None  # until the next touch or the end of a run
        return max(min(waiting) - self._clock(), 0.0)

    def _submit(self, key: str) -> None:
        assert self._pool is not None
        try:
            self._pool.submit(self._run, key)
        except RuntimeError:  # the pool shut down under us: stopping
            self._finished(key)

    def _run(self, key: str) -> None:
        started, cpu = time.monotonic(), time.thread_time()
        try:
            self._job(key)
        except Exception:
            logger.exception("prereview run failed key=%s", key)
        finally:
            logger.debug(
                "prereview run key=%s seconds=%.3f cpu=%.3f",
                key,
                time.monotonic() - started,
                time.thread_time() - cpu,
            )
            self._finished(key)

    def _finished(self, key: str) -> None:
        with self._changed:
            self._running.discard(key)
            self._changed.notify_all()
