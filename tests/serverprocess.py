"""A censusdrop server run as a child process by a test, stopped by its PID."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

READY = "passive ports"  # the last line the server prints once it listens


def start(
    argv: list[str], cwd: Path | None = None, *, logs: bool = True
) -> tuple[subprocess.Popen[str], str]:
    """Start ``argv``; return it and what it printed once it listens.

    With ``logs`` its standard error goes with its output, so a failed
    start says why; a test that runs it for long (and reads no more of
    it) passes False, so that its log cannot fill the pipe."""
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if logs else subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    for _ in range(200):
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(READY):
            return process, "".join(lines)
    stop(process, signal.SIGKILL)
    raise AssertionError("server did not start:\n" + "".join(lines))


def stop(process: subprocess.Popen[str], signum: int = signal.SIGTERM) -> int:
    """Signal the server by its PID, wait for it, close its output pipe;
    it is killed if it does not end, so no test leaves it running."""
    os.kill(process.pid, signum)
    try:
        return process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        raise
    finally:
        if process.stdout is not None:
            process.stdout.close()
