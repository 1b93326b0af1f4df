"""Several server processes: a supervising parent and forked workers.

With ``server.workers = N`` (N > 1) the parent does, in this order and
before any thread exists: check the key files, bind N listening sockets per
port with ``SO_REUSEPORT``, drop privileges (if configured), prepare and
sweep the storage once, and close its database connections. It then forks
N workers. Each worker starts its own event loop, audit writer thread, loop
bridge and access guard, and accepts on its own socket of each port; the
kernel spreads new connections over the sockets of a port.

Why one socket per worker rather than one shared socket: no thundering herd
(every worker woken for each connection), and the parent keeps every
socket open, so connections queued for a worker that dies wait for its
successor instead of being reset. Why not pyftpdlib's pre-fork mode: it
makes its epoll instance before forking, so the workers share it and lose
transfers. Here each loop is made after the fork, in its own process.

Trusts: the parent's state at the fork (no thread, no open database
connection, the master key and the TLS key already in memory).

Guarantees:

- each worker gets a disjoint slice of the passive port range;
- the per-address connection limit holds across workers: every worker
  publishes its own count per address in memory shared with the others
  (``workers_addresses``) and counts all of them before admitting;
- exactly one worker (slot 0) runs the once-only jobs (pre-review watcher,
  periodic staging sweep); its successor takes them over;
- a worker that dies is restarted, at most about once a second and less
  often while it keeps dying young, each time logged;
- SIGTERM or SIGINT to the parent stops every worker by its PID; one that
  has not ended after ``STOP_TIMEOUT`` seconds is killed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from types import FrameType

from censusdrop.config.settings import ServerSettings
from censusdrop.config.settings import Settings
from censusdrop.server.app import CensusServer
from censusdrop.server.app import PendingAudit
from censusdrop.server.app import Prebound
from censusdrop.server.app import StartupError
from censusdrop.server.app import bind_listener
from censusdrop.server.app import check_startup
from censusdrop.server.app import give_up_root
from censusdrop.server.services import Services
from censusdrop.server.workers_addresses import SharedAddressCounts

logger = logging.getLogger(__name__)

STOP_TIMEOUT = 20.0
YOUNG = 10.0  # a worker that dies sooner than this is restarted more slowly
MAX_DELAY = 30.0


@dataclasses.dataclass
class Slot:
    """One worker's place: its sockets, its process, its restarts."""

    index: int
    explicit: socket.socket
    implicit: socket.socket | None
    pid: int = 0
    started: float = 0.0
    delay: float = 0.0
    restart_at: float | None = None

    def close(self) -> None:
        """Close its listening sockets."""
        self.explicit.close()
        if self.implicit is not None:
            self.implicit.close()


