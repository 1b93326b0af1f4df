"""How soon the report lands after the quiet period (printed, not asserted).

Builds a complete submission of about 5,000 files, commits it into 武汉市's
area of a real instance through the storage layer (encrypted, indexed),
and times whole runs (judge, store, write, audit) on this thread: the
first with a cold content cache, then each after one file was changed.
Then it starts the server with its watcher and, a few times over, commits
one more file and measures the time from the end of the quiet period
(commit + ``quiet_seconds``) to the new 预审报告.txt in the area; the
server's first run has a cold cache too. Last, as a prefecture would,
it commits a whole second submission (恩施州) into a server that is
watching with the default 10 s quiet period (warm-up passes open the new
files while they arrive) and times the report after that quiet period.
Target: at most 2 s on the 2-core reference machine.

    python bench/prereview_bench.py [--files 5000] [--rounds 3]
                                    [--quiet 1.0] [--observer native]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from censusdrop.server.prereview import TEXT_REPORT
from censusdrop.server.prereview import Prereviewer
from censusdrop.server.prereview import configured_checklist
from censusdrop.server.storage.store import Storage
from conftest import Instance
from conftest import RunningServer
from prereviewkit import store_tree
from treebuilder import ENSHI as ENSHI_PREFECTURE
from treebuilder import build_submission
from treebuilder import pdf_bytes

AREA = "420100"
# Files in a submission built with per_source=n: 6 counted folders of n scans
# plus the fixed rest of the tree (see bench/validation_bench.py).
COUNTED_FOLDERS = 6
FIXED_FILES = 53
POLL = 0.2
# The live submission: another area, the default quiet period.
LIVE_AREA = "422800"
LIVE_QUIET = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quiet", type=float, default=1.0)
    parser.add_argument("--observer", choices=["native", "polling"], default="native")
    args = parser.parse_args()
    per_source = max(1, (args.files - FIXED_FILES) // COUNTED_FOLDERS)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        instance = Instance(
            root / "instance",
            f"sqlite:///{root / 'db.sqlite'}",
            quiet_seconds=str(args.quiet),
            observer=f'"{args.observer}"',
        )
        started = time.perf_counter()
        tree = build_submission(root / "tree", per_source=per_source)
        built = time.perf_counter() - started

        services = instance.services()
        services.storage.prepare()
        started = time.perf_counter()
        files = store_tree(services.storage, AREA, tree.root)
        stored = time.perf_counter() - started
        scans = sorted(
            path.relative_to(tree.root).as_posix()
            for path in tree.root.rglob("*号*.pdf")
        )
        direct = _direct_runs(services, scans, args.rounds)
        services.audit.close()  # type: ignore[attr-defined]
        services.engine.dispose()

        server = RunningServer(instance)
        try:
            prereview = server.server.prereview
            assert prereview is not None
            # No catch-up is due (the direct runs left a current report), so
            # the first round below is the server's first run: a cold cache.
            prereview.wait_idle(120)
            latencies = [
                _one_round(server.services.storage, n, args.quiet)
                for n in range(args.rounds)
            ]
        finally:
            server.stop()
        live = _live_submission(root, instance, per_source)

    print(f"files stored:    {files} in {stored:.1f} s (tree built in {built:.1f} s)")
    (wall, cpu), *later = direct
    print(f"first run:       {wall:.2f} s, {cpu:.2f} s CPU (cold cache)")
    if later:
        wall = statistics.median(w for w, _ in later)
        cpu = statistics.median(c for _, c in later)
        print(
            f"one file changed: {wall:.2f} s, {cpu:.2f} s CPU"
            f" (median of {len(later)}; judge, store, write, audit)"
        )
    print(f"observer:        {args.observer}, quiet period {args.quiet:.1f} s")
    cold, *warm = latencies
    line = f"report after the quiet period: {cold:.2f} s (cold content cache)"
    if warm:
        line += ", then " + ", ".join(f"{value:.2f} s" for value in warm)
        line += f" (median {statistics.median(warm):.2f} s)"
    print(line)
    seconds, warmed = live
    print(
        f"live submission: report {seconds:.2f} s after the {LIVE_QUIET:.0f} s quiet"
        f" period ({warmed} files opened by warm-up passes while it arrived)"
    )
    print("target:          at most 2 s")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"load average:    {load} (timings on a busy machine run long)")


def _direct_runs(  # type: ignore[no-untyped-def]
    services, scans: list[str], rounds: int
) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of runs on this thread, outside the server: the
    first on a cold cache, each later one after changing one stored scan."""
    prereviewer = Prereviewer(services, configured_checklist(services.settings))
    storage = services.storage
    timings = []
    for n in range(rounds):
        if n:
            storage.write_bytes(AREA, scans[n], pdf_bytes(f"changed {n}"), "bench")
        wall, cpu = time.perf_counter(), time.thread_time()
        prereviewer.run(AREA, at=dt.datetime.now(dt.UTC), origin="bench")
        timings.append((time.perf_counter() - wall, time.thread_time() - cpu))
    return timings


def _one_round(storage: Storage, n: int, quiet: float) -> float:
    """Commit one file; seconds from the end of the quiet period to the report.

    The report's arrival is read afterwards from its inode's change time
    (the rename into the area), so the waiting here can be slow and never
    competes with the run for the interpreter.
    """
    report = storage.root / "areas" / AREA / TEXT_REPORT
    before = report.stat().st_ino
    # Counted from before the commit: the event, and so the quiet period,
    # can only start later, so this errs on the slow side.
    quiet_end = time.time() + quiet
    storage.write_bytes(AREA, f"武汉市补充材料{n}20200405.pdf", b"%PDF-1.4", "bench")
    while (info := _stat(report)) is None or info.st_ino == before:
        time.sleep(POLL)
    return info.st_ctime - quiet_end


def _live_submission(
    root: Path, instance: Instance, per_source: int
) -> tuple[float, int]:
    """Commit a whole submission into a watching server; seconds from the
    end of the quiet period after the last commit to the report, and the
    files the warm-up passes opened."""
    settings = instance.settings
    instance.settings = dataclasses.replace(
        settings,
        prereview=dataclasses.replace(settings.prereview, quiet_seconds=LIVE_QUIET),
    )
    tree = build_submission(root / "live", ENSHI_PREFECTURE, per_source=per_source)
    server = RunningServer(instance)
    try:
        prereview = server.server.prereview
        assert prereview is not None
        prereview.wait_idle(120)
        report = server.services.storage.root / "areas" / LIVE_AREA / TEXT_REPORT
        store_tree(server.services.storage, LIVE_AREA, tree.root)
        quiet_end = time.time() + LIVE_QUIET
        while (info := _stat(report)) is None:
            time.sleep(POLL)
        return info.st_ctime - quiet_end, prereview.warmed
    finally:
        server.stop()


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


if __name__ == "__main__":
    main()
