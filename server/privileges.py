"""Least privilege: started as root, censusdrop gives root up for good.

With ``server.user`` set, ``censusdrop serve`` and the administrative
commands are started as root. Before they touch the data root or the
database they have read what only root may read and hold it in memory,
then become that user for good:

=====================  ====================================================
key file               after the drop
=====================  ====================================================
``keys/master.key``    not readable: the master key is held in memory
``keys/rounds/*.key``  read live through the run user's group (root's,
                       0640; the folder 0750): they are wrapped under the
                       master key, so reading them gives nothing alone
audit signing key      not readable: loaded at start
TLS private key        not readable: inside the TLS context built at start
=====================  ====================================================

:func:`share_round_keys` sets the group up; ``censusdrop.server.keykeeper``
reads round keys after the drop (and, for a command, keeps a root child to
make and destroy them). What the run user writes is its own: the data root
and an SQLite database (with its journal files) belong to it and to nobody
else, whether a server or a command wrote them.

Trusts: the operating system's user database, ``setresuid`` and friends,
and ``/proc/self`` to report the process's credentials truthfully.

Guarantees:

- when a user is configured, the server never serves as root: the drop
  happens before storage is prepared, and a drop that cannot be made or
  verified stops start-up (:class:`PrivilegeError`, one line naming the
  setting);
- the drop is checked: user, group and supplementary groups of every
  thread, no capability left, and ``setuid(0)`` fails;
- start-up is refused when the run user could read the master key, the
  signing key or the TLS key, could write the configuration or keys
  folders, or cannot read the round keys, or when the data root or the
  SQLite database is not the run user's or is open to other users.
"""

from __future__ import annotations

import contextlib
import dataclasses
import grp
import logging
import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from censusdrop.config.settings import Settings
from censusdrop.server.db import DatabaseError
from censusdrop.server.db import check_schema
from censusdrop.server.keykeeper import DroppableKeyring
from censusdrop.server.keykeeper import KeyKeeper
from censusdrop.server.services import Services
from censusdrop.server.storage.errors import StorageError
from censusdrop.server.storage.keyring import ROUNDS_DIR
from censusdrop.server.storage.keyring import Keyring
from censusdrop.server.storage.masterkey import MASTER_FILE

logger = logging.getLogger(__name__)

PROC_SELF = Path("/proc/self")


class PrivilegeError(Exception):
    """Privileges cannot be dropped, or the files are not set up for it."""


@dataclasses.dataclass(frozen=True)
class RunAs:
    """The unprivileged account the server becomes."""

    user: str
    uid: int
    group: str
    gid: int

    def __str__(self) -> str:
        return f"{self.user} (uid {self.uid}, gid {self.gid})"


def run_as_of(settings: Settings) -> RunAs | None:
    """The configured run user, looked up; None when none is configured."""
    if not settings.server.user:
        return None
    return look_up(settings.server.user, settings.server.group)


