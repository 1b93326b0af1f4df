"""Pre-review inside a running server: watcher, debouncer and runner.

::

    watchdog observer ──touch(area)──▶ Debouncer ──after quiet──▶ worker
    (its own threads)                   (scheduler thread)          │
    catch-up sweep ────touch(area)──┘                               ▼
    (at start, then every minute)           Prereviewer.run: validate, store,
                                            write 预审报告.txt/.html, audit

Nothing here runs on the FTP event loop: the handler never calls into
pre-review, it only commits files, and the observer sees the commits.

While uploads are still coming in, a warm-up pass (a second debouncer
with a short quiet period) opens the files that are new since the last
pass, filling the content cache without publishing anything, so the run
that follows the real quiet period has little left to open. The run and
the warm-up of one area never overlap: the run waits for a warm-up in
progress, a warm-up finding the run in progress is skipped.

The catch-up sweep compares, per prefecture, the last committed upload
with the last report, and touches the areas whose report is older. It
covers uploads made while the server was down and events the observer lost
(inotify drops events when its queue overflows).

Several servers may share one database and one data root, each with its
own service. A run first claims the prefecture's lease in the database
(``leases``): a server that finds it held tries again after another quiet
period. Holding it, the run is skipped when the latest stored report,
whoever wrote it, already judged the area as it stands. So one state of an
area is judged once, by one server, however many saw the uploads. Warm-up
passes take no lease: they publish nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

from censusdrop.config.checklist import Checklist
from censusdrop.server.clock import SystemClock
from censusdrop.server.services import Services

from . import records
from .leases import HeldLease
from .leases import new_holder
from .runner import CATCH_UP
from .runner import UPLOAD
from .runner import Outcome
from .runner import Prereviewer
from .runner import configured_checklist
from .scheduler import Debouncer
from .watcher import AreaWatcher

logger = logging.getLogger(__name__)

SWEEP_SECONDS = 60.0
# Quiet seconds before a warm-up pass; only used when the real quiet
# period is at least twice as long (otherwise it would gain nothing).
WARM_QUIET_SECONDS = 1.0

Clock = Callable[[], dt.datetime]


class PrereviewService:
    """Automatic pre-review of every prefecture's area while serving.

    Options come from ``[prereview]``: ``quiet_seconds`` (10) without a
    change before a run, ``observer`` ("native") or "polling". ``workers``
    (2) prefectures may be judged at once, never one twice at once;
    ``sweep_seconds`` (60) between catch-up sweeps.
    """

    def __init__(
        self,
        services: Services,
        checklist: Checklist,
        *,
        workers: int = 2,
        sweep_seconds: float = SWEEP_SECONDS,
        clock: Clock | None = None,
    ) -> None:
        settings = services.settings.prereview
        self.services = services
        self.prereviewer = Prereviewer(services, checklist)
        self.debouncer = Debouncer(
            self._run, settings.quiet_seconds, workers=workers, name="prereview"
        )
        self.warmer: Debouncer | None = None
        if settings.quiet_seconds >= 2 * WARM_QUIET_SECONDS:
            self.warmer = Debouncer(
                self._warm, WARM_QUIET_SECONDS, workers=1, name="prereview-warm"
            )
        self.codes = [prefecture.code for prefecture in services.prefectures]
        self._area_locks = {code: threading.Lock() for code in self.codes}
        self.warmed = 0  # files opened by warm-up passes, for benchmarks
        self.watcher = AreaWatcher(
            services.storage.root / "areas",
            self.codes,
            self._touch,
            kind=settings.observer,
            quiet=settings.quiet_seconds,
        )
        # "Now" for the validator (dates in names must not be in the future)
        # and for the stored report: the server's policy clock by default.
        self._clock = clock or services.clock.now
        self._sweep_seconds = sweep_seconds
        # Leases expire by the real time, whatever the policy clock says.
        self._wall_clock = SystemClock().now
        self.holder = new_holder()
        self._catching_up: set[str] = set()
        self._stopping = threading.Event()
        self._sweeper: threading.Thread | None = None

    @classmethod
    def from_services(cls, services: Services) -> PrereviewService | None:
        """The service as configured, or None when pre-review is disabled.

        Raises ``ChecklistError`` for a checklist that cannot be used, even
        when disabled: a bad file should be known before it is needed.
        """
        checklist = configured_checklist(services.settings)
        if not services.settings.prereview.enabled:
            logger.info("prereview disabled by configuration")
            return None
        return cls(services, checklist)

    def start(self) -> None:
        """Start judging; the data root's ``areas`` folder must exist."""
        self.debouncer.start()
        if self.warmer is not None:
            self.warmer.start()
        try:
            self.watcher.start()
        except Exception:
            self.debouncer.stop()
            if self.warmer is not None:
                self.warmer.stop()
            raise
        self._sweeper = threading.Thread(
            target=self._sweep_forever, name="prereview-sweep", daemon=True
        )
        self._sweeper.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop watching, let runs in progress finish, drop pending ones."""
        if self._sweeper is None:
            return
        self._stopping.set()
        self.watcher.stop()
        self._sweeper.join(timeout)
        self._sweeper = None
        if self.warmer is not None:
            self.warmer.stop(timeout)
        self.debouncer.stop(timeout)
        logger.info("prereview stopped")

    def wait_idle(self, timeout: float) -> bool:
        return self.debouncer.wait_idle(timeout)

    def sweep(self) -> list[str]:
        """Touch every area whose uploads are newer than its last report and
        that is not already due or running; return those areas."""
        busy = self.debouncer.pending()
        stale = [
            code
            for code in records.stale_areas(self.services.engine, self.codes)
            if code not in busy
        ]
        for code in stale:
            logger.info("prereview catch-up prefecture=%s", code)
            self._catching_up.add(code)
            self.debouncer.touch(code)
        return stale

    def _touch(self, code: str) -> None:
        """A committed change in area ``code`` (from the observer)."""
        self.debouncer.touch(code)
        if self.warmer is not None:
            self.warmer.touch(code)

    def _run(self, code: str) -> Outcome | None:
        origin = CATCH_UP if code in self._catching_up else UPLOAD
        self._catching_up.discard(code)
        engine = self.services.engine
        lease = HeldLease.take(engine, code, self.holder, self._wall_clock)
        if lease is None:
            logger.info(
                "prereview deferred prefecture=%s: another server judges it", code
            )
            self._defer(code, origin)
            return None
        with lease, self._area_locks[code]:  # waits for a warm-up in progress
            if self.prereviewer.is_judged(code):
                logger.info(
                    "prereview skipped prefecture=%s: the latest report judged"
                    " this state",
                    code,
                )
                return None
            return self.prereviewer.run(code, at=self._clock(), origin=origin)

    def _defer(self, code: str, origin: str) -> None:
        """Look again after a quiet period: the other server's run may be
        over by then, or its lease expired if it died."""
        if origin == CATCH_UP:
            self._catching_up.add(code)
        self.debouncer.touch(code)

    def _warm(self, code: str) -> None:
        lock = self._area_locks[code]
        if not lock.acquire(blocking=False):
            return  # the real run is at it
        try:
            self.warmed += self.prereviewer.warm(code, at=self._clock())
        finally:
            lock.release()

    def _sweep_forever(self) -> None:
        while True:
            try:
                self.sweep()
            except Exception:
                logger.exception("prereview catch-up sweep failed")
            if self._stopping.wait(self._sweep_seconds):
                return
