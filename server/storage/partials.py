"""Resumable uploads: what an interrupted upload leaves behind to resume.

Trusts: the staging folder of the data root (no other program writes it)
and the encrypted format, which authenticates every chunk that is resumed.
Guarantees:

- at most one partial per (area, path, account), named by a digest of that
  key, with a small JSON sidecar saying whose it is and since when;
- an upload in progress gets such a sidecar once it is large enough for a
  writer thread of its own (``pipeline``), so that a crash leaves it
  resumable; a smaller one has none and is removed by the sweep after a
  crash (a file made and removed for every small upload would cost more
  than resuming it saves);
- a partial is taken by a rename made while holding its lock, so two
  sessions, threads or processes never resume the same one;
- a partial older than its lifetime is never offered again and is swept;
- partials live in ``staging/``, never under ``areas/``: no listing shows
  them and none ever counts as a version.

Layout of ``staging/``::

    <file id>.part [, <file id>.json]   an upload being written (locked)
    resume-<key>.part, resume-<key>.json  a partial waiting to be resumed
    <random>.new                         an upload being created (locked)

A writer holds an exclusive ``flock`` on its file for as long as it has it
open; the lock dies with the process, which is how a sweep tells a live
upload from the leftover of a crash.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from typing import BinaryIO

from .errors import StorageError
from .fileformat import read_header

logger = logging.getLogger(__name__)

RESUME_PREFIX = "resume-"
DEFAULT_LIFETIME = dt.timedelta(hours=24)


@dataclasses.dataclass(frozen=True)
class PartialKey:
    """Whose partial upload: one account's upload to one path of one area."""

    area: str
    path: str
    account: str

    @property
    def token(self) -> str:
        text = json.dumps([self.area, self.path, self.account], ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


def lock(raw: BinaryIO | int, *, wait: bool = False) -> bool:
    """Take the exclusive lock of an open staging file; False if held."""
    fd = raw if isinstance(raw, int) else raw.fileno()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def whole_chunk_offset(raw: BinaryIO) -> int:
    """Plaintext bytes held in complete chunks: where an upload resumes.

    Reads only the header and the file size; the chunks are authenticated
    when the upload is actually resumed.
    """
    header = read_header(raw)
    body = raw.seek(0, os.SEEK_END) - header.length
    return max(0, body // header.stride) * header.chunk_size


def cut_to_whole_chunks(raw: BinaryIO) -> None:
    """Drop a torn (or final) trailing chunk so that the file is resumable."""
    header = read_header(raw)
    body = raw.seek(0, os.SEEK_END) - header.length
    raw.truncate(header.length + max(0, body // header.stride) * header.stride)
    raw.seek(0)


class Partials:
    """The partial uploads in one staging folder."""

    def __init__(
        self, staging: Path, lifetime: dt.timedelta = DEFAULT_LIFETIME
    ) -> None:
        if lifetime <= dt.timedelta(0):
            raise ValueError("lifetime must be positive")
        self.staging = staging
        self.lifetime = lifetime

    # --- uploads in progress

    def note(self, staged: Path, key: PartialKey, *, at: dt.datetime) -> None:
        """Say whose upload ``staged`` is, so a crash leaves it resumable."""
        self._write_sidecar(staged.with_suffix(".json"), key, at)

    def forget(self, staged: Path) -> None:
        """An upload was committed or thrown away: drop its sidecar."""
        staged.with_suffix(".json").unlink(missing_ok=True)

    def keep(self, staged: Path, key: PartialKey, *, at: dt.datetime) -> None:
        """Turn the (locked, flushed) upload ``staged`` into the partial of
        ``key``, replacing an older one."""
        part, sidecar = self._files(key)
        self._write_sidecar(sidecar, key, at)
        os.replace(staged, part)
        self.forget(staged)
        logger.info("partial upload kept token=%s", key.token)

    # --- partials

    def offset(self, key: PartialKey, *, at: dt.datetime) -> int | None:
        """Where the partial of ``key`` resumes, or None if there is none."""
        part, sidecar = self._files(key)
        if not self._is_live(sidecar, at):
            return None
        try:
            with part.open("rb") as raw:
                return whole_chunk_offset(raw)
        except FileNotFoundError:
            return None
        except StorageError:
            logger.warning("partial upload unreadable token=%s", key.token)
            return None

    def take(self, key: PartialKey, *, at: dt.datetime) -> tuple[Path, BinaryIO] | None:
        """Claim the partial of ``key``: its new staging name and the file,
        open ``r+b`` and locked. None if there is none to take."""
        part, sidecar = self._files(key)
        if not self._is_live(sidecar, at):
            return None
        try:
            raw = part.open("r+b")
        except FileNotFoundError:
            return None
        try:
            if not lock(raw):
                raw.close()
                return None  # another session is taking it right now
            staged = self.staging / f"{read_header(raw).file_id.hex()}.part"
            os.rename(part, staged)
        except FileNotFoundError:
            raw.close()
            return None
        except StorageError:
            raw.close()
            self.discard(key)  # not even a header: nothing to resume
            raise
        except BaseException:
            raw.close()
            raise
        sidecar.unlink(missing_ok=True)  # the resumed upload notes itself anew
        return staged, raw

    def discard(self, key: PartialKey) -> None:
        part, sidecar = self._files(key)
        part.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)

    def sidecar_key(self, staged: Path) -> PartialKey | None:
        """The key an upload in progress was noted under, if any."""
        data = _read_json(staged.with_suffix(".json"))
        return None if data is None else _key_of(data)

    # --- sweeping

    def sweep(self, *, at: dt.datetime, grace: dt.timedelta) -> int:
        """Remove expired partials and stray files; return how many."""
        removed = 0
        for entry in sorted(self.staging.iterdir()):
            if entry.name.startswith(RESUME_PREFIX) and entry.suffix == ".part":
                sidecar = entry.with_suffix(".json")
                if not self._is_live(sidecar, at) and _unlink_unlocked(entry):
                    sidecar.unlink(missing_ok=True)
                    removed += 1
            elif not entry.exists() or _age(entry, at) < grace:
                continue
            elif entry.suffix == ".new" and _unlink_unlocked(entry):
                removed += 1
            elif entry.suffix in (".json", ".tmp") and not _has_part(entry):
                entry.unlink(missing_ok=True)
        if removed:
            logger.info("partial uploads swept removed=%d", removed)
        return removed

    def orphans(self, *, at: dt.datetime, grace: dt.timedelta) -> Iterator[Path]:
        """Uploads in progress whose writer is gone (a crash), each locked
        for the caller while it decides: settle, keep or remove."""
        for entry in sorted(self.staging.glob("*.part")):
            if entry.name.startswith(RESUME_PREFIX) or _age(entry, at) < grace:
                continue
            try:
                fd = os.open(entry, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                if lock(fd) and entry.exists():
                    yield entry
            finally:
                os.close(fd)

    # --- helpers

    def _files(self, key: PartialKey) -> tuple[Path, Path]:
        stem = self.staging / f"{RESUME_PREFIX}{key.token}"
        return stem.with_suffix(".part"), stem.with_suffix(".json")

    def _is_live(self, sidecar: Path, at: dt.datetime) -> bool:
        data = _read_json(sidecar)
        if data is None:
            return False
        try:
            since = dt.datetime.fromisoformat(str(data["since"]))
        except (KeyError, ValueError):
            return False
        return since.tzinfo is not None and at - since < self.lifetime

    def _write_sidecar(self, sidecar: Path, key: PartialKey, at: dt.datetime) -> None:
        data = {**dataclasses.asdict(key), "since": at.astimezone(dt.UTC).isoformat()}
        temporary = sidecar.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        os.replace(temporary, sidecar)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _key_of(data: dict[str, Any]) -> PartialKey | None:
    area, path, account = (data.get(name) for name in ("area", "path", "account"))
    if not (isinstance(area, str) and isinstance(path, str)):
        return None
    if not (isinstance(account, str) and area and path and account):
        return None
    return PartialKey(area, path, account)


def _age(path: Path, at: dt.datetime) -> dt.timedelta:
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return dt.timedelta(0)
    return at - dt.datetime.fromtimestamp(mtime, dt.UTC)


def _unlink_unlocked(path: Path) -> bool:
    """Remove ``path`` unless a live writer holds its lock."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        if not lock(fd):
            return False
        path.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def _has_part(sidecar: Path) -> bool:
    stem = sidecar.name.split(".", 1)[0]
    return (sidecar.parent / f"{stem}.part").exists()


__all__ = [
    "DEFAULT_LIFETIME",
    "RESUME_PREFIX",
    "PartialKey",
    "Partials",
    "cut_to_whole_chunks",
    "lock",
    "whole_chunk_offset",
]
