"""Exporting the audit log for offline verification, and verifying exports.

An export is a directory of three files::

    events.jsonl      the chain, seq 1 to N, one entry per line: a compact
                      JSON object with the keys of ``chain.ROW_FIELDS`` in
                      that order, UTF-8, each line ending in "\\n"
    checkpoint.json   a checkpoint signed at seq N when the export was made
    public-key.pem    the Ed25519 public key that signed it

``verify_export`` needs nothing but these files (and, ideally, the public
key the auditor already trusts, to pin it). It recomputes the chain, checks
the signature, and requires the file to end exactly at the checkpoint. Each
file must also be byte-for-byte in the form the exporter writes, so any
change, even one that leaves the parsed values equal, fails verification.

Trust: a public key found inside the export proves only that the export is
self-consistent; the result then carries a warning naming the key id to
compare with a trusted one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .chain import ROW_FIELDS
from .chain import Row
from .checkpoint import Checkpoint
from .checkpoint import CheckpointFileError
from .checkpoint import KeyFileError
from .checkpoint import SigningKey
from .checkpoint import VerifyKey
from .checkpoint import make_checkpoint
from .checkpoint import read_checkpoint_file
from .checkpoint import verify_key_from_pem
from .diagnose import Problem
from .diagnose import ProblemKind
from .events import AuditError
from .scan import ScanResult
from .scan import iter_chain_rows
from .scan import scan_rows
from .verify import CheckpointMarks
from .verify import VerifyResult

EVENTS_FILE = "events.jsonl"
CHECKPOINT_FILE = "checkpoint.json"
PUBLIC_KEY_FILE = "public-key.pem"

# What an unreadable line becomes: a row whose seq is not a number.
_UNREADABLE: Row = (None,) * len(ROW_FIELDS)
_INT_FIELDS = (ROW_FIELDS.index("seq"), ROW_FIELDS.index("bytes"))


class ExportError(AuditError):
    """The export cannot be written or read."""


@dataclasses.dataclass(frozen=True, slots=True)
class ExportSummary:
    directory: Path
    events: int
    checkpoint: Checkpoint


def export_log(
    engine: sa.Engine,
    key: SigningKey,
    directory: Path,
    at: dt.datetime | None = None,
) -> ExportSummary:
    """Sign a checkpoint at the current head and export up to it into
    ``directory`` (created; must be empty if it exists)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if any(directory.iterdir()):
            raise ExportError(f"export directory is not empty: {directory}")
    except OSError as exc:
        raise ExportError(f"cannot create {directory}: {exc}") from exc
    checkpoint = make_checkpoint(engine, key, at)
    count = 0
    try:
        with open(directory / EVENTS_FILE, "w", encoding="utf-8", newline="") as out:
            for row in iter_chain_rows(engine, until=checkpoint.seq):
                out.write(export_line(row))
                count += 1
        (directory / CHECKPOINT_FILE).write_text(
            checkpoint.to_json(key.public), encoding="utf-8"
        )
        (directory / PUBLIC_KEY_FILE).write_text(
            key.public.public_pem(), encoding="utf-8"
        )
    except OSError as exc:
        raise ExportError(f"cannot write the export: {exc}") from exc
    return ExportSummary(directory, count, checkpoint)


def export_line(row: Row) -> str:
    """One line of ``events.jsonl``."""
    content = dict(zip(ROW_FIELDS, row, strict=True))
    return json.dumps(content, ensure_ascii=False, separators=(",", ":")) + "\n"


def verify_export(
    path: Path, key: VerifyKey | None = None, extra: Checkpoint | None = None
) -> VerifyResult:
    """Verify an export directory (or its ``events.jsonl``) offline.

    ``key`` pins the public key; without it the export's own key is used
    and a warning names its id.
    """
    directory = path.parent if path.is_file() else path
    events = directory / EVENTS_FILE
    if not events.is_file():
        raise ExportError(f"no {EVENTS_FILE} in {directory}")
    try:
        checkpoint, own_key = _read_signed_files(directory)
    except (CheckpointFileError, KeyFileError, OSError) as exc:
        problem = Problem(ProblemKind.BAD_CHECKPOINT, 0, f"export damaged: {exc}")
        return CheckpointMarks({}, None, None).result(ScanResult(0, None, problem))

    required = [checkpoint, *([extra] if extra is not None else [])]
    marks = CheckpointMarks.build([], key or own_key, required)
    if key is None:
        marks.warnings.append(
            f"public key taken from the export itself (key id {own_key.key_id}); "
            "compare it with the key you trust, or pass it to pin it"
        )
    if marks.problem is not None:
        return marks.result(ScanResult(0, None, marks.problem))

    def lookup(digest: str) -> int | None:
        return _find_hash(events, digest)

    scan = scan_rows(_read_rows(events), marks.heads, lookup)
    if scan.problem is None and scan.last is not None and scan.last[0] > checkpoint.seq:
        problem = Problem(
            ProblemKind.INSERTED,
            checkpoint.seq + 1,
            "entries after the export's signed checkpoint",
        )
        scan = ScanResult(scan.events, scan.last, problem)
    return marks.result(scan)


def _read_signed_files(directory: Path) -> tuple[Checkpoint, VerifyKey]:
    pem = (directory / PUBLIC_KEY_FILE).read_text(encoding="utf-8")
    own_key = verify_key_from_pem(pem)
    if own_key.public_pem() != pem:
        raise KeyFileError(f"{PUBLIC_KEY_FILE} was altered")
    path = directory / CHECKPOINT_FILE
    checkpoint, embedded = read_checkpoint_file(path)
    if embedded is None or embedded.key_id != own_key.key_id:
        raise CheckpointFileError(f"{CHECKPOINT_FILE} names another public key")
    if path.read_text(encoding="utf-8") != checkpoint.to_json(own_key):
        raise CheckpointFileError(f"{CHECKPOINT_FILE} was altered")
    return checkpoint, own_key


def _read_rows(path: Path) -> Iterator[Row]:
    # surrogateescape: a damaged byte must not stop the reading; the line
    # then fails to hash instead.
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as lines:
        for line in lines:
            yield _parse_line(line)


def _parse_line(line: str) -> Row:
    try:
        content = json.loads(line)
        row = tuple(content[name] for name in ROW_FIELDS)
    except (ValueError, KeyError, TypeError):
        return _UNREADABLE
    if len(content) != len(row) or not _has_int_fields(row):
        return _UNREADABLE
    if export_line(row) != line:
        return _UNREADABLE
    return row


def _has_int_fields(row: tuple[Any, ...]) -> bool:
    seq, size = (row[i] for i in _INT_FIELDS)
    if isinstance(seq, bool) or not isinstance(seq, int):
        return False
    return size is None or (isinstance(size, int) and not isinstance(size, bool))


def _find_hash(path: Path, digest: str) -> int | None:
    for row in _read_rows(path):
        if row[15] == digest and isinstance(row[0], int):
            return row[0]
    return None
