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
- a command line not finished ``line_timeout`` seconds after its first
  byte gets 421 and the session ends (a client dribbling bytes); so does a
  TLS handshake, without the reply;
- passwords are checked off the event loop, the reply to every failed login
  is the same, and the password never reaches a log line; when the database
  cannot count a failure, the login is refused with 421;
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

import hashlib
import logging
import uuid
from concurrent.futures import Future
from typing import Any

from pyftpdlib.handlers import TLS_FTPHandler

from censusdrop.audit import events
from censusdrop.audit.events import AuditEvent
from censusdrop.server import names
from censusdrop.server.accounts import Account
from censusdrop.server.accounts import LoginOutcome
from censusdrop.server.accounts import LoginResult
from censusdrop.server.authorizers import SessionAuthorizer
from censusdrop.server.authorizers import _NoLogin
from censusdrop.server.datachannel import CensusDTPHandler
from censusdrop.server.db import outage_of
from censusdrop.server.filesystem import AccountView
from censusdrop.server.filesystem import CensusFS
from censusdrop.server.filesystem import WindowClosed
from censusdrop.server.services import Services
from censusdrop.server.transfers import TransferCommands

logger = logging.getLogger(__name__)

LOGIN_FAILED_REPLY = "530 登录失败：用户名或密码错误，或账号暂不可用。"
TLS_REQUIRED_REPLY = "530 请先使用 AUTH TLS 建立加密连接（需要显式 FTPS）。"
PROT_REQUIRED_REPLY = "521 数据连接必须加密：请先发送 PBSZ 0 和 PROT P。"
DATABASE_DOWN_REPLY = "421 服务器数据库暂时无法使用，请稍后再登录。"
LINE_TIMEOUT_REPLY = "421 命令发送过慢：一行命令未在规定时间内发完，连接已关闭。"

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


class CensusHandler(TransferCommands):
    """One FTPS session. Configured per server by ``make_handler``."""

    services: Services
    # pyftpdlib's own state, declared for the type checker.
    _in_buffer: list[bytes]
    ac_in_buffer: bytes
    _restart_position: int
    dtp_handler = CensusDTPHandler
    abstracted_fs = CensusFS
    tls_control_required = True
    line_timeout = 30  # seconds to finish a command line once begun
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
        self._paused = False
        self._line_clock: Any = None  # runs while a command line is incomplete
        self._cut_off = False
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

    def secure_connection(self, ssl_context: Any) -> None:
        super().secure_connection(ssl_context)
        # The handshake is timed like a command line: dribbled, it would
        # otherwise hold the session until the idle timeout.
        if not self._closed:
            self._stop_line_clock()
            self._line_clock = self.ioloop.call_later(
                self.line_timeout, self._line_too_slow, _errback=self.handle_error
            )

    def handle_ssl_established(self) -> None:
        self._stop_line_clock()
        sock = self.socket
        self.audit(
            events.TLS,
            details={
                "version": sock.get_protocol_version_name(),
                "cipher": sock.get_cipher_name(),
            },
        )

    # --- reading commands

    def handle_read(self) -> None:
        super().handle_read()
        self._watch_line()

    def _watch_line(self) -> None:
        """Time a command line from its first byte to its CRLF: the idle
        timer alone lets a client keep a session by dribbling bytes."""
        if self._cut_off or self._ssl_accepting:  # a handshake is timed apart
            return
        unfinished = bool(self._in_buffer) or self._discarding
        if unfinished and self._line_clock is None and not self._closed:
            self._line_clock = self.ioloop.call_later(
                self.line_timeout, self._line_too_slow, _errback=self.handle_error
            )
        elif not unfinished:
            self._stop_line_clock()

    def _stop_line_clock(self) -> None:
        if self._line_clock is not None:
            self._line_clock.cancel()
            self._line_clock = None

    def _line_too_slow(self) -> None:
        self._line_clock = None
        if self._paused:  # not reading now: the client is not to blame
            self._watch_line()
            return
        what = "TLS handshake" if self._ssl_accepting else "command line"
        logger.warning(
            "%s refused: %s not finished within %ss",
            self._prefix(),
            what,
            self.line_timeout,
        )
        self.audit(
            events.REFUSED,
            events.DENIED,
            details={"rule": "line_timeout", "seconds": self.line_timeout},
        )
        if self._ssl_accepting:  # no channel to reply on yet
            self.close()
            return
        self._in_buffer, self._in_buffer_len = [], 0
        self._cut_off = True  # nothing more is read as a command
        self.respond(LINE_TIMEOUT_REPLY, logfun=logger.info)
        self.close_when_done()

    def close(self) -> None:
        self._stop_line_clock()
        super().close()

    def collect_incoming_data(self, data: bytes) -> None:
        if self._discarding or self._cut_off:
            return
        super().collect_incoming_data(data)
        if not self._in_buffer and self._last_response.startswith("500"):
            # pyftpdlib flushed an over-long line; drop the rest of it too.
            self._discarding = True

    def found_terminator(self) -> None:
        raw = b"".join(self._in_buffer)
        self._in_buffer, self._in_buffer_len = [], 0
        self._stop_line_clock()
        if self._cut_off:
            return
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
        except Exception as exc:
            if (outage := outage_of(exc)) is not None:
                self._login_unavailable(outage)
                return
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

    def _login_unavailable(self, reason: str) -> None:
        # Failures could not be counted, so no guess is allowed either.
        logger.error(
            "%s login refused: database unavailable: %s", self._prefix(), reason
        )
        self.audit(
            events.REFUSED,
            events.DENIED,
            details={"rule": "database_unavailable", "command": "PASS"},
        )
        self.username = ""
        self.respond(DATABASE_DOWN_REPLY)
        self.close_when_done()

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

    def __repr__(self) -> str:
        # pyftpdlib formats a handler into each of its debug lines, logged
        # or not (several per transfer: 7% of the loop's time on small
        # files): the long form only while they are logged.
        if getattr(self, "_log_debug", False):
            return str(super().__repr__())
        return f"<{type(self).__name__} {self.session_id}>"

    __str__ = __repr__

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
        "line_timeout": server.line_timeout,
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


def _name_digest(name: str) -> dict[str, str]:
    # An unknown name may be a password typed into the wrong field: keep
    # only a digest that can match a name an auditor already suspects.
    return {
        "name_sha256": hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()[:16]
    }
