"""What an FTP session sees: a virtual tree mapped onto the storage layer.

Trusts: ``censusdrop.server.names`` to have checked every path component,
and the storage layer to keep each area below its own folder. Guarantees:
a session's paths are pure virtual strings that only ever resolve into the
areas its account may see (a prefecture: its own area as ``/``; a reviewer:
one folder per assigned prefecture under a read-only ``/``), so no ``..``,
absolute path, link or encoding trick can leave them. Permissions are
decided per path by ``AccountView``; refusals explain themselves in Chinese.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat as stat_module
from collections.abc import Iterable
from typing import Any
from typing import Protocol

from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.filesystems import FilesystemError

from censusdrop.config.prefectures import Prefecture
from censusdrop.server import names
from censusdrop.server.storage.errors import IntegrityError
from censusdrop.server.storage.errors import KeyDestroyed
from censusdrop.server.storage.errors import KeyFileError
from censusdrop.server.storage.errors import KeyNotFound
from censusdrop.server.storage.errors import MasterKeyError
from censusdrop.server.storage.errors import QuotaExceeded
from censusdrop.server.storage.store import AlreadyExists
from censusdrop.server.storage.store import Entry
from censusdrop.server.storage.store import NoSpace
from censusdrop.server.storage.store import NotEmpty
from censusdrop.server.storage.store import NotFound
from censusdrop.server.storage.store import ResumeRefused
from censusdrop.server.storage.store import Storage
from censusdrop.server.storage.store import StorageError
from censusdrop.server.storage.store import WrongKind

# Files the server writes into an area (pre-review reports); prefectures may
# read them but never change or remove them.
REPORT_NAMES = frozenset({"预审报告.txt", "预审报告.html"})

READ_PERMS = "elr"
WRITE_PERMS = "adfmw"

logger = logging.getLogger(__name__)


class Refused(FilesystemError):  # type: ignore[misc]
    """An operation the account may not do; the text is for the client."""


class WindowClosed(Refused):
    """A write refused only because no submission or rectification window
    is open; the text says why and since or until when."""


class Gate(Protocol):
    """What the round policy answers for one session, at its clock's now
    (``censusdrop.server.policy.SessionGate``)."""

    def can_see(self, area: str) -> bool:
        """Whether a reviewer may see this assigned prefecture now."""

    def write_refusal(self, area: str) -> str | None:
        """None if the area may be written now, else why not (Chinese)."""


class _OpenGate:
    """No round policy: every assigned area visible, writes always open."""

    def can_see(self, area: str) -> bool:
        return True

    def write_refusal(self, area: str) -> str | None:
        return None


class Damaged(FilesystemError):  # type: ignore[misc]
    """A stored file failed its integrity check (damaged, swapped, rolled
    back); the text is for the client, the cause goes to the audit log."""


class KeysUnavailable(FilesystemError):  # type: ignore[misc]
    """An encryption key file cannot be read or does not authenticate; the
    stored files may be intact. The cause names the file, for the log."""


class NoRoom(FilesystemError):  # type: ignore[misc]
    """The server's disk is full; nothing was changed."""


class OverQuota(FilesystemError):  # type: ignore[misc]
    """The prefecture's area is at its quota; nothing was changed."""


class CannotResume(Refused):
    """No resumable upload at that offset; ``offset`` is where one could
    resume, or None when there is none."""

    def __init__(self, offset: int | None) -> None:
        super().__init__("无法续传")
        self.offset = offset


@dataclasses.dataclass(frozen=True)
class Location:
    """Where a virtual path lands: an area and a path inside it.

    ``area`` is None for the synthetic root of a reviewer's tree.
    """

    area: str | None
    path: str


