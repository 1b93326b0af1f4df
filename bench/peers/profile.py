"""``--profile DIR``: py-spy on the censusdrop server during round 1's tests.

For each test, ``py-spy record`` samples the server process (all threads,
100 Hz, without pausing it) into ``DIR/<test>.txt`` as collapsed stacks
(one line per stack, ``frame;frame;... count``: the input format of
flamegraph tools), and ``DIR/<test>-top.txt`` lists the frames where the
samples ended (self time) and the functions on most stacks (total time).
Sampling costs the server some speed, so a profiled run's table is not a
clean measurement. Needs ``pip install py-spy``.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .servers import Server

RATE = 100
TOP = 15
# Frames of censusdrop's own packages, for the total-time list; the outer
# frames every sample shares (the serve loop) say nothing and are left out.
OWN = ("server/", "audit/", "config/")
OUTER = ("CensusServer.serve ",)


class Profiler:
    """Starts py-spy around each profiled test; see the module docstring."""

    def __init__(self, folder: Path, server_key: str = "censusdrop") -> None:
        self.folder = folder
        self.server_key = server_key
        self.folder.mkdir(parents=True, exist_ok=True)

    def hook(
        self, server: Server, test: str, round_number: int
    ) -> Callable[[], None] | None:
        if server.key != self.server_key or round_number != 1:
            return None
        command = _py_spy()
        if command is None:
            print("--profile: py-spy not found (pip install py-spy)", file=sys.stderr)
            return None
        name = test.replace(" ", "-")
        output = self.folder / f"{name}.txt"
        process = subprocess.Popen(  # noqa: S603 - py-spy with our arguments
            [
                command,
                "record",
                "--pid",
                str(server.pid),
                "--rate",
                str(RATE),
                "--nonblocking",
                "--threads",
                "--format",
                "raw",
                "--output",
                str(output),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)  # let py-spy attach before the test starts

        def stop() -> None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if output.exists():
                summary = summarise(output)
                (self.folder / f"{name}-top.txt").write_text(summary, encoding="utf-8")
                print(f"py-spy, censusdrop, {test}:\n{summary}", file=sys.stderr)

        return stop


def summarise(collapsed: Path, top: int = TOP) -> str:
    """Self and total sample shares of the hottest frames."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith("thread")]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for function in {_function(f) for f in frames if _is_own(f)}:
            total[function] += count
    if not samples:
        return "  (no samples)\n"
    lines = [f"  {samples} samples; self time:"]
    lines += [f"  {n * 100 / samples:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines.append("  total time (censusdrop's frames on the stack):")
    lines += [f"  {n * 100 / samples:5.1f}%  {f}" for f, n in total.most_common(top)]
    return "\n".join(lines) + "\n"


def _function(frame: str) -> str:
    """``name (file:line)`` without the line, so a function counts once."""
    name, _, where = frame.rpartition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})"


def _is_own(frame: str) -> bool:
    where = frame.rsplit(" (", 1)[-1]
    return where.startswith(OWN) and not frame.startswith(OUTER)


def _py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")
