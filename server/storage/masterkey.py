"""The master key: its sources, its fingerprint and its state file.

The master key is 32 random bytes that wrap every round key. It comes from
``master.key`` in the keys directory (source ``file``) or from the
environment (source ``environment``: the file then records only its id).
Mid-rotation, ``master.key`` also holds the previous master key wrapped
under the new one, so either generation of round key file can be unwrapped
by whoever holds the new key.

Trusts: the operating system's random source; ``master.key`` being readable
only by its owner (checked: a looser mode is refused).

Guarantees: a wrong, corrupt or exposed master key raises
:class:`MasterKeyError` saying which, never a traceback from the primitive;
an id is an HMAC fingerprint of the key, one-way, safe to show and log.

``master.key`` format (ASCII lines)::

    censusdrop master key v1
    id: <16 hex digits, HMAC-SHA256(key, label)[:8]>
    source: file | environment
    key: <base64 of 32 bytes>              (source file only)
    previous-id: <16 hex digits>           (mid-rotation only)
    previous-key: <base64 nonce||AES-GCM(new key, previous key)>
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import keyfiles
from .errors import FormatError
from .errors import MasterKeyError
from .keyfiles import Secret

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
MASTER_FILE = "master.key"
SOURCE_FILE = "file"
SOURCE_ENVIRONMENT = "environment"

_MASTER_TITLE = "censusdrop master key v1"


def generate_master_key() -> bytes:
    """32 fresh random bytes for a new master key."""
    return secrets.token_bytes(KEY_SIZE)


def encode_master_key(key: bytes) -> str:
    """The base64 text to put in the environment variable."""
    return base64.b64encode(checked_key(key, "key")).decode("ascii")


def decode_master_key(text: str) -> bytes:
    """Parse the base64 value of the master key environment variable."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError("the master key is not valid base64") from None
    if len(key) != KEY_SIZE:
        raise MasterKeyError(f"the master key must decode to {KEY_SIZE} bytes")
    return key


def master_key_id(key: bytes) -> str:
    """A one-way fingerprint of a master key, safe to show and store."""
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(b"censusdrop master key id v1")
    return mac.finalize()[:8].hex()


@dataclass(frozen=True)
class MasterState:
    """What ``master.key`` holds; ``previous_*`` only mid-rotation."""

    key_id: str
    source: str
    key: Secret | None = None
    previous_id: str | None = None
    previous_wrapped: bytes | None = None


def load_state(keys_dir: Path) -> MasterState:
    path = keys_dir / MASTER_FILE
    try:
        data = keyfiles.read_record_file(path)
    except FileNotFoundError:
        raise MasterKeyError(
            f"no keyring in {keys_dir} ({MASTER_FILE} is missing)"
        ) from None
    except OSError as exc:
        raise MasterKeyError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return decode_state(data)
    except FormatError as exc:
        raise MasterKeyError(f"{path} is corrupt: {exc}") from None


def masters_of(
    path: Path, state: MasterState, given: bytes | None
) -> dict[str, Secret]:
    """Current (and, mid-rotation, previous) master keys, after every check."""
    if given is not None and (not isinstance(given, bytes) or len(given) != KEY_SIZE):
        raise MasterKeyError(f"the master key must be {KEY_SIZE} bytes")
    given_id = master_key_id(given) if given is not None else None

    if state.source == SOURCE_FILE:
        if state.key is None:
            raise MasterKeyError(f"{path} is corrupt: it holds no key")
        check_private(path)
        key = state.key.reveal()
        if master_key_id(key) != state.key_id:
            raise MasterKeyError(f"{path} is corrupt: its key does not match its id")
        if given_id is not None and given_id != state.key_id:
            raise MasterKeyError(
                f"wrong master key: id {given_id}, this keyring's is {state.key_id}"
            )
    elif given is None:
        raise MasterKeyError(
            "this keyring's master key comes from the environment, and none was given"
        )
    elif given_id == state.previous_id:
        raise MasterKeyError(
            f"a rotation to master key {state.key_id} is unfinished or under way; "
            "open the keyring with the new master key"
        )
    elif given_id != state.key_id:
        raise MasterKeyError(
            f"wrong master key: id {given_id}, this keyring's is {state.key_id}"
        )
    else:
        key = given

    masters = {state.key_id: Secret(key)}
    if state.previous_id is not None and state.previous_wrapped is not None:
        previous = _unwrap_previous(
            key, state.previous_wrapped, state.previous_id, state.key_id
        )
        masters[state.previous_id] = Secret(previous)
    return masters


def check_private(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise MasterKeyError(
            f"{path} is accessible to other users (mode {mode:04o}); chmod 600 it"
        )


def encode_state(state: MasterState) -> bytes:
    fields = [("id", state.key_id), ("source", state.source)]
    if state.key is not None:
        fields.append(("key", b64(state.key.reveal())))
    if state.previous_id is not None and state.previous_wrapped is not None:
        fields.append(("previous-id", state.previous_id))
        fields.append(("previous-key", b64(state.previous_wrapped)))
    return keyfiles.encode_record(_MASTER_TITLE, fields)


def decode_state(data: bytes) -> MasterState:
    optional = ("key", "previous-id", "previous-key")
    fields = keyfiles.decode_record(data, _MASTER_TITLE, ("id", "source"), optional)
    source = fields["source"]
    has_key = "key" in fields
    if source not in (SOURCE_FILE, SOURCE_ENVIRONMENT) or has_key != (
        source == SOURCE_FILE
    ):
        raise FormatError("source and key disagree")
    if ("previous-id" in fields) != ("previous-key" in fields):
        raise FormatError("previous-id and previous-key go together")

    key = None
    if has_key:
        key = Secret(checked_key(unb64(fields["key"], _MASTER_TITLE), "key"))
    previous_wrapped = None
    if "previous-key" in fields:
        previous_wrapped = unb64(fields["previous-key"], _MASTER_TITLE)
    return MasterState(
        fields["id"], source, key, fields.get("previous-id"), previous_wrapped
    )


def wrap_previous(new_key: bytes, old_key: bytes, old_id: str, new_id: str) -> bytes:
    nonce = secrets.token_bytes(NONCE_SIZE)
    aad = _previous_aad(old_id, new_id)
    return nonce + AESGCM(new_key).encrypt(nonce, old_key, aad)


def _unwrap_previous(key: bytes, wrapped: bytes, old_id: str, new_id: str) -> bytes:
    aead = AESGCM(key)
    try:
        old = aead.decrypt(
            wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], _previous_aad(old_id, new_id)
        )
    except (InvalidTag, ValueError):
        raise MasterKeyError(
            f"{MASTER_FILE} is corrupt: the previous key fails authentication"
        ) from None
    if master_key_id(old) != old_id:
        raise MasterKeyError(
            f"{MASTER_FILE} is corrupt: the previous key does not match its id"
        )
    return old


def _previous_aad(old_id: str, new_id: str) -> bytes:
    return f"{_MASTER_TITLE}\0previous\0{old_id}\0{new_id}".encode("ascii")


def checked_key(key: bytes, argument: str) -> bytes:
    if not isinstance(key, bytes):
        raise TypeError(f"{argument} must be bytes")
    if len(key) != KEY_SIZE:
        raise ValueError(f"{argument} must be {KEY_SIZE} bytes, not {len(key)}")
    return key


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, title: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"malformed key file ({title!r}): bad base64") from None
