"""The data channel: TLS session reuse, and uploads committed only when whole.

Trusts nothing about the peer of a data connection. Guarantees that no
byte of a file moves on a data connection that did not resume the control
connection's TLS session (when required), that an upload is committed only
after a clean TLS close with the client still present, and that a refused or
broken transfer is never answered 226.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import sys
from typing import Any

from OpenSSL import SSL
from pyftpdlib.handlers import TLS_DTPHandler

from censusdrop.audit import events
from censusdrop.server import names
from censusdrop.server.storage.errors import IntegrityError
from censusdrop.server.storage.errors import QuotaExceeded
from censusdrop.server.storage.store import NoSpace
from censusdrop.server.storage.store import StorageError
from censusdrop.server.storage.store import Upload

logger = logging.getLogger(__name__)

TLS_REUSE_REPLY = (
    "522 数据连接必须复用控制连接的 TLS 会话（请在客户端启用 TLS 会话复用）。"
)


class CensusDTPHandler(TLS_DTPHandler):  # type: ignore[misc]
    """Data channel that resumes the control channel's TLS session (when
    required) and commits uploads only after a clean TLS close."""

    transfer_finished: bool
    session_reuse_required = True

    def send(self, data: bytes) -> int:
        # pyftpdlib pushes a file's first bytes as soon as the data channel
        # exists; SSL_write would then finish the handshake by itself and
        # send them before handle_ssl_established could refuse. Send
        # nothing (the bytes stay queued) until the handshake is over.
        if self._ssl_accepting:
            return 0
        return int(super().send(data))

    def handle_ssl_established(self) -> None:
        # Nothing has been sent or accepted yet: initiate_send waits for
        # the handshake, and reads go to the handshake until it is over.
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
        if not isinstance(error, NoSpace | IntegrityError | QuotaExceeded):
            super().handle_error()
            return
        handle = self.file_obj
        if isinstance(handle, Upload):
            handle.discard()
        if isinstance(error, IntegrityError):
            self.cmd_channel.integrity_failed(getattr(handle, "name", None), error)
        self.transfer_finished = False
        if isinstance(error, QuotaExceeded):
            reply = QUOTA_REPLY
        elif isinstance(error, NoSpace):
            reply = NO_SPACE_REPLY
        else:
            reply = DAMAGED_REPLY
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


QUOTA_REPLY = (
    "552 本地区的存储配额已满，文件未保存，原有文件不受影响；"
    "请删除不需要的文件或联系省普查办。"
)
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


def session_reused(sock: Any) -> bool:
    """Whether a TLS connection resumed an earlier session.

    pyOpenSSL has no public call for this; its bindings carry OpenSSL's
    SSL_session_reused, which is what we ask.
    """
    from OpenSSL._util import lib as openssl

    if not isinstance(sock, SSL.Connection):
        return False
    return bool(openssl.SSL_session_reused(sock._ssl))
