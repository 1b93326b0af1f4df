"""The load test's report: figures, checks and verdict.

``problems_of`` turns a report into the reasons to exit 1: client
failures, an audit chain that does not verify, an action whose audit
events differ from what the clients counted, descriptors left open.
``print_report`` prints the figures as Markdown tables, then those
reasons (or "no problems").
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from .watch import leaked

# Resident memory the server may gain between the end of the second wave
# and the end of the last one (allocator noise), in MiB.
GROWTH_ALLOWED_MIB = 24
# Waves shorter than this say nothing about a leak: thread pools, arenas
# and caches are still filling. Their growth is shown, not judged.
MIN_WAVE_SECONDS = 10.0


def problems_of(report: dict[str, Any]) -> list[str]:
    problems = []
    clients = report["clients"]
    audit = report["audit"]
    server = report["server"]
    assert isinstance(clients, dict) and isinstance(audit, dict)
    assert isinstance(server, dict)
    if clients["failures"]:
        problems.append(f"{clients['failures']} client failures")
    if audit["verify_exit"] != 0:
        problems.append("the audit chain does not verify")
    for action, count in audit["expected_ok"].items():
        got = audit["events"].get(action, {})
        if got.get("ok", 0) != count or sum(got.values()) != count:
            problems.append(f"{action}: {got} events for {count} actions")
    left_open = leaked(server["fds_changed"])
    if left_open:
        problems.append(f"descriptors left open: {left_open}")
    growth = wave_growth(server["after_waves"])
    if (
        growth is not None
        and growth > GROWTH_ALLOWED_MIB
        and wave_seconds(report) >= MIN_WAVE_SECONDS
    ):
        problems.append(
            f"resident memory grew {growth:.0f} MiB from the end of the second"
            f" wave to the end of the last (allowed {GROWTH_ALLOWED_MIB})"
        )
    return problems


def wave_seconds(report: dict[str, Any]) -> float:
    """How long each wave of the load lasted."""
    waves = report["server"]["after_waves"]
    return float(report["seconds"]) / max(1, len(waves))


def wave_growth(waves: list[dict[str, Any]]) -> float | None:
    """RSS growth from the end of the second wave to the end of the last.

    The first wave fills what stays filled (pools, caches, the allocator's
    arenas); after it, memory that keeps growing wave after wave is a leak.
    """
    if len(waves) < 3:
        return None
    return float(waves[-1]["rss_mib"]) - float(waves[1]["rss_mib"])


def print_report(report: dict[str, Any]) -> None:
    clients = report["clients"]
    server = report["server"]
    audit = report["audit"]
    assert isinstance(clients, dict) and isinstance(server, dict)
    assert isinstance(audit, dict)
    seconds = float(report["seconds"])
    transfers = clients["uploads"] + clients["downloads"]
    moved = (clients["bytes_up"] + clients["bytes_down"]) / 1e6
    print(
        f"censusdrop load test, {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}:"
        f" {report['sessions']} concurrent sessions for {seconds:.0f} s,"
        f" {report['file_bytes']} bytes a file"
    )
    print(
        f"logins {clients['logins']}, uploads {clients['uploads']},"
        f" downloads {clients['downloads']}, failures {clients['failures']}"
    )
    print(
        f"throughput: {transfers / seconds:.1f} transfers/s,"
        f" {moved / seconds:.1f} MB/s; CPU seconds: server"
        f" {report['server_cpu_seconds']}, clients {report['client_cpu_seconds']}"
        f" ({os.cpu_count()} CPUs)"
    )
    print("\n| server | at s | open fds | threads | RSS MiB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label in ("before", "peak", "quarter", "end_of_load", "after"):
        s = server[label]
        print(f"| {label} | {s['at']} | {s['fds']} | {s['threads']} | {s['rss_mib']} |")
    print(f"peak RSS sampled: {server['peak_rss_mib']} MiB")
    for number, wave in enumerate(server["after_waves"], 1):
        print(
            f"after wave {number}: {wave['fds']} fds, {wave['threads']} threads,"
            f" {wave['rss_mib']} MiB"
        )
    if wave_seconds(report) < MIN_WAVE_SECONDS and len(server["after_waves"]) >= 3:
        print(
            f"(waves of {wave_seconds(report):.1f} s: memory growth shown, not"
            f" judged; it is judged for waves of {MIN_WAVE_SECONDS:.0f} s or more)"
        )
    series = ", ".join(f"{at:.0f}s {rss:.0f}" for at, rss in server["rss_series"])
    print(f"RSS MiB over the load: {series}")
    print(f"descriptors after - before, by kind: {server['fds_changed'] or 'none'}")
    verdict = " / ".join(audit["verify_output"])
    print(f"\naudit verify: exit {audit['verify_exit']}: {verdict}")
    print("| action | clients | events ok | events other |")
    print("| --- | ---: | ---: | ---: |")
    for action in sorted(audit["events"]):
        outcomes = dict(audit["events"][action])
        ok = outcomes.pop("ok", 0)
        expected = audit["expected_ok"].get(action, "")
        print(f"| {action} | {expected} | {ok} | {outcomes or ''} |")
    for line in clients["errors"][:10]:
        print(f"client error: {line}")
    for line in report.get("server_errors", []):
        print(f"server: {line}")
    problems = problems_of(report)
    print("(connect and disconnect also count the readiness probe)")
    print("\n" + ("\n".join(f"PROBLEM: {p}" for p in problems) or "no problems"))
