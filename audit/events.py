"""The audit event: what every part of censusdrop hands to the audit trail.

This module is deliberately free of SQLAlchemy so that the FTP server (and
anything else) can build and emit events without knowing how they are
stored. The store assigns the sequence number and the chain hash.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any
from typing import Protocol


class AuditError(Exception):
    """Base class of every error raised by ``censusdrop.audit``."""


class AuditUnavailable(AuditError):
    """The event could not be recorded durably; the access must not happen."""


# Actions. Stored as plain strings so that a new action needs no migration.
CONNECT = "connect"
DISCONNECT = "disconnect"
TLS = "tls"
LOGIN = "login"
LOGIN_FAILED = "login_failed"
LOCKOUT = "lockout"
LOGOUT = "logout"
CHDIR = "chdir"
LIST = "list"
DOWNLOAD_START = "download_start"
DOWNLOAD_END = "download_end"
UPLOAD_START = "upload_start"
UPLOAD_END = "upload_end"
DELETE = "delete"
RENAME = "rename"
MKDIR = "mkdir"
RMDIR = "rmdir"
REFUSED = "refused"
INTEGRITY = "integrity_failure"
ADMIN = "admin"
# Pre-review: a report judged and written; a submission declared complete.
PREREVIEW = "prereview"
SUBMISSION_COMPLETE = "submission_complete"
# Acceptance rounds: a prefecture's state changed in a round; a session
# closed because the reviewer's access ended (window end or revocation).
ROUND_STATE = "round_state"
ACCESS_ENDED = "access_ended"
# Written by the audit writer itself when its queue overflowed and events
# were dropped; details carry the count and the time range of the loss.
EVENTS_LOST = "events_lost"

# Outcomes.
OK = "ok"
FAILED = "failed"
DENIED = "denied"
ABORTED = "aborted"


@dataclasses.dataclass(frozen=True, slots=True)
class AuditEvent:
    """One access or administrative act.

    ``at`` is always timezone-aware UTC. ``details`` must be JSON-serialisable
    (strings, numbers, booleans, None, lists and dicts of those).
    """

    action: str
    outcome: str = OK
    at: dt.datetime = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.UTC))
    account: str | None = None
    role: str | None = None
    prefecture: str | None = None
    session: str | None = None
    remote: str | None = None
    path: str | None = None
    version: str | None = None
    bytes: int | None = None
    digest: str | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("AuditEvent.at must be timezone-aware")


DurableCallback = Callable[[BaseException | None], None]


class AuditSink(Protocol):
    """Where events go. Implemented by the database-backed audit writer."""

    def emit(self, event: AuditEvent) -> None:
        """Queue an event; never blocks on the database."""

    def emit_durable(self, event: AuditEvent, timeout: float = 10.0) -> None:
        """Record an event and return once it is committed.

        Raises ``AuditUnavailable`` if it could not be committed in time.
        """

    def submit_durable(self, event: AuditEvent, done: DurableCallback) -> None:
        """Record an event; call ``done(None)`` once committed or
        ``done(exc)`` if it could not be. ``done`` runs on the writer's
        thread, so it must only hand the result over to its own thread.
        """