class AccountView:
    """Maps one account's virtual tree onto areas and decides permissions."""

    def __init__(
        self,
        role: str,
        own: Prefecture | None = None,
        assigned: Iterable[Prefecture] = (),
        gate: Gate | None = None,
    ) -> None:
        self.role = role
        self.own = own
        self.folders = {prefecture.name: prefecture for prefecture in assigned}
        self.gate: Gate = gate or _OpenGate()
        if role == "prefecture" and own is None:
            raise ValueError("a prefecture view needs its prefecture")

    def locate(self, virtual: str) -> Location:
        parts = names.split(virtual)
        if self.own is not None:
            return Location(self.own.code, "/".join(parts))
        if not parts:
            return Location(None, "")
        prefecture = self.folders.get(parts[0])
        if prefecture is None or not self.gate.can_see(prefecture.code):
            raise Refused("文件或目录不存在")
        return Location(prefecture.code, "/".join(parts[1:]))

    def area_of(self, virtual: str) -> Location:
        """Where a path lands, visible now or not (for records of what
        happened, never for access)."""
        parts = names.split(virtual)
        if self.own is not None:
            return Location(self.own.code, "/".join(parts))
        prefecture = self.folders.get(parts[0]) if parts else None
        area = prefecture.code if prefecture is not None else None
        return Location(area, "/".join(parts[1:]))

    def has_perm(self, perm: str, virtual: str) -> bool:
        if perm in READ_PERMS:
            return True
        if self.role != "prefecture" or perm not in WRITE_PERMS:
            return False
        location = self.locate(virtual)
        if location.path == "" and perm in "df":
            return False  # the area's own root
        if location.path in REPORT_NAMES:
            return False
        return self.write_refusal() is None

    def write_refusal(self) -> str | None:
        """Why this account's own area is read-only now (Chinese), or None."""
        return None if self.own is None else self.gate.write_refusal(self.own.code)

    def perms(self) -> str:
        return READ_PERMS + (WRITE_PERMS if self.role == "prefecture" else "")

    def root_entries(self) -> list[Entry]:
        return [
            Entry(name, True, 0, 0.0)
            for name, prefecture in sorted(self.folders.items())
            if self.gate.can_see(prefecture.code)
        ]


