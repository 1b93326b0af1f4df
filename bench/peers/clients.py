"""The clients, the same for every server, each with a bounded time.

- curl for the large transfers and for the crowd of concurrent uploads:
  ``--ssl-reqd``, TLS 1.2 only, one cipher suite, the run's certificate as
  the only trusted one, the login read from a netrc file (not argv);
- one Python ftplib session for the small files, whose data connections
  resume the control connection's TLS session (Python's ftplib does not do
  that by itself; censusdrop, vsftpd and ProFTPD refuse data connections
  without it), with TCP_NODELAY on every socket as curl has.

Every function returns wall seconds or raises ``ClientError`` saying what
failed on which server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ftplib
import itertools
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .servers import CIPHER

# curl counts the whole connect phase against it: the wait in the server's
# accept queue, the greeting, the login and the data connection's handshake.
CONNECT_TIMEOUT = 60
SOCKET_TIMEOUT = 60.0
_FTP_ERRORS = (OSError, ftplib.Error, EOFError)


class ClientError(Exception):
    """A client failed or ran out of time; the message says why."""


@dataclasses.dataclass(frozen=True)
class Target:
    """Where and as whom a client logs in."""

    label: str
    port: int
    user: str
    password: str
    netrc: Path
    cafile: Path

    def url(self, name: str) -> str:
        return f"ftp://127.0.0.1:{self.port}/{name}"


def write_netrc(path: Path, user: str, password: str) -> Path:
    path.write_text(
        f"machine 127.0.0.1 login {user} password {password}\n", encoding="utf-8"
    )
    path.chmod(0o600)
    return path


def curl_upload(
    curl: Path, target: Target, source: Path, name: str, limit: float
) -> float:
    return _timed_curl(curl, target, ["-T", str(source), target.url(name)], limit)


def curl_download(
    curl: Path, target: Target, name: str, size: int, limit: float
) -> float:
    args = ["-o", "/dev/null", "-w", "%{size_download}", target.url(name)]
    started = time.perf_counter()
    output = _curl(curl, target, args, limit)
    seconds = time.perf_counter() - started
    if output.strip() != str(size):
        raise ClientError(
            f"{target.label}: curl downloaded {output.strip()} bytes of {size}"
        )
    return seconds


def curl_crowd(
    curl: Path, target: Target, source: Path, names: list[str], limit: float
) -> float:
    """Start one curl upload per name at once; wall seconds until all end."""
    deadline = time.monotonic() + limit
    procs: list[subprocess.Popen[bytes]] = []
    started = time.perf_counter()
    try:
        for name in names:
            argv = _curl_argv(
                curl, target, limit, ["-T", str(source), target.url(name)]
            )
            procs.append(
                subprocess.Popen(  # noqa: S603 - curl with our arguments
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
        failures = []
        for proc in procs:
            remaining = max(0.1, deadline - time.monotonic())
            _, err = proc.communicate(timeout=remaining)
            if proc.returncode != 0:
                failures.append(f"exit {proc.returncode}: {err.decode().strip()}")
        seconds = time.perf_counter() - started
    except subprocess.TimeoutExpired as exc:
        raise ClientError(f"{target.label}: crowd not done after {limit:.0f}s") from exc
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if failures:
        raise ClientError(
            f"{target.label}: {len(failures)} of {len(names)} curl uploads failed,"
            f" first: {failures[0]}"
        )
    return seconds


class SessionReusingFTPS(ftplib.FTP_TLS):
    """FTP_TLS whose data connections resume the control TLS session."""

    def ntransfercmd(self, cmd: str, rest: Any = None) -> tuple[Any, Any]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)  # noqa: S321 - wrapped below
        _no_delay(conn)
        if self._prot_p:  # type: ignore[attr-defined]
            session = self.control().session
            conn = self.context.wrap_socket(
                conn, server_hostname=self.host, session=session
            )
        return conn, size

    def control(self) -> ssl.SSLSocket:
        if not isinstance(self.sock, ssl.SSLSocket):
            raise ClientError("the control connection is not under TLS")
        return self.sock


def small_files(
    target: Target, blobs: list[bytes], prefix: str, limit: float
) -> tuple[float, float]:
    """Upload then download every blob in one session: (up s, down s)."""
    deadline = time.monotonic() + limit
    with _session(target) as client:
        started = time.perf_counter()
        for index, blob in enumerate(blobs):
            _check_deadline(target, deadline, limit)
            _store(client, f"{prefix}{index:05d}.bin", blob)
        uploaded = time.perf_counter()
        for index, blob in enumerate(blobs):
            _check_deadline(target, deadline, limit)
            got = _retrieve(client, f"{prefix}{index:05d}.bin")
            if len(got) != len(blob):
                raise ClientError(
                    f"{target.label}: file {index} came back with {len(got)} bytes"
                )
        downloaded = time.perf_counter()
    return uploaded - started, downloaded - uploaded


STEPS = (
    "PASV and connect",
    "command to 1xx",
    "TLS handshake",
    "data and close",
    "to 226",
)


def stepwise(
    target: Target, blobs: list[bytes], prefix: str, limit: float
) -> tuple[list[list[float]], list[list[float]]]:
    """Upload then download every blob in one session, timing each step of
    each transfer (``STEPS``, seconds): (uploads, downloads)."""
    deadline = time.monotonic() + limit
    ups, downs = [], []
    with _session(target) as client:
        for index, blob in enumerate(blobs):
            _check_deadline(target, deadline, limit)
            ups.append(_steps(client, f"STOR {prefix}{index:05d}.bin", blob))
        for index, blob in enumerate(blobs):
            _check_deadline(target, deadline, limit)
            downs.append(_steps(client, f"RETR {prefix}{index:05d}.bin", len(blob)))
    return ups, downs


@contextlib.contextmanager
def _session(target: Target) -> Iterator[SessionReusingFTPS]:
    """A logged-in ftplib session, quit and closed after; what fails in it
    raises ``ClientError`` naming the server."""
    try:
        client = _login(target)
    except _FTP_ERRORS as exc:
        raise ClientError(f"{target.label}: ftplib login failed: {exc}") from exc
    try:
        yield client
        with contextlib.suppress(*_FTP_ERRORS):
            client.quit()
    except _FTP_ERRORS as exc:
        raise ClientError(f"{target.label}: ftplib transfer failed: {exc}") from exc
    finally:
        client.close()


def _steps(client: SessionReusingFTPS, command: str, data: bytes | int) -> list[float]:
    """One transfer, as ftplib's ``transfercmd`` does it, with a clock
    between the steps; ``data`` is the blob to send or the size to read."""
    marks = [time.perf_counter()]
    _host, port = ftplib.parse227(client.sendcmd("PASV"))  # noqa: S321 - under TLS
    raw = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
    with contextlib.ExitStack() as stack:
        stack.callback(raw.close)
        _no_delay(raw)
        marks.append(time.perf_counter())
        client.sendcmd(command)  # 1xx; an error reply raises
        marks.append(time.perf_counter())
        session = client.control().session
        conn = client.context.wrap_socket(
            raw, server_hostname=client.host, session=session
        )
        stack.callback(conn.close)
        marks.append(time.perf_counter())
        if isinstance(data, bytes):
            conn.sendall(data)
        else:
            received = 0
            while chunk := conn.recv(65536):
                received += len(chunk)
            if received != data:
                raise ClientError(f"{command}: {received} bytes of {data}")
        _close_tls(conn)
    marks.append(time.perf_counter())
    client.voidresp()
    marks.append(time.perf_counter())
    return [after - before for before, after in itertools.pairwise(marks)]


def negotiated(target: Target) -> str:
    """Protocol and cipher suite the server agrees to, e.g. for the notes."""
    client = _login(target)
    try:
        cipher = client.control().cipher()
        return "?" if cipher is None else f"{cipher[1]} {cipher[0]}"
    finally:
        with contextlib.suppress(OSError, ftplib.Error, EOFError):
            client.quit()
        client.close()


def _check_deadline(target: Target, deadline: float, limit: float) -> None:
    if time.monotonic() > deadline:
        raise ClientError(f"{target.label}: small files not done after {limit:.0f}s")


def _login(target: Target) -> SessionReusingFTPS:
    context = ssl.create_default_context(cafile=str(target.cafile))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHER)
    client = SessionReusingFTPS(context=context, timeout=SOCKET_TIMEOUT)
    client.connect("127.0.0.1", target.port)
    _no_delay(client.sock)  # type: ignore[arg-type]
    client.auth()
    client.login(target.user, target.password)
    client.prot_p()
    client.voidcmd("TYPE I")  # once: every transfer is binary
    return client


def _store(client: ftplib.FTP, name: str, blob: bytes) -> None:
    with client.transfercmd(f"STOR {name}") as conn:
        conn.sendall(blob)
        _close_tls(conn)
    client.voidresp()


def _retrieve(client: ftplib.FTP, name: str) -> bytes:
    parts = []
    with client.transfercmd(f"RETR {name}") as conn:
        while chunk := conn.recv(65536):
            parts.append(chunk)
        _close_tls(conn)
    client.voidresp()
    return b"".join(parts)


def _no_delay(sock: socket.socket) -> None:
    """As curl and FileZilla do: without it, Nagle's algorithm holds the
    TLS close_notify behind the last data until the peer's delayed ACK,
    about 40 ms per file."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _close_tls(conn: socket.socket) -> None:
    """Send close_notify; a server that already ended the session is fine."""
    if isinstance(conn, ssl.SSLSocket):
        with contextlib.suppress(ssl.SSLError, OSError):
            conn.unwrap()


def _timed_curl(curl: Path, target: Target, args: list[str], limit: float) -> float:
    started = time.perf_counter()
    _curl(curl, target, args, limit)
    return time.perf_counter() - started


def _curl(curl: Path, target: Target, args: list[str], limit: float) -> str:
    try:
        result = subprocess.run(  # noqa: S603 - curl with our arguments
            _curl_argv(curl, target, limit, args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=limit + 10,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ClientError(f"{target.label}: curl not done after {limit:.0f}s") from exc
    if result.returncode != 0:
        raise ClientError(
            f"{target.label}: curl exit {result.returncode}: {result.stderr.strip()}"
        )
    return result.stdout


def _curl_argv(curl: Path, target: Target, limit: float, args: list[str]) -> list[str]:
    return [
        str(curl),
        "--silent",
        "--show-error",
        "--ssl-reqd",
        "--tlsv1.2",
        "--tls-max",
        "1.2",
        "--ciphers",
        CIPHER,
        "--cacert",
        str(target.cafile),
        "--netrc-file",
        str(target.netrc),
        "--connect-timeout",
        str(CONNECT_TIMEOUT),
        "--max-time",
        str(int(limit)),
        *args,
    ]
