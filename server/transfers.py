"""FTP commands that move file bytes: RETR, STOR/APPE with resume, SIZE.

Every transfer starts only after its audit record is durable; opening and
resuming files runs on a worker thread; a transfer's end is recorded with
its bytes, version and SHA-256, and a reviewer's download goes onto the
custody ledger.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from pyftpdlib.filesystems import FilesystemError
from pyftpdlib.handlers import TLS_FTPHandler
from pyftpdlib.utils import strerror

from censusdrop.audit import events
from censusdrop.server import names
from censusdrop.server.custody import ReviewerDownload
from censusdrop.server.custody import record_off_loop
from censusdrop.server.datachannel import DAMAGED_REPLY
from censusdrop.server.datachannel import NO_SPACE_REPLY
from censusdrop.server.datachannel import PARTIAL_DAMAGED_REPLY
from censusdrop.server.datachannel import QUOTA_REPLY
from censusdrop.server.datachannel import resume_refused_reply
from censusdrop.server.filesystem import CannotResume
from censusdrop.server.filesystem import Damaged
from censusdrop.server.filesystem import NoRoom
from censusdrop.server.filesystem import OverQuota
from censusdrop.server.storage.store import Download
from censusdrop.server.storage.store import Upload

logger = logging.getLogger(__name__)

AUDIT_DOWN_REPLY = "451 审计日志暂时无法记录，为安全起见本次传输被拒绝，请稍后重试。"


class TransferCommands(TLS_FTPHandler):  # type: ignore[misc]
    """The transfer half of ``CensusHandler`` (see there)."""

    _restart_position: int  # pyftpdlib's, declared for the type checker

    def ftp_RETR(self, file: str) -> None:
        self._after_durable(
            events.DOWNLOAD_START, file, lambda: self._open_then(file, "rb", 0)
        )

    def ftp_STOR(self, file: str, mode: str = "w") -> None:
        rest, self._restart_position = self._restart_position, 0
        if rest and not self._can_resume_at(file, rest):
            return
        # Opened on a worker thread like downloads: a new upload reads the
        # index and the quota, and pyftpdlib would answer any refusal 550.
        opening = "ab" if "a" in mode else "r+b" if rest else "wb"
        then = functools.partial(self._open_then, file, opening, rest)
        details = {"resume_at": rest} if rest else {}
        self._after_durable(events.UPLOAD_START, file, then, details)

    def ftp_SIZE(self, path: str) -> None:
        # While this account has an interrupted upload of the path, SIZE
        # says where it resumes: what lftp (put -c) and curl (-C -) ask.
        offset = None
        if self._current_type != "a":
            with contextlib.suppress(FilesystemError):
                offset = self.fs.resumable_offset(path)
        if offset is None:
            TLS_FTPHandler.ftp_SIZE(self, path)
        else:
            self.respond(f"213 {offset}")

    def integrity_failed(self, path: str | None, error: BaseException) -> None:
        """Record a stored file that failed its integrity check."""
        logger.error(
            "%s integrity failure path=%s error=%s",
            self._prefix(),
            names.escape_for_log(path or "-"),
            error,
        )
        self.audit(
            events.INTEGRITY, events.FAILED, path=path, details={"error": str(error)}
        )

    def _can_resume_at(self, file: str, rest: int) -> bool:
        try:
            offset = self.fs.resumable_offset(file)
        except FilesystemError:
            offset = None
        if offset == rest:
            return True
        self.respond(resume_refused_reply(rest, offset))
        return False

    def _open_then(self, file: str, mode: str, rest: int) -> None:
        """Open on a worker thread (authentication and hashing take time),
        then start the transfer on the loop."""
        self._pause()
        self.services.bridge.run(
            lambda: self.fs.prepare(file, mode, rest),
            lambda future: self._opened(file, mode, rest, future),
        )

    def _opened(self, file: str, mode: str, rest: int, future: Future[Any]) -> None:
        if not self._resume():
            if future.exception() is None:
                future.result().close()  # a resumed upload goes back to waiting
            return
        try:
            handle = future.result()
        except Exception as exc:
            self._open_failed(file, mode, rest, exc)
            return
        self.fs.hand_over(file, handle)
        if mode == "rb":
            TLS_FTPHandler.ftp_RETR(self, file)
        else:
            TLS_FTPHandler.ftp_STOR(self, file, "a" if mode == "ab" else "w")

    def _open_failed(self, file: str, mode: str, rest: int, exc: Exception) -> None:
        if isinstance(exc, Damaged):
            self.integrity_failed(file, exc.__cause__ or exc)
            self.respond(DAMAGED_REPLY if mode == "rb" else PARTIAL_DAMAGED_REPLY)
            return
        if isinstance(exc, CannotResume):
            reply = resume_refused_reply(rest, exc.offset)
        elif isinstance(exc, NoRoom):
            reply = NO_SPACE_REPLY
        elif isinstance(exc, OverQuota):
            reply = QUOTA_REPLY
        elif isinstance(exc, OSError | FilesystemError):
            reply = f"550 {strerror(exc)}."
        else:
            logger.error("%s open failed", self._prefix(), exc_info=exc)
            reply = "451 服务器内部错误，请稍后重试。"
        self.respond(reply)
        self.audit(
            events.REFUSED,
            events.DENIED,
            path=file,
            details={
                "command": "RETR" if mode == "rb" else "STOR",
                "reply": int(reply[:3]),
            },
        )

    def _after_durable(
        self,
        action: str,
        path: str,
        then: Callable[[], None],
        details: dict[str, Any] | None = None,
    ) -> None:
        event = self._event(action, events.OK, path=path, details=details or {})
        self._pause()

        def recorded(error: BaseException | None) -> None:
            self.services.bridge.post(lambda: self._durable_done(error, then))

        self.services.audit.submit_durable(event, recorded)

    def _durable_done(
        self, error: BaseException | None, then: Callable[[], None]
    ) -> None:
        if not self._resume():
            return
        if error is not None:
            logger.error(
                "%s transfer refused: audit unavailable: %s", self._prefix(), error
            )
            self.respond(AUDIT_DOWN_REPLY)
            return
        then()

    def log_transfer(
        self,
        cmd: str,
        filename: str,
        receive: bool,
        completed: bool,
        elapsed: float,
        bytes: int,
    ) -> None:
        handle = self.data_channel.file_obj if self.data_channel else None
        fields: dict[str, Any] = {"bytes": bytes}
        details: dict[str, Any] = {"seconds": elapsed}
        if isinstance(handle, Upload) and handle.resumed_from:
            details["resumed_from"] = handle.resumed_from
        if isinstance(handle, Upload) and handle.committed is not None:
            fields.update(version=handle.committed.id, digest=handle.committed.sha256)
        elif isinstance(handle, Download):
            fields.update(version=handle.version_id, digest=handle.served_digest())
        action = events.UPLOAD_END if receive else events.DOWNLOAD_END
        self.audit(
            action,
            events.OK if completed else events.ABORTED,
            path=filename,
            details=details,
            **fields,
        )
        if isinstance(handle, Download):
            self._note_custody(filename, handle, bytes, completed)
        logger.info(
            "%s transfer cmd=%s path=%s bytes=%d complete=%s seconds=%.3f",
            self._prefix(),
            cmd,
            names.escape_for_log(filename),
            bytes,
            completed,
            elapsed,
        )

    def _note_custody(
        self, filename: str, handle: Download, sent: int, completed: bool
    ) -> None:
        """A reviewer's download, complete or not, goes on the custody
        ledger (censusdrop.server.custody), written off the loop."""
        account, view = self.account, self.view
        if account is None or view is None or account.role != "reviewer":
            return
        location = view.area_of(filename)
        item = ReviewerDownload(
            reviewer=account.name,
            prefecture=location.area or "",
            path=location.path,
            version=handle.version_id,
            bytes=sent,
            complete=completed,
            at=self.services.clock.now(),
            session=self.session_id,
        )
        record_off_loop(self.services.custody, item, self.services.bridge)

    # --- logging and the audit trail of commands
