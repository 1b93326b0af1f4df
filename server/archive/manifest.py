"""The manifest of a round archive: what it holds, signed.

``manifest.json`` lists every file of the archive but itself, its
signature and the public key, each with its size and SHA-256 (and, for the
round's own files, the area, path, version and state it came from).
``manifest.sig`` is an Ed25519 signature (base64) over a fixed context
line followed by the exact bytes of ``manifest.json``, made with the audit
signing key; ``public-key.pem`` is that key's public half.

Trusts: nothing it reads; a public key found in the archive proves only
that the archive is self-consistent (pin the trusted one to prove more).
Guarantees: ``check_signature`` accepts only a manifest whose bytes were
signed by the key it is given, and whose recorded key id is that key's.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from censusdrop.audit.checkpoint import SigningKey
from censusdrop.audit.checkpoint import VerifyKey

MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
PUBLIC_KEY_FILE = "public-key.pem"
# Files of the archive the manifest does not (and cannot) list.
META_FILES = frozenset({MANIFEST_FILE, SIGNATURE_FILE, PUBLIC_KEY_FILE})
# The lines of the audit export that concern the round.
ROUND_EVENTS_FILE = "round-events.jsonl"
FORMAT = "censusdrop-round-archive"
FORMAT_VERSION = 1
HASH_CHUNK = 1024 * 1024

_CONTEXT = b"censusdrop round archive manifest v1\n"


class ManifestError(Exception):
    """The manifest cannot be read, or is not one this version knows."""


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """One file of the archive, as the manifest lists it."""

    file: str  # relative POSIX path inside the archive
    size: int
    sha256: str
    area: str | None = None
    path: str | None = None
    version: str | None = None
    number: int | None = None
    state: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def encode(content: dict[str, Any]) -> bytes:
    """The bytes of ``manifest.json`` for ``content``."""
    text = json.dumps(content, ensure_ascii=False, indent=1, sort_keys=True)
    return (text + "\n").encode("utf-8")


def sign(key: SigningKey, manifest: bytes) -> bytes:
    """The contents of ``manifest.sig``."""
    return base64.b64encode(key.sign(_CONTEXT + manifest)) + b"\n"


def check_signature(key: VerifyKey, manifest: bytes, signature: bytes) -> bool:
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
    except ValueError:
        return False
    return key.verifies(raw, _CONTEXT + manifest)


def decode(manifest: bytes) -> tuple[dict[str, Any], list[FileEntry]]:
    """The manifest's content and its file entries; ManifestError if it is
    not a manifest of this format."""
    try:
        content = json.loads(manifest.decode("utf-8"))
        if content.get("format") != FORMAT or content.get("version") != 1:
            raise ValueError("not a censusdrop round archive manifest")
        entries = [_entry(item) for item in content["files"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ManifestError(f"{MANIFEST_FILE}: {exc}") from exc
    return content, entries


def sha256_file(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file, read in chunks."""
    hasher = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size


def _entry(item: dict[str, Any]) -> FileEntry:
    entry = FileEntry(**item)
    if not isinstance(entry.file, str) or not isinstance(entry.size, int):
        raise TypeError("a file entry needs a file name and a size")
    parts = entry.file.split("/")
    if entry.file.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"unsafe file name {entry.file!r}")
    return entry
