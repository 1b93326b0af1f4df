"""Results of a run and the one table that shows them.

Each cell is the median over the rounds. Beside each peer's value, ``×`` is
censusdrop's speed divided by the peer's: above 1.0 censusdrop is ahead.
For rates (MB/s, files/s) that is censusdrop ÷ peer; for wall seconds it is
peer ÷ censusdrop. With ``--postgres`` a second ratio is given for
censusdrop on PostgreSQL. CPU seconds and peak memory have no ratio.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import defaultdict

MB = 1_000_000
MIB = 1024 * 1024
BASE = "censusdrop"
BASE_PG = "censusdrop-pg"


@dataclasses.dataclass(frozen=True)
class Row:
    key: str
    title: str
    higher_is_better: bool
    digits: int = 0


class Results:
    """Values per row and server, CPU per server, and what failed."""

    def __init__(self, rows: list[Row], columns: dict[str, str]) -> None:
        self.rows = rows
        self.columns = columns  # key -> label, in table order
        self.values: dict[str, dict[str, list[float]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self.cpu: dict[str, float] = defaultdict(float)
        self.cpu_per_row: dict[str, dict[str, list[float]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self.peak_rss: dict[str, int] = {}
        self.failures: list[str] = []
        self.failed: set[tuple[str, str]] = set()

    def add(self, row: str, server: str, value: float, cpu: float) -> None:
        self.values[row][server].append(value)
        self.cpu_per_row[row][server].append(cpu)
        self.cpu[server] += cpu

    def median(self, row: str, server: str) -> float | None:
        values = self.values[row].get(server)
        return statistics.median(values) if values else None

    def as_dict(self) -> dict[str, object]:
        return {
            "rows": [dataclasses.asdict(row) for row in self.rows],
            "columns": self.columns,
            "values": {r: dict(v) for r, v in self.values.items()},
            "cpu_seconds": dict(self.cpu),
            "cpu_seconds_per_row": {r: dict(v) for r, v in self.cpu_per_row.items()},
            "peak_rss_bytes": self.peak_rss,
            "failures": self.failures,
        }


def table(results: Results) -> str:
    """The Markdown table of medians, ratios, CPU and peak memory."""
    keys = list(results.columns)
    header = ["test", *(results.columns[k] for k in keys)]
    lines = [_line(header), _line(["---"] + ["---:"] * len(keys))]
    for row in results.rows:
        cells = [row.title]
        for key in keys:
            cells.append(_cell(results, row, key))
        lines.append(_line(cells))
    lines.append(
        _line(
            ["server CPU s, all tests"]
            + [
                _number(results.cpu.get(k), 1) if k in results.cpu else "–"
                for k in keys
            ]
        )
    )
    lines.append(
        _line(["peak RSS, MiB"] + [_mib(results.peak_rss.get(k)) for k in keys])
    )
    return "\n".join(lines)


def _cell(results: Results, row: Row, key: str) -> str:
    if (row.key, key) in results.failed:
        return "failed"
    value = results.median(row.key, key)
    if value is None:
        return "–"
    text = _number(value, row.digits)
    if key in (BASE, BASE_PG):
        return text
    ratios = []
    for base in (BASE, BASE_PG):
        if base in results.columns:
            ratio = _ratio(row, results.median(row.key, base), value)
            ratios.append("–" if ratio is None else f"{ratio:.2f}×")
    if ratios:
        text += " · " + (" / ".join(ratios) if len(ratios) > 1 else ratios[0])
    return text


def _ratio(row: Row, ours: float | None, theirs: float) -> float | None:
    if ours is None or ours <= 0 or theirs <= 0:
        return None
    return ours / theirs if row.higher_is_better else theirs / ours


def _number(value: float | None, digits: int) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def _mib(value: int | None) -> str:
    return "–" if not value else f"{value / MIB:,.0f}"


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"
