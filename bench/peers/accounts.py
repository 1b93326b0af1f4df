"""The run's certificate and the login accounts of the C servers.

Every server gets the same self-signed RSA-2048 certificate, made for the
run. vsftpd, ProFTPD and Pure-FTPd log in a local user of their own (one
each, so each has its own home) through ``/etc/shadow``; its password hash
is yescrypt, Debian's default scheme, at the cost factor whose check time is
nearest to censusdrop's Argon2id check, measured on this machine.
"""

from __future__ import annotations

import ctypes
import dataclasses
import datetime as dt
import ipaddress
import math
import os
import pwd
import secrets
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

YESCRYPT_COSTS = range(3, 9)
USER_PREFIX = "cdbench-"
_SAMPLE_PASSWORD = b"bench-password-sample"


class AccountError(Exception):
    """A local user could not be created; the message says why."""


@dataclasses.dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


@dataclasses.dataclass(frozen=True)
class HashCost:
    """What one password check costs on each side, in milliseconds."""

    argon2_ms: float
    argon2_params: str
    yescrypt_cost: int
    yescrypt_ms: float

    def describe(self) -> str:
        return (
            f"password check: censusdrop Argon2id {self.argon2_params} "
            f"{self.argon2_ms:.1f} ms; C servers yescrypt cost "
            f"{self.yescrypt_cost} {self.yescrypt_ms:.1f} ms; "
            "stock pyftpdlib plaintext (DummyAuthorizer)"
        )


@dataclasses.dataclass(frozen=True)
class LocalUser:
    name: str
    password: str
    home: Path
    uid: int
    gid: int


def make_certificate(folder: Path) -> Certificate:
    """A self-signed RSA-2048 certificate for 127.0.0.1 and localhost."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    alt = x509.SubjectAlternativeName(
        [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(alt, critical=False)
        .sign(key, hashes.SHA256())
    )
    paths = Certificate(folder / "bench.crt", folder / "bench.key")
    paths.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    fd = os.open(paths.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    return paths


def calibrate_hash_cost() -> HashCost:
    """Time censusdrop's check, then pick the nearest yescrypt cost."""
    from censusdrop.server.passwords import Argon2Cost
    from censusdrop.server.passwords import PasswordHasher

    cost = Argon2Cost()
    hasher = PasswordHasher(cost)
    phc = hasher.hash(_SAMPLE_PASSWORD.decode())
    argon2_ms = _median_ms(lambda: hasher.verify(_SAMPLE_PASSWORD.decode(), phc))
    timings = {c: _median_ms(_yescrypt_check(c), runs=5) for c in YESCRYPT_COSTS}
    best = min(timings, key=lambda c: abs(math.log(timings[c] / argon2_ms)))
    params = f"m={cost.memory_kib} KiB t={cost.iterations} p={cost.lanes}"
    return HashCost(argon2_ms, params, best, timings[best])


def yescrypt_hash(password: str, cost: int) -> str:
    lib = _libcrypt()
    setting = lib.crypt_gensalt(b"$y$", cost, None, 0)
    if not setting:
        raise AccountError("libcrypt has no yescrypt (crypt_gensalt failed)")
    hashed = lib.crypt(password.encode(), setting)
    if not hashed or hashed.startswith(b"*"):
        raise AccountError("libcrypt could not hash with yescrypt")
    return str(hashed.decode())


def add_user(role: str, home: Path, cost: int) -> LocalUser:
    """A fresh local user ``cdbench-<role>`` with a random password."""
    name = USER_PREFIX + role
    remove_user(name)
    password = secrets.token_hex(12)
    home.mkdir(parents=True, exist_ok=True)
    _run(
        [
            _tool("useradd"),
            "--no-create-home",
            "--home-dir",
            str(home),
            "--shell",
            "/bin/sh",
            "--user-group",
            "--comment",
            "censusdrop benchmark, removed after the run",
            "--password",
            yescrypt_hash(password, cost),
            name,
        ]
    )
    entry = pwd.getpwnam(name)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    home.chmod(0o750)
    return LocalUser(name, password, home, entry.pw_uid, entry.pw_gid)


def remove_user(name: str) -> None:
    """Delete the user (and its group) if it exists; files stay."""
    if not name.startswith(USER_PREFIX):
        raise ValueError(f"name: {name!r} is not a benchmark user")
    try:
        pwd.getpwnam(name)
    except KeyError:
        return
    _run([_tool("userdel"), name])


def _yescrypt_check(cost: int) -> Callable[[], object]:
    hashed = yescrypt_hash(_SAMPLE_PASSWORD.decode(), cost).encode()
    lib = _libcrypt()
    return lambda: lib.crypt(_SAMPLE_PASSWORD, hashed)


def _median_ms(check: Callable[[], object], runs: int = 9) -> float:
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        check()
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)


def _libcrypt() -> ctypes.CDLL:
    lib = ctypes.CDLL("libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
        ctypes.c_int,
    ]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    return lib


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise AccountError(f"{name} not found (package passwd)")
    return found


def _run(argv: list[str]) -> None:
    try:
        result = subprocess.run(  # noqa: S603 - fixed tool, generated arguments
            argv, capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise AccountError(f"{os.path.basename(argv[0])}: no end after 60s") from exc
    if result.returncode != 0:
        raise AccountError(f"{os.path.basename(argv[0])}: {result.stderr.strip()}")
