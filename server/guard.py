"""Ending reviewer access at once: the periodic check on the event loop.

Every ``interval`` seconds (pyftpdlib's ``ioloop.call_every``) the guard
reloads the policy's state on a worker thread (rounds and revocations: a
few small queries) and then, back on the loop, asks the policy about every
open reviewer session at the clock's now. A session whose access has ended
(its review window closed, or an administrator revoked the reviewer) is
ended at once:

- a download in flight is aborted, the client getting 426 and the ledger
  a partial custody item (through the handler's usual end of transfer);
- the audit log gets an ``access_ended`` event with the real reason;
- the client gets a 421 reply in Chinese and the connection is closed.

Between checks, the policy already refuses new logins (decided on fresh
state) and hides prefectures whose window has closed (decided at the
clock's now on every command), so the interval only bounds how long an
open connection lingers and a download keeps flowing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any
from typing import TypeVar

from pyftpdlib.handlers import DTPHandler

from censusdrop.audit import events
from censusdrop.server.db import outage_of
from censusdrop.server.handler import CensusHandler
from censusdrop.server.policy import AccessState
from censusdrop.server.policy import Refusal
from censusdrop.server.services import Services
from censusdrop.server.storage.store import Download

logger = logging.getLogger(__name__)

T = TypeVar("T")

CHECK_INTERVAL = 2.0
ABORTED_REPLY = "426 访问权限已终止，下载已中止。"


class AccessGuard:
    """The periodic access check of one server's event loop."""

    def __init__(
        self, services: Services, ioloop: Any, interval: float = CHECK_INTERVAL
    ) -> None:
        if interval <= 0:
            raise ValueError("interval: must be positive")
        self.services = services
        self.ioloop = ioloop
        self.interval = interval
        self._busy = False
        self._task: Any = None
        self._outage: str | None = None  # why the last reload failed

    def start(self) -> None:
        """Schedule the check; call before the loop runs."""
        self._task = self.ioloop.call_every(
            self.interval, self.tick, _errback=self._failed
        )

    def tick(self) -> None:
        """On the loop: reload off the loop, then enforce (one at a time).

        An idle server skips it: a login reloads for itself."""
        if self._busy or not self._sessions():
            return
        self._busy = True
        self.services.bridge.run(self.services.policy.refresh, self._reloaded)

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel the periodic check (from any thread but the loop's)."""
        if self._task is not None:
            self._on_loop(self._task.cancel, timeout)

    def check_now(self, timeout: float = 10.0) -> int:
        """Reload and enforce at once, from any thread but the loop's;
        returns how many sessions were ended."""
        self.services.policy.refresh()
        return self._on_loop(self.enforce, timeout)

    def _on_loop(self, work: Callable[[], T], timeout: float) -> T:
        done: Future[T] = Future()

        def run() -> None:
            try:
                done.set_result(work())
            except Exception as exc:  # handed to the waiting thread
                done.set_exception(exc)

        self.services.bridge.post(run)
        return done.result(timeout)

    def enforce(self) -> int:
        """On the loop: end every reviewer session the policy now refuses."""
        at = self.services.clock.now()
        policy = self.services.policy
        ended = 0
        for session in self._sessions():
            account = session.account
            if account is None or account.role != "reviewer":
                continue
            refusal = policy.reviewer_refusal(account, at)
            if refusal is not None:
                end_session(session, refusal)
                ended += 1
        return ended

    def _sessions(self) -> list[CensusHandler]:
        """Logged-in sessions on the loop (one paused for slow work is
        caught at the next check; the policy already refuses its work)."""
        return [
            channel
            for channel in list(self.ioloop.socket_map.values())
            if isinstance(channel, CensusHandler)
            and not channel._closed
            and channel.account is not None
        ]

    def _reloaded(self, future: Future[AccessState]) -> None:
        self._busy = False
        try:
            future.result()
        except Exception as exc:
            # Keep deciding on the state last loaded: windows still close
            # on time; a revocation waits until the database answers.
            self._reload_failed(exc)
        else:
            if self._outage is not None:
                logger.info("access check reloads rounds again")
            self._outage = None
        self.enforce()

    def _reload_failed(self, exc: BaseException) -> None:
        outage = outage_of(exc)
        if outage is None:
            logger.error("access check could not reload rounds", exc_info=exc)
        elif outage != self._outage:  # once per outage, not every tick
            logger.error(
                "access check could not reload rounds: database unavailable:"
                " %s; deciding on the state last loaded",
                outage,
            )
        self._outage = outage

    def _failed(self) -> None:
        self._busy = False
        logger.exception("access check failed")


def end_session(session: CensusHandler, refusal: Refusal) -> None:
    """Abort the session's download, record why, reply 421 and close."""
    aborted = _abort_download(session)
    session.audit(
        events.ACCESS_ENDED,
        events.DENIED,
        details={"reason": refusal.rule, "aborted_download": aborted},
    )
    logger.warning(
        "%s access ended reason=%s aborted_download=%s",
        session._prefix(),
        refusal.rule,
        aborted,
    )
    session.respond(f"421 {refusal.message}", logfun=logger.info)
    session.close_when_done()


def _abort_download(session: CensusHandler) -> bool:
    channel = session.data_channel
    if channel is None or channel.receive:
        return False
    if not isinstance(channel.file_obj, Download):
        return False
    # pyftpdlib's own end of transfer: it sends this reply, closes the
    # file and calls log_transfer (audit and custody) as not completed.
    # The plain DTPHandler.close cuts the connection without waiting for a
    # TLS close_notify that a client which stopped reading would never
    # let through.
    channel._resp = (ABORTED_REPLY, logger.info)
    DTPHandler.close(channel)
    return True
