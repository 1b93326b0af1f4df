"""The data channel: TLS session reuse, and uploads committed only when whole.

Trusts nothing about the peer of a data connection. Guarantees that no
byte of a file moves on a data connection that did not resume the control
connection's TLS session (when required), that an upload is committed only
after a clean TLS close with the client still present, and that a refused or
broken transfer is never answered 226.

An upload's commit (fsync, index row, rename) runs on a worker thread: the
data connection is closed first, the session reads no command until the
commit is over, and only then is the reply (226, or 451/452) sent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import socket
import sys
from concurrent.futures import Future
from typing import Any

from OpenSSL import SSL
from pyftpdlib.handlers import TLS_DTPHandler
from pyftpdlib.ioloop import _ERRNOS_DISCONNECTED
from pyftpdlib.ioloop import AsyncChat

from censusdrop.audit import events
from censusdrop.server import names
from censusdrop.server.db import outage_of
from censusdrop.server.storage.errors import IntegrityError
from censusdrop.server.storage.errors import QuotaExceeded
from censusdrop.server.storage.store import NoSpace
from censusdrop.server.storage.store import StorageError
from censusdrop.server.storage.store import Upload

logger = logging.getLogger(__name__)

# Plaintext taken from the TLS connection in one pass of the event loop:
# several 16 KiB records, so each pass (and each write to the storage
# layer) moves more than one record's worth.
RECEIVE_BUDGET = 256 * 1024
TLS_RECORD = 16 * 1024  # most plaintext one TLS record carries
# Plaintext handed to TLS in one write of a download: sixteen records, so
# each pass of the event loop moves that much.
SEND_BUDGET = 256 * 1024
TRANSFER_COMPLETE = "226 Transfer complete."
COMMIT_FAILED_REPLY = "451 服务器保存文件失败，原有文件不受影响，请重试。"

TLS_REUSE_REPLY = (
    "522 数据连接必须复用控制连接的 TLS 会话（请在客户端启用 TLS 会话复用）。"
)


class CensusDTPHandler(TLS_DTPHandler):  # type: ignore[misc]
    """Data channel that resumes the control channel's TLS session (when
    required) and commits uploads only after a clean TLS close."""

    transfer_finished: bool
    session_reuse_required = True
    ac_in_buffer_size = RECEIVE_BUDGET
    ac_out_buffer_size = SEND_BUDGET

    def __init__(self, sock: socket.socket, cmd_channel: Any) -> None:
        # The last bytes of a transfer and the TLS close_notify are small
        # writes: without this, Nagle's algorithm can hold them back until
        # the peer's delayed ACK. A large download turns it off while its
        # bulk is sent (see _send_view).
        self._tcp = sock
        _set_nodelay(sock, True)
        self._bulk = False
        self._committing = False
        self._after_read: BaseException | None = None
        self._received: bytearray | None = None  # made by the first upload read
        super().__init__(sock, cmd_channel)

    def __repr__(self) -> str:
        # As CensusHandler's: pyftpdlib formats it into every debug line.
        channel = self.cmd_channel
        if getattr(channel, "_log_debug", False):
            return str(super().__repr__())
        return f"<{type(self).__name__} {getattr(channel, 'session_id', '-')}>"

    __str__ = __repr__

    def modify_ioloop_events(self, events: int, logdebug: bool = False) -> None:
        # While the handshake waits for the client, a download's queued
        # bytes would keep the socket in the write set: the loop would
        # spin on a socket that is always writable. Wait for reads only.
        if self._ssl_accepting and not self._ssl_want_write:
            events = self.ioloop.READ
        super().modify_ioloop_events(events, logdebug)

    def recv(self, buffer_size: int) -> Any:
        """One TLS record, then whatever further records are already
        decryptable, up to ``buffer_size`` bytes in all."""
        if self._ssl_accepting or not self._ssl_established:
            return super().recv(buffer_size)
        first = super().recv(min(buffer_size, TLS_RECORD))
        if not first:
            return first
        if self._received is None:
            self._received = bytearray(RECEIVE_BUDGET)
        view = memoryview(self._received)[:buffer_size]
        filled = len(first)
        view[:filled] = first
        while filled < buffer_size:
            # pyOpenSSL allocates what is asked for on each call, and one
            # call returns one record at most: ask for a record's worth.
            wanted = min(buffer_size - filled, TLS_RECORD)
            try:
                got = self.socket.recv_into(view[filled:], wanted)
            except (SSL.WantReadError, SSL.WantWriteError):
                break
            except (SSL.Error, OSError) as exc:
                # The close_notify or an error: dealt with once the bytes
                # before it are written (handle_read_event).
                self._after_read = exc
                break
            if not got:
                break
            filled += got
        return bytes(view[:filled])

    def handle_read_event(self) -> None:
        upload = self.file_obj
        if isinstance(upload, Upload) and not upload.has_room():
            self._wait_for_room(upload)
            return
        super().handle_read_event()
        error, self._after_read = self._after_read, None
        if error is None or self._closed:
            return
        if isinstance(error, SSL.ZeroReturnError) or _is_disconnect(error):
            self.handle_close()
            return
        raise error  # the loop hands it to handle_error

    def _wait_for_room(self, upload: Upload) -> None:
        """Stop reading while the upload's writer thread is behind (the
        disk is slower than the network): writing on would block the event
        loop. The writer thread wakes the loop when it has caught up."""
        self.modify_ioloop_events(0)
        bridge = self.cmd_channel.services.bridge
        upload.when_room(lambda: bridge.post(self._room_again))

    def _room_again(self) -> None:
        if not self._closed:
            self.modify_ioloop_events(self.ioloop.READ)

    def send(self, data: bytes) -> int:
        # pyftpdlib pushes a file's first bytes as soon as the data channel
        # exists; SSL_write would then finish the handshake by itself and
        # send them before handle_ssl_established could refuse. Send
        # nothing (the bytes stay queued) until the handshake is over.
        if self._ssl_accepting:
            return 0
        if isinstance(data, memoryview) and self._ssl_established:
            return self._send_view(data)
        return int(super().send(data))

    def _send_view(self, data: memoryview) -> int:
        """Write a view of a download's plaintext without copying it.

        pyftpdlib's TLS send copies anything but bytes into bytes, and the
        channel passes on the unsent rest of a write each time: a copy per
        pass. pyOpenSSL writes from a view, and lets a retried write come
        from another buffer (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER).
        """
        if not self._bulk:
            # Full records, one after another: let TCP fill its segments
            # (fewer, larger sends, and fewer wake-ups of the client).
            self._bulk = True
            _set_nodelay(self._tcp, False)
        try:
            sent = int(self.socket.send(data))
        except (SSL.Error, OSError):
            # The socket is full, the peer closed, or an error: pyftpdlib's
            # send meets the same condition again and handles it its way.
            return int(super().send(data))
        self.tot_bytes_sent += sent
        return sent

    def handle_close(self) -> None:
        if self._bulk:
            # The tail of a large download and the close_notify go out at
            # once (setting TCP_NODELAY pushes what TCP holds back).
            self._bulk = False
            _set_nodelay(self._tcp, True)
        super().handle_close()

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
        # Writes that waited for the handshake (see modify_ioloop_events).
        self.modify_ioloop_events(self._wanted_io_events)

    def close(self) -> None:
        if self._committing:
            return  # the commit's end closes the transfer (see _committed)
        upload = self.file_obj
        if isinstance(upload, Upload) and self._finish_upload(upload):
            self._commit_off_loop(upload)
            return
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

    def _finish_upload(self, upload: Upload) -> bool:
        """Whether ``upload`` is whole and must now be committed; if not,
        keep what arrived (as a partial) and set the reply."""
        if self._closed or not self.receive or upload.closed:
            return False  # discarded by handle_error, which replied
        clean = self._closed_cleanly() and not self._client_gave_up()
        if self.transfer_finished and clean:
            return True
        # Never answer 226 for an upload that was not committed.
        self.transfer_finished = False
        offset = upload.suspend()
        lifetime = upload.staging.partials.lifetime
        self._resp = (interrupted_reply(offset, lifetime), logger.info)
        return False

    # --- committing on a worker thread

    def _commit_off_loop(self, upload: Upload) -> None:
        """Close the connection, hold the session, commit on a worker."""
        self._committing = True
        if self._idler is not None and not self._idler.cancelled:
            self._idler.cancel()
        self._hang_up()
        session = self.cmd_channel
        session._pause()  # no command runs before the commit's reply
        session.services.bridge.run(upload.commit, self._committed, io=True)

    def _hang_up(self) -> None:
        """Answer the client's close_notify and close the socket."""
        if isinstance(self.socket, SSL.Connection):
            with contextlib.suppress(SSL.Error, OSError):
                self.socket.shutdown()
        AsyncChat.close(self)

    def _committed(self, future: Future[Any]) -> None:
        """On the loop: reply, record the transfer, release the session."""
        session = self.cmd_channel
        present = session._resume()
        self._resp = self._commit_reply(future)
        self.transfer_finished = self._resp[0] == TRANSFER_COMPLETE
        if present:
            session.respond(*self._resp)
        session.data_channel = self  # log_transfer reads the upload here
        self._report_transfer()
        session.data_channel = None
        if present:
            session._on_dtp_close()

    def _commit_reply(self, future: Future[Any]) -> tuple[str, Any]:
        error = future.exception()
        if error is None:
            return (TRANSFER_COMPLETE, logger.debug)
        if isinstance(error, NoSpace):
            return (NO_SPACE_REPLY, logger.error)
        path = names.escape_for_log(getattr(self.file_obj, "path", "-"))
        outage = outage_of(error) if isinstance(error, StorageError) else None
        if outage is not None:
            logger.error(
                "upload not committed: database unavailable: %s path=%s",
                outage,
                path,
            )
            return (COMMIT_DATABASE_DOWN_REPLY, logger.error)
        logger.error("upload commit failed path=%s", path, exc_info=error)
        return (COMMIT_FAILED_REPLY, logger.error)

    def _report_transfer(self) -> None:
        """What pyftpdlib's close does after its reply: the transfer's log
        line and audit event, and the received-file hooks."""
        upload = self.file_obj
        if upload is None:
            return
        self.cmd_channel.log_transfer(
            cmd=self.cmd,
            filename=upload.name,
            receive=True,
            completed=self.transfer_finished,
            elapsed=round(self.get_elapsed_time(), 3),
            bytes=self.get_transmitted_bytes(),
        )
        if self.transfer_finished:
            self.cmd_channel.on_file_received(upload.name)
        else:
            self.cmd_channel.on_incomplete_file_received(upload.name)

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
COMMIT_DATABASE_DOWN_REPLY = (
    "451 服务器数据库暂时无法使用，文件未保存，原有文件不受影响，请稍后重试。"
)
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


def _set_nodelay(sock: socket.socket, on: bool) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(on))


def _is_disconnect(error: BaseException) -> bool:
    """Whether a read error means the peer went away (as pyftpdlib reads
    ``SysCallError``: an unexpected EOF or a reset connection)."""
    if isinstance(error, SSL.SysCallError):
        number, text = error.args
        return number in _ERRNOS_DISCONNECTED or text == "Unexpected EOF"
    return isinstance(error, OSError) and error.errno in _ERRNOS_DISCONNECTED


def session_reused(sock: Any) -> bool:
    """Whether a TLS connection resumed an earlier session.

    pyOpenSSL has no public call for this; its bindings carry OpenSSL's
    SSL_session_reused, which is what we ask.
    """
    from OpenSSL._util import lib as openssl

    if not isinstance(sock, SSL.Connection):
        return False
    return bool(openssl.SSL_session_reused(sock._ssl))
