"""The FTPS front door: pyftpdlib's TLS handler, made strict.

Trusts nothing a client sends. Guarantees, on top of pyftpdlib:

- TLS (1.2 or newer) on the control channel before USER, and on every data
  channel (PROT P); commands pipelined behind AUTH TLS in the same packet
  are refused with 503 and the connection closes (the STARTTLS injection
  class), so no plaintext command is ever executed after AUTH;
- only allow-listed commands exist; SITE, STOU, MFMT and (unless enabled)
  active mode do not;
- each command line is decoded per session (UTF-8, else GB18030) and one
  holding a control character is refused with 501, the session going on;
- passwords are checked off the event loop, the reply to every failed login
  is the same, and the password never reaches a log line;
- a download or upload starts only after its audit record is durable; if
  it cannot be recorded, the transfer is refused with a 4xx reply;
- an upload becomes a file only when the data channel closed cleanly (TLS
  close_notify) with the client still there; a dropped connection never
  creates a version, and what it delivered can be resumed (SIZE says
  where; REST then STOR, or APPE, continue it);
- a download of a stored file that fails its integrity check (damaged,
  swapped, rolled back) is refused or stopped with 451, never answered
  226, and recorded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import logging
import socket
import sys
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from OpenSSL import SSL
from pyftpdlib.filesystems import FilesystemError
from pyftpdlib.handlers import TLS_DTPHandler
from pyftpdlib.handlers import TLS_FTPHandler
from pyftpdlib.utils import strerror

from censusdrop.audit import events
from censusdrop.audit.events import AuditEvent
from censusdrop.server import names
from censusdrop.server.accounts import Account
from censusdrop.server.accounts import LoginOutcome
from censusdrop.server.accounts import LoginResult
from censusdrop.server.custody import ReviewerDownload
from censusdrop.server.custody import record_off_loop
from censusdrop.server.filesystem import WRITE_PERMS
from censusdrop.server.filesystem import AccountView
from censusdrop.server.filesystem import CannotResume
from censusdrop.server.filesystem import CensusFS
from censusdrop.server.filesystem import Damaged
from censusdrop.server.filesystem import NoRoom
from censusdrop.server.filesystem import WindowClosed
from censusdrop.server.services import Services
from censusdrop.server.storage.errors import IntegrityError
from censusdrop.server.storage.store import Download
from censusdrop.server.storage.store import NoSpace
from censusdrop.server.storage.store import StorageError
from censusdrop.server.storage.store import Upload

logger = logging.getLogger(__name__)

LOGIN_FAILED_REPLY = "530 登录失败：用户名或密码错误，或账号暂不可用。"
TLS_REQUIRED_REPLY = "530 请先使用 AUTH TLS 建立加密连接（需要显式 FTPS）。"
PROT_REQUIRED_REPLY = "521 数据连接必须加密：请先发送 PBSZ 0 和 PROT P。"
AUDIT_DOWN_REPLY = "451 审计日志暂时无法记录，为安全起见本次传输被拒绝，请稍后重试。"

TLS_REUSE_REPLY = (
    "522 数据连接必须复用控制连接的 TLS 会话（请在客户端启用 TLS 会话复用）。"
)

# Commands a client may use; everything else gets 502 (not implemented).
ALLOWED = frozenset(
    """
    ABOR ALLO APPE AUTH CDUP CWD DELE EPSV FEAT HELP LIST MDTM MKD MLSD MLST
    MODE NLST NOOP OPTS PASS PASV PBSZ PROT PWD QUIT REIN REST RETR RMD RNFR
    RNTO SIZE STAT STOR STRU SYST TYPE USER XCUP XCWD XMKD XPWD XRMD
    """.split()
)
ACTIVE_MODE = frozenset({"PORT", "EPRT"})
# Before login only these run; FEAT and OPTS let clients discover AUTH TLS
# and UTF-8, NOOP keeps a slow typist's connection alive.
LOGIN_SEQUENCE = frozenset(
    {"AUTH", "PBSZ", "PROT", "USER", "PASS", "QUIT", "FEAT", "OPTS", "NOOP"}
)

# Commands whose outcome is worth an audit event of its own.
AUDITED = {
    "CWD": events.CHDIR,
    "XCWD": events.CHDIR,
    "CDUP": events.CHDIR,
    "XCUP": events.CHDIR,
    "DELE": events.DELETE,
    "MKD": events.MKDIR,
    "XMKD": events.MKDIR,
    "RMD": events.RMDIR,
    "XRMD": events.RMDIR,
    "RNTO": events.RENAME,
}


def allowed_commands(base: dict[str, Any], active: bool) -> dict[str, Any]:
    keep = ALLOWED | (ACTIVE_MODE if active else frozenset())
    return {name: spec for name, spec in base.items() if name in keep}


class CensusDTPHandler(TLS_DTPHandler):  # type: ignore[misc]
    """Data channel that resumes the control channel's TLS session (when
    required) and commits uploads only after a clean TLS close."""

    transfer_finished: bool
    session_reuse_required = True

    def handle_ssl_established(self) -> None:
        # Runs before any file byte is sent or accepted: pyftpdlib only
        # moves data once the handshake is over.
        if self.session_reuse_required and not session_reused(self.socket):
            self.cmd_channel.audit(
                events.REFUSED, events.DENIED, details={"rule": "tls_session_reuse"}
            )
            self.producer_fifo.clear()
            self.receive = False
            self._resp = (TLS_REUSE_REPLY, logger.warning)
            self._error = True  # close at once, no TLS shutdown exchange
            self.close()
            return
        super().handle_ssl_established()

    def close(self) -> None:
        if not self._closed and self.receive and isinstance(self.file_obj, Upload):
            self._finish_upload(self.file_obj)
        super().close()

    def handle_error(self) -> None:
        # A full disk while receiving, or a damaged file while sending: stop
        # with a reply that says so, never with a 226 over partial bytes.
        error = sys.exc_info()[1]
        if not isinstance(error, NoSpace | IntegrityError):
            super().handle_error()
            return
        handle = self.file_obj
        if isinstance(handle, Upload):
            handle.discard()
        if isinstance(error, IntegrityError):
            self.cmd_channel.integrity_failed(getattr(handle, "name", None), error)
        self.transfer_finished = False
        reply = NO_SPACE_REPLY if isinstance(error, NoSpace) else DAMAGED_REPLY
        self._resp = (reply, logger.error)
        self.close()

    def _finish_upload(self, upload: Upload) -> None:
        if upload.closed:
            return  # already discarded by handle_error, which replied
        clean = self._closed_cleanly() and not self._client_gave_up()
        if not (self.transfer_finished and clean):
            # Never answer 226 for an upload that was not committed.
            self.transfer_finished = False
            offset = upload.suspend()
            lifetime = upload.staging.partials.lifetime
            self._resp = (interrupted_reply(offset, lifetime), logger.info)
            return
        try:
            upload.commit()
        except NoSpace:
            self.transfer_finished = False
            self._resp = (NO_SPACE_REPLY, logger.error)
        except StorageError:
            logger.exception(
                "upload commit failed path=%s", names.escape_for_log(upload.path)
            )
            self.transfer_finished = False
            self._resp = (
                "451 服务器保存文件失败，原有文件不受影响，请重试。",
                logger.error,
            )

    def _closed_cleanly(self) -> bool:
        sock = self.socket
        if not isinstance(sock, SSL.Connection):
            return False
        return bool(sock.get_shutdown() & SSL.RECEIVED_SHUTDOWN)

    def _client_gave_up(self) -> bool:
        """Whether the client closed or aborted on the control connection
        by the time its data connection ended.

        curl, when it gives up on an upload (--max-time, Ctrl-C), closes the
        data connection with a clean TLS close and then the control one: the
        first alone looks like a complete upload. A client that finished
        waits for the 226 and sends nothing before it.
        """
        control = getattr(self.cmd_channel, "socket", None)
        if not isinstance(control, SSL.Connection):
            return False
        try:
            pending = control.recv(16, socket.MSG_PEEK)
        except (SSL.WantReadError, SSL.WantWriteError):
            return False
        except (SSL.Error, OSError):
            return True  # closed, by close_notify or by the connection
        command = pending.lstrip(b"\xff\xf2\xf4").upper()  # telnet IP, DM
        return not pending or command.startswith(b"ABOR")


NO_SPACE_REPLY = "452 服务器磁盘空间不足，文件未保存，原有文件不受影响。"
DAMAGED_REPLY = (
    "451 服务器上的该文件未通过完整性校验（可能已损坏），传输已中止，"
    "已记录并通知管理员。"
)
PARTIAL_DAMAGED_REPLY = (
    "554 服务器上未完成的上传未通过完整性校验，已删除，请从头重新上传整个文件。"
)


def interrupted_reply(offset: int | None, lifetime: dt.timedelta) -> str:
    """The reply to an upload cut off before a clean end."""
    if offset is None:
        return "426 连接中断，上传未完成，文件未保存。"
    hours = round(lifetime.total_seconds() / 3600)
    return (
        f"426 连接中断，上传未完成，文件未保存；已收到的前 {offset} 字节"
        f"保留 {hours} 小时，可断点续传（REST {offset} 后 STOR，或 APPE）。"
    )


def resume_refused_reply(asked: int, offset: int | None) -> str:
    """The reply to REST ``asked`` before STOR when that cannot resume."""
    if offset is None:
        return (
            f"554 没有可续传的未完成上传，不能从第 {asked} 字节续传；"
            "请不带 REST 重新上传整个文件。"
        )
    return (
        f"554 续传位置不符：该文件未完成的上传只能从第 {offset} 字节续传"
        f"（REST {offset}），不能从第 {asked} 字节续传。"
    )


class CensusHandler(TLS_FTPHandler):  # type: ignore[misc]
    """One FTPS session. Configured per server by ``make_handler``."""

    services: Services
    # pyftpdlib's own state, declared for the type checker.
    _in_buffer: list[bytes]
    ac_in_buffer: bytes
    _restart_position: int
    dtp_handler = CensusDTPHandler
    abstracted_fs = CensusFS
    tls_control_required = True
    tls_data_required = True
    max_login_attempts = 3
    banner = "censusdrop FTPS ready."

    def __init__(self, conn: Any, server: Any, ioloop: Any = None) -> None:
        self.session_id = uuid.uuid4().hex[:16]
        self.account: Account | None = None
        self.view: AccountView | None = None
        self.storage = self.services.storage
        self.encoding = "utf-8"
        self._discarding = False
        super().__init__(conn, server, ioloop)

    # --- events

    def audit(self, action: str, outcome: str = events.OK, **fields: Any) -> None:
        self.services.audit.emit(self._event(action, outcome, **fields))

    def _event(self, action: str, outcome: str, **fields: Any) -> AuditEvent:
        account = self.account
        values: dict[str, Any] = {
            "account": account.name if account else None,
            "role": account.role if account else None,
            "prefecture": account.prefecture if account else None,
            "session": self.session_id,
            "remote": f"{self.remote_ip}:{self.remote_port}",
        }
        values.update(fields)
        return AuditEvent(action=action, outcome=outcome, **values)

    def on_connect(self) -> None:
        self.audit(events.CONNECT)

    def on_logout(self, username: str) -> None:
        self.audit(events.LOGOUT)

    def on_disconnect(self) -> None:
        self.audit(events.DISCONNECT)

    def handle_ssl_established(self) -> None:
        sock = self.socket
        self.audit(
            events.TLS,
            details={
                "version": sock.get_protocol_version_name(),
                "cipher": sock.get_cipher_name(),
            },
        )

    # --- reading commands

    def collect_incoming_data(self, data: bytes) -> None:
        if self._discarding:
            return
        super().collect_incoming_data(data)
        if not self._in_buffer and self._last_response.startswith("500"):
            # pyftpdlib flushed an over-long line; drop the rest of it too.
            self._discarding = True

    def found_terminator(self) -> None:
        raw = b"".join(self._in_buffer)
        self._in_buffer, self._in_buffer_len = [], 0
        if self._discarding:
            self._discarding = False
            return
        if self._idler is not None and not self._idler.cancelled:
            self._idler.reset()
        if any(byte < 32 or byte == 127 for byte in raw):
            self.respond("501 命令中含有控制字符（如 NUL、CR、LF），已拒绝。")
            self.audit(
                events.REFUSED, events.DENIED, details={"rule": "control_character"}
            )
            return
        try:
            line, encoding = names.decode_line(raw)
        except names.NameRefused as exc:
            self.respond(f"501 {exc.reason}")
            self.audit(events.REFUSED, events.DENIED, details={"rule": exc.rule})
            return
        if encoding != "utf-8":
            self.encoding = encoding
        cmd = line.split(" ")[0].upper()
        self.pre_process_command(line, cmd, line[len(cmd) + 1 :])

    def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
        if cmd not in self.proto_cmds and cmd[-4:] not in ("ABOR", "STAT", "QUIT"):
            self.respond("502 不支持该命令。")
            return
        if not self.authenticated and cmd not in LOGIN_SEQUENCE:
            self.respond("530 请先登录。")
            return
        try:
            super().pre_process_command(line, cmd, arg)
        except WindowClosed as exc:
            self.respond(f"550 {exc}")
            self.audit(
                events.REFUSED,
                events.DENIED,
                path=arg,
                details={"rule": "write_window", "command": cmd, "reply": 550},
            )
        except names.NameRefused as exc:
            self.respond(f"553 {exc.reason}")
            self.audit(
                events.REFUSED, events.DENIED, path=arg, details={"rule": exc.rule}
            )

    def process_command(self, cmd: str, *args: Any, **kwargs: Any) -> None:
        if cmd in ("USER", "PASS") and not self._ssl_established:
            self.respond(TLS_REQUIRED_REPLY)
            self.audit(
                events.REFUSED,
                events.DENIED,
                details={"rule": "tls_required", "command": cmd},
            )
            return
        if cmd in ("PASV", "EPSV", "PORT", "EPRT") and not self._prot:
            self.respond(PROT_REQUIRED_REPLY)
            self.audit(
                events.REFUSED,
                events.DENIED,
                details={"rule": "prot_required", "command": cmd},
            )
            return
        super().process_command(cmd, *args, **kwargs)

    # --- TLS

    def ftp_AUTH(self, line: str) -> None:
        if self.ac_in_buffer:
            # Bytes after AUTH in the same packet were sent in plaintext and
            # would otherwise run as if they came over TLS.
            self.ac_in_buffer = b""
            self.respond("503 AUTH 之后不得在同一数据包中附带其他命令，连接已关闭。")
            self.audit(
                events.REFUSED, events.DENIED, details={"rule": "auth_pipelining"}
            )
            self.close_when_done()
            return
        super().ftp_AUTH(line)

    def ftp_PROT(self, line: str) -> None:
        if line.strip().upper() == "C":
            self.respond("536 不允许明文数据连接，请使用 PROT P。")
            self.audit(events.REFUSED, events.DENIED, details={"rule": "prot_clear"})
            return
        super().ftp_PROT(line)

    def ftp_OPTS(self, line: str) -> None:
        option, _, value = line.partition(" ")
        if option.upper() in ("UTF8", "UTF-8"):
            if value.strip().upper() in ("", "ON"):
                self.encoding = "utf-8"
            self.respond("200 UTF-8 文件名已启用。")
            return
        super().ftp_OPTS(line)

    def ftp_FEAT(self, line: str) -> None:
        saved, self.encoding = self.encoding, "utf-8"
        try:
            super().ftp_FEAT(line)
        finally:
            self.encoding = saved

    # --- login

    def ftp_PASS(self, line: str) -> None:
        if self.authenticated:
            self.respond("503 已经登录。")
            return
        if not self.username:
            self.respond("503 请先发送 USER。")
            return
        name, address = self.username, self.remote_ip
        accounts, policy = self.services.accounts, self.services.policy
        at = self.services.clock.now()
        self._pause()
        self.services.bridge.run(
            lambda: policy.login(accounts, name, line, address, at=at),
            lambda future: self._login_decided(name, future),
        )

    def _login_decided(self, name: str, future: Future[LoginResult]) -> None:
        if not self._resume():
            return
        try:
            result = future.result()
        except Exception:
            logger.exception("%s login check failed", self._prefix())
            result = LoginResult(LoginOutcome.BAD_PASSWORD, None)
        if result.ok and result.account is not None:
            self._login_succeeded(result.account)
        else:
            self._login_failed(name, result)

    def _login_succeeded(self, account: Account) -> None:
        prefectures = self.services.prefectures
        own = prefectures.by_code(account.prefecture) if account.prefecture else None
        assigned = [prefectures.by_code(code) for code in account.assigned]
        gate = self.services.policy.gate(account, self.services.clock)
        self.account = account
        self.view = AccountView(account.role, own, assigned, gate)
        if own is not None:
            self.storage.ensure_area(own.code)
        self.authorizer = SessionAuthorizer(self.view)
        self.handle_auth_success("/", "", "Login successful.")
        self.audit(events.LOGIN)

    def _login_failed(self, name: str, result: LoginResult) -> None:
        known = result.account is not None
        self.audit(
            events.LOGIN_FAILED,
            events.DENIED,
            account=name if known else None,
            details={
                "reason": result.outcome.value,
                **({} if known else _name_digest(name)),
            },
        )
        if result.locked_now:
            self.audit(events.LOCKOUT, events.DENIED, account=name)
        self.username = ""
        self.attempted_logins += 1
        self._pause()
        self.ioloop.call_later(
            self.services.settings.security.failed_login_delay,
            self._reply_login_failed,
            _errback=self.handle_error,
        )

    def _reply_login_failed(self) -> None:
        if not self._resume():
            return
        self.respond(LOGIN_FAILED_REPLY)
        if self.attempted_logins >= self.max_login_attempts:
            self.close_when_done()

    # --- transfers (audited durably before the first byte)

    def ftp_RETR(self, file: str) -> None:
        self._after_durable(
            events.DOWNLOAD_START, file, lambda: self._open_then(file, "rb", 0)
        )

    def ftp_STOR(self, file: str, mode: str = "w") -> None:
        rest, self._restart_position = self._restart_position, 0
        if rest and not self._can_resume_at(file, rest):
            return
        then: Callable[[], None]
        if rest or "a" in mode:
            opening = "ab" if "a" in mode else "r+b"
            then = functools.partial(self._open_then, file, opening, rest)
        else:
            then = functools.partial(TLS_FTPHandler.ftp_STOR, self, file, mode)
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

    def log_cmd(self, cmd: str, arg: Any, respcode: int, respstr: str) -> None:
        if cmd == "PASS":
            return
        action = AUDITED.get(cmd)
        denied = respcode >= 400
        if action is None and denied and self.authenticated:
            action = events.REFUSED
        if cmd in ("LIST", "NLST", "MLSD") and not denied:
            action = events.LIST
        if action is not None:
            path = arg[1] if isinstance(arg, tuple) else arg
            self.audit(
                action,
                events.DENIED if denied else events.OK,
                path=str(path) if path else None,
                details={"command": cmd, "reply": respcode},
            )
        if denied:
            logger.warning("%s refused cmd=%s code=%d", self._prefix(), cmd, respcode)

    def logline(self, msg: str, logfun: Any = logger.debug) -> None:
        if not self._log_debug:
            return
        if msg.startswith(("<- PASS", "<- USER")):
            # A password typed into the user field must not reach a log.
            msg = msg[:7] + " ******"
        logfun("%s %s", self._prefix(), names.escape_for_log(msg))

    def log(self, msg: str, logfun: Any = logger.info) -> None:
        logfun("%s %s", self._prefix(), names.escape_for_log(msg))

    def logerror(self, msg: str) -> None:
        logger.error("%s %s", self._prefix(), names.escape_for_log(msg))

    def get_repr_info(
        self, as_str: bool = False, extra_info: dict[str, Any] | None = None
    ) -> Any:
        # pyftpdlib's debug lines show the session; never an unchecked name.
        saved, self.username = self.username, self.account.name if self.account else ""
        try:
            return super().get_repr_info(as_str, extra_info)
        finally:
            self.username = saved

    def _prefix(self) -> str:
        user = self.account.name if self.account else "-"
        return f"{self.remote_ip}:{self.remote_port}-[{user}]-{self.session_id}"

    # --- pausing the session while work runs elsewhere

    def _pause(self) -> None:
        self.del_channel()
        self._paused = True

    def _resume(self) -> bool:
        """Re-register the session; False if it was closed meanwhile."""
        self._paused = False
        if self._closed:
            return False
        self.add_channel()
        return True


class SessionAuthorizer:
    """pyftpdlib's authorizer interface, answered by one session's view."""

    def __init__(self, view: AccountView) -> None:
        self.view = view

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        if self.view.has_perm(perm, path or "/"):
            return True
        # A write refused only for want of an open window: say why, and
        # until or since when, rather than pyftpdlib's bare 550.
        refusal = self.view.write_refusal() if perm in WRITE_PERMS else None
        if refusal is not None:
            raise WindowClosed(refusal)
        return False

    def get_perms(self, username: str) -> str:
        return self.view.perms()

    def get_msg_quit(self, username: str) -> str:
        return "再见。"

    def impersonate_user(self, username: str, password: str) -> None:
        """Sessions run as the server's own user."""

    def terminate_impersonation(self, username: str) -> None:
        """Sessions run as the server's own user."""


