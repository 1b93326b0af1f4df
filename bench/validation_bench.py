"""How long pre-review takes on a large submission (printed, not asserted).

Builds a complete submission of about 5,000 files (mostly scans in the
counted folders of items 10, 12 and 14, as a final submission has, each
scan with its own content) in a temporary folder, then judges it:

- as a plain folder, with no cache, a few times (the validator's own cost);
- through a source that knows each file's version and SHA-256, as the
  storage index does, with a content cache: the first run (cold, every
  file opened), then runs after one file was changed each time.

Target: under 3 s on the 2-core reference machine.

    python bench/validation_bench.py [--files 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from censusdrop.server.validation import ContentCache
from censusdrop.server.validation import DirectorySource
from censusdrop.server.validation import Report
from censusdrop.server.validation import SourceEntry
from censusdrop.server.validation import render_html
from censusdrop.server.validation import render_text
from censusdrop.server.validation import validate
from treebuilder import AT
from treebuilder import CHECKLIST
from treebuilder import HUBEI
from treebuilder import Submission
from treebuilder import build_submission
from treebuilder import pdf_bytes

# Files in a submission built with per_source=n: 6 counted folders of n scans
# plus the fixed rest of the tree.
COUNTED_FOLDERS = 6
FIXED_FILES = 53


class IndexedFolder:
    """A folder with an index of versions and digests, as the storage keeps:
    ``change`` rewrites a file and gives it a new version."""

    def __init__(self, root: Path) -> None:
        self.plain = DirectorySource(root)
        self.root = root
        self.opened = 0
        self.index = {
            e.path: self._indexed(e.path) for e in self.plain.walk() if not e.is_dir
        }

    def walk(self) -> Iterator[SourceEntry]:
        for entry in self.plain.walk():
            if entry.is_dir:
                yield entry
            else:
                version, sha256 = self.index[entry.path]
                yield SourceEntry(
                    entry.path, False, entry.size, entry.mtime, sha256, version
                )

    def open(self, path: str) -> BinaryIO:
        self.opened += 1
        return self.plain.open(path)

    def change(self, path: str, data: bytes) -> None:
        (self.root / path).write_bytes(data)
        self.index[path] = self._indexed(path)

    def _indexed(self, path: str) -> tuple[str, str]:
        data = (self.root / path).read_bytes()
        return uuid.uuid4().hex, hashlib.sha256(data).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    per_source = max(1, (args.files - FIXED_FILES) // COUNTED_FOLDERS)

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        sub = build_submission(Path(tmp) / "area", per_source=per_source)
        _distinct_scans(sub)
        built = time.perf_counter() - started

        # Cached first, while the process is cold: its first run is what a
        # server does after a start.
        cached = _cached_runs(sub, args.rounds)
        plain = [_timed(sub.validate) for _ in range(args.rounds)]
        report = plain[-1][2]

        started = time.perf_counter()
        render_text(report)
        render_html(report)
        rendered = time.perf_counter() - started

    print(f"files judged:    {report.digest.files} ({report.digest.folders} folders)")
    print(f"verdict:         {report.verdict}, findings: {len(report.findings)}")
    print(f"tree built in:   {built:.2f} s")
    first, *later = cached
    print(f"first run:       {_figures([first])}, {first[3]} files opened")
    if later:
        opened = max(run[3] for run in later)
        print(
            f"one file changed: {_figures(later)}, {opened} file(s) opened"
            f" (median of {len(later)})"
        )
    print(
        f"plain folder:    {_figures(plain)}, no content cache (median of {len(plain)})"
    )
    print(f"rendering:       {rendered * 1000:.0f} ms (text and HTML)")
    print("target:          under 3 s")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"load average:    {load} (timings on a busy machine run long)")


def _distinct_scans(sub: Submission) -> None:
    """Give every scan its own bytes: real scans differ from each other."""
    for n, path in enumerate(sorted(sub.root.rglob("*号*.pdf"))):
        path.write_bytes(pdf_bytes(f"scan {n}"))


def _cached_runs(
    sub: Submission, rounds: int
) -> list[tuple[float, float, Report, int]]:
    source = IndexedFolder(sub.root)
    cache = ContentCache()
    scans = sorted(p for p in source.index if "号" in p)
    runs = []
    for n in range(rounds):
        if n:
            source.change(scans[n], pdf_bytes(f"changed {n}"))
        opened = source.opened
        wall, cpu, report = _timed(
            lambda: validate(
                source, CHECKLIST, sub.prefecture, at=AT, others=HUBEI, cache=cache
            )
        )
        runs.append((wall, cpu, report, source.opened - opened))
    return runs


def _timed(run):  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), time.thread_time()
    report = run()
    return time.perf_counter() - wall, time.thread_time() - cpu, report


def _figures(runs) -> str:  # type: ignore[no-untyped-def]
    """Wall and CPU seconds of one run, or their medians over several."""
    wall = statistics.median(run[0] for run in runs)
    cpu = statistics.median(run[1] for run in runs)
    return f"{wall:.2f} s wall, {cpu:.2f} s CPU"


if __name__ == "__main__":
    main()
