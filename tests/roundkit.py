"""Helpers for tests of acceptance rounds: China-time instants, a round set
up through the store, prefectures moved along, bounded waits.

Times are fixed through a ``FixedClock`` given to the server's services and
the explicit ``at`` of every store call; nothing patches the time.
"""

from __future__ import annotations

import datetime as dt
import time
import zoneinfo
from collections.abc import Callable
from typing import Any

from censusdrop.server.clock import FixedClock
from censusdrop.server.roundmodel import Round
from censusdrop.server.roundmodel import Window

CHINA = zoneinfo.ZoneInfo("Asia/Shanghai")

WUHAN = "420100"
ENSHI = "422800"
YICHANG = "420500"


def china(*parts: int) -> dt.datetime:
    """An instant given in China time, as UTC."""
    return dt.datetime(*parts, tzinfo=CHINA).astimezone(dt.UTC)  # type: ignore[misc]


# The review of the plan: submissions until 10 May, review until 30 June.
SUBMISSION = Window(china(2020, 4, 23), china(2020, 5, 11))
REVIEW = Window(china(2020, 5, 11, 9), china(2020, 7, 1))
BEFORE = china(2020, 4, 20, 10)
SUBMITTING = china(2020, 4, 25, 10)
REVIEWING = china(2020, 5, 12, 10)
AFTER = china(2020, 7, 1, 0, 0, 1)


def make_round(
    services: Any,
    prefectures: tuple[str, ...] = (WUHAN, ENSHI, YICHANG),
    *,
    name: str = "2020-hubei",
    submission: Window | None = SUBMISSION,
    review: Window | None = REVIEW,
) -> Round:
    round_: Round = services.rounds.create(
        name,
        at=china(2020, 4, 22),
        prefectures=prefectures,
        submission=submission,
        review=review,
    )
    return round_


def distribute(services: Any, prefecture: str, at: dt.datetime = REVIEWING) -> None:
    """Move a prefecture from not_submitted to distributed."""
    for state in ("submitted", "prereviewed", "distributed"):
        services.rounds.advance(prefecture, state, at=at, actor="test", reason="test")


def fixed_clock(running: Any, at: dt.datetime) -> FixedClock:
    """Give a running server a clock standing at ``at``."""
    clock = FixedClock(at)
    running.services.clock = clock
    return clock


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` until it returns something true; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)


def audit_events(running: Any, action: str) -> list[Any]:
    """Stored audit events of one action, after the writer flushed."""
    import sqlalchemy as sa

    from censusdrop.audit.schema import audit_events as table

    running.services.audit.flush(10)
    with running.services.engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(table).where(table.c.action == action).order_by(table.c.seq)
            )
        )