def look_up(name: str, group_name: str = "") -> RunAs:
    """The account ``name`` (with ``group_name`` or its primary group)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise PrivilegeError(f"server.user: no such user {name!r}") from None
    if entry.pw_uid == 0:
        raise PrivilegeError(
            f"server.user: {name!r} is root; name an unprivileged system user"
        )
    gid, group = _group_of(group_name, entry.pw_gid)
    return RunAs(user=name, uid=entry.pw_uid, group=group, gid=gid)


def hand_over_state(settings: Settings, run_as: RunAs) -> list[Path]:
    """Give the data root and an SQLite database (with its folder) to the
    run user, closed to others; return what was changed. For ``init``."""
    data = settings.path(settings.storage.data_root)
    database = _sqlite_file(sa.engine.make_url(settings.database_url))
    places = [data]
    if database is not None:
        places = [database.parent, database, data]
    for path in places:
        os.chown(path, run_as.uid, run_as.gid)
        path.chmod(0o700 if path.is_dir() else 0o600)
    return places


def share_round_keys(settings: Settings, run_as: RunAs) -> list[Path]:
    """Let the run user's group reach the round key files and read them:
    the configuration and keys folders 0710, ``keys/rounds`` 0750, its
    files 0640, all with that group; return what was changed. As root.

    ``master.key``, the lock and the other files keep their own modes
    (0600): the group may pass through those folders, not list them.
    """
    keys = settings.path(settings.storage.keys_dir)
    rounds = keys / ROUNDS_DIR
    wanted = [(folder, 0o710) for folder in _folders_to(keys, settings.base_dir)]
    wanted.append((rounds, 0o750))
    wanted.extend((path, 0o640) for path in sorted(rounds.iterdir()) if _plain(path))
    return [path for path, mode in wanted if _share(path, run_as.gid, mode)]


def drop_privileges(
    services: Services, run_as: RunAs, keeper: KeyKeeper | None = None
) -> None:
    """Become ``run_as`` for good, and check the result; the keyring goes
    on reading round keys live (and asks ``keeper`` to make or destroy
    them, when given).

    Call after the listening sockets are bound and before anything is
    written to the data root or the database.
    """
    if os.geteuid() != 0:
        raise PrivilegeError(
            f"server.user: becoming {run_as.user} needs censusdrop started as"
            f" root; it runs as uid {os.geteuid()}"
        )
    settings = services.settings
    keyring = services.storage.keyring
    if not isinstance(keyring, DroppableKeyring):
        raise PrivilegeError("server.user: this keyring cannot work without root")
    if not keyring.has_round_key(services.storage.key_name):
        keyring.ensure_round_key(services.storage.key_name)
    remembered = keyring.drop(keeper)
    secrets = _secret_files(settings, keyring)
    services.engine.dispose()  # no connection opened as root is reused

    _become(run_as)
    _check_dropped(run_as)
    logger.info(
        "privileges dropped user=%s uid=%d gid=%d round_keys=%d",
        run_as.user,
        run_as.uid,
        run_as.gid,
        remembered,
    )
    for setting, path in secrets:
        _refuse_readable(setting, path, run_as)
    for setting, folder in _root_folders(settings):
        _refuse_writable(setting, folder, run_as)
    _check_round_keys(keyring, run_as)
    _check_own("storage.data_root", settings.path(settings.storage.data_root), run_as)
    _check_database(services.engine, run_as)


@contextlib.contextmanager
def acting_as(run_as: RunAs | None) -> Iterator[None]:
    """Before the drop, look at the run user's files as that user (its
    effective ids only; root comes back after). A root without
    ``CAP_DAC_OVERRIDE``, as under the systemd unit, cannot read them."""
    if run_as is None or os.geteuid() != 0:
        yield
        return
    group = os.getegid()
    os.setegid(run_as.gid)
    os.seteuid(run_as.uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(group)


def warn_if_open(services: Services) -> None:
    """Without a drop: log a warning for a data root or an SQLite database
    that other users can reach (``censusdrop init`` makes them 0700/0600)."""
    settings = services.settings
    places = [("storage.data_root", settings.path(settings.storage.data_root))]
    database = _sqlite_file(services.engine.url)
    if database is not None:
        places.append(("database.url", database))
    for setting, path in places:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue  # a missing data root is created 0700 by storage
        if mode & 0o077:
            logger.warning(
                "%s: %s is open to other users (mode %04o); chmod %s it",
                setting,
                path,
                mode,
                "700" if path.is_dir() else "600",
            )


# -- private helpers ------------------------------------------------------


def _group_of(name: str, primary: int) -> tuple[int, str]:
    if not name:
        try:
            return primary, grp.getgrgid(primary).gr_name
        except KeyError:
            return primary, str(primary)
    try:
        entry = grp.getgrnam(name)
    except KeyError:
        raise PrivilegeError(f"server.group: no such group {name!r}") from None
    if entry.gr_gid == 0:
        raise PrivilegeError(f"server.group: {name!r} is root's group")
    return entry.gr_gid, name


def _secret_files(settings: Settings, keyring: Keyring) -> list[tuple[str, Path]]:
    """The key files read at start that the run user may not read."""
    return [
        ("storage.keys_dir", keyring.keys_dir / MASTER_FILE),
        ("audit.signing_key", settings.path(settings.audit.signing_key)),
        ("tls.private_key", settings.path(settings.tls.private_key)),
    ]


def _root_folders(settings: Settings) -> list[tuple[str, Path]]:
    """Folders whose contents root reads or writes."""
    keys = settings.path(settings.storage.keys_dir)
    return [
        ("configuration", settings.base_dir),
        ("storage.keys_dir", keys),
        ("storage.keys_dir", keys / ROUNDS_DIR),
    ]


def _folders_to(keys: Path, base: Path) -> list[Path]:
    """``keys`` and the folders above it up to ``base``, when inside it."""
    if not keys.is_relative_to(base):
        return [keys]
    return [keys, *(parent for parent in keys.parents if parent.is_relative_to(base))]


def _plain(path: Path) -> bool:
    return stat.S_ISREG(path.lstat().st_mode) and not path.name.startswith(".")


def _share(path: Path, gid: int, mode: int) -> bool:
    info = path.lstat()
    if info.st_gid == gid and stat.S_IMODE(info.st_mode) == mode:
        return False
    os.chown(path, -1, gid, follow_symlinks=False)
    path.chmod(mode)
    return True


def _check_round_keys(keyring: Keyring, run_as: RunAs) -> None:
    """The run user must be able to read every round key, live."""
    rounds = keyring.keys_dir / ROUNDS_DIR
    problem = None
    if not os.access(rounds, os.R_OK | os.X_OK):
        problem = f"cannot read {rounds}"
    else:
        try:
            for name in keyring.round_names():
                keyring.round_key(name)
        except StorageError as exc:
            problem = str(exc)
    if problem is not None:
        raise PrivilegeError(
            f"storage.keys_dir: as {run_as.user}: {problem}; run a censusdrop"
            " command as root (e.g. keys status), which gives its group read"
            " access to the round keys"
        )


def _become(run_as: RunAs) -> None:
    os.umask(0o077)
    try:
        os.setgroups([run_as.gid])
        os.setresgid(run_as.gid, run_as.gid, run_as.gid)
        os.setresuid(run_as.uid, run_as.uid, run_as.uid)
    except OSError as exc:
        raise PrivilegeError(
            f"server.user: cannot become {run_as}: {exc.strerror}"
        ) from exc


def _check_dropped(run_as: RunAs) -> None:
    """Refuse to go on unless root is gone from every thread for good."""
    uids, gids = {run_as.uid}, {run_as.gid}
    credentials_ok = (
        set(os.getresuid()) == uids
        and set(os.getresgid()) == gids
        and set(os.getgroups()) <= gids
        and all(
            _ids(task, "Uid:") == uids and _ids(task, "Gid:") == gids
            for task in (PROC_SELF / "task").iterdir()
        )
        and _effective_capabilities() == 0
    )
    if not credentials_ok:
        raise PrivilegeError(
            f"server.user: the change to {run_as.user} did not take in full"
        )
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise PrivilegeError(f"server.user: root could be regained after becoming {run_as}")


def _ids(task: Path, label: str) -> set[int]:
    for line in (task / "status").read_text().splitlines():
        if line.startswith(label):
            return {int(value) for value in line.split()[1:]}
    return set()


def _effective_capabilities() -> int:
    for line in (PROC_SELF / "status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return -1


def _refuse_readable(setting: str, path: Path, run_as: RunAs) -> None:
    try:
        with open(path, "rb"):
            pass
    except (FileNotFoundError, PermissionError):
        return
    raise PrivilegeError(
        f"{setting}: {path} is readable by {run_as.user}; only root may read"
        " it (chown root and chmod 600 it)"
    )


def _refuse_writable(setting: str, folder: Path, run_as: RunAs) -> None:
    if os.access(folder, os.W_OK):
        raise PrivilegeError(
            f"{setting}: {run_as.user} can write {folder}, whose files root"
            " reads at start; make it root's and not writable by others"
        )


def _check_own(setting: str, path: Path, run_as: RunAs) -> None:
    """``path`` must exist, be the run user's, and be closed to others."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise PrivilegeError(
            f"{setting}: {path} does not exist; create it for {run_as.user}"
        ) from None
    except PermissionError:
        raise PrivilegeError(
            f"{setting}: {run_as.user} cannot reach {path}; let it through"
            " the folders above (chmod o+x)"
        ) from None
    if info.st_uid != run_as.uid:
        raise PrivilegeError(
            f"{setting}: {path} belongs to uid {info.st_uid}, not to"
            f" {run_as.user}; chown it to {run_as.user}"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise PrivilegeError(
            f"{setting}: {path} is open to other users (mode {mode:04o});"
            f" chmod {'700' if stat.S_ISDIR(info.st_mode) else '600'} it"
        )


def _sqlite_file(url: sa.URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(str(url.database))


def _check_database(engine: sa.Engine, run_as: RunAs) -> None:
    path = _sqlite_file(engine.url)
    if path is not None:
        _check_own("database.url", path, run_as)
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise PrivilegeError(
                f"database.url: {run_as.user} cannot write {path.parent}, where"
                " SQLite keeps its journal; give the database a folder of its own"
                f" owned by {run_as.user}"
            )
    try:
        check_schema(engine)
    except DatabaseError as exc:
        raise PrivilegeError(f"database.url: as {run_as.user}: {exc}") from exc
