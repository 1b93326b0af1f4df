"""How long pre-review takes on a large submission (printed, not asserted).

Builds a complete submission of about 5,000 files (mostly scans in the
counted folders of items 10, 12 and 14, as a final submission has) in a
temporary folder, then judges it a few times and prints the timings.
Target: under 3 s on the 2-core reference machine.

    python bench/validation_bench.py [--files 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from censusdrop.server.validation import render_html
from censusdrop.server.validation import render_text
from treebuilder import build_submission

# Files in a submission built with per_source=n: 6 counted folders of n scans
# plus the fixed rest of the tree.
COUNTED_FOLDERS = 6
FIXED_FILES = 53


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    per_source = max(1, (args.files - FIXED_FILES) // COUNTED_FOLDERS)

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        sub = build_submission(Path(tmp) / "area", per_source=per_source)
        built = time.perf_counter() - started

        timings = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            report = sub.validate()
            timings.append(time.perf_counter() - started)

        started = time.perf_counter()
        render_text(report)
        render_html(report)
        rendered = time.perf_counter() - started

    print(f"files judged:    {report.digest.files} ({report.digest.folders} folders)")
    print(f"verdict:         {report.verdict}, findings: {len(report.findings)}")
    print(f"tree built in:   {built:.2f} s")
    print(
        f"validation:      best {min(timings):.2f} s, "
        f"median {statistics.median(timings):.2f} s over {args.rounds} rounds"
    )
    print(f"rendering:       {rendered * 1000:.0f} ms (text and HTML)")
    print("target:          under 3 s")


if __name__ == "__main__":
    main()
