"""Naming what is wrong with a chain row that failed verification.

When the verifier meets a row that does not fit, it calls ``diagnose``
with the row, its neighbours and a way to look a hash up. Each hypothesis
about what was done is tested by recomputing hashes, so the answer is not a
guess: a row reported as moved really is a genuine entry whose predecessor
sits elsewhere, a row reported as left behind by a deletion really hashes
correctly at the next seq, and so on. What cannot be told apart (an entry
slipped in at the end, or the entry before it rewritten) is said so.

====================  ====================================================
kind                  what it means, and which seq is named
====================  ====================================================
``modified``          a row's content no longer matches its hash (that row)
``deleted``           a seq is missing, or later rows were renumbered down
                      (the first missing seq)
``inserted``          a row that does not belong (that row)
``reordered``         a genuine row moved to another seq (the first moved)
``truncated``         the chain ends before a signed checkpoint's seq
                      (the first missing seq)
``rewritten``         the chain is consistent but no longer has the head
                      hash a checkpoint signed: it was re-hashed (the
                      checkpoint's seq; the change is at or before it)
``bad_checkpoint``    a checkpoint's signature does not verify (its seq)
``malformed``         an entry cannot be read at all (where it was expected)
====================  ====================================================
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable

from .chain import Row
from .chain import row_is_sealed

HashLookup = Callable[[str], "int | None"]


class ProblemKind(enum.StrEnum):
    MODIFIED = "modified"
    DELETED = "deleted"
    INSERTED = "inserted"
    REORDERED = "reordered"
    TRUNCATED = "truncated"
    REWRITTEN = "rewritten"
    BAD_CHECKPOINT = "bad_checkpoint"
    MALFORMED = "malformed"


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    """The first thing wrong: its kind, the seq it names, and why."""

    kind: ProblemKind
    seq: int
    message: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.kind}: {self.message}"


def diagnose(
    expected: int,
    prev_hash: str,
    previous: Row | None,
    row: Row,
    following: Row | None,
    lookup: HashLookup,
) -> Problem:
    """Explain why ``row`` (found where ``expected`` should be) is wrong."""
    seq = row[0]
    if isinstance(seq, bool) or not isinstance(seq, int):
        return Problem(ProblemKind.MALFORMED, expected, "unreadable entry")
    if seq != expected:
        return _wrong_seq(expected, seq, following)
    linked, sealed = row[14] == prev_hash, row_is_sealed(row)
    if linked:
        if previous is not None and _sealed_as(row, expected - 1, previous[14]):
            return Problem(
                ProblemKind.INSERTED,
                expected - 1,
                "this entry was slipped in before the genuine one (renumbered "
                f"to {expected})",
            )
        return Problem(
            ProblemKind.MODIFIED, expected, "content does not match its hash"
        )
    if not sealed:
        return _unlinked_unsealed(expected, row, lookup)
    if following is not None and following[14] == row[15] and row_is_sealed(following):
        return Problem(
            ProblemKind.MODIFIED,
            expected - 1,
            "entry was altered and its hash recomputed (the next entry still "
            "points to the old hash)",
        )
    return Problem(
        ProblemKind.INSERTED,
        expected,
        f"entry does not follow seq {expected - 1} (inserted, or seq "
        f"{expected - 1} was rewritten)",
    )


def _wrong_seq(expected: int, seq: int, following: Row | None) -> Problem:
    if seq < expected:
        return Problem(
            ProblemKind.REORDERED,
            expected,
            f"seq {seq} appears after seq {expected - 1}",
        )
    if following is not None and following[0] == expected:
        return Problem(
            ProblemKind.REORDERED, expected, f"seq {seq} appears before seq {expected}"
        )
    gap = str(expected) if seq == expected + 1 else f"{expected}–{seq - 1}"
    return Problem(ProblemKind.DELETED, expected, f"seq {gap} missing")


def _unlinked_unsealed(expected: int, row: Row, lookup: HashLookup) -> Problem:
    prev = row[14]
    home = lookup(prev) if isinstance(prev, str) else None
    if home is not None and home != expected - 1:
        return Problem(
            ProblemKind.REORDERED,
            expected,
            f"a genuine entry moved here; it follows the entry now at seq {home}",
        )
    if _sealed_as(row, expected + 1, prev):
        return Problem(
            ProblemKind.DELETED,
            expected,
            f"the entry before this one was removed and seq {expected + 1} "
            f"onwards renumbered",
        )
    return Problem(
        ProblemKind.MODIFIED, expected, "links and content do not match its hash"
    )


def _sealed_as(row: Row, seq: int, prev_hash: str) -> bool:
    """Whether ``row`` would be intact with another seq and predecessor."""
    return row_is_sealed((seq, *row[1:14], prev_hash, row[15]))
