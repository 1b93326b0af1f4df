"""The debouncer: one run per prefecture after a quiet period, never two at
once, a failing run never stopping the others. Real threads, short periods."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from collections.abc import Iterator

import pytest

from censusdrop.server.prereview.scheduler import Debouncer

QUIET = 0.15
WAIT = 10.0


class Jobs:
    """A job that records its runs and can be held inside a run."""

    def __init__(self, action: Callable[[str], None] | None = None) -> None:
        self.runs: Counter[str] = Counter()
        self.started: list[tuple[str, float]] = []
        self.overlaps = 0
        self.release = threading.Event()
        self.release.set()
        self.inside = threading.Event()
        self._active: set[str] = set()
        self._lock = threading.Lock()
        self._action = action

    def __call__(self, key: str) -> None:
        with self._lock:
            if key in self._active:
                self.overlaps += 1
            self._active.add(key)
            self.started.append((key, time.monotonic()))
        try:
            self.inside.set()
            self.release.wait(WAIT)
            if self._action is not None:
                self._action(key)
        finally:
            with self._lock:
                self._active.discard(key)
                self.runs[key] += 1


@pytest.fixture
def jobs() -> Jobs:
    return Jobs()


@pytest.fixture
def debouncer(jobs: Jobs) -> Iterator[Debouncer]:
    running = Debouncer(jobs, QUIET)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_a_burst_of_changes_gives_one_run_after_the_quiet_period(
    debouncer: Debouncer, jobs: Jobs
) -> None:
    for _ in range(20):
        time.sleep(QUIET / 10)
        debouncer.touch("420100")
    last_touch = time.monotonic()
    assert debouncer.wait_idle(WAIT)

    assert jobs.runs == Counter({"420100": 1})
    [(_, started)] = jobs.started
    assert started - last_touch >= QUIET - 0.01


def test_prefectures_are_debounced_separately(debouncer: Debouncer, jobs: Jobs) -> None:
    debouncer.touch("420100")
    debouncer.touch("422800")
    debouncer.touch("420100")
    assert debouncer.wait_idle(WAIT)
    assert jobs.runs == Counter({"420100": 1, "422800": 1})


def test_a_change_during_a_run_gives_a_second_run_after_it_not_beside_it(
    debouncer: Debouncer, jobs: Jobs
) -> None:
    jobs.release.clear()
    debouncer.touch("420100")
    assert jobs.inside.wait(WAIT)
    debouncer.touch("420100")
    time.sleep(2 * QUIET)  # the second run is due, but the first still runs
    assert debouncer.pending() == {"420100"}
    assert jobs.runs["420100"] == 0
    jobs.release.set()

    assert debouncer.wait_idle(WAIT)
    assert jobs.runs["420100"] == 2
    assert jobs.overlaps == 0


def test_a_failing_run_is_logged_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fail_wuhan(key: str) -> None:
        if key == "420100":
            raise RuntimeError("validator fault")

    jobs = Jobs(fail_wuhan)
    debouncer = Debouncer(jobs, QUIET)
    debouncer.start()
    try:
        debouncer.touch("420100")
        debouncer.touch("422800")
        assert debouncer.wait_idle(WAIT)
        debouncer.touch("420100")
        assert debouncer.wait_idle(WAIT)
    finally:
        debouncer.stop()

    assert jobs.runs == Counter({"420100": 2, "422800": 1})
    assert "prereview run failed key=420100" in caplog.text


def test_stop_waits_for_the_run_in_progress_and_drops_pending_ones(
    jobs: Jobs,
) -> None:
    now = [0.0]  # a clock that moves only when told to
    debouncer = Debouncer(jobs, 1.0, clock=lambda: now[0])
    debouncer.start()
    jobs.release.clear()
    debouncer.touch("420100")
    now[0] = 2.0
    debouncer.touch("422800")  # due at 3.0, which never comes
    assert jobs.inside.wait(WAIT)
    threading.Timer(QUIET, jobs.release.set).start()

    debouncer.stop()
    assert jobs.runs == Counter({"420100": 1})


def test_zero_quiet_runs_at_once_and_negative_is_refused(jobs: Jobs) -> None:
    with pytest.raises(ValueError, match="quiet"):
        Debouncer(jobs, -1)
    debouncer = Debouncer(jobs, 0)
    debouncer.start()
    try:
        debouncer.touch("420100")
        assert debouncer.wait_idle(WAIT)
    finally:
        debouncer.stop()
    assert jobs.runs["420100"] == 1
