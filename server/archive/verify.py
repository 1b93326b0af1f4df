"""``round verify-archive``: check a round archive with nothing but itself.

Checks, each reported as one line: the manifest's signature (under the
pinned public key when one is given, else the archive's own, with a
warning naming its id); every listed file present with its size and
SHA-256; no file that the manifest does not list; the audit export verifies
(chain, signed checkpoint, same key) and every line of
``round-events.jsonl`` is a line of that chain.

Trusts: only the public key it is given. Needs no database.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from censusdrop.audit.checkpoint import KeyFileError
from censusdrop.audit.checkpoint import VerifyKey
from censusdrop.audit.checkpoint import verify_key_from_pem
from censusdrop.audit.events import AuditError
from censusdrop.audit.export import EVENTS_FILE
from censusdrop.audit.export import verify_export

from . import manifest

AUDIT_FOLDER = "audit"


@dataclasses.dataclass
class ArchiveCheck:
    """What a verification found; ``ok`` only without problems."""

    problems: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    files: int = 0
    manifest_sha256: str | None = None
    content: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_archive(folder: Path, trusted: VerifyKey | None = None) -> ArchiveCheck:
    """Check the archive in ``folder``; never raises for a damaged one."""
    check = ArchiveCheck()
    if not folder.is_dir():
        check.problems.append(f"{folder}: not a folder")
        return check
    key = _signing_key(folder, trusted, check)
    body = _read(folder / manifest.MANIFEST_FILE, check)
    signature = _read(folder / manifest.SIGNATURE_FILE, check)
    if key is None or body is None or signature is None:
        return check
    if not manifest.check_signature(key, body, signature):
        check.problems.append(f"{manifest.SIGNATURE_FILE}: signature does not verify")
        return check
    try:
        content, entries = manifest.decode(body)
    except manifest.ManifestError as exc:
        check.problems.append(str(exc))
        return check
    check.content = content
    check.manifest_sha256 = manifest.sha256_file(folder / manifest.MANIFEST_FILE)[0]
    if content.get("key_id") != key.key_id:
        check.problems.append(f"{manifest.MANIFEST_FILE}: names another signing key")
    _check_files(folder, entries, check)
    _check_audit(folder / AUDIT_FOLDER, key, check)
    return check


def _signing_key(
    folder: Path, trusted: VerifyKey | None, check: ArchiveCheck
) -> VerifyKey | None:
    pem = _read(folder / manifest.PUBLIC_KEY_FILE, check)
    if pem is None:
        return trusted
    try:
        own = verify_key_from_pem(pem.decode("ascii"))
    except (KeyFileError, UnicodeDecodeError):
        check.problems.append(f"{manifest.PUBLIC_KEY_FILE}: not an Ed25519 public key")
        return trusted
    if trusted is None:
        check.warnings.append(
            f"public key taken from the archive itself (key id {own.key_id}); "
            "compare it with the key you trust, or pass it with --public-key"
        )
        return own
    if own.key_id != trusted.key_id:
        check.problems.append(
            f"{manifest.PUBLIC_KEY_FILE}: key {own.key_id[:16]} is not the trusted "
            f"key {trusted.key_id[:16]}"
        )
    return trusted


def _check_files(
    folder: Path, entries: list[manifest.FileEntry], check: ArchiveCheck
) -> None:
    listed = {entry.file for entry in entries}
    for entry in entries:
        path = folder.joinpath(*entry.file.split("/"))
        if path.is_symlink() or not path.is_file():
            check.problems.append(f"{entry.file}: missing")
            continue
        digest, size = manifest.sha256_file(path)
        if size != entry.size:
            check.problems.append(
                f"{entry.file}: size {size}, manifest says {entry.size}"
            )
        elif digest != entry.sha256:
            check.problems.append(f"{entry.file}: SHA-256 does not match the manifest")
        else:
            check.files += 1
    for name in sorted(_everything_below(folder)):
        if name not in listed and name not in manifest.META_FILES:
            check.problems.append(f"{name}: not listed in the manifest")


def _check_audit(folder: Path, key: VerifyKey, check: ArchiveCheck) -> None:
    try:
        result = verify_export(folder, key)
    except (AuditError, OSError) as exc:
        check.problems.append(f"{AUDIT_FOLDER}: {exc}")
        return
    if not result.ok:
        check.problems.append(
            f"{AUDIT_FOLDER}: the audit export fails: {result.problem}"
        )
        return
    try:
        chain = set(_lines(folder / EVENTS_FILE))
        extra = [
            line
            for line in _lines(folder / manifest.ROUND_EVENTS_FILE)
            if line not in chain
        ]
    except OSError as exc:
        check.problems.append(f"{AUDIT_FOLDER}: {exc}")
        return
    if extra:
        name = f"{AUDIT_FOLDER}/{manifest.ROUND_EVENTS_FILE}"
        check.problems.append(f"{name}: {len(extra)} line(s) not in the chain")


def _lines(path: Path) -> list[bytes]:
    with path.open("rb") as handle:
        return handle.readlines()


def _read(path: Path, check: ArchiveCheck) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        check.problems.append(f"{path.name}: missing")
    except OSError as exc:
        check.problems.append(f"{path.name}: cannot read: {exc.strerror}")
    return None


def _everything_below(root: Path) -> list[str]:
    """Every non-folder below ``root`` (links and special files included)."""
    found = []
    for folder, dirs, files in os.walk(root):
        base = Path(folder)
        for name in files + [d for d in dirs if (base / d).is_symlink()]:
            found.append((base / name).relative_to(root).as_posix())
    return found
