"""FTP commands that move file bytes: RETR, STOR/APPE with resume, SIZE.

Every transfer starts only after its audit record is durable: the file is
opened (a resumed upload checked again) on a worker thread, the start
record is committed once that is done, and no byte moves before both are;
a transfer's end is recorded with its bytes, version and SHA-256, and a
reviewer's download goes onto the custody ledger.

A binary download is not hashed while it is sent from offset 0: when it
ends complete, the version's SHA-256 from the index is the digest of what
it served (``details.digest_source`` "index"; see ``Download``). One that
resumed at an offset is hashed as it is sent; one cut short has the bytes
it sent read again and hashed on a worker thread, and its end record is
written then ("computed"): it may follow later records of its session in
the chain, its time being the end of the transfer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from concurrent.futures import Future
from typing import Any

from pyftpdlib.exceptions import _FileReadWriteError
from pyftpdlib.filesystems import FilesystemError
from pyftpdlib.handlers import TLS_FTPHandler
from pyftpdlib.utils import strerror

from censusdrop.audit import events
from censusdrop.audit.events import AuditEvent
from censusdrop.server import names
from censusdrop.server.custody import ReviewerDownload
from censusdrop.server.custody import record_off_loop
from censusdrop.server.datachannel import DAMAGED_REPLY
from censusdrop.server.datachannel import NO_SPACE_REPLY
from censusdrop.server.datachannel import PARTIAL_DAMAGED_REPLY
from censusdrop.server.datachannel import QUOTA_REPLY
from censusdrop.server.datachannel import SEND_BUDGET
from censusdrop.server.datachannel import resume_refused_reply
from censusdrop.server.db import outage_of
from censusdrop.server.filesystem import CannotResume
from censusdrop.server.filesystem import Damaged
from censusdrop.server.filesystem import KeysUnavailable
from censusdrop.server.filesystem import NoRoom
from censusdrop.server.filesystem import OverQuota
from censusdrop.server.storage.store import Download
from censusdrop.server.storage.store import Upload
from censusdrop.server.storage.streams import Served

logger = logging.getLogger(__name__)

AUDIT_DOWN_REPLY = "451 审计日志暂时无法记录，为安全起见本次传输被拒绝，请稍后重试。"
DATABASE_DOWN_REPLY = "451 服务器数据库暂时无法使用，本次传输未进行，请稍后重试。"
KEYS_DOWN_REPLY = (
    "451 服务器加密密钥暂时无法读取，本次传输未进行，已记录并通知管理员，请稍后重试。"
)


class TransferCommands(TLS_FTPHandler):  # type: ignore[misc]
    """The transfer half of ``CensusHandler`` (see there)."""

    _restart_position: int  # pyftpdlib's, declared for the type checker

    def ftp_RETR(self, file: str) -> None:
        self._start(events.DOWNLOAD_START, file, "rb", 0)

    def ftp_STOR(self, file: str, mode: str = "w") -> None:
        rest, self._restart_position = self._restart_position, 0
        if rest and not self._can_resume_at(file, rest):
            return
        # Opened on a worker thread like downloads: a new upload reads the
        # index and the quota, and pyftpdlib would answer any refusal 550.
        opening = "ab" if "a" in mode else "r+b" if rest else "wb"
        details = {"resume_at": rest} if rest else {}
        self._start(events.UPLOAD_START, file, opening, rest, details)

    def push_dtp_data(
        self,
        data: Any,
        isproducer: bool = False,
        file: Any = None,
        cmd: str | None = None,
    ) -> None:
        if isproducer and isinstance(file, Download) and self._current_type != "a":
            data = DownloadProducer(file)
        super().push_dtp_data(data, isproducer, file, cmd)

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

    def _start(
        self,
        action: str,
        file: str,
        mode: str,
        rest: int,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Open the file on a worker thread, then commit the transfer's
        start record; the transfer starts on the loop once the record is
        durable, so no byte moves before it is.

        One after the other, not side by side: both steps are mostly
        Python, and run at once they only take turns at the GIL (a small
        transfer started 0.2-0.3 ms later that way, for 10% more CPU).
        """
        event = self._event(action, events.OK, path=file, details=details or {})
        self._pause()
        bridge, audit = self.services.bridge, self.services.audit
        ready = functools.partial(self._ready, file, mode, rest)

        def record(opened: Future[Any]) -> None:
            # Where the opening ended (a worker thread), failed or not: a
            # refusal is recorded after the start, as an access attempted.
            audit.submit_durable(
                event, lambda error: bridge.post(lambda: ready(error, opened))
            )

        opening = bridge.submit(lambda: self.fs.prepare(file, mode, rest), io=True)
        opening.add_done_callback(record)

    def _ready(
        self,
        file: str,
        mode: str,
        rest: int,
        error: BaseException | None,
        opened: Future[Any],
    ) -> None:
        if error is None:
            self._opened(file, mode, rest, opened)
            return
        if opened.exception() is None:
            opened.result().close()  # a resumed upload goes back to waiting
        if not self._resume():
            return
        logger.error(
            "%s transfer refused: audit unavailable: %s", self._prefix(), error
        )
        self.respond(AUDIT_DOWN_REPLY)

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
        if isinstance(handle, Download) and self._current_type != "a":
            # Binary: what is sent is the plaintext itself (see Download).
            handle.trust_index()
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
        elif isinstance(exc, KeysUnavailable):
            reply = self._keys_unavailable(file, exc)
        elif isinstance(exc, OSError | FilesystemError):
            reply = f"550 {strerror(exc)}."
        elif (outage := outage_of(exc)) is not None:
            logger.error(
                "%s transfer refused: database unavailable: %s", self._prefix(), outage
            )
            reply = DATABASE_DOWN_REPLY
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

    def _keys_unavailable(self, path: str, exc: KeysUnavailable) -> str:
        """Log and record a key file that failed; the reply to give."""
        logger.error(
            "%s transfer refused: encryption key unavailable: %s path=%s",
            self._prefix(),
            exc.__cause__,
            names.escape_for_log(path),
        )
        self.audit(
            events.INTEGRITY,
            events.FAILED,
            path=path,
            details={"error": str(exc.__cause__), "rule": "key_unavailable"},
        )
        return KEYS_DOWN_REPLY

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
        details: dict[str, Any] = {"seconds": elapsed}
        if isinstance(handle, Download):
            self._download_ended(filename, handle, bytes, completed, details)
        else:
            fields: dict[str, Any] = {"bytes": bytes}
            if isinstance(handle, Upload) and handle.resumed_from:
                details["resumed_from"] = handle.resumed_from
            if isinstance(handle, Upload) and handle.committed is not None:
                committed = handle.committed
                fields.update(version=committed.id, digest=committed.sha256)
            self.audit(
                events.UPLOAD_END if receive else events.DOWNLOAD_END,
                events.OK if completed else events.ABORTED,
                path=filename,
                details=details,
                **fields,
            )
        logger.info(
            "%s transfer cmd=%s path=%s bytes=%d complete=%s seconds=%.3f",
            self._prefix(),
            cmd,
            names.escape_for_log(filename),
            bytes,
            completed,
            elapsed,
        )

    def _download_ended(
        self,
        filename: str,
        handle: Download,
        sent: int,
        completed: bool,
        details: dict[str, Any],
    ) -> None:
        """Record a download's end with the SHA-256 of what it sent: at once
        when that is known, else once the bytes sent have been read again
        on a worker thread (a download from offset 0 cut short)."""
        event = self._event(
            events.DOWNLOAD_END,
            events.OK if completed else events.ABORTED,
            path=filename,
            bytes=sent,
            version=handle.version_id,
            details=details,
        )
        audit = self.services.audit
        served = handle.served(sent, complete=completed)
        if served is not None:
            handle.release()
            audit.emit(_with_digest(event, served))
        else:
            self._record_later(event, handle, sent)
        self._note_custody(filename, handle, sent, completed)

    def _record_later(self, event: AuditEvent, handle: Download, sent: int) -> None:
        audit = self.services.audit

        def record() -> None:
            audit.emit(_with_digest(event, handle.served_again(sent)))

        try:
            self.services.bridge.run(record, _recorded, io=True)
        except RuntimeError:
            record()  # the server is shutting down and its workers are gone

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


class DownloadProducer:
    """A binary download's bytes in ``SEND_BUDGET`` pieces, each a view
    into the block decrypted ahead where there is one (see
    ``CensusDTPHandler.send``). ASCII keeps pyftpdlib's ``FileProducer``:
    it rewrites line ends into a copy."""

    def __init__(self, download: Download) -> None:
        self._download = download

    def more(self) -> bytes | memoryview:
        try:
            return self._download.read_view(SEND_BUDGET)
        except OSError as err:
            raise _FileReadWriteError(err) from err


def _with_digest(event: AuditEvent, served: Served) -> AuditEvent:
    details = {**event.details, "digest_source": served.source}
    return dataclasses.replace(event, digest=served.sha256, details=details)


def _recorded(future: Future[None]) -> None:
    if future.exception() is not None:
        logger.error("download end not recorded", exc_info=future.exception())