class _NoLogin:
    """Authorizer before login: every permission is refused."""

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        return False

    def get_perms(self, username: str) -> str:
        return ""

    def get_msg_quit(self, username: str) -> str:
        return "再见。"

    def impersonate_user(self, username: str, password: str) -> None:
        """Nothing to impersonate."""

    def terminate_impersonation(self, username: str) -> None:
        """Nothing to impersonate."""


def session_reused(sock: Any) -> bool:
    """Whether a TLS connection resumed an earlier session.

    pyOpenSSL has no public call for this; its bindings carry OpenSSL's
    SSL_session_reused, which is what we ask.
    """
    from OpenSSL._util import lib as openssl

    if not isinstance(sock, SSL.Connection):
        return False
    return bool(openssl.SSL_session_reused(sock._ssl))


def make_handler(services: Services) -> type[CensusHandler]:
    """A handler class bound to one server's services and settings.

    pyftpdlib reads options from class attributes, so each server gets its
    own subclass rather than changing the shared one.
    """
    server = services.settings.server
    active = server.allow_active_mode
    attributes: dict[str, Any] = {
        "services": services,
        "authorizer": _NoLogin(),
        "ssl_context": services.ssl_context,
        "timeout": server.idle_timeout,
        "banner": server.banner,
        "passive_ports": list(services.settings.passive_port_range()),
        "masquerade_address": server.masquerade_address or None,
        "permit_foreign_addresses": False,
        "permit_privileged_ports": False,
        "use_sendfile": False,
        "proto_cmds": allowed_commands(TLS_FTPHandler.proto_cmds, active),
        "dtp_handler": type(
            "ServerDTPHandler",
            (CensusDTPHandler,),
            {
                "timeout": server.data_timeout,
                "session_reuse_required": server.tls_session_reuse_required,
            },
        ),
    }
    return type("ServerHandler", (CensusHandler,), attributes)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _name_digest(name: str) -> dict[str, str]:
    # An unknown name may be a password typed into the wrong field: keep
    # only a digest that can match a name an auditor already suspects.
    return {
        "name_sha256": hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()[:16]
    }
