"""Revoked reviewers: access an administrator has stopped until reinstated.

Trusts: the database. Guarantees: a revocation is stored before ``revoke``
returns, so a server started later refuses the reviewer too, and a running
server notices it at its next access check (``censusdrop.server.guard``);
only ``reinstate`` removes it. The administrative act itself is audited by
the command that calls this.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa

from censusdrop.audit.locking import read_connection
from censusdrop.server.accounts import AccountError
from censusdrop.server.accounts import AccountStore
from censusdrop.server.schema import revocations


@dataclasses.dataclass(frozen=True)
class Revocation:
    account: str
    revoked_at: dt.datetime
    operator: str
    reason: str


class RevocationStore:
    """Revocations on the database. Safe to share between threads."""

    def __init__(self, engine: sa.Engine, accounts: AccountStore) -> None:
        self.engine = engine
        self.accounts = accounts

    def revoke(
        self, name: str, *, at: dt.datetime, operator: str, reason: str
    ) -> Revocation:
        """Stop a reviewer's access now; an error if already revoked."""
        self._require_reviewer(name)
        with self.engine.begin() as conn:
            if _find(conn, name) is not None:
                raise AccountError(f"{name} is already revoked")
            conn.execute(
                revocations.insert().values(
                    account=name, revoked_at=at, operator=operator, reason=reason
                )
            )
        return Revocation(name, at, operator, reason)

    def reinstate(self, name: str) -> Revocation:
        """Lift a revocation; returns the one lifted."""
        self._require_reviewer(name)
        with self.engine.begin() as conn:
            found = _find(conn, name)
            if found is None:
                raise AccountError(f"{name} is not revoked")
            conn.execute(revocations.delete().where(revocations.c.account == name))
        return found

    def all(self) -> dict[str, Revocation]:
        """Every revocation in force, by account name."""
        with read_connection(self.engine) as conn:
            rows = conn.execute(revocations.select()).all()
        return {row.account: _revocation(row) for row in rows}

    def _require_reviewer(self, name: str) -> None:
        account = self.accounts.require(name)
        if account.role != "reviewer":
            raise AccountError(
                f"{name} is a {account.role} account; revoke applies to reviewers"
                " (use account disable for other accounts)"
            )


def _find(conn: sa.Connection, name: str) -> Revocation | None:
    row = conn.execute(
        revocations.select().where(revocations.c.account == name)
    ).first()
    return None if row is None else _revocation(row)


def _revocation(row: sa.Row[tuple[object, ...]]) -> Revocation:
    m = row._mapping
    return Revocation(m["account"], m["revoked_at"], m["operator"], m["reason"])
