"""Where things live under the data root, and the moves between places.

Trusts: ``censusdrop.server.names`` to have checked every path component
(these checks are a second line of defence). Guarantees: every path handed
out lies below the data root, inside the area it names.

Layout::

    areas/<area>/<path>      current files (encrypted), folders as folders
    versions/<area>/<id>     earlier versions, by version id
    staging/                 uploads in progress and partials, never listed
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

from .crypto import read_header
from .errors import NotFound
from .errors import StorageError
from .errors import WrongKind

logger = logging.getLogger(__name__)

FOLDERS = ("areas", "versions", "staging")


class Layout:
    """The folders of one data root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.staging = root / "staging"

    def create(self) -> None:
        for name in FOLDERS:
            (self.root / name).mkdir(parents=True, exist_ok=True, mode=0o700)

    def area_dir(self, area: str) -> Path:
        if not area or "/" in area or area in (".", ".."):
            raise ValueError(f"bad area {area!r}")
        return self.root / "areas" / area

    def local(self, area: str, path: str) -> Path:
        # Components were checked by names.normalize_path; refuse anything
        # that could still climb out, as a second line of defence.
        parts = [part for part in path.split("/") if part]
        if any(part in (".", "..") or "\\" in part or "\0" in part for part in parts):
            raise ValueError(f"bad path {path!r}")
        return self.area_dir(area).joinpath(*parts)

    def existing(self, area: str, path: str) -> Path:
        local = self.local(area, path)
        if local.is_symlink() or not local.exists():
            raise NotFound(f"{path or '/'} does not exist")
        return local

    def check_target(self, area: str, path: str) -> Path:
        """The place a file can be written at ``path``; refuse if none."""
        target = self.local(area, path)
        if target.is_dir():
            raise WrongKind(f"{path} is a folder")
        if not target.parent.is_dir():
            raise NotFound(f"folder of {path} does not exist")
        return target

    def blob(self, relative: str) -> Path:
        """A version's file from its ``index.blob_of`` location."""
        return self.root.joinpath(*relative.split("/"))

    def shelve(self, area: str, local: Path) -> None:
        """Move a file that stopped being current into ``versions/``."""
        try:
            name = header_id(local)
        except StorageError:
            name = f"unreadable-{uuid.uuid4().hex}"
            logger.error("unreadable file shelved area=%s as=%s", area, name)
        keep = self.root / "versions" / area / name
        keep.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if keep.exists():
            local.unlink()  # a copy of a version that is already kept
        else:
            os.rename(local, keep)
        fsync_dir(keep.parent)


def header_id(local: Path) -> str:
    """The file id in the header of an encrypted file, as hex."""
    with local.open("rb") as raw:
        return read_header(raw).file_id.hex()


def header_round(local: Path) -> str | None:
    """The round key named in the header of an encrypted file; None if the
    file cannot be read or is not one."""
    try:
        with local.open("rb") as raw:
            return read_header(raw).round_name
    except (OSError, StorageError):
        return None


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
