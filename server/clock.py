"""Where the server's "now" comes from.

Every decision that depends on the time (windows, deadlines, revocation at
the end of a review, custody ages) takes an explicit ``at``. The running
server reads it from one ``Clock`` held by ``Services``: the system clock in
production, a ``FixedClock`` that a test sets and moves by hand. Nothing
patches ``datetime``.

Audit events keep their own timestamps from the system clock: the audit
trail records when something really happened, whatever the policy clock
says.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Protocol


class Clock(Protocol):
    """A source of timezone-aware UTC instants."""

    def now(self) -> dt.datetime:
        """The current instant, timezone-aware."""


class SystemClock:
    """The real time, in UTC."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def __repr__(self) -> str:
        return "SystemClock()"


class FixedClock:
    """A clock that stands still until told otherwise.

    Safe to read and move from any thread: tests move it from the test
    thread while the server reads it on its event loop.
    """

    def __init__(self, at: dt.datetime) -> None:
        self._at = _aware(at)
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        with self._lock:
            return self._at

    def set(self, at: dt.datetime) -> None:
        with self._lock:
            self._at = _aware(at)

    def advance(self, delta: dt.timedelta) -> dt.datetime:
        with self._lock:
            self._at += delta
            return self._at

    def __repr__(self) -> str:
        return f"FixedClock({self.now().isoformat()})"


def _aware(at: dt.datetime) -> dt.datetime:
    if at.tzinfo is None:
        raise ValueError("at: the clock needs a timezone-aware datetime")
    return at.astimezone(dt.UTC)
