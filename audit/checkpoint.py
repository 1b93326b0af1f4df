"""Signed checkpoints of the audit chain (Ed25519).

A hash chain shows that entries were changed, removed or inserted, but not
that someone with write access to the database rebuilt the whole chain, or
cut off its end. A checkpoint closes that gap: it is a signature over
``(seq, head hash, time)`` made with a key kept in a file apart from the
database. Whoever holds the public key can later check that the chain still
reaches ``seq`` and still has that head hash there.

Trusts: the key file's contents and permissions (it must be 0600; a key
readable by others is refused). Guarantees: a checkpoint verifies only under
the public key whose fingerprint (``key_id``, SHA-256 of the raw public key)
it names. It does not protect against someone who holds the private key.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from .chain import format_time
from .chain import parse_time
from .events import AuditError
from .locking import chain_transaction
from .locking import prepare_engine
from .locking import read_connection
from .schema import audit_checkpoints
from .schema import read_head

KEY_FILE_MODE = 0o600
CHECKPOINT_FORMAT = "censusdrop-audit-checkpoint"
_SIGNING_CONTEXT = b"censusdrop audit checkpoint v1\n"


class KeyFileError(AuditError):
    """The signing or public key file is missing, unreadable or unsafe."""


class CheckpointFileError(AuditError):
    """A checkpoint file cannot be read."""


class VerifyKey:
    """An Ed25519 public key with its fingerprint."""

    def __init__(self, key: ed25519.Ed25519PublicKey) -> None:
        self._key = key
        raw = key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = hashlib.sha256(raw).hexdigest()

    def __repr__(self) -> str:
        return f"VerifyKey(key_id={self.key_id[:16]}…)"

    def public_pem(self) -> str:
        pem = self._key.public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        return pem.decode("ascii")

    def verifies(self, signature: bytes, message: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


class SigningKey:
    """An Ed25519 private key; its repr never shows the key."""

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self._key = key
        self.public = VerifyKey(key.public_key())

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id[:16]}…)"

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


@dataclasses.dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement: the chain had ``head_hash`` at ``seq``."""

    seq: int
    head_hash: str
    made_at: dt.datetime
    key_id: str
    signature: str  # base64

    def message(self) -> bytes:
        """The bytes that are signed."""
        content = {
            "head_hash": self.head_hash,
            "key_id": self.key_id,
            "made_at": format_time(self.made_at),
            "seq": self.seq,
        }
        text = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return _SIGNING_CONTEXT + text.encode()

    def is_signed_by(self, key: VerifyKey) -> bool:
        """Whether the signature is valid under ``key``."""
        if self.key_id != key.key_id:
            return False
        try:
            signature = base64.b64decode(self.signature, validate=True)
        except ValueError:
            return False
        return key.verifies(signature, self.message())

    def to_json(self, key: VerifyKey | None = None) -> str:
        """The checkpoint as a JSON document, with the public key if given."""
        content: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "seq": self.seq,
            "head_hash": self.head_hash,
            "made_at": format_time(self.made_at),
            "key_id": self.key_id,
            "signature": self.signature,
        }
        if key is not None:
            content["public_key"] = key.public_pem()
        return json.dumps(content, indent=2) + "\n"


def create_signing_key(path: Path) -> SigningKey:
    """Generate a key into a new file (mode 0600); never overwrites."""
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(path, flags, KEY_FILE_MODE)
    except FileExistsError as exc:
        raise KeyFileError(f"key file already exists: {path}") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot create key file {path}: {exc}") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return SigningKey(key)


def load_signing_key(path: Path) -> SigningKey:
    """Load the private key; refuse a file others can read or write."""
    data = _read_key_file(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"key file {path} is accessible by others (mode {mode:o}); chmod 600 it"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 key")
    return SigningKey(key)


def load_verify_key(path: Path) -> VerifyKey:
    """A public key from a public PEM file, or from the signing key file."""
    data = _read_key_file(path)
    if b"PRIVATE KEY" in data:
        return load_signing_key(path).public
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyFileError(f"{path} is not a PEM public key") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise KeyFileError(f"{path} is not an Ed25519 public key")
    return VerifyKey(key)


def verify_key_from_pem(pem: str) -> VerifyKey:
    """A public key from PEM text (as found in a checkpoint or export)."""
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise KeyFileError("not a PEM public key") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise KeyFileError("not an Ed25519 public key")
    return VerifyKey(key)


def sign_checkpoint(
    key: SigningKey, seq: int, head_hash: str, at: dt.datetime
) -> Checkpoint:
    """A checkpoint over the given head, signed now (no database)."""
    unsigned = Checkpoint(seq, head_hash, at.astimezone(dt.UTC), key.key_id, "")
    signature = base64.b64encode(key.sign(unsigned.message())).decode("ascii")
    return dataclasses.replace(unsigned, signature=signature)


def make_checkpoint(
    engine: sa.Engine, key: SigningKey, at: dt.datetime | None = None
) -> Checkpoint:
    """Sign the current head of the chain and store the checkpoint."""
    made_at = at if at is not None else dt.datetime.now(dt.UTC)
    prepare_engine(engine)
    # Under the chain lock, so a concurrent append cannot interleave and an
    # SQLite reader never has to upgrade to a writer (which could deadlock).
    with chain_transaction(engine) as conn:
        head = read_head(conn)
        checkpoint = sign_checkpoint(key, head.seq, head.hash, made_at)
        conn.execute(audit_checkpoints.insert(), [_to_params(checkpoint)])
    return checkpoint


def list_checkpoints(engine: sa.Engine) -> list[Checkpoint]:
    """Every stored checkpoint, oldest first."""
    table = audit_checkpoints
    query = sa.select(table).order_by(table.c.seq, table.c.id)
    with read_connection(engine) as conn:
        return [_from_row(row) for row in conn.execute(query)]


def latest_checkpoint(engine: sa.Engine) -> Checkpoint | None:
    """The stored checkpoint with the highest seq, if any."""
    checkpoints = list_checkpoints(engine)
    return checkpoints[-1] if checkpoints else None


def write_checkpoint_file(
    checkpoint: Checkpoint, path: Path, key: VerifyKey | None = None
) -> None:
    path.write_text(checkpoint.to_json(key), encoding="utf-8")


def read_checkpoint_file(path: Path) -> tuple[Checkpoint, VerifyKey | None]:
    """A checkpoint file and the public key it carries, if any."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        if content.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("not a censusdrop checkpoint")
        checkpoint = Checkpoint(
            seq=_as_int(content["seq"]),
            head_hash=str(content["head_hash"]),
            made_at=parse_time(str(content["made_at"])),
            key_id=str(content["key_id"]),
            signature=str(content["signature"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointFileError(f"cannot read checkpoint {path}: {exc}") from exc
    pem = content.get("public_key")
    return checkpoint, verify_key_from_pem(pem) if isinstance(pem, str) else None


def _read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise KeyFileError(f"no key file at {path}") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc}") from exc


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("seq must be an integer")
    return value


def _to_params(checkpoint: Checkpoint) -> dict[str, Any]:
    return {
        "seq": checkpoint.seq,
        "head_hash": checkpoint.head_hash,
        "made_at": checkpoint.made_at,
        "key_id": checkpoint.key_id,
        "signature": checkpoint.signature,
    }


def _from_row(row: sa.Row[Any]) -> Checkpoint:
    return Checkpoint(
        seq=int(row.seq),
        head_hash=str(row.head_hash),
        made_at=row.made_at,
        key_id=str(row.key_id),
        signature=str(row.signature),
    )
