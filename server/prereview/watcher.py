"""Seeing committed changes under ``<data_root>/areas`` with watchdog.

The observer watches only the ``areas`` folder. Uploads are written in
``staging/`` and renamed into an area when committed, and earlier versions
are renamed out of it into ``versions/``; seen from ``areas`` alone, a
commit is a file created and an overwrite or delete a file deleted, and an
upload in progress is never seen at all. Only creations, deletions and
moves count: the opening and reading of files (the validator reads every
one) must not count, nor must the reports the server writes itself.

``native`` uses inotify on Linux (watchdog's platform observer); ``polling``
scans the tree at an interval, for network filesystems where inotify sees
nothing of what another machine writes.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from collections.abc import Collection
from pathlib import Path

from watchdog.events import DirCreatedEvent
from watchdog.events import DirDeletedEvent
from watchdog.events import DirMovedEvent
from watchdog.events import FileCreatedEvent
from watchdog.events import FileDeletedEvent
from watchdog.events import FileMovedEvent
from watchdog.events import FileSystemEvent
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from .source import is_server_file

logger = logging.getLogger(__name__)

NATIVE = "native"
POLLING = "polling"

COUNTED_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]
_COUNTED_TYPES = frozenset(cls.event_type for cls in COUNTED_EVENTS)


def poll_interval(quiet: float) -> float:
    """How often the polling observer scans: well inside the quiet period,
    but not so often that large trees on a network share keep it busy."""
    return min(max(quiet / 4, 0.1), 2.0)


def make_observer(kind: str, quiet: float) -> BaseObserver:
    if kind == NATIVE:
        return Observer()
    if kind == POLLING:
        return PollingObserver(timeout=poll_interval(quiet))
    raise ValueError(f"observer must be {NATIVE} or {POLLING}, got {kind!r}")


class AreaEvents(FileSystemEventHandler):
    """Turns watchdog events into "area X changed" notices.

    ``areas`` is the watched folder, ``known`` the area names worth a
    notice (the prefecture codes), ``notify`` the receiver; it is called on
    the observer's thread and must not block.
    """

    def __init__(
        self, areas: Path, known: Collection[str], notify: Callable[[str], None]
    ) -> None:
        self._areas = os.path.realpath(areas)
        self._known = frozenset(known)
        self._notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _COUNTED_TYPES:
            return
        changed = {self.area_of(event.src_path), self.area_of(event.dest_path)}
        for area in sorted(a for a in changed if a is not None):
            logger.debug("prereview change area=%s event=%s", area, event.event_type)
            self._notify(area)

    def area_of(self, raw: str | bytes) -> str | None:
        """The area a changed path belongs to, if the change counts."""
        if not raw:
            return None
        path = os.fsdecode(raw)
        relative = os.path.relpath(path, self._areas)
        if relative.startswith(os.pardir) or os.path.isabs(relative):
            return None  # outside the areas (the far end of a move)
        area, _, inside = relative.replace(os.sep, "/").partition("/")
        if not inside or area not in self._known:
            return None  # the area folder itself, or not a prefecture's
        if is_server_file(inside):
            return None  # a report the server wrote: never a new trigger
        return area


class AreaWatcher:
    """An observer on ``areas`` feeding ``notify`` with changed areas."""

    def __init__(
        self,
        areas: Path,
        known: Collection[str],
        notify: Callable[[str], None],
        *,
        kind: str = NATIVE,
        quiet: float = 10.0,
    ) -> None:
        self.areas = areas
        self.kind = kind
        self._handler = AreaEvents(areas, known, notify)
        self._observer = make_observer(kind, quiet)

    def start(self) -> None:
        # watchdog warns when nested folders appear faster than it adds their
        # watches; it re-adds one and loses nothing. Keep it off stderr.
        warnings.filterwarnings(
            "ignore",
            message="Callback with id .* already exists for watch",
            category=RuntimeWarning,
        )
        self._observer.schedule(
            self._handler,
            str(self.areas),
            recursive=True,
            event_filter=COUNTED_EVENTS,
        )
        self._observer.start()
        logger.info("prereview watching areas=%s observer=%s", self.areas, self.kind)

    def stop(self, timeout: float = 10.0) -> None:
        if not self._observer.is_alive():
            return
        self._observer.stop()
        self._observer.join(timeout)
