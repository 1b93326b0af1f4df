"""TLS: the server certificate and the OpenSSL context for FTPS.

Guarantees: TLS 1.2 at least (1.3 where the client has it), forward-secret
AEAD cipher suites only, no compression, no renegotiation, and a session
cache so that data connections can resume the control connection's session.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

CIPHERS_TLS12 = ":".join(
    [
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
SESSION_ID_CONTEXT = b"censusdrop-ftps"
SESSION_TIMEOUT = 3600


class TLSConfigError(Exception):
    """The certificate or key cannot be used."""


def create_self_signed(
    cert_path: Path, key_path: Path, *, hostname: str, at: dt.datetime, days: int = 825
) -> None:
    """Write a new RSA-3072 key (mode 0600) and a self-signed certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    alt_names: list[x509.GeneralName] = [x509.DNSName(hostname)]
    for address in ("127.0.0.1", "::1"):
        alt_names.append(x509.IPAddress(ipaddress.ip_address(address)))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - dt.timedelta(minutes=5))
        .not_valid_after(at + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(key_path, key_bytes)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (never briefly readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def fingerprint(cert_path: Path) -> str:
    """SHA-256 fingerprint as FileZilla and WinSCP show it (AA:BB:...)."""
    certificate = load_certificate(cert_path)
    digest = certificate.fingerprint(hashes.SHA256())
    return ":".join(f"{byte:02X}" for byte in digest)


def load_certificate(cert_path: Path) -> x509.Certificate:
    try:
        data = cert_path.read_bytes()
    except OSError as exc:
        raise TLSConfigError(
            f"tls.certificate: cannot read {cert_path}: {exc.strerror}"
        ) from exc
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise TLSConfigError(
            f"tls.certificate: {cert_path} is not a PEM certificate"
        ) from exc


def make_context(
    cert_path: Path,
    key_path: Path,
    min_version: str = "1.2",
    max_version: str = "1.2",
) -> SSL.Context:
    """The server context; raises ``TLSConfigError`` naming the bad file."""
    load_certificate(cert_path)
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    versions = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
    context.set_min_proto_version(versions[min_version])
    # TLS 1.3 servers send session tickets after the handshake. Clients that
    # close an upload's data connection without reading them (lftp/GnuTLS)
    # make the kernel reset the connection and drop the upload's tail, so
    # TLS 1.3 is opt-in.
    context.set_max_proto_version(versions[max_version])
    # Session tickets stay on: OpenSSL drops a session from its cache when
    # a connection that used it ends without a TLS close, so with session
    # IDs alone one dropped data connection would leave every later data
    # connection of the session unable to resume (refused with 522), the
    # resumption of an interrupted upload included.
    context.set_options(
        SSL.OP_NO_COMPRESSION
        | SSL.OP_CIPHER_SERVER_PREFERENCE
        | SSL.OP_NO_RENEGOTIATION
        | SSL.OP_SINGLE_ECDH_USE
    )
    context.set_cipher_list(CIPHERS_TLS12.encode("ascii"))
    context.set_session_id(SESSION_ID_CONTEXT)
    context.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
    context.set_timeout(SESSION_TIMEOUT)
    try:
        context.use_certificate_chain_file(str(cert_path))
    except SSL.Error as exc:
        raise TLSConfigError(f"tls.certificate: {cert_path} cannot be used") from exc
    try:
        context.use_privatekey_file(str(key_path))
        context.check_privatekey()
    except SSL.Error as exc:
        raise TLSConfigError(
            f"tls.private_key: {key_path} is unreadable, not a key, or does not"
            " match the certificate"
        ) from exc
    return context


def default_hostname() -> str:
    return socket.gethostname() or "localhost"
