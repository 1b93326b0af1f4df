"""The parts a running server is made of, built once from the settings."""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa
from censusdrop.audit.events import AuditSink
from censusdrop.config.prefectures import PrefectureList
from censusdrop.config.settings import Settings
from censusdrop.server.accounts import AccountStore
from censusdrop.server.storage.store import Storage
from OpenSSL import SSL


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
