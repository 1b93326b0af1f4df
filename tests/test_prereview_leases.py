"""Pre-review leases, for several servers on one database: one holder per
prefecture at a time, racing claims with one winner, and two pre-review
services on one database and one data root judging one state once; on
SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from censusdrop.server.db import make_engine
from censusdrop.server.db import migrate
from censusdrop.server.prereview import MARKER_NAME
from censusdrop.server.prereview import Prereviewer
from censusdrop.server.prereview import PrereviewService
from censusdrop.server.prereview import configured_checklist
from censusdrop.server.prereview.leases import LEASE_SECONDS
from censusdrop.server.prereview.leases import HeldLease
from censusdrop.server.prereview.leases import claim
from censusdrop.server.prereview.leases import release
from censusdrop.server.schema import prereview_leases
from censusdrop.server.services import Services
from prereviewkit import ENSHI
from prereviewkit import REPORT_WAIT
from prereviewkit import WUHAN
from prereviewkit import make_instance
from prereviewkit import store_tree
from prereviewkit import wait_for
from treebuilder import build_submission

AT = dt.datetime(2026, 12, 4, 9, 0, tzinfo=dt.UTC)


def holder_of(engine: sa.Engine, prefecture: str, *, at: dt.datetime) -> str | None:
    """Who holds the lease of ``prefecture`` at ``at``, if anyone."""
    table = prereview_leases
    query = sa.select(table.c.holder).where(
        table.c.prefecture == prefecture, table.c.expires_at > at
    )
    with engine.connect() as conn:
        return conn.execute(query).scalar()


def _later(seconds: float) -> dt.datetime:
    return AT + dt.timedelta(seconds=seconds)


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    """An engine on a database brought to the newest schema by migrations."""
    made = make_engine(database_url)
    migrate(made)
    try:
        yield made
    finally:
        made.dispose()


def test_a_held_lease_is_refused_to_others_until_it_expires(
    engine: sa.Engine,
) -> None:
    assert claim(engine, WUHAN, "a", at=AT)
    assert not claim(engine, WUHAN, "b", at=_later(60))
    assert claim(engine, WUHAN, "a", at=_later(60))  # renewed
    assert not claim(engine, WUHAN, "b", at=_later(LEASE_SECONDS + 30))
    assert claim(engine, ENSHI, "b", at=_later(90))  # another prefecture

    expired = _later(60 + LEASE_SECONDS)
    assert claim(engine, WUHAN, "b", at=expired)
    assert holder_of(engine, WUHAN, at=expired) == "b"
    release(engine, WUHAN, "a")  # no longer a's: nothing happens
    assert holder_of(engine, WUHAN, at=expired) == "b"
    release(engine, WUHAN, "b")
    assert holder_of(engine, WUHAN, at=expired) is None
    assert claim(engine, WUHAN, "a", at=expired)


def test_racing_claims_of_one_prefecture_give_one_holder(database_url: str) -> None:
    racers, rounds = 4, 12
    setup = make_engine(database_url)
    migrate(setup)
    setup.dispose()
    engines = [make_engine(database_url) for _ in range(racers)]
    barrier = threading.Barrier(racers)
    winners: dict[str, list[int]] = {f"4{n:05d}": [] for n in range(rounds)}
    errors: list[BaseException] = []

    def race(racer: int) -> None:
        try:
            for code, won in winners.items():
                barrier.wait(30)
                if claim(engines[racer], code, f"racer-{racer}", at=AT):
                    won.append(racer)
        except BaseException as exc:  # reported by the test
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=race, args=(n,)) for n in range(racers)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        for made in engines:
            made.dispose()
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors
    assert all(len(won) == 1 for won in winners.values()), winners


def test_a_held_lease_is_renewed_while_the_block_runs(engine: sa.Engine) -> None:
    times = iter(_later(n) for n in range(10_000))
    lease = HeldLease.take(engine, WUHAN, "a", lambda: next(times), renew_every=0.01)
    assert lease is not None
    with lease:
        assert HeldLease.take(engine, WUHAN, "b", lambda: AT) is None
        wait_for(lambda: _expiry(engine) >= _later(2 + LEASE_SECONDS))
    assert holder_of(engine, WUHAN, at=AT) is None  # released at the end


def _expiry(engine: sa.Engine) -> dt.datetime:
    query = sa.select(prereview_leases.c.expires_at)
    with engine.connect() as conn:
        value: dt.datetime = conn.execute(query).scalar_one()
    return value


def test_the_latest_report_judges_the_area_until_it_changes(
    tmp_path: Path, database_url: str
) -> None:
    services = make_instance(tmp_path / "instance", database_url).services()
    services.storage.prepare()
    prereviewer = Prereviewer(services, configured_checklist(services.settings))
    storage = services.storage
    try:
        store_tree(storage, WUHAN, build_submission(tmp_path / "tree").root)
        storage.write_bytes(WUHAN, "Thumbs.db", b"ignored by the checklist", "t")
        assert not prereviewer.is_judged(WUHAN)  # no report yet
        prereviewer.run(WUHAN, at=AT, origin="test")
        assert prereviewer.is_judged(WUHAN)

        storage.mkdir(WUHAN, "新文件夹")
        assert not prereviewer.is_judged(WUHAN)
        prereviewer.run(WUHAN, at=AT, origin="test")
        assert prereviewer.is_judged(WUHAN)

        storage.write_bytes(WUHAN, MARKER_NAME, b"done", "t")  # not in the digest
        assert not prereviewer.is_judged(WUHAN)
        prereviewer.run(WUHAN, at=AT, origin="test")
        assert prereviewer.is_judged(WUHAN)
    finally:
        services.audit.close()  # type: ignore[attr-defined]
        services.engine.dispose()


# --- two services on one database and one data root ----------------------------


def test_two_services_sharing_database_and_data_root_judge_each_state_once(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="censusdrop.server.prereview")
    instance = make_instance(tmp_path / "instance", database_url)
    both = [instance.services(), instance.services()]
    first = both[0]
    first.storage.prepare()
    store_tree(first.storage, WUHAN, build_submission(tmp_path / "tree").root)
    services = [PrereviewService.from_services(s) for s in both]
    try:
        for service in services:
            assert service is not None
            service.start()  # each sweeps at once: both find the area stale
        _wait_quiet(services, both[0], count=1)
        assert len(_prereview_events(first)) == 1
        assert _passed_on(caplog) == 1  # the other server deferred or skipped

        both[1].storage.write_bytes(WUHAN, "补充说明.pdf", b"%PDF-1.4 more", "t")
        for service in services:
            assert service is not None
            service.sweep()
        _wait_quiet(services, both[0], count=2)
        assert len(_prereview_events(first)) == 2
    finally:
        for service, opened in zip(services, both, strict=True):
            if service is not None:
                service.stop()
            opened.audit.close()  # type: ignore[attr-defined]
            opened.engine.dispose()


def _wait_quiet(
    services: list[PrereviewService | None], reader: Services, count: int
) -> None:
    """Wait for ``count`` reports of WUHAN and both services idle; then make
    sure no other report came."""
    wait_for(lambda: _report_count(reader) >= count)
    for service in services:
        assert service is not None
        assert service.wait_idle(REPORT_WAIT)
    assert _report_count(reader) == count


def _report_count(services: Services) -> int:
    query = sa.text("SELECT count(*) FROM prereview_reports WHERE prefecture = :p")
    with services.engine.connect() as conn:
        return int(conn.execute(query, {"p": WUHAN}).scalar_one())


def _prereview_events(services: Services) -> list[object]:
    query = sa.text("SELECT seq FROM audit_events WHERE action = 'prereview'")
    with services.engine.connect() as conn:
        return list(conn.execute(query))


def _passed_on(caplog: pytest.LogCaptureFixture) -> int:
    """Runs a service left to the other: deferred (lease held) until the
    other was done, then skipped (its report judged this state)."""
    messages = [record.getMessage() for record in caplog.records]
    return sum(
        1 for m in messages if m.startswith(f"prereview skipped prefecture={WUHAN}")
    )
