"""Round keys for a process that gives up root: live reads, a root keeper.

A server, or an administrative command, started as root with
``server.user`` opens the keyring as root (the master key goes into
memory) and then becomes that user (``censusdrop.server.privileges``).
From then on, with a :class:`DroppableKeyring`:

- round key files are read live, through the run user's group
  (``keys/rounds`` is root's and readable by that group; the files are
  wrapped under the master key, so reading them gives nothing without it),
  and unwrapped with the master key in memory: a round created after the
  drop is usable at once, and a destroyed key (its tombstone) is refused at
  once;
- the round keys this process has unwrapped are remembered, so that a
  ``keys rotate`` elsewhere (which re-wraps every file under a master key
  this process never held) does not cut them off; only a round key made
  after such a rotation needs a restart;
- making or destroying a round key needs root (the keys folder is not the
  run user's). A server refuses it; an administrative command hands it to
  its :class:`KeyKeeper`, a child forked before the drop that stays root
  and does exactly two things, for a valid round name: make a round key,
  destroy one.

Trusts: the keyring (see ``censusdrop.server.storage.keyring``); the
keeper trusts its parent only to name rounds, and checks the names.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

from censusdrop.server.storage.errors import KeyDestroyed
from censusdrop.server.storage.errors import KeyNotFound
from censusdrop.server.storage.errors import KeyringError
from censusdrop.server.storage.errors import MasterKeyError
from censusdrop.server.storage.errors import StorageError
from censusdrop.server.storage.keyfiles import Secret
from censusdrop.server.storage.keyring import Keyring
from censusdrop.server.storage.keyring import validate_round_name

MAX_MESSAGE = 4096
ENSURE = "ensure"
DESTROY = "destroy"
_ERRORS: dict[str, type[KeyringError]] = {
    "destroyed": KeyDestroyed,
    "not-found": KeyNotFound,
    "error": KeyringError,
}


class KeyKeeper:
    """A child that stays root to make and destroy round keys for its
    parent, which gave root up. Start it before the parent has threads."""

    def __init__(self, pid: int, channel: socket.socket) -> None:
        self._pid = pid
        self._channel = channel

    @classmethod
    def start(cls, keys_dir: Path, master_key: bytes | None) -> KeyKeeper:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            code = 1
            try:
                code = _serve(theirs, keys_dir, master_key)
            finally:
                os._exit(code)  # never the parent's exit handlers
        theirs.close()
        return cls(pid, ours)

    def ensure(self, name: str) -> None:
        """Make the round key ``name`` unless it exists (as root)."""
        self._ask(ENSURE, name)

    def destroy(self, name: str) -> None:
        """Destroy the round key ``name`` (as root)."""
        self._ask(DESTROY, name)

    def close(self) -> None:
        """End the keeper (it leaves when its channel closes) and reap it."""
        self._channel.close()
        os.waitpid(self._pid, 0)

    def _ask(self, operation: str, name: str) -> None:
        validate_round_name(name)
        try:
            self._channel.send(f"{operation} {name}".encode("ascii"))
            reply = self._channel.recv(MAX_MESSAGE)
        except OSError as exc:
            raise KeyringError(f"the root key keeper is gone: {exc}") from exc
        if reply == b"ok":
            return
        if not reply:
            raise KeyringError("the root key keeper ended")
        kind, _, message = reply.decode("utf-8", "replace").partition("\0")
        raise _ERRORS.get(kind, KeyringError)(message)


class DroppableKeyring(Keyring):
    """A keyring that keeps working after its process gives up root.

    Until :meth:`drop` it is a plain :class:`Keyring`.
    """

    _dropped = False
    _keeper: KeyKeeper | None = None
    _remembered: dict[str, Secret]

    def drop(self, keeper: KeyKeeper | None = None) -> int:
        """Switch to live reads without root; call as root, just before
        the drop. Returns how many round keys are remembered now."""
        self._remembered = {
            name: Secret(Keyring.round_key(self, name)) for name in self.round_names()
        }
        self._keeper = keeper
        self._dropped = True
        return len(self._remembered)

    def round_key(self, name: str) -> bytes:
        key = super().round_key(name)
        if self._dropped and name not in self._remembered:
            self._remembered[name] = Secret(key)
        return key

    def ensure_round_key(self, name: str) -> None:
        if not self._dropped:
            super().ensure_round_key(name)
        elif self.has_round_key(name):
            return
        elif self._keeper is not None:
            self._keeper.ensure(name)
        elif self._tombstone(name).exists():
            raise KeyDestroyed(f"round key {name!r} was destroyed")
        else:
            raise KeyringError(
                f"round key {name!r} does not exist, and a process that gave up"
                " root cannot make it (censusdrop round create makes round keys)"
            )

    def destroy_round_key(self, name: str) -> None:
        if not self._dropped:
            super().destroy_round_key(name)
        elif self._keeper is not None:
            self._keeper.destroy(name)
            self._remembered.pop(name, None)
        else:
            raise KeyringError(f"destroying round key {name!r} needs root")

    def rotate_master(self, new_master_key: bytes | None = None) -> str:
        if self._dropped:
            raise KeyringError("rotating the master key needs root")
        return super().rotate_master(new_master_key)

    def _unwrap_round(self, name: str, master_id: str, wrapped: bytes) -> bytes:
        # master.key is out of reach now: never try to re-read it.
        if not self._dropped or master_id in self._masters:
            return super()._unwrap_round(name, master_id, wrapped)
        remembered = self._remembered.get(name)
        if remembered is None:
            raise MasterKeyError(
                f"round key {name!r} is wrapped by master key {master_id}, made"
                " after this process gave up root; restart it to use the key"
            )
        return remembered.reveal()


# -- the keeper's side ----------------------------------------------------


def _serve(channel: socket.socket, keys_dir: Path, master_key: bytes | None) -> int:
    """Answer requests until the parent closes the channel."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides
    keyring: Keyring | None = None
    while request := channel.recv(MAX_MESSAGE):
        operation, _, name = request.decode("ascii", "replace").partition(" ")
        try:
            keyring = keyring or Keyring.open(keys_dir, master_key)
            _do(keyring, operation, name)
            reply = b"ok"
        except (StorageError, ValueError) as exc:
            reply = f"{_kind(exc)}\0{exc}".encode()[:MAX_MESSAGE]
        channel.send(reply)
    return 0


def _do(keyring: Keyring, operation: str, name: str) -> None:
    validate_round_name(name)
    if operation == ENSURE:
        keyring.ensure_round_key(name)
    elif operation == DESTROY:
        keyring.destroy_round_key(name)
    else:
        raise ValueError(f"unknown key keeper request {operation!r}")


def _kind(exc: Exception) -> str:
    if isinstance(exc, KeyDestroyed):
        return "destroyed"
    if isinstance(exc, KeyNotFound):
        return "not-found"
    return "error"
