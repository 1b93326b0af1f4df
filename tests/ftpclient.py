"""Test clients: Python's ftplib over TLS, with the data-channel session reuse
that ftplib itself lacks (CPython issue 63699), as FileZilla, lftp and curl do.
"""

from __future__ import annotations

import ftplib
import io
import ssl
from pathlib import Path
from typing import Any


class ReusingFTPS(ftplib.FTP_TLS):
    """FTP_TLS whose data connections resume the control session."""

    reuse_session = True

    def ntransfercmd(self, cmd: str, rest: Any = None) -> tuple[Any, Any]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            session = self.sock.session if self.reuse_session else None
            conn = self.context.wrap_socket(
                conn, server_hostname=self.host, session=session
            )
            conn.unwrap = _tolerant_unwrap(conn)
        return conn, size


def tls_context(
    cafile: Path,
    *,
    maximum: ssl.TLSVersion | None = None,
    minimum: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cafile))
    if minimum is not None:
        context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    return context


def connect(
    address: tuple[str, int],
    cafile: Path,
    *,
    encoding: str = "utf-8",
    context: ssl.SSLContext | None = None,
) -> ReusingFTPS:
    client = ReusingFTPS(
        context=context or tls_context(cafile), timeout=15, encoding=encoding
    )
    client.connect(*address)
    return client


def login(
    address: tuple[str, int], cafile: Path, user: str, password: str, **kwargs: Any
) -> ReusingFTPS:
    client = connect(address, cafile, **kwargs)
    try:
        client.auth()
        client.login(user, password)
        client.prot_p()
    except BaseException:
        client.close()  # a refused login leaves no socket behind
        raise
    return client


def upload(client: ftplib.FTP, path: str, data: bytes) -> str:
    return client.storbinary(f"STOR {path}", io.BytesIO(data))


def download(client: ftplib.FTP, path: str) -> bytes:
    buffer = io.BytesIO()
    client.retrbinary(f"RETR {path}", buffer.write)
    return buffer.getvalue()


def _tolerant_unwrap(conn: ssl.SSLSocket) -> Any:
    """ftplib unwraps each data socket; when the server's close_notify has
    already ended the session, OpenSSL may report SHUTDOWN_WHILE_IN_INIT."""
    original = conn.unwrap

    def unwrap() -> Any:
        try:
            return original()
        except ssl.SSLError as exc:
            if "SHUTDOWN_WHILE_IN_INIT" not in str(exc):
                raise
            return conn

    return unwrap


def lftp_command(server: Any, script: str, user: str = "wuhan") -> list[str]:
    """lftp with TLS forced on both channels, bounded retries and timeouts."""
    from conftest import TEST_PASSWORD
    from conftest import require_tool

    host, port = server.address
    settings = (
        "set ftp:ssl-force true; set ftp:ssl-protect-data true; "
        f"set ssl:ca-file {server.cafile}; set ssl:check-hostname no; "
        "set net:max-retries 1; set net:timeout 10; set cmd:fail-exit true; "
        "set ftp:passive-mode true; "
    )
    return [
        require_tool("lftp"),
        "-u",
        f"{user},{TEST_PASSWORD}",
        "-p",
        str(port),
        "-e",
        settings + script + "; bye",
        f"ftp://{host}",
    ]


def curl_command(
    server: Any, *args: str, user: str = "wuhan", max_time: int = 30
) -> list[str]:
    """curl requiring TLS and checking the server's certificate."""
    from conftest import TEST_PASSWORD
    from conftest import require_tool

    return [
        require_tool("curl"),
        "--silent",
        "--show-error",
        "--ssl-reqd",
        "--cacert",
        str(server.cafile),
        "--user",
        f"{user}:{TEST_PASSWORD}",
        "--max-time",
        str(max_time),
        *args,
    ]
