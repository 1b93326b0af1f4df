"""Intake from carriers: a folder tree (a USB drive, a decrypted carrier)
brought into an area through the storage layer, like an upload.

Trusts nothing in the source tree. Guarantees:

- only regular files and folders are taken, never followed links, devices,
  FIFOs or sockets; a name ``censusdrop.server.names`` refuses is skipped
  (with the folder below it), as is a name reserved for the server;
- every file is encrypted, versioned and committed atomically, exactly as
  an FTP upload; a file whose SHA-256 equals the current version's is not
  versioned again, so running an import twice changes nothing;
- every skip is reported with its reason, none is silent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from censusdrop.server import names

from .errors import AlreadyExists
from .errors import StorageError
from .errors import WrongKind
from .store import Storage
from .streams import COPY_CHUNK
from .streams import VersionInfo

Progress = Callable[[int], None]


@dataclasses.dataclass(frozen=True)
class Item:
    """A folder or regular file of the source, and where it goes."""

    source: Path
    target: str
    is_dir: bool
    size: int


@dataclasses.dataclass(frozen=True)
class Skipped:
    """Something of the source left out, and why (for the operator)."""

    source: str
    reason: str


@dataclasses.dataclass
class IntakeReport:
    imported: list[VersionInfo] = dataclasses.field(default_factory=list)
    unchanged: list[str] = dataclasses.field(default_factory=list)
    folders: int = 0
    skipped: list[Skipped] = dataclasses.field(default_factory=list)


def survey(
    source: Path, reserved: frozenset[str] = frozenset()
) -> tuple[list[Item], list[Skipped]]:
    """What of ``source`` can be imported, parents before children."""
    items: list[Item] = []
    skipped: list[Skipped] = []
    _survey(source, [], reserved, items, skipped)
    return items, skipped


def bring_in(
    storage: Storage,
    area: str,
    items: list[Item],
    account: str,
    progress: Progress | None = None,
) -> IntakeReport:
    """Create the folders and import the files of ``items`` into ``area``."""
    progress = progress or _quiet
    report = IntakeReport()
    failed: list[str] = []  # targets whose folder could not be made
    for item in items:
        if any(item.target.startswith(prefix + "/") for prefix in failed):
            progress(item.size)
            continue
        try:
            if item.is_dir:
                report.folders += _make_folder(storage, area, item.target)
            else:
                _import_file(storage, area, item, account, report, progress)
        except (OSError, StorageError) as exc:
            reason = _why(exc)
            report.skipped.append(Skipped(str(item.source), reason))
            if item.is_dir:
                failed.append(item.target)
    return report


def file_digest(source: Path, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    with open_source(source) as raw:
        while chunk := raw.read(COPY_CHUNK):
            digest.update(chunk)
            (progress or _quiet)(len(chunk))
    return digest.hexdigest()


def open_source(source: Path) -> BinaryIO:
    """Open a source file for reading without following a link."""
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    return os.fdopen(fd, "rb")


def _survey(
    folder: Path,
    parents: list[str],
    reserved: frozenset[str],
    items: list[Item],
    skipped: list[Skipped],
) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as exc:
        skipped.append(Skipped(str(folder), f"unreadable folder: {exc.strerror}"))
        return
    for entry in entries:
        path = Path(entry.path)
        reason, name = _refusal(entry, len(parents), reserved)
        if reason is not None:
            skipped.append(Skipped(str(path), reason))
            continue
        target = "/".join([*parents, name])
        if entry.is_dir(follow_symlinks=False):
            items.append(Item(path, target, True, 0))
            _survey(path, [*parents, name], reserved, items, skipped)
        else:
            size = entry.stat(follow_symlinks=False).st_size
            items.append(Item(path, target, False, size))


def _refusal(
    entry: os.DirEntry[str], depth: int, reserved: frozenset[str]
) -> tuple[str | None, str]:
    """Why ``entry`` is left out (None if it is not), and its stored name."""
    if entry.is_symlink():
        return "symbolic link (not followed)", entry.name
    try:
        mode = entry.stat(follow_symlinks=False).st_mode
    except OSError as exc:
        return f"unreadable: {exc.strerror}", entry.name
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        return f"special file ({_kind(mode)})", entry.name
    try:
        name = names.check_component(entry.name)
    except names.NameRefused as exc:
        return f"name refused ({exc.rule}): {exc.reason}", entry.name
    if depth >= names.MAX_DEPTH:
        return f"too deep (more than {names.MAX_DEPTH} levels)", name
    if depth == 0 and name in reserved:
        return "name reserved for the server's own reports", name
    return None, name


def _make_folder(storage: Storage, area: str, target: str) -> int:
    try:
        storage.mkdir(area, target)
    except AlreadyExists:
        if storage.stat(area, target).is_dir:
            return 0
        raise WrongKind(f"a file named {target} is already there") from None
    return 1


def _import_file(
    storage: Storage,
    area: str,
    item: Item,
    account: str,
    report: IntakeReport,
    progress: Progress,
) -> None:
    current = storage.current_version(area, item.target)
    if current is not None and current.size == item.size:
        if file_digest(item.source, progress) == current.sha256:
            report.unchanged.append(item.target)
            return
        progress = _quiet  # its bytes were counted while comparing
    upload = storage.begin_upload(area, item.target, account)
    try:
        with open_source(item.source) as raw:
            while chunk := raw.read(COPY_CHUNK):
                upload.write(chunk)
                progress(len(chunk))
        report.imported.append(upload.commit())
    finally:
        upload.close()


def _quiet(count: int) -> None:
    """Progress that is not reported."""


def _why(exc: OSError | StorageError) -> str:
    if isinstance(exc, OSError):
        return f"unreadable: {exc.strerror or exc}"
    return f"not imported: {exc}"


def _kind(mode: int) -> str:
    kinds = {
        stat.S_ISFIFO: "FIFO",
        stat.S_ISSOCK: "socket",
        stat.S_ISCHR: "character device",
        stat.S_ISBLK: "block device",
    }
    return next((name for test, name in kinds.items() if test(mode)), "unknown")


__all__ = [
    "IntakeReport",
    "Item",
    "Skipped",
    "bring_in",
    "survey",
]
