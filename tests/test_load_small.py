"""The load test script, small: 20 concurrent sessions for a few seconds.

``bench/load.py`` as a real process: it starts a server, runs the sessions,
stops the server by its PID and checks the audit log. The full run (200
sessions for minutes) is in the README; this one keeps the script working
and catches a failed transfer, a descriptor left open or an audit event
missing or doubled under concurrency.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "load.py"


def _free_base_port() -> int:
    """A free port with room for the passive range (999 ports) above it."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if 1024 <= port <= 64000:
            return port
    raise AssertionError("no free port below 64000")


def test_twenty_sessions_leave_no_failure_leak_or_audit_gap(tmp_path: Path) -> None:
    figures = tmp_path / "load.json"
    options = {
        "--sessions": "20",
        "--duration": "3",
        "--accounts": "3",
        "--settle": "5",
        "--port": str(_free_base_port()),
        "--tmpdir": str(tmp_path),
        "--json": str(figures),
    }
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *(x for pair in options.items() for x in pair)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(figures.read_text(encoding="utf-8"))

    clients = report["clients"]
    assert clients["failures"] == 0
    assert clients["uploads"] >= 10 and clients["downloads"] == clients["uploads"]

    audit = report["audit"]
    assert audit["verify_exit"] == 0
    for action, count in audit["expected_ok"].items():
        assert audit["events"][action] == {"ok": count}, action

    server = report["server"]
    assert server["after"]["kinds"].get("socket of a session", 0) == 0
    assert "no problems" in result.stdout
