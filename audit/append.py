"""Appending to the audit chain: one serialised transaction per call.

``AuditLog.append`` reads the head of the chain, seals each event after it,
inserts and commits, all while holding the chain's write lock (see
``locking``). Any number of threads and processes may append at once; the
chain stays linear. ``AuditWriter`` (in ``store``) is the asynchronous
front end the server uses; the CLI appends directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from .chain import ROW_FIELDS
from .chain import seal
from .events import AuditEvent
from .locking import chain_transaction
from .locking import prepare_engine
from .locking import read_connection
from .schema import ChainHead
from .schema import audit_events
from .schema import read_head


class AuditLog:
    """Synchronous, serialised appends to the audit chain."""

    def __init__(self, engine: sa.Engine) -> None:
        prepare_engine(engine)
        self.engine = engine

    def append(self, events: Sequence[AuditEvent]) -> list[int]:
        """Commit ``events`` in one transaction; return their seq numbers."""
        if not events:
            return []
        with chain_transaction(self.engine) as conn:
            head = read_head(conn)
            params, prev = [], head.hash
            for offset, event in enumerate(events, start=1):
                row = seal(event, head.seq + offset, prev)
                prev = row[-1]
                params.append(_insert_params(row, event))
            conn.execute(audit_events.insert(), params)
        return list(range(head.seq + 1, head.seq + len(events) + 1))

    def head(self) -> ChainHead:
        with read_connection(self.engine) as conn:
            return read_head(conn)


def _insert_params(row: Sequence[Any], event: AuditEvent) -> dict[str, Any]:
    params = dict(zip(ROW_FIELDS, row, strict=True))
    params["at"] = event.at
    return params
