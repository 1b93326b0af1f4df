"""The key hierarchy behind encryption at rest.

::

    master key     32 bytes, in keys/master.key (0600) or from the environment
    └── round key  32 bytes per acceptance round, keys/rounds/<name>.key,
        │          AES-256-GCM-wrapped under the master key
        └── file secret  32 bytes per stored file, in the file's header,
                         AES-256-GCM-wrapped under the round key

The keys directory lives outside the data root and the database: a copy of
those two reveals nothing without it.

Trusts: the operating system's random source; the filesystem for ``fsync``,
atomic ``rename`` and ``flock`` (see ``keyfiles``); whoever can read the keys
directory and the master key, fully.

Guarantees:

- a wrong, corrupt or missing master key raises :class:`MasterKeyError`
  with a message saying which; key ids are one-way fingerprints, so they can
  be shown and logged;
- a tampered or foreign round key file raises :class:`KeyFileDamaged` (an
  :class:`IntegrityError`), never yields a key; one that cannot be read (a
  folder in its place, an I/O error) raises :class:`KeyFileError`; both
  name the file, so a key problem is never taken for a damaged data file;
- :meth:`Keyring.destroy_round_key` leaves a tombstone, then overwrites and
  unlinks the wrapped key: everything encrypted under that round becomes
  undecryptable, even from copies of the data root and database taken
  earlier. A copy of the keys directory taken earlier still holds the
  wrapped key: only with a master key kept outside it (the environment),
  rotated afterwards and the old one discarded, is such a copy useless;
- :meth:`Keyring.rotate_master` is crash-safe: the new master key, with the
  old one wrapped under it, is durable before any round key is re-wrapped,
  so every round key stays unwrappable at every instant; an interrupted
  rotation is finished by the next :meth:`Keyring.open`;
- key material never appears in a ``repr`` or a log line.

Files (0600; directories 0700, but see below)::

    keys/master.key              the master key or its id (see masterkey)
    keys/keyring.lock            flock target for mutations
    keys/rounds/<name>.key       censusdrop round key v1 / name / master-id /
                                 key: base64(nonce || AES-GCM(master, key,
                                 AAD = title, name, master-id))
    keys/rounds/<name>.destroyed tombstone of a destroyed round key

Round key files and tombstones are wrapped or empty of secrets: when
``rounds/`` lets its group read (a server that drops privileges reads them
as that group, see ``censusdrop.server.privileges``), they are made with
its group and mode 0640. ``master.key`` and the lock stay 0600.

Mutations take an exclusive lock on ``keys/keyring.lock``, so several
processes may share one keys directory. Reads take no lock and re-read the
round key file every time, so a destroy in one process takes effect in all.
A process whose master key came from the environment cannot follow a
rotation made by another process: it must be restarted with the new key.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from contextlib import AbstractContextManager
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import keyfiles
from .errors import FormatError
from .errors import IntegrityError
from .errors import KeyDestroyed
from .errors import KeyFileDamaged
from .errors import KeyFileError
from .errors import KeyNotFound
from .errors import KeyringError
from .errors import MasterKeyError
from .keyfiles import Secret
from .masterkey import KEY_SIZE
from .masterkey import MASTER_FILE
from .masterkey import NONCE_SIZE
from .masterkey import SOURCE_ENVIRONMENT
from .masterkey import SOURCE_FILE
from .masterkey import TAG_SIZE
from .masterkey import MasterState
from .masterkey import b64
from .masterkey import checked_key
from .masterkey import decode_master_key
from .masterkey import encode_master_key
from .masterkey import encode_state
from .masterkey import generate_master_key
from .masterkey import load_state
from .masterkey import master_key_id
from .masterkey import masters_of
from .masterkey import unb64
from .masterkey import wrap_previous

__all__ = [
    "Keyring",
    "decode_master_key",
    "encode_master_key",
    "generate_master_key",
    "master_key_id",
    "validate_round_name",
]

logger = logging.getLogger(__name__)

MAX_ROUND_NAME = 64
ROUNDS_DIR = "rounds"
LOCK_FILE = "keyring.lock"

_ROUND_TITLE = "censusdrop round key v1"
_TOMBSTONE_TITLE = "censusdrop destroyed round key v1"
_ROUND_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_WRAPPED_ROUND_SIZE = NONCE_SIZE + KEY_SIZE + TAG_SIZE


def validate_round_name(name: str) -> str:
    """Return ``name`` if it is a valid round name, else raise ValueError.

    Lower-case ASCII letters, digits, ``-`` and ``_``, starting with a letter
    or digit, at most 64 characters: safe as a file name everywhere.
    """
    if not isinstance(name, str) or _ROUND_NAME.fullmatch(name) is None:
        raise ValueError(
            f"round name {name!r} is invalid (expected [a-z0-9][a-z0-9_-]*)"
        )
    return name


class Keyring:
    """Master key, round keys and file-key wrapping for one keys directory.

    Build it with :meth:`create` or :meth:`open`, not directly.
    """

    def __init__(self, keys_dir: Path, state: MasterState, given: bytes | None) -> None:
        self._dir = keys_dir
        # Rounds whose key file this process has read or made: if one goes
        # missing later, that is a lost key file, not a header naming some
        # round that never was.
        self._known: set[str] = set()
        self._adopt(state, given)

    @classmethod
    def create(
        cls, keys_dir: str | os.PathLike[str], *, master_key: bytes | None = None
    ) -> Keyring:
        """Create a keyring: directory 0700, and a master key.

        Without ``master_key`` a random one is generated and kept in
        ``master.key`` (0600). With it, the key is expected from the
        environment at every :meth:`open`, and only its id is stored.
        """
        path = Path(keys_dir)
        if master_key is not None:
            checked_key(master_key, "master_key")
        key = master_key if master_key is not None else generate_master_key()
        for directory in (path, path / ROUNDS_DIR):
            if not keyfiles.make_private_dir(directory):
                raise KeyringError(f"{directory} is open to other users; chmod 700 it")
        if any((path / ROUNDS_DIR).glob("*.key")):
            raise KeyringError(f"{path} holds round keys of another keyring")

        key_id = master_key_id(key)
        if master_key is None:
            state = MasterState(key_id, SOURCE_FILE, Secret(key))
        else:
            state = MasterState(key_id, SOURCE_ENVIRONMENT)
        if not keyfiles.create_exclusive(path / MASTER_FILE, encode_state(state)):
            raise KeyringError(f"a keyring already exists in {path}")
        logger.info(
            "keyring created dir=%s master_id=%s source=%s", path, key_id, state.source
        )
        return cls(path, state, master_key)

    @classmethod
    def open(
        cls, keys_dir: str | os.PathLike[str], master_key: bytes | None = None
    ) -> Keyring:
        """Open an existing keyring, finishing an interrupted rotation.

        ``master_key`` is required when the keyring was created with one
        (environment source); for a file-backed keyring it is optional and,
        if given, must match the file.
        """
        path = Path(keys_dir)
        keyring = cls(path, load_state(path), master_key)
        if keyring._previous_id is not None or keyfiles.leftover_temporaries(
            keyring._master_path
        ):
            logger.warning(
                "keyring recovery: finishing an interrupted rotation or write "
                "master_id=%s",
                keyring.master_key_id,
            )
            with keyring._locked():
                keyring._refresh()
                keyring._finish_rotation()
        return keyring

    @property
    def keys_dir(self) -> Path:
        return self._dir

    @property
    def master_key_id(self) -> str:
        """Fingerprint of the current master key (changes on rotation)."""
        return self._current_id

    @property
    def is_master_from_environment(self) -> bool:
        return self._source == SOURCE_ENVIRONMENT

    def __repr__(self) -> str:
        return (
            f"Keyring(keys_dir={str(self._dir)!r}, master_key_id={self._current_id!r})"
        )

    def round_names(self) -> list[str]:
        """Names of the round keys present (destroyed ones excluded)."""
        names = (path.stem for path in self._rounds_dir.glob("*.key"))
        return sorted(name for name in names if _ROUND_NAME.fullmatch(name))

    def destroyed_round_names(self) -> list[str]:
        """Names of the round keys destroyed (their tombstones)."""
        names = (path.stem for path in self._rounds_dir.glob("*.destroyed"))
        return sorted(name for name in names if _ROUND_NAME.fullmatch(name))

    def has_round_key(self, name: str) -> bool:
        validate_round_name(name)
        return self._round_path(name).exists() and not self._tombstone(name).exists()

    def ensure_round_key(self, name: str) -> None:
        """Create the round key ``name`` unless it exists.

        Raises KeyDestroyed if a key of that name was destroyed: reusing the
        name would suggest its old files could be read again.
        """
        validate_round_name(name)
        with self._locked():
            self._refresh()
            if self._tombstone(name).exists():
                raise KeyDestroyed(f"round key {name!r} was destroyed")
            record = self._encode_round(name, secrets.token_bytes(KEY_SIZE))
            if keyfiles.create_exclusive(self._round_path(name), record, shared=True):
                logger.info(
                    "round key created round=%s master_id=%s", name, self._current_id
                )

    def round_key(self, name: str) -> bytes:
        """The unwrapped round key; KeyNotFound or KeyDestroyed if absent."""
        validate_round_name(name)
        master_id, wrapped = self._read_round(name)
        return self._unwrap_round(name, master_id, wrapped)

    def destroy_round_key(self, name: str) -> None:
        """Crypto-shred a round key: tombstone, overwrite, unlink, fsync.

        Idempotent once done; KeyNotFound if no such key ever existed.
        """
        validate_round_name(name)
        path, tombstone = self._round_path(name), self._tombstone(name)
        with self._locked():
            if not path.exists():
                if tombstone.exists():
                    return
                raise KeyNotFound(f"no round key {name!r}")
            # Tombstone first: from here on the key is refused, even if the
            # process dies before the overwrite below completes.
            keyfiles.create_exclusive(tombstone, _encode_tombstone(name), shared=True)
            self._known.discard(name)
            keyfiles.sweep_temporaries(path)
            keyfiles.shred(path)
        logger.info("round key destroyed round=%s", name)

    def rotate_master(self, new_master_key: bytes | None = None) -> str:
        """Replace the master key and re-wrap every round key; return new id.

        A file-backed keyring generates the new key when none is given. An
        environment-backed one needs ``new_master_key`` (the caller shows it
        to the operator first); after a crash, open with the new key.
        """
        if new_master_key is not None:
            checked_key(new_master_key, "new_master_key")
        with self._locked():
            self._refresh()
            self._finish_rotation()
            if new_master_key is None and self.is_master_from_environment:
                raise ValueError(
                    "new_master_key is required with an environment master key"
                )
            new_key = (
                new_master_key if new_master_key is not None else generate_master_key()
            )
            old_id, new_id = self._current_id, master_key_id(new_key)
            if new_id == old_id:
                raise ValueError("new_master_key is the current master key")

            # Step 1: the new key and the old one (wrapped under the new)
            # become durable together; both can now unwrap round keys.
            old_key = self._masters[old_id].reveal()
            state = MasterState(
                key_id=new_id,
                source=self._source,
                key=Secret(new_key) if self._source == SOURCE_FILE else None,
                previous_id=old_id,
                previous_wrapped=wrap_previous(new_key, old_key, old_id, new_id),
            )
            keyfiles.write_atomic(
                self._master_path, encode_state(state), shred_replaced=True
            )
            self._adopt(state, new_key)
            logger.info("master rotation started old_id=%s new_id=%s", old_id, new_id)

            # Step 2 and 3: re-wrap, then drop the old key.
            self._finish_rotation()
        logger.info("master rotation finished master_id=%s", new_id)
        return new_id

    def verify(self) -> None:
        """Check every round key unwraps under the current master key."""
        for name in self.round_names():
            master_id, wrapped = self._read_round(name)
            if master_id != self._current_id:
                raise MasterKeyError(
                    f"round key {name!r} is wrapped by master key {master_id}, "
                    f"not by the current {self._current_id}"
                )
            self._unwrap_round(name, master_id, wrapped)

    def wrap_file_key(self, round_name: str, file_key: bytes, aad: bytes) -> bytes:
        """Encrypt a file secret under a round key, bound to ``aad``."""
        aead = AESGCM(self.round_key(round_name))
        nonce = secrets.token_bytes(NONCE_SIZE)
        return nonce + aead.encrypt(nonce, file_key, aad)

    def unwrap_file_key(self, round_name: str, wrapped: bytes, aad: bytes) -> bytes:
        """Decrypt a file secret; IntegrityError if it or ``aad`` was altered."""
        aead = AESGCM(self.round_key(round_name))
        if len(wrapped) < NONCE_SIZE + TAG_SIZE:
            raise IntegrityError()
        try:
            return aead.decrypt(wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], aad)
        except InvalidTag:
            raise IntegrityError() from None

    # -- private ---------------------------------------------------------

    @property
    def _master_path(self) -> Path:
        return self._dir / MASTER_FILE

    @property
    def _rounds_dir(self) -> Path:
        return self._dir / ROUNDS_DIR

    def _round_path(self, name: str) -> Path:
        return self._rounds_dir / f"{name}.key"

    def _tombstone(self, name: str) -> Path:
        return self._rounds_dir / f"{name}.destroyed"

    def _locked(self) -> AbstractContextManager[None]:
        return keyfiles.exclusive_lock(self._dir / LOCK_FILE)

    def _adopt(self, state: MasterState, given: bytes | None) -> None:
        """Take the keys of ``state``, checking ``given`` against it."""
        self._masters = masters_of(self._master_path, state, given)
        self._current_id = state.key_id
        self._previous_id = state.previous_id
        self._source = state.source

    def _refresh(self) -> None:
        """Re-read master.key: another process may have rotated it."""
        given = None
        if self.is_master_from_environment:
            given = self._masters[self._current_id].reveal()
        self._adopt(load_state(self._dir), given)

    def _finish_rotation(self) -> None:
        """Re-wrap rounds still under an old key, then forget it (locked)."""
        for name in self.round_names():
            master_id, wrapped = self._read_round(name)
            if master_id != self._current_id:
                key = self._unwrap_round(name, master_id, wrapped)
                keyfiles.write_atomic(
                    self._round_path(name), self._encode_round(name, key), shared=True
                )
        if self._previous_id is not None:
            current = self._masters[self._current_id]
            state = MasterState(self._current_id, self._source)
            if self._source == SOURCE_FILE:
                state = MasterState(self._current_id, self._source, current)
            keyfiles.write_atomic(
                self._master_path, encode_state(state), shred_replaced=True
            )
            self._adopt(state, current.reveal())
        keyfiles.sweep_temporaries(self._master_path)

    def _encode_round(self, name: str, key: bytes) -> bytes:
        master = self._masters[self._current_id].reveal()
        nonce = secrets.token_bytes(NONCE_SIZE)
        aad = _round_aad(name, self._current_id)
        wrapped = nonce + AESGCM(master).encrypt(nonce, key, aad)
        fields = [
            ("name", name),
            ("master-id", self._current_id),
            ("key", b64(wrapped)),
        ]
        return keyfiles.encode_record(_ROUND_TITLE, fields)

    def _read_round(self, name: str) -> tuple[str, bytes]:
        """The master id and wrapped key recorded for round ``name``."""
        path = self._round_path(name)
        try:
            data: bytes | None = keyfiles.read_record_file(path)
        except FileNotFoundError:
            data = None
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from exc
        # Checked after the read, so a destroy racing with it still wins.
        if self._tombstone(name).exists():
            raise KeyDestroyed(f"round key {name!r} was destroyed")
        if data is None and name in self._known:
            raise KeyFileError(f"{path} is missing (it was there before)")
        if data is None:
            raise KeyNotFound(f"no round key {name!r} ({path} is missing)")

        try:
            fields = keyfiles.decode_record(
                data, _ROUND_TITLE, ("name", "master-id", "key")
            )
            wrapped = unb64(fields["key"], _ROUND_TITLE)
        except FormatError as exc:
            raise KeyFileDamaged(f"{path} is corrupt: {exc}") from None
        if fields["name"] != name or len(wrapped) != _WRAPPED_ROUND_SIZE:
            raise KeyFileDamaged(f"{path} does not match its name or size")
        self._known.add(name)
        return fields["master-id"], wrapped

    def _unwrap_round(self, name: str, master_id: str, wrapped: bytes) -> bytes:
        if master_id not in self._masters:
            self._refresh()
        master = self._masters.get(master_id)
        if master is None:
            raise MasterKeyError(
                f"round key {name!r} is wrapped by master key {master_id}, "
                f"but this keyring's master key is {self._current_id}"
            )
        aead = AESGCM(master.reveal())
        try:
            return aead.decrypt(
                wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], _round_aad(name, master_id)
            )
        except InvalidTag:
            path = self._round_path(name)
            raise KeyFileDamaged(
                f"{path} does not authenticate under the master key"
            ) from None


def _round_aad(name: str, master_id: str) -> bytes:
    return f"{_ROUND_TITLE}\0{name}\0{master_id}".encode("ascii")


def _encode_tombstone(name: str) -> bytes:
    return keyfiles.encode_record(_TOMBSTONE_TITLE, [("name", name)])
