"""The parts a running server is made of, built once from the settings."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from typing import Any

import sqlalchemy as sa
from OpenSSL import SSL

from censusdrop.audit.events import AuditSink
from censusdrop.config.prefectures import PrefectureList
from censusdrop.config.settings import Settings
from censusdrop.server.accounts import AccountStore
from censusdrop.server.clock import Clock
from censusdrop.server.clock import SystemClock
from censusdrop.server.custody import CustodyLedger
from censusdrop.server.policy import AccessPolicy
from censusdrop.server.revocations import RevocationStore
from censusdrop.server.roundmodel import Round
from censusdrop.server.rounds import RoundStore
from censusdrop.server.storage.store import Storage


@dataclasses.dataclass
class Services:
    settings: Settings
    engine: sa.Engine
    prefectures: PrefectureList
    accounts: AccountStore
    storage: Storage
    audit: AuditSink
    ssl_context: SSL.Context
    bridge: Any = None  # LoopBridge, set once the event loop exists
    # Where "now" comes from for windows and deadlines; tests give a
    # FixedClock and move it (censusdrop.server.clock).
    clock: Clock = dataclasses.field(default_factory=SystemClock)

    # Acceptance rounds, built on first use from the parts above.

    @functools.cached_property
    def rounds(self) -> RoundStore:
        return RoundStore(
            self.engine, self.prefectures, self.audit, on_create=self._adopt_round
        )

    @functools.cached_property
    def revocations(self) -> RevocationStore:
        return RevocationStore(self.engine, self.accounts)

    @functools.cached_property
    def policy(self) -> AccessPolicy:
        return AccessPolicy(self.rounds, self.revocations)

    @functools.cached_property
    def custody(self) -> CustodyLedger:
        return CustodyLedger(self.engine, self.storage, self.rounds, self.revocations)

    def _adopt_round(self, round_: Round, at: dt.datetime) -> None:
        # Imported here: the archive package builds on these services' parts.
        from censusdrop.server.archive.keys import adopt_round

        adopt_round(self.storage, self.audit, round_, at=at)
