"""Two independent ``censusdrop serve`` processes sharing one PostgreSQL
database, one data root, one keys folder and one certificate, as two
machines serving one province would: real FTPS clients on both, one
pre-review run per state of an area, one audit chain.

The servers here run on one host, so each one's native observer sees the
other's writes; across machines the polling observer does (README,
"Several machines"). PostgreSQL only: the test skips without it, as every
PostgreSQL test does (``conftest.postgres_server_url``).
"""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_server_workers import WUHAN
from test_server_workers import Workers
from test_server_workers import _cli
from test_server_workers import _events
from test_server_workers import _versions

from censusdrop.server.prereview import TEXT_REPORT
from censusdrop.server.schema import prereview_reports
from conftest import Instance
from ftpclient import download
from ftpclient import upload
from treebuilder import build_submission

# Long enough that one burst of uploads is one state; the warm-up runs too.
QUIET = "2"
SETTLED_WAIT = 60.0
SKIPPED = f"prereview skipped prefecture={WUHAN}"


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_servers_share_uploads_reports_and_one_audit_chain(
    tmp_path: Path, database_url: str
) -> None:
    instance = Instance(tmp_path / "i", database_url, quiet_seconds=QUIET)
    instance.add_account("wuhan", "prefecture", WUHAN)
    tree = build_submission(tmp_path / "tree").root
    first = Workers(instance, tmp_path, 1)
    try:
        second = Workers(instance, tmp_path, 1)
    except BaseException:
        first.stop()
        raise
    try:
        assert first.address != second.address
        clients = [first.login(), second.login()]
        through = _upload_alternately(clients, tree)
        files = sum(1 for paths in through for _ in paths)

        final = _wait_settled(instance, [first, second], files)
        from_first = through[0][0]
        assert download(clients[1], from_first) == (tree / from_first).read_bytes()
        assert clients[1].nlst().count(TEXT_REPORT) == 1
        for client in clients:
            client.quit()
    finally:
        codes = second.stop(), first.stop()
    assert codes == (0, 0), first.text + second.text

    rows = _reports(instance)
    digests = Counter(row.digest for row in rows)
    assert digests[final.digest] == 1 and max(digests.values()) == 1, rows
    assert len(_events(instance, "prereview")) == len(rows)
    assert len(_versions(instance, TEXT_REPORT)) == len(rows)
    uploaded = {row.path.lstrip("/") for row in _events(instance, "upload_end")}
    assert set(through[0]) <= uploaded and set(through[1]) <= uploaded
    _assert_linear(instance)
    code, out = _cli(instance, "audit", "verify")
    assert code == 0, out


def _upload_alternately(clients: list[Any], root: Path) -> tuple[list[str], ...]:
    """Every folder and file under ``root``, entry by entry through one
    client then the other; returns the files sent through each."""
    through: tuple[list[str], ...] = ([], [])
    for number, local in enumerate(sorted(root.rglob("*"))):
        turn = number % 2
        relative = local.relative_to(root).as_posix()
        if local.is_dir():
            clients[turn].mkd(relative)
        else:
            upload(clients[turn], relative, local.read_bytes())
            through[turn].append(relative)
    return through


def _wait_settled(instance: Instance, servers: list[Workers], files: int) -> Any:
    """The report on the whole tree, once the server that did not judge it
    has said so: it deferred to the lease holder, then skipped the state."""
    deadline = time.monotonic() + SETTLED_WAIT
    while True:
        rows = _reports(instance)
        whole = [row for row in rows if row.report["digest"]["files"] == files]
        skipped = sum(len(re.findall(SKIPPED, s.text)) for s in servers)
        if whole and skipped >= 1:
            return whole[-1]
        if time.monotonic() > deadline:
            logs = "\n".join(s.text for s in servers)
            raise AssertionError(f"not settled: {rows}\n{logs}")
        time.sleep(0.1)


def _reports(instance: Instance) -> list[Any]:
    engine = sa.create_engine(instance.settings.database_url)
    query = prereview_reports.select().where(prereview_reports.c.prefecture == WUHAN)
    try:
        with engine.connect() as conn:
            return list(conn.execute(query.order_by(prereview_reports.c.id)))
    finally:
        engine.dispose()


def _assert_linear(instance: Instance) -> None:
    """Every event follows the one before it: no gap, no fork."""
    from censusdrop.audit.schema import audit_events as table

    engine = sa.create_engine(instance.settings.database_url)
    try:
        with engine.connect() as conn:
            query = sa.select(table.c.seq, table.c.prev_hash, table.c.hash)
            chain = list(conn.execute(query.order_by(table.c.seq)))
    finally:
        engine.dispose()
    assert [row.seq for row in chain] == list(range(1, len(chain) + 1))
    for before, after in itertools.pairwise(chain):
        assert after.prev_hash == before.hash
