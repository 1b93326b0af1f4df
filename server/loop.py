"""Handing work back to the FTP event loop from other threads.

pyftpdlib runs every session on one thread, and its scheduler is not
thread-safe. Slow work (password checks, durable audit records, commits)
runs on worker threads; when it is done, ``LoopBridge.post`` queues the
continuation and wakes the loop through a socket pair, so the continuation
runs on the loop thread like any other event.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class LoopBridge:
    """A wake-up channel registered in a pyftpdlib IOLoop."""

    def __init__(self, ioloop: Any, workers: int = 4, io_workers: int = 16) -> None:
        self.ioloop = ioloop
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._fileno = self._reader.fileno()
        self._pending: collections.deque[Callable[[], None]] = collections.deque()
        self._lock = threading.Lock()
        self._closed = False
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="censusdrop")
        # Opening files and committing uploads mostly wait for the disk, so
        # more of them may wait at once than there are cores; password
        # checks (CPU and memory) stay on the smaller pool above.
        self.io_executor = ThreadPoolExecutor(
            io_workers, thread_name_prefix="censusdrop-io"
        )
        ioloop.register(self._fileno, self, ioloop.READ)

    def post(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop thread soon. Safe from any thread."""
        with self._lock:
            if self._closed:
                return
            self._pending.append(callback)
            # Under the lock, so that close() cannot shut the socket between
            # the check above and this send.
            with contextlib.suppress(BlockingIOError):  # wake-ups pending
                self._writer.send(b"\0")

    def submit(self, work: Callable[[], T], *, io: bool = False) -> Future[T]:
        """Run ``work`` on a worker thread (``io``: see ``run``)."""
        return (self.io_executor if io else self.executor).submit(work)

    def run(
        self,
        work: Callable[[], T],
        then: Callable[[Future[T]], None],
        *,
        io: bool = False,
    ) -> None:
        """Run ``work`` on a worker thread, then ``then(future)`` on the loop.

        ``io`` puts it on the pool for work that mostly waits for the disk.
        """
        future = self.submit(work, io=io)
        future.add_done_callback(lambda done: self.post(lambda: then(done)))

    # --- the dispatcher interface the IOLoop calls

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def handle_read_event(self) -> None:
        try:
            while self._reader.recv(4096):
                pass
        except BlockingIOError:
            pass
        while True:
            with self._lock:
                if not self._pending:
                    return
                callback = self._pending.popleft()
            try:
                callback()
            except Exception:
                logger.exception("loop callback failed")

    def handle_write_event(self) -> None:
        """Never writable."""

    def handle_close(self) -> None:
        self.close()

    def handle_error(self) -> None:
        logger.exception("loop bridge failed")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.ioloop.unregister(self._fileno)
        except Exception:  # the loop may already be closed
            logger.debug("loop bridge unregister failed", exc_info=True)
        self._reader.close()
        self._writer.close()
        self.executor.shutdown(wait=True, cancel_futures=False)
        self.io_executor.shutdown(wait=True, cancel_futures=False)
