"""Who judges a prefecture now, when several servers share one database.

Every server process runs its own pre-review (watcher, debouncer, catch-up
sweep), and on a shared data root all of them see the same uploads. Before
a run, a process claims the prefecture's lease, a row of
``prereview_leases``; a process that finds it held by another leaves the
run to that one and tries again later.

Trusts: the database (one conditional statement is atomic on SQLite and
PostgreSQL) and clocks that agree within a fraction of ``LEASE_SECONDS``
(the holder writes the expiry with its clock, the others read it with
theirs). Guarantees: while a holder renews its lease, no other holder gets
it; a holder that dies without releasing (a crash, a lost machine) blocks
the prefecture for at most ``LEASE_SECONDS``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from types import TracebackType

import sqlalchemy as sa

from censusdrop.server.schema import prereview_leases

logger = logging.getLogger(__name__)

LEASE_SECONDS = 120.0
# A held lease is extended this often, well before it would expire.
RENEW_SECONDS = LEASE_SECONDS / 4

Clock = Callable[[], dt.datetime]


def new_holder() -> str:
    """A name no other process uses: host, process id and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def claim(
    engine: sa.Engine,
    prefecture: str,
    holder: str,
    *,
    at: dt.datetime,
    seconds: float = LEASE_SECONDS,
) -> bool:
    """Take or extend the lease of ``prefecture`` until ``seconds`` after
    ``at``; False when another holder has it and it has not expired."""
    until = at + dt.timedelta(seconds=seconds)
    table = prereview_leases
    take = (
        table.update()
        .where(
            table.c.prefecture == prefecture,
            sa.or_(table.c.holder == holder, table.c.expires_at <= at),
        )
        .values(holder=holder, expires_at=until)
    )
    with engine.begin() as conn:
        if conn.execute(take).rowcount == 1:
            return True
    # No row yet, or a live one of another holder: the primary key decides.
    try:
        with engine.begin() as conn:
            conn.execute(
                table.insert().values(
                    prefecture=prefecture, holder=holder, expires_at=until
                )
            )
    except sa.exc.IntegrityError:
        return False
    return True


def release(engine: sa.Engine, prefecture: str, holder: str) -> None:
    """Give the lease up, if ``holder`` still has it."""
    table = prereview_leases
    with engine.begin() as conn:
        conn.execute(
            table.delete().where(
                table.c.prefecture == prefecture, table.c.holder == holder
            )
        )


class HeldLease:
    """A claimed lease, renewed by a thread until the ``with`` block ends.

    ``renew_every`` (``RENEW_SECONDS``) seconds between renewals, each
    extending the lease to ``LEASE_SECONDS`` from then.

    ``HeldLease.take`` returns None when another holder has the lease. A
    renewal that fails (the database away, or the lease lost after it
    expired) is logged; the run goes on, since stopping a validation half
    way would gain nothing.
    """

    def __init__(
        self,
        engine: sa.Engine,
        prefecture: str,
        holder: str,
        clock: Clock,
        *,
        renew_every: float = RENEW_SECONDS,
    ) -> None:
        self.engine = engine
        self.prefecture = prefecture
        self.holder = holder
        self._clock = clock
        self._renew_every = renew_every
        self._done = threading.Event()
        self._renewer = threading.Thread(
            target=self._renew_until_done,
            name=f"prereview-lease-{prefecture}",
            daemon=True,
        )

    @classmethod
    def take(
        cls,
        engine: sa.Engine,
        prefecture: str,
        holder: str,
        clock: Clock,
        *,
        renew_every: float = RENEW_SECONDS,
    ) -> HeldLease | None:
        if not claim(engine, prefecture, holder, at=clock()):
            return None
        return cls(engine, prefecture, holder, clock, renew_every=renew_every)

    def __enter__(self) -> HeldLease:
        self._renewer.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._done.set()
        self._renewer.join()
        try:
            release(self.engine, self.prefecture, self.holder)
        except sa.exc.SQLAlchemyError:
            logger.exception(
                "prereview lease not released prefecture=%s (expires by itself)",
                self.prefecture,
            )

    def _renew_until_done(self) -> None:
        while not self._done.wait(self._renew_every):
            try:
                kept = claim(
                    self.engine, self.prefecture, self.holder, at=self._clock()
                )
            except sa.exc.SQLAlchemyError:
                logger.exception(
                    "prereview lease renewal failed prefecture=%s", self.prefecture
                )
                continue
            if not kept:
                logger.error(
                    "prereview lease lost prefecture=%s: another server may judge"
                    " it at the same time",
                    self.prefecture,
                )