class Supervisor:
    """The parent of ``count`` worker processes; see the module docstring."""

    def __init__(
        self,
        services: Services,
        count: int,
        host: str | None = None,
        port: int | None = None,
    ) -> None:
        if count < 2:
            raise ValueError("count: a supervisor runs at least 2 workers")
        if threading.active_count() != 1:
            raise StartupError("server.workers: threads exist before the fork")
        self.services = services
        self.count = count
        server = services.settings.server
        wanted = check_startup(services)
        self.slots = _bind_slots(
            host or server.host, server.port if port is None else port, server, count
        )
        try:
            self.run_as = give_up_root(services, wanted)
        except StartupError:
            for slot in self.slots:
                slot.close()
            raise
        swept = services.storage.prepare()
        logger.info("storage ready swept=%d", swept)
        services.engine.dispose()  # no connection crosses the fork
        self.addresses = SharedAddressCounts(count, server.max_connections + 64)
        self._stopping = False
        self._wakeup: tuple[int, int] | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.slots[0].explicit.getsockname()[:2]
        return str(host), int(port)

    @property
    def implicit_address(self) -> tuple[str, int] | None:
        sock = self.slots[0].implicit
        if sock is None:
            return None
        host, port = sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def pids(self) -> list[int]:
        return [slot.pid for slot in self.slots]

    def start(self) -> None:
        """Catch signals, then fork every worker."""
        reader, writer = os.pipe()
        os.set_blocking(reader, False)
        os.set_blocking(writer, False)
        self._wakeup = (reader, writer)
        signal.set_wakeup_fd(writer)
        signal.signal(signal.SIGTERM, self._signalled)
        signal.signal(signal.SIGINT, self._signalled)
        signal.signal(signal.SIGCHLD, _ignore)  # only to wake the loop
        for slot in self.slots:
            self._spawn(slot)

    def run(self) -> None:
        """Supervise until SIGTERM or SIGINT; then stop every worker."""
        try:
            while not self._stopping:
                self._wait(self._next_timeout())
                self._reap()
                self._restart_due()
        finally:
            self._stop_all()

    def stop(self) -> None:
        self._stopping = True

    # --- workers

    def _spawn(self, slot: Slot) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = self._worker(slot)
            except BaseException:
                logger.exception("worker=%d failed", slot.index)
            finally:
                _flush_logs()
                os._exit(code)  # never the parent's exit handlers
        slot.pid, slot.started, slot.restart_at = pid, time.monotonic(), None
        logger.info("worker=%d pid=%d started", slot.index, pid)

    def _worker(self, slot: Slot) -> int:
        stop = threading.Event()

        def stopped(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, stopped)
        signal.signal(signal.SIGINT, stopped)
        self._close_others(slot)
        services = self.services
        services.settings = worker_settings(services.settings, slot.index, self.count)
        services.engine.dispose(close=False)
        pending = services.audit
        if not isinstance(pending, PendingAudit):
            raise TypeError("services.audit: the parent must not start a writer")
        services.audit = pending.start(services.engine)
        prebound = Prebound(
            slot.explicit,
            slot.implicit,
            self.run_as,
            once_only=slot.index == 0,
            ip_map=self.addresses.view(slot.index),
        )
        try:
            server = CensusServer(services, prebound=prebound)
        except StartupError as exc:
            logger.error("worker=%d cannot start: %s", slot.index, exc)
            services.audit.close()
            return 1
        server._stop = stop  # a signal caught before now is not lost
        logger.info(
            "worker=%d pid=%d serving passive_ports=%s once_only=%s",
            slot.index,
            os.getpid(),
            services.settings.server.passive_ports,
            prebound.once_only,
        )
        server.serve()
        return 0

    def _close_others(self, own: Slot) -> None:
        for slot in self.slots:
            if slot is not own:
                slot.close()
        if self._wakeup is not None:
            for fd in self._wakeup:
                os.close(fd)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is not None:
                self._exited(slot, status)

    def _exited(self, slot: Slot, status: int) -> None:
        lived = time.monotonic() - slot.started
        slot.pid = 0
        self.addresses.clear(slot.index)
        if self._stopping:
            return
        young = lived < YOUNG
        slot.delay = min(MAX_DELAY, max(1.0, slot.delay * 2)) if young else 1.0
        slot.restart_at = time.monotonic() + slot.delay
        logger.error(
            "worker=%d exited %s after %.1fs; restart in %.1fs",
            slot.index,
            _describe(status),
            lived,
            slot.delay,
        )

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.restart_at is not None and slot.restart_at <= now:
                self._spawn(slot)

    def _next_timeout(self) -> float:
        due = [s.restart_at for s in self.slots if s.restart_at is not None]
        if not due:
            return 5.0
        return max(0.0, min(due) - time.monotonic())

    # --- stopping

    def _signalled(self, signum: int, frame: FrameType | None) -> None:
        logger.info("signal=%d stopping workers", signum)
        self._stopping = True

    def _wait(self, timeout: float) -> None:
        if self._wakeup is None:
            return
        reader = self._wakeup[0]
        with contextlib.suppress(InterruptedError):
            select.select([reader], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(reader, 512):
                pass

    def _stop_all(self) -> None:
        running = [slot for slot in self.slots if slot.pid]
        for slot in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(slot.pid for slot in self.slots) and time.monotonic() < deadline:
            self._wait(0.1)
            self._reap()
        for slot in self.slots:
            if slot.pid:
                logger.error("worker=%d pid=%d killed at stop", slot.index, slot.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(slot.pid, 0)
                slot.pid = 0
        for slot in self.slots:
            slot.close()
        logger.info("server stopped")


def worker_settings(settings: Settings, index: int, count: int) -> Settings:
    """The settings of worker ``index``: its slice of the passive ports."""
    ports = settings.passive_port_range()
    size = len(ports) // count
    low = ports.start + index * size
    high = ports.stop - 1 if index == count - 1 else low + size - 1
    server = dataclasses.replace(settings.server, passive_ports=f"{low}-{high}")
    return dataclasses.replace(settings, server=server)


def _bind_slots(host: str, port: int, server: ServerSettings, count: int) -> list[Slot]:
    """``count`` sockets on the port (and on the implicit TLS port); with
    port 0, the first socket's port is taken by the others."""
    implicit_port = server.implicit_tls_port
    slots: list[Slot] = []
    try:
        for index in range(count):
            explicit = bind_listener(host, port, reuse_port=True)
            port = explicit.getsockname()[1]
            implicit = None
            if implicit_port:
                implicit = bind_listener(host, implicit_port, reuse_port=True)
                implicit_port = implicit.getsockname()[1]
            slots.append(Slot(index, explicit, implicit))
    except StartupError:
        for slot in slots:
            slot.close()
        raise
    return slots


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"on signal {os.WTERMSIG(status)}"
    return f"with status {os.waitstatus_to_exitcode(status)}"


def _ignore(signum: int, frame: FrameType | None) -> None:
    """SIGCHLD only wakes the supervisor's wait."""


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
