"""Canonical encoding of audit entries and the hash chain over them.

Every entry's hash is ``SHA-256(prev || canonical)``, where ``prev`` is the
32-byte hash of the entry before (``GENESIS_HASH`` for the first entry) and
``canonical`` is the UTF-8 of the entry's content as deterministic JSON:
sorted keys, no whitespace, non-ASCII kept as is, and these keys::

    account action at bytes details digest outcome path prefecture remote
    role seq session v version

``v`` is ``CHAIN_VERSION``; ``at`` is UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``;
``details`` is itself canonical JSON, carried as a string so that the hash
covers the exact stored text; absent fields are ``null``.

``canonical_text`` builds that JSON with a template, which is several times
faster than ``json.dumps`` and gives the same bytes (the tests check this
against ``reference_canonical_text`` on arbitrary input). Verification
speed depends on it.

This module trusts nothing it is given: a row read back from a database or
a file may have any content, and the worst it can do is fail to match.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from json.encoder import encode_basestring
from typing import Any

from .events import AuditEvent

CHAIN_VERSION = 1
GENESIS_HASH = hashlib.sha256(b"censusdrop audit chain v1 genesis").hexdigest()

# The order of fields in a chain row, as stored and as exported.
ROW_FIELDS = (
    "seq",
    "at",
    "account",
    "role",
    "prefecture",
    "session",
    "remote",
    "action",
    "path",
    "version",
    "bytes",
    "digest",
    "outcome",
    "details",
    "prev_hash",
    "hash",
)
TEXT_FIELDS = (
    "account",
    "role",
    "prefecture",
    "session",
    "remote",
    "action",
    "path",
    "version",
    "digest",
    "outcome",
)
MAX_BYTES = 2**63 - 1

Row = Sequence[Any]

_TEMPLATE = (
    '{"account":%s,"action":%s,"at":%s,"bytes":%s,"details":%s,"digest":%s,'
    '"outcome":%s,"path":%s,"prefecture":%s,"remote":%s,"role":%s,"seq":%d,'
    '"session":%s,"v":' + str(CHAIN_VERSION) + ',"version":%s}'
)
_sha256 = hashlib.sha256


def format_time(at: dt.datetime) -> str:
    """``at`` as the UTC text the chain hashes."""
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    if at.tzinfo is not dt.UTC:
        at = at.astimezone(dt.UTC)
    return at.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> dt.datetime:
    """The inverse of ``format_time``."""
    if not text.endswith("Z"):
        raise ValueError(f"not a UTC chain time: {text!r}")
    return dt.datetime.fromisoformat(text[:-1]).replace(tzinfo=dt.UTC)


def encode_details(details: Mapping[str, Any]) -> str:
    """Canonical JSON text of an event's details.

    Raises ``ValueError`` if they are not plain JSON data.
    """
    if type(details) is dict and not details:
        return "{}"
    try:
        text = json.dumps(
            details,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"audit details are not JSON data: {exc}") from exc
    if not text.isascii() and not _is_encodable(text):
        # Lone surrogates (undecodable bytes of a file name): escape them.
        text = json.dumps(
            details, sort_keys=True, separators=(",", ":"), allow_nan=False
        )
    return text


def canonical_text(row: Row) -> str:
    """The canonical JSON of a chain row (``ROW_FIELDS`` order).

    Raises ``TypeError`` for a field of the wrong type. ``seq`` and ``bytes``
    must be ``int`` (not ``bool``): database columns guarantee it, and the
    export reader checks it.
    """
    (seq, at, account, role, prefecture, session, remote, action, path,
     version, nbytes, digest, outcome, details) = row[:14]  # fmt: skip
    e = encode_basestring
    return _TEMPLATE % (
        "null" if account is None else e(account),
        e(action),
        e(at),
        # int.__repr__ refuses a float or text that a tampered row may hold.
        "null" if nbytes is None else int.__repr__(nbytes),
        e(details),
        "null" if digest is None else e(digest),
        e(outcome),
        "null" if path is None else e(path),
        "null" if prefecture is None else e(prefecture),
        "null" if remote is None else e(remote),
        "null" if role is None else e(role),
        seq,
        "null" if session is None else e(session),
        "null" if version is None else e(version),
    )


def reference_canonical_text(row: Row) -> str:
    """The same JSON as ``canonical_text``, the slow and obvious way."""
    content: dict[str, Any] = dict(zip(ROW_FIELDS[:14], row[:14], strict=True))
    content["v"] = CHAIN_VERSION
    return json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def chain_hash(prev_hash: str, canonical: str) -> str:
    """SHA-256 of the previous hash (raw bytes) followed by the content."""
    return _sha256(bytes.fromhex(prev_hash) + canonical.encode()).hexdigest()


def row_is_sealed(row: Row) -> bool:
    """Whether the row's stored hash matches its own content and prev_hash.

    A malformed row (wrong types, bad hex) is simply not sealed.
    """
    try:
        return bool(chain_hash(row[14], canonical_text(row)) == row[15])
    except (TypeError, ValueError, UnicodeEncodeError):
        return False


def check_event(event: AuditEvent) -> None:
    """Raise ``TypeError``/``ValueError`` if the event cannot be stored.

    Called on the emitting thread so that a bad event fails where it was
    made, not later in the writer.
    """
    for name in TEXT_FIELDS:
        value = getattr(event, name)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"AuditEvent.{name} must be str or None")
    if not event.action or not event.outcome:
        raise ValueError("AuditEvent.action and .outcome must not be empty")
    size = event.bytes
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError("AuditEvent.bytes must be int or None")
        if not 0 <= size <= MAX_BYTES:
            raise ValueError("AuditEvent.bytes is out of range")
    encode_details(event.details)


def seal(event: AuditEvent, seq: int, prev_hash: str) -> tuple[Any, ...]:
    """The chain row for ``event`` at ``seq`` after ``prev_hash``.

    Text is cleaned first (NUL and undecodable bytes escaped) so that every
    database can store exactly what was hashed.
    """
    return seal_all([event], seq - 1, prev_hash)[0]


def seal_all(
    events: Iterable[AuditEvent], after_seq: int, prev_hash: str
) -> list[tuple[Any, ...]]:
    """Chain rows for ``events`` appended one after another after the entry
    ``after_seq`` whose hash is ``prev_hash``; the same rows as ``seal``
    called for each in turn, without converting each hash to hex and back.
    This loop is the writer's hot path."""
    rows: list[tuple[Any, ...]] = []
    prev_raw, sha256 = bytes.fromhex(prev_hash), _sha256
    for seq, event in enumerate(events, start=after_seq + 1):
        content = _content(event, seq)
        raw = sha256(prev_raw + canonical_text(content).encode()).digest()
        digest = raw.hex()
        rows.append((*content, prev_hash, digest))
        prev_hash, prev_raw = digest, raw
    return rows


def _content(event: AuditEvent, seq: int) -> tuple[Any, ...]:
    clean = _clean_text
    return (
        seq,
        format_time(event.at),
        clean(event.account),
        clean(event.role),
        clean(event.prefecture),
        clean(event.session),
        clean(event.remote),
        clean(event.action),
        clean(event.path),
        clean(event.version),
        event.bytes,
        clean(event.digest),
        clean(event.outcome),
        encode_details(event.details),
    )


def _is_encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _clean_text(value: str | None) -> str | None:
    if value is None or (value.isascii() and "\x00" not in value):
        return value
    if "\x00" in value:
        value = value.replace("\x00", "\N{REPLACEMENT CHARACTER}")
    if _is_encodable(value):
        return value
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")
