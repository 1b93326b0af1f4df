"""Server processes: start in their own group, measure, stop by PID.

CPU time is read from ``/proc/PID/stat``: user and system time of every live
process in the server's tree plus the time of the children each one has
already reaped (``cutime``, ``cstime``), so forked sessions that ended are
counted once and live ones too.

Peak memory: a sampler reads ``/proc/PID/statm`` of every process in the
tree every ``SAMPLE_SECONDS`` and keeps the largest estimate of the tree's
footprint: the private (anonymous) resident pages of every process plus the
largest file-backed share once, since forked sessions map the same program
and libraries. The peak is that or the main process's ``VmHWM``, whichever
is larger; for a single-process server it is its ``VmHWM``. Pages a forked
child still shares copy-on-write with its parent are counted in both.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

SAMPLE_SECONDS = 0.2
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class ProcessError(Exception):
    """A server process did not start or answer; the message says why."""


class ServerProcess:
    """One daemon run in the foreground as our child, in its own group."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise ProcessError(f"{self.name}: not started")
        return self._process.pid

    def start(self, env: dict[str, str], cwd: Path, stdin: Path | None) -> None:
        source = stdin or Path(os.devnull)
        with self.log.open("ab") as log, source.open("rb") as given:
            self._process = subprocess.Popen(  # noqa: S603 - our own argv
                self.argv,
                cwd=cwd,
                env=env,
                stdin=given,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def exit_code(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def wait_ready(self, port: int, timeout: float) -> None:
        """Wait for the ``220`` greeting on ``port`` (or for an early exit)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.exit_code()
            if code is not None:
                raise ProcessError(
                    f"{self.name} exited with {code} at start: {self.log_tail()}"
                )
            if _greets(port):
                return
            time.sleep(0.1)
        raise ProcessError(
            f"{self.name}: no FTP greeting on port {port} after {timeout:.0f}s:"
            f" {self.log_tail()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the group, then SIGKILL whatever of the tree is left."""
        if self._process is None or self._process.poll() is not None:
            return
        tree = [(pid, _start_time(pid)) for pid in process_tree(self.pid)]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self._process.wait(timeout)
        for pid, started in tree:
            # The same PID and start time: still ours, not a reused number.
            if started is not None and _start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def log_tail(self, lines: int = 4) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        tail = [line for line in text.strip().splitlines() if line.strip()]
        return " / ".join(tail[-lines:]) or "(empty log)"


def process_tree(root: int) -> list[int]:
    """``root`` and its live descendants, from ``/proc/PID/task/*/children``."""
    found = [root]
    index = 0
    while index < len(found):
        found.extend(_children(found[index]))
        index += 1
    return found


def cpu_seconds(root: int) -> float:
    """User + system seconds of the tree, reaped children included."""
    ticks = 0
    for pid in process_tree(root):
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += sum(int(value) for value in fields[11:15])
    return ticks / _TICK


def footprint_bytes(pids: list[int]) -> int:
    """Private resident pages of every process, plus the largest share."""
    private = shared = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/statm").read_text().split()
            resident, file_backed = int(fields[1]), int(fields[2])
            private += resident - file_backed
            shared = max(shared, file_backed)
    return (private + shared) * _PAGE


class OtherLoad:
    """CPU time the machine spent outside this process and its children.

    Busy time from ``/proc/stat`` minus our own and our reaped children's
    (servers, their sessions, clients); read after the servers are stopped.
    Softirq time of loopback traffic is not charged to a process, so a
    little of it is ours.
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._busy = _machine_busy()
        self._own = _own_cpu()

    def seconds(self) -> tuple[float, float]:
        """(CPU seconds used by others, wall seconds since the start)."""
        others = (_machine_busy() - self._busy) - (_own_cpu() - self._own)
        return max(0.0, others), time.monotonic() - self.started


def high_water_bytes(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class MemorySampler:
    """Samples the tree of the one server under test; keeps each peak."""

    def __init__(self) -> None:
        self.peaks: dict[int, int] = {}
        self._target: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def watch(self, root: int | None) -> None:
        with self._lock:
            self._target = root
        if root is not None:
            self._sample(root)

    def peak(self, root: int) -> int:
        with self._lock:
            sampled = self.peaks.get(root, 0)
        return max(sampled, high_water_bytes(root))

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            with self._lock:
                target = self._target
            if target is not None:
                self._sample(target)

    def _sample(self, root: int) -> None:
        size = footprint_bytes(process_tree(root))
        with self._lock:
            self.peaks[root] = max(self.peaks.get(root, 0), size)


def _machine_busy() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(value) for value in fields[:8]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks) - idle) / _TICK


def _own_cpu() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def _stat_fields(pid: int) -> list[str] | None:
    """Fields after the command name (``state`` is index 0)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return None if fields is None else fields[19]


def _greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.settimeout(5)
            return sock.recv(64).startswith(b"220")
    except OSError:
        return False