class CensusFS(AbstractedFS):  # type: ignore[misc]
    """pyftpdlib's filesystem interface over ``Storage`` and an ``AccountView``.

    pyftpdlib hands this class "filesystem paths"; here they are the same
    normalised virtual paths as the FTP paths, never host paths.
    """

    def __init__(self, root: str, cmd_channel: Any) -> None:
        super().__init__("/", cmd_channel)
        self.view: AccountView = cmd_channel.view
        self.storage: Storage = cmd_channel.storage
        self.account: str = cmd_channel.username
        self._listed: dict[str, Entry] = {}
        self._prepared: tuple[str, Any] | None = None

    # --- path handling: virtual in, virtual out

    def ftpnorm(self, ftppath: str) -> str:
        return names.normalize_path(ftppath, self.cwd)

    def ftp2fs(self, ftppath: str) -> str:
        return self.ftpnorm(ftppath)

    def fs2ftp(self, fspath: str) -> str:
        return fspath

    def validpath(self, path: str) -> bool:
        return True

    def realpath(self, path: str) -> str:
        return path

    # --- queries

    def stat(self, path: str) -> os.stat_result:
        entry = self._listed.pop(path, None) or self._entry(path)
        mode = stat_module.S_IFDIR | 0o755 if entry.is_dir else stat_module.S_IFREG
        if not entry.is_dir:
            mode |= 0o644 if self._writable(path) else 0o444
        mtime = int(entry.mtime)
        return os.stat_result((mode, 0, 0, 1, 0, 0, entry.size, mtime, mtime, mtime))

    lstat = stat

    def isfile(self, path: str) -> bool:
        return self._kind(path) is False

    def isdir(self, path: str) -> bool:
        return self._kind(path) is True

    def islink(self, path: str) -> bool:
        return False

    def lexists(self, path: str) -> bool:
        return self._kind(path) is not None

    def getsize(self, path: str) -> int:
        return self._entry(path).size

    def getmtime(self, path: str) -> float:
        return self._entry(path).mtime

    def listdir(self, path: str) -> list[str]:
        entries = self._list(path)
        prefix = path.rstrip("/")
        self._listed = {f"{prefix}/{entry.name}": entry for entry in entries}
        return [entry.name for entry in entries]

    def listdirinfo(self, path: str) -> list[str]:
        return self.listdir(path)

    def get_user_by_uid(self, uid: int) -> str:
        return "censusdrop"

    def get_group_by_gid(self, gid: int) -> str:
        return "censusdrop"

    # --- changes

    def chdir(self, path: str) -> None:
        if not self.isdir(path):
            raise Refused("目录不存在")
        self.cwd = path

    def mkdir(self, path: str) -> None:
        location = self._in_area(path)
        self._call(self.storage.mkdir, location.area, location.path)

    def rmdir(self, path: str) -> None:
        location = self._in_area(path)
        self._call(self.storage.rmdir, location.area, location.path)

    def remove(self, path: str) -> None:
        location = self._in_area(path)
        self._call(self.storage.remove, location.area, location.path, self.account)

    def rename(self, src: str, dst: str) -> None:
        source, target = self._in_area(src), self._in_area(dst)
        if source.area != target.area:
            raise Refused("不能在不同地区之间移动文件")
        self._call(
            self.storage.rename, source.area, source.path, target.path, self.account
        )

    def open(self, filename: str, mode: str) -> Any:
        prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared[0] == filename:
            return prepared[1]
        return self.prepare(filename, mode, 0)

    # --- slow opening, off the event loop

    def prepare(self, filename: str, mode: str, offset: int) -> Any:
        """Open a download, an upload, an append or a resumed upload.

        These read the index (and the quota), authenticate a partial's
        chunks or a whole file to append to, so the handler runs this on a
        worker thread and passes the result to ``hand_over``.
        """
        location = self._in_area(filename)
        area, path = location.area, location.path
        if mode == "rb":
            handle = self._call(self.storage.open_read, area, path)
        elif offset:
            handle = self._call(
                self.storage.resume_upload, area, path, self.account, offset
            )
        elif mode in ("wb", "ab"):
            handle = self._call(
                self.storage.begin_upload,
                area,
                path,
                self.account,
                append=mode == "ab",
                resumable=True,
            )
        else:
            raise Refused("不支持该打开方式")
        handle.name = filename  # transfer log lines and audit events say it so
        return handle

    def hand_over(self, filename: str, handle: Any) -> None:
        """Make the next ``open(filename)`` return ``handle``."""
        self._prepared = (filename, handle)

    def resumable_offset(self, path: str) -> int | None:
        """Where this account's interrupted upload of ``path`` resumes."""
        if not self.view.has_perm("w", path):
            return None
        location = self.view.locate(path)
        if location.area is None:
            return None
        return self.storage.resumable_offset(location.area, location.path, self.account)

    def chmod(self, path: str, mode: int) -> None:
        raise Refused("不支持修改权限")

    def utime(self, path: str, timeval: float) -> None:
        raise Refused("不支持修改时间")

    def mkstemp(self, *args: Any, **kwargs: Any) -> Any:
        raise Refused("不支持 STOU")

    # --- helpers

    def _writable(self, path: str) -> bool:
        return self.view.has_perm("w", path)

    def _in_area(self, path: str) -> Location:
        location = self.view.locate(path)
        if location.area is None:
            raise Refused("此目录为只读")
        return location

    def _list(self, path: str) -> list[Entry]:
        location = self.view.locate(path)
        if location.area is None:
            return self.view.root_entries()
        return list(self._call(self.storage.list, location.area, location.path))

    def _entry(self, path: str) -> Entry:
        location = self.view.locate(path)
        if location.area is None:
            return Entry("/", True, 0, 0.0)
        if location.path == "" and not self.storage.exists(location.area, ""):
            return Entry(path, True, 0, 0.0)
        entry: Entry = self._call(self.storage.stat, location.area, location.path)
        return entry

    def _kind(self, path: str) -> bool | None:
        try:
            return self._entry(path).is_dir
        except FilesystemError:
            return None

    @staticmethod
    def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except NotFound:
            raise Refused("文件或目录不存在") from None
        except AlreadyExists:
            raise Refused("同名文件或目录已存在") from None
        except NotEmpty:
            raise Refused("目录不为空，请先删除其中的文件") from None
        except WrongKind:
            raise Refused("操作对象类型不符：文件与目录不能互相替代") from None
        except ResumeRefused as exc:
            raise CannotResume(exc.offset) from exc
        except KeyDestroyed as exc:
            # Permanent: the round was purged (crypto-shredded).
            message = "该文件所属验收轮次的材料已按规定销毁，无法读取"
            raise FilesystemError(message) from exc
        except (KeyFileError, KeyNotFound, MasterKeyError) as exc:
            # Before IntegrityError: a damaged key file is not a damaged file.
            raise KeysUnavailable("服务器加密密钥无法读取") from exc
        except IntegrityError as exc:
            raise Damaged("服务器上的文件未通过完整性校验") from exc
        except NoSpace as exc:
            raise NoRoom("服务器磁盘空间不足") from exc
        except QuotaExceeded as exc:
            raise OverQuota("本地区存储配额已满") from exc
        except StorageError as exc:
            logger.error("storage error: %s", exc)
            raise FilesystemError("服务器存储错误，已记录，请联系管理员") from exc
