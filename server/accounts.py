"""Accounts, reviewer assignments, and login decisions.

Trusts: the database. Guarantees: a login succeeds only for an enabled FTP
account (prefecture or reviewer) with the right password, from an allowed
network, while neither the account is locked nor the source address
throttled. Every refusal carries its real reason for the audit log, but the
caller shows clients one generic reply, and each attempt costs one full
password check whatever the reason, so timing tells nothing either.
Lockouts are stored in the database and survive restarts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import ipaddress
import re
from collections.abc import Iterable

import sqlalchemy as sa

from censusdrop.audit.locking import read_connection
from censusdrop.config.prefectures import PrefectureList
from censusdrop.server.passwords import PasswordHasher
from censusdrop.server.passwords import check_new_password
from censusdrop.server.schema import accounts
from censusdrop.server.schema import assignments
from censusdrop.server.schema import ip_failures

FTP_ROLES = ("prefecture", "reviewer")
CLI_ROLES = ("admin", "auditor")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AccountError(Exception):
    """An account operation cannot be done; the message says why."""


class LoginOutcome(enum.Enum):
    OK = "ok"
    UNKNOWN_ACCOUNT = "unknown_account"
    BAD_PASSWORD = "bad_password"  # noqa: S105 - an outcome, not a secret
    DISABLED = "disabled"
    LOCKED = "locked"
    NETWORK_NOT_ALLOWED = "network_not_allowed"
    ADDRESS_THROTTLED = "address_throttled"
    NO_FTP_ACCESS = "no_ftp_access"
    # Decided by the round policy (censusdrop.server.policy) after the
    # password: a revoked reviewer, or a reviewer outside the review window.
    REVOKED = "revoked"
    OUTSIDE_REVIEW_WINDOW = "outside_review_window"


@dataclasses.dataclass(frozen=True)
class LockoutPolicy:
    threshold: int = 5
    lockout: dt.timedelta = dt.timedelta(minutes=15)
    address_limit: int = 30
    address_window: dt.timedelta = dt.timedelta(minutes=10)


@dataclasses.dataclass(frozen=True)
class Account:
    id: int
    name: str
    role: str
    prefecture: str | None
    disabled: bool
    failed_logins: int
    locked_until: dt.datetime | None
    allowed_networks: tuple[Network, ...]
    created_at: dt.datetime
    assigned: tuple[str, ...] = ()

    def is_locked(self, at: dt.datetime) -> bool:
        return self.locked_until is not None and self.locked_until > at

    def allows_address(self, address: str) -> bool:
        if not self.allowed_networks:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.allowed_networks)


@dataclasses.dataclass(frozen=True)
class LoginResult:
    outcome: LoginOutcome
    account: Account | None
    locked_now: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome is LoginOutcome.OK


def parse_networks(text: str | Iterable[str]) -> tuple[Network, ...]:
    """Parse a comma-separated (or listed) set of CIDR networks."""
    items = text.split(",") if isinstance(text, str) else list(text)
    networks = []
    for item in (part.strip() for part in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise AccountError(f"{item!r} is not an IP network (CIDR)") from None
    return tuple(networks)


class AccountStore:
    """Account operations on the database. Safe to share between threads."""

    def __init__(
        self,
        engine: sa.Engine,
        hasher: PasswordHasher,
        prefectures: PrefectureList,
        policy: LockoutPolicy = LockoutPolicy(),
    ) -> None:
        self.engine = engine
        self.hasher = hasher
        self.prefectures = prefectures
        self.policy = policy

    # --- administration

    def create(
        self,
        name: str,
        role: str,
        password: str,
        *,
        at: dt.datetime,
        prefecture: str | None = None,
        networks: str = "",
    ) -> Account:
        name = _check_name(name)
        if role not in FTP_ROLES + CLI_ROLES:
            raise AccountError(f"unknown role {role!r}")
        code = None
        if role == "prefecture":
            if not prefecture:
                raise AccountError("a prefecture account needs --prefecture")
            code = self.prefectures.find(prefecture).code
        elif prefecture:
            raise AccountError(f"a {role} account is not bound to a prefecture")
        check_new_password(password)
        allowed = parse_networks(networks)
        row = {
            "name": name,
            "role": role,
            "prefecture": code,
            "password_hash": self.hasher.hash(password),
            "disabled": False,
            "failed_logins": 0,
            "allowed_networks": ",".join(str(net) for net in allowed),
            "created_at": at,
            "password_changed_at": at,
        }
        with self.engine.begin() as conn:
            if _row(conn, name) is not None:
                raise AccountError(f"account {name!r} already exists")
            conn.execute(accounts.insert().values(**row))
        return self.require(name)

    def get(self, name: str) -> Account | None:
        with read_connection(self.engine) as conn:
            row = _row(conn, name)
            return None if row is None else _account(conn, row)

    def require(self, name: str) -> Account:
        account = self.get(name)
        if account is None:
            raise AccountError(f"no account named {name!r}")
        return account

    def list(self) -> list[Account]:
        with read_connection(self.engine) as conn:
            rows = conn.execute(accounts.select().order_by(accounts.c.name)).all()
            return [_account(conn, row) for row in rows]

    def set_password(self, name: str, password: str, *, at: dt.datetime) -> None:
        check_new_password(password)
        self._update(
            name, password_hash=self.hasher.hash(password), password_changed_at=at
        )

    def set_disabled(self, name: str, disabled: bool) -> None:
        self._update(name, disabled=disabled)

    def set_networks(self, name: str, networks: str) -> None:
        allowed = parse_networks(networks)
        self._update(name, allowed_networks=",".join(str(net) for net in allowed))

    def unlock(self, name: str) -> None:
        self._update(name, failed_logins=0, locked_until=None)

    def assign(self, name: str, prefecture: str, *, at: dt.datetime) -> str:
        account = self.require(name)
        if account.role != "reviewer":
            raise AccountError(f"{name!r} is a {account.role} account, not a reviewer")
        code = self.prefectures.find(prefecture).code
        if code in account.assigned:
            return code
        with self.engine.begin() as conn:
            conn.execute(
                assignments.insert().values(
                    account_id=account.id, prefecture=code, assigned_at=at
                )
            )
        return code

    def unassign(self, name: str, prefecture: str) -> str:
        account = self.require(name)
        code = self.prefectures.find(prefecture).code
        if code not in account.assigned:
            raise AccountError(f"{name!r} is not assigned to {code}")
        with self.engine.begin() as conn:
            conn.execute(
                assignments.delete().where(
                    assignments.c.account_id == account.id,
                    assignments.c.prefecture == code,
                )
            )
        return code

    def _update(self, name: str, **values: object) -> None:
        with self.engine.begin() as conn:
            result = conn.execute(
                accounts.update().where(accounts.c.name == name).values(**values)
            )
        if result.rowcount == 0:
            raise AccountError(f"no account named {name!r}")

    # --- login

    def authenticate(
        self, name: str, password: str, address: str, *, at: dt.datetime
    ) -> LoginResult:
        """Decide a login. Slow by design (one Argon2id check): call it off
        the FTP event loop."""
        account = self.get(name) if NAME_PATTERN.match(name) else None
        matches = self.hasher.verify(
            password, None if account is None else self._hash_of(account.id)
        )
        outcome = self._outcome(account, matches, address, at)
        locked_now = False
        with self.engine.begin() as conn:
            if outcome is LoginOutcome.OK:
                _reset_failures(conn, account)
            elif outcome in (LoginOutcome.BAD_PASSWORD, LoginOutcome.UNKNOWN_ACCOUNT):
                locked_now = self._count_failure(conn, account, address, at)
        return LoginResult(outcome, account, locked_now)

    def _outcome(
        self, account: Account | None, matches: bool, address: str, at: dt.datetime
    ) -> LoginOutcome:
        if self._address_throttled(address, at):
            return LoginOutcome.ADDRESS_THROTTLED
        if account is None:
            return LoginOutcome.UNKNOWN_ACCOUNT
        if account.is_locked(at):
            return LoginOutcome.LOCKED
        if not matches:
            return LoginOutcome.BAD_PASSWORD
        if account.disabled:
            return LoginOutcome.DISABLED
        if account.role not in FTP_ROLES:
            return LoginOutcome.NO_FTP_ACCESS
        if not account.allows_address(address):
            return LoginOutcome.NETWORK_NOT_ALLOWED
        return LoginOutcome.OK

    def _hash_of(self, account_id: int) -> str:
        with read_connection(self.engine) as conn:
            return str(
                conn.execute(
                    sa.select(accounts.c.password_hash).where(
                        accounts.c.id == account_id
                    )
                ).scalar_one()
            )

    def _address_throttled(self, address: str, at: dt.datetime) -> bool:
        with read_connection(self.engine) as conn:
            row = conn.execute(
                ip_failures.select().where(ip_failures.c.address == address)
            ).first()
        if row is None or row.window_start + self.policy.address_window <= at:
            return False
        return bool(row.failures >= self.policy.address_limit)

    def _count_failure(
        self,
        conn: sa.Connection,
        account: Account | None,
        address: str,
        at: dt.datetime,
    ) -> bool:
        _count_address_failure(conn, address, at, self.policy.address_window)
        if account is None:
            return False
        failures = account.failed_logins + 1
        if failures >= self.policy.threshold:
            conn.execute(
                accounts.update()
                .where(accounts.c.id == account.id)
                .values(failed_logins=0, locked_until=at + self.policy.lockout)
            )
            return True
        conn.execute(
            accounts.update()
            .where(accounts.c.id == account.id)
            .values(failed_logins=accounts.c.failed_logins + 1)
        )
        return False


def _check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise AccountError(
            f"account name {name!r} must be 2-64 characters of a-z, 0-9, '.', '_'"
            " or '-', starting with a letter or digit"
        )
    return name


def _row(conn: sa.Connection, name: str) -> sa.Row[tuple[object, ...]] | None:
    return conn.execute(accounts.select().where(accounts.c.name == name)).first()


def _account(conn: sa.Connection, row: sa.Row[tuple[object, ...]]) -> Account:
    m = row._mapping
    assigned = conn.execute(
        sa.select(assignments.c.prefecture)
        .where(assignments.c.account_id == m["id"])
        .order_by(assignments.c.prefecture)
    ).scalars()
    return Account(
        id=m["id"],
        name=m["name"],
        role=m["role"],
        prefecture=m["prefecture"],
        disabled=m["disabled"],
        failed_logins=m["failed_logins"],
        locked_until=m["locked_until"],
        allowed_networks=parse_networks(m["allowed_networks"]),
        created_at=m["created_at"],
        assigned=tuple(assigned),
    )


def _reset_failures(conn: sa.Connection, account: Account | None) -> None:
    # The address's failures are not forgiven: one valid account must not
    # reset the throttle for guesses at all the others.
    if account is not None and account.failed_logins:
        conn.execute(
            accounts.update().where(accounts.c.id == account.id).values(failed_logins=0)
        )


def _count_address_failure(
    conn: sa.Connection, address: str, at: dt.datetime, window: dt.timedelta
) -> None:
    row = conn.execute(
        ip_failures.select().where(ip_failures.c.address == address)
    ).first()
    if row is None:
        conn.execute(
            ip_failures.insert().values(address=address, failures=1, window_start=at)
        )
    elif row.window_start + window <= at:
        conn.execute(
            ip_failures.update()
            .where(ip_failures.c.address == address)
            .values(failures=1, window_start=at)
        )
    else:
        conn.execute(
            ip_failures.update()
            .where(ip_failures.c.address == address)
            .values(failures=ip_failures.c.failures + 1)
        )
