"""The access policy of acceptance rounds: who may write, who may read, when.

Trusts: the rounds and revocations in the database, as last loaded, and
the caller's ``at``. Guarantees:

- a prefecture writes only while its round's submission window is open
  (and it has not yet been distributed) or its rectification window is
  open; a refusal says why and since or until when, in Chinese;
- a reviewer sees a prefecture only if assigned to it, the prefecture has
  been distributed, and its round's review window is open; a revoked
  reviewer sees nothing and cannot log in;
- with no round at all, the behaviour before rounds existed holds:
  prefectures write at any time and reviewers read their assigned areas
  (revocation still applies).

Decisions are pure functions of a loaded ``AccessState`` and ``at``, cheap
enough for every FTP command on the event loop. The state is reloaded by
``refresh`` (off the loop: at each login, and by the periodic check in
``censusdrop.server.guard``), so a change made with the CLI takes effect
within one check interval, and a login always decides on fresh state.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

from censusdrop.server import roundmodel as rm
from censusdrop.server.accounts import Account
from censusdrop.server.accounts import AccountStore
from censusdrop.server.accounts import LoginOutcome
from censusdrop.server.accounts import LoginResult
from censusdrop.server.clock import Clock
from censusdrop.server.revocations import Revocation
from censusdrop.server.revocations import RevocationStore
from censusdrop.server.roundmodel import Entry
from censusdrop.server.roundmodel import Round
from censusdrop.server.rounds import RoundStore
from censusdrop.server.workdays import format_local_zh

CONTACT = "如需补交请联系省普查办。"


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why a reviewer may not be connected: ``rule`` for the audit log,
    ``outcome`` for a refused login, ``message`` (Chinese) for a session
    that has to be closed."""

    rule: str
    outcome: LoginOutcome
    message: str


REVOKED = Refusal(
    "revoked", LoginOutcome.REVOKED, "您的访问权限已被管理员收回，会话已关闭。"
)
OUTSIDE_REVIEW = Refusal(
    "outside_review_window",
    LoginOutcome.OUTSIDE_REVIEW_WINDOW,
    "当前不在验收审核期内，访问权限已收回，会话已关闭。",
)


@dataclasses.dataclass(frozen=True)
class AccessState:
    """Rounds and revocations as loaded at one moment."""

    rounds: tuple[Round, ...] = ()
    revoked: Mapping[str, Revocation] = dataclasses.field(default_factory=dict)

    def rounds_of(self, prefecture: str) -> list[tuple[Round, Entry]]:
        return [
            (round_, entry)
            for round_ in self.rounds
            if (entry := round_.entry(prefecture)) is not None
        ]

    # --- prefectures

    def write_refusal(self, prefecture: str, at: dt.datetime) -> str | None:
        """None if the prefecture may write now, else why not (Chinese)."""
        if not self.rounds:
            return None
        member = self.rounds_of(prefecture)
        if any(rm.write_window(r, entry, at) for r, entry in member):
            return None
        if not member:
            return f"本地区未列入验收批次，目录为只读。{CONTACT}"
        round_, entry = member[-1]
        return _why_closed(round_, entry, at)

    # --- reviewers

    def reviewer_refusal(self, account: Account, at: dt.datetime) -> Refusal | None:
        """None if the reviewer may be connected now, else why not."""
        if account.name in self.revoked:
            return REVOKED
        if not self.rounds:
            return None
        for round_ in self.rounds:
            review = round_.review
            if review is None or not review.is_open(at):
                continue
            if any(round_.entry(code) for code in account.assigned):
                return None
        return OUTSIDE_REVIEW

    def can_see(self, account: Account, prefecture: str, at: dt.datetime) -> bool:
        if account.name in self.revoked or prefecture not in account.assigned:
            return False
        if not self.rounds:
            return True
        return any(
            rm.open_to_reviewers(round_, entry, at)
            for round_, entry in self.rounds_of(prefecture)
        )


class AccessPolicy:
    """Decisions on the last loaded state. Safe to share between threads."""

    def __init__(self, rounds: RoundStore, revocations: RevocationStore) -> None:
        self.rounds = rounds
        self.revocations = revocations
        self._state: AccessState | None = None

    @property
    def state(self) -> AccessState:
        return self._state if self._state is not None else self.refresh()

    def refresh(self) -> AccessState:
        """Load rounds and revocations from the database (slow: off the loop)."""
        state = AccessState(tuple(self.rounds.list()), self.revocations.all())
        self._state = state
        return state

    # --- decisions on the state last loaded (see AccessState)

    def write_refusal(self, prefecture: str, at: dt.datetime) -> str | None:
        return self.state.write_refusal(prefecture, at)

    def reviewer_refusal(self, account: Account, at: dt.datetime) -> Refusal | None:
        return self.state.reviewer_refusal(account, at)

    def can_see(self, account: Account, prefecture: str, at: dt.datetime) -> bool:
        return self.state.can_see(account, prefecture, at)

    # --- sessions

    def login(
        self,
        accounts: AccountStore,
        name: str,
        password: str,
        address: str,
        *,
        at: dt.datetime,
    ) -> LoginResult:
        """``AccountStore.authenticate``, then the round policy on fresh
        state. Slow: call it off the event loop."""
        result = accounts.authenticate(name, password, address, at=at)
        account = result.account
        if not result.ok or account is None:
            return result
        self.refresh()
        refusal = self.reviewer_refusal(account, at)
        if account.role != "reviewer" or refusal is None:
            return result
        return LoginResult(refusal.outcome, account)

    def gate(self, account: Account, clock: Clock) -> SessionGate:
        return SessionGate(self, account, clock)


class SessionGate:
    """One session's questions to the policy, asked at the clock's now
    (the ``Gate`` that ``censusdrop.server.filesystem.AccountView`` uses)."""

    def __init__(self, policy: AccessPolicy, account: Account, clock: Clock) -> None:
        self.policy = policy
        self.account = account
        self.clock = clock

    def can_see(self, area: str) -> bool:
        return self.policy.can_see(self.account, area, self.clock.now())

    def write_refusal(self, area: str) -> str | None:
        return self.policy.write_refusal(area, self.clock.now())


def _why_closed(round_: Round, entry: Entry, at: dt.datetime) -> str:
    state_zh = rm.STATE_NAMES_ZH[entry.state]
    if entry.state == rm.RECTIFICATION and entry.rectify_until is not None:
        until = format_local_zh(entry.rectify_until, end=True)
        return f"整改期已于{until}截止（会后3个工作日），目录现为只读。{CONTACT}"
    if entry.state in (rm.DISTRIBUTED, rm.MEETING_HELD):
        return (
            f"本地区验收资料{state_zh}，目录为只读；"
            "视频会审后的整改期内方可上传整改材料。"
        )
    if entry.state not in rm.SUBMISSION_STATES:
        return f"本地区验收状态为“{state_zh}”，目录为只读。"
    window = round_.submission
    if window is None:
        return "本批次验收尚未开放提交，目录暂为只读。"
    start = format_local_zh(window.start)
    end = format_local_zh(window.end, end=True)
    if at < window.start:
        return f"提交期尚未开始：{start}至{end}开放上传，目录暂为只读。"
    return f"提交期已于{end}截止，目录现为只读。{CONTACT}"
