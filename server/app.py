"""Building and running the server from its settings.

``open_services`` assembles the parts (database, accounts, keyring,
storage, audit writer, TLS context) and fails with one clear line when a
part cannot be used. ``CensusServer`` runs the FTPS listeners on one event
loop until ``stop`` is called from any thread or by a signal.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import errno
import logging
import os
import socket
import threading
from typing import Any

from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer

from censusdrop.audit.checkpoint import load_signing_key
from censusdrop.audit.events import AuditError
from censusdrop.audit.store import AuditWriter
from censusdrop.config.checklist import ChecklistError
from censusdrop.config.prefectures import PrefectureError
from censusdrop.config.prefectures import load_prefectures
from censusdrop.config.settings import ConfigError
from censusdrop.config.settings import Settings
from censusdrop.server.accounts import AccountStore
from censusdrop.server.accounts import LockoutPolicy
from censusdrop.server.archive.keys import RoundKeyResolver
from censusdrop.server.db import DatabaseError
from censusdrop.server.db import check_schema
from censusdrop.server.db import make_engine
from censusdrop.server.guard import AccessGuard
from censusdrop.server.handler import CensusHandler
from censusdrop.server.handler import make_handler
from censusdrop.server.keykeeper import DroppableKeyring
from censusdrop.server.loop import LoopBridge
from censusdrop.server.passwords import Argon2Cost
from censusdrop.server.passwords import PasswordHasher
from censusdrop.server.prereview import PrereviewService
from censusdrop.server.privileges import PrivilegeError
from censusdrop.server.privileges import RunAs
from censusdrop.server.privileges import acting_as
from censusdrop.server.privileges import drop_privileges
from censusdrop.server.privileges import run_as_of
from censusdrop.server.privileges import warn_if_open
from censusdrop.server.services import Services
from censusdrop.server.storage.errors import KeyFileError
from censusdrop.server.storage.errors import StorageError
from censusdrop.server.storage.store import Quota
from censusdrop.server.storage.store import Storage
from censusdrop.server.tls import TLSConfigError
from censusdrop.server.tls import make_context

logger = logging.getLogger(__name__)

MASTER_KEY_ENV = "CENSUSDROP_MASTER_KEY"


class StartupError(Exception):
    """The server cannot start; the message names the setting and problem."""


def master_key_from_env() -> bytes | None:
    value = os.environ.get(MASTER_KEY_ENV)
    if not value:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise StartupError(f"{MASTER_KEY_ENV}: not valid base64") from None


def password_hasher(settings: Settings) -> PasswordHasher:
    security = settings.security
    return PasswordHasher(
        Argon2Cost(
            security.argon2_memory_kib,
            security.argon2_iterations,
            security.argon2_lanes,
        )
    )


def open_services(
    settings: Settings,
    *,
    with_tls: bool = True,
    check_database: bool = True,
    start_audit: bool = True,
) -> Services:
    """Every part the server needs; ``StartupError`` if one is unusable.

    ``check_database=False`` leaves the database untouched, for a server
    that drops privileges first and checks it as its run user.
    ``start_audit=False`` starts no audit writer (no thread): a parent that
    forks workers leaves a ``PendingAudit`` that each worker starts.
    """
    try:
        engine = make_engine(settings.database_url)
        if check_database:
            check_schema(engine)
        prefectures = load_prefectures(settings.reference.prefectures)
        # A plain Keyring until a privilege drop (privileges.py).
        keyring = DroppableKeyring.open(
            settings.path(settings.storage.keys_dir), master_key_from_env()
        )
        context = (
            make_context(
                settings.path(settings.tls.certificate),
                settings.path(settings.tls.private_key),
                settings.tls.min_version,
                settings.tls.max_version,
            )
            if with_tls
            else None
        )
    except (
        ConfigError,
        DatabaseError,
        PrefectureError,
        StorageError,
        TLSConfigError,
    ) as exc:
        raise StartupError(str(exc)) from exc
    security = settings.security
    policy = LockoutPolicy(
        threshold=security.lockout_threshold,
        lockout=_minutes(security.lockout_minutes),
        address_limit=security.ip_failure_limit,
        address_window=_minutes(security.ip_failure_window_minutes),
    )
    accounts = AccountStore(engine, password_hasher(settings), prefectures, policy)
    storage = Storage(
        settings.path(settings.storage.data_root),
        keyring,
        engine,
        key_resolver=RoundKeyResolver(engine),
        partial_lifetime=_minutes(round(settings.storage.partial_hours * 60)),
        quota=Quota(
            bytes=settings.storage.area_quota_mib * 1024 * 1024,
            files=settings.storage.area_quota_files,
        ),
    )
    pending = PendingAudit(settings, _signing_key(settings))
    return Services(
        settings=settings,
        engine=engine,
        prefectures=prefectures,
        accounts=accounts,
        storage=storage,
        audit=pending.start(engine) if start_audit else pending,
        ssl_context=context,  # type: ignore[arg-type]
    )


class PendingAudit:
    """An audit writer not started yet: what a worker process needs to
    start its own (the signing key was read before a privilege drop)."""

    def __init__(self, settings: Settings, checkpoint_key: Any) -> None:
        self.settings = settings
        self.checkpoint_key = checkpoint_key

    def start(self, engine: Any) -> AuditWriter:
        minutes = self.settings.audit.checkpoint_interval_minutes
        return AuditWriter(
            engine,
            checkpoint_key=self.checkpoint_key,
            checkpoint_interval=minutes * 60.0,
        )

    def emit(self, event: Any) -> None:
        raise AuditError("the audit writer of this process is not started")

    def emit_durable(self, event: Any, timeout: float = 10.0) -> None:
        self.emit(event)

    def submit_durable(self, event: Any, done: Any) -> None:
        self.emit(event)


@dataclasses.dataclass(frozen=True)
class Prebound:
    """What a supervising parent did for one worker process: its listening
    sockets (bound, privileges dropped, storage prepared), and whether
    this worker runs the once-only jobs (pre-review, periodic sweep)."""

    explicit: socket.socket
    implicit: socket.socket | None
    run_as: RunAs | None
    once_only: bool
    # pyftpdlib's per-address list, shared with the other workers.
    ip_map: list[str] | None = None


class CensusServer:
    """The FTPS listeners (explicit, and implicit if configured) on one loop."""

    def __init__(
        self,
        services: Services,
        host: str | None = None,
        port: int | None = None,
        *,
        prebound: Prebound | None = None,
    ) -> None:
        self.services = services
        wanted = None if prebound is not None else check_startup(services)
        once_only = prebound is None or prebound.once_only
        try:  # first: nothing to undo when the checklist is unusable
            self.prereview = (
                PrereviewService.from_services(services) if once_only else None
            )
        except ChecklistError as exc:
            raise StartupError(f"reference.checklist: {exc}") from exc
        self.ioloop = IOLoop()  # made in this process: never shared by a fork
        services.bridge = LoopBridge(self.ioloop)
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self.listeners: list[FTPServer] = []
        try:
            self._set_up(services, host, port, prebound, wanted)
        except BaseException:
            # Nothing of a server that did not start stays open: a caller
            # that retries in one process must not run out of descriptors.
            self._close_loop()
            raise
        if once_only:
            # Expire interrupted uploads and finish what a crash left in
            # staging.
            self.ioloop.call_every(
                600, services.bridge.executor.submit, services.storage.sweep
            )

    def _set_up(
        self,
        services: Services,
        host: str | None,
        port: int | None,
        prebound: Prebound | None,
        wanted: RunAs | None,
    ) -> None:
        server = services.settings.server
        # Ends reviewer sessions when their access ends (guard.py).
        self.guard = AccessGuard(services, self.ioloop)
        self.guard.start()
        handler = make_handler(services)
        if prebound is None:
            self._listen_all(handler, host or server.host, port)
        else:
            self._adopt(handler, prebound)
        for listener in self.listeners:
            listener.max_cons = server.max_connections
            listener.max_cons_per_ip = server.max_connections_per_ip
            if prebound is not None and prebound.ip_map is not None:
                listener.ip_map = prebound.ip_map
        if prebound is None:
            # Ports are bound and keys read: root is no longer needed.
            self.run_as = give_up_root(services, wanted)
            swept = services.storage.prepare()
            logger.info("storage ready swept=%d", swept)
        else:
            self.run_as = prebound.run_as

    def _close_loop(self) -> None:
        """Close the listeners, the loop's bridge and the loop."""
        for listener in self.listeners:
            listener.close()
        self.services.bridge.close()
        self.ioloop.close()

    def _listen_all(
        self, handler: type[CensusHandler], host: str, port: int | None
    ) -> None:
        server = self.services.settings.server
        sock = bind_listener(host, server.port if port is None else port)
        self.listeners.append(FTPServer(sock, handler, ioloop=self.ioloop))
        if server.implicit_tls_port:
            implicit = bind_listener(host, server.implicit_tls_port)
            self.listeners.append(
                FTPServer(implicit, implicit_handler(handler), ioloop=self.ioloop)
            )

    def _adopt(self, handler: type[CensusHandler], prebound: Prebound) -> None:
        self.listeners.append(FTPServer(prebound.explicit, handler, ioloop=self.ioloop))
        if prebound.implicit is not None:
            self.listeners.append(
                FTPServer(
                    prebound.implicit, implicit_handler(handler), ioloop=self.ioloop
                )
            )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listeners[0].socket.getsockname()[:2]
        return str(host), int(port)

    @property
    def implicit_address(self) -> tuple[str, int] | None:
        if len(self.listeners) < 2:
            return None
        host, port = self.listeners[1].socket.getsockname()[:2]
        return str(host), int(port)

    def serve(self) -> None:
        """Run until ``stop``; then close every session and the listeners."""
        try:
            if self.prereview is not None:
                self.prereview.start()
            while not self._stop.is_set():
                self.ioloop.loop(timeout=0.5, blocking=False)
        finally:
            self._shutdown()

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve, name="censusdrop-ftp", daemon=True)
        thread.start()
        return thread

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.services.bridge.post(lambda: None)  # wake the loop now
        self._stopped.wait(timeout)

    def _shutdown(self) -> None:
        try:
            if self.prereview is not None:
                self.prereview.stop()  # before the audit writer and engine go
            self._close_loop()
            self.services.audit.close()  # type: ignore[attr-defined]
            self.services.engine.dispose()
        finally:
            self._stopped.set()
            logger.info("server stopped")


def check_startup(services: Services) -> RunAs | None:
    """The run user, once the key files are known to be usable."""
    try:
        wanted = run_as_of(services.settings)
    except PrivilegeError as exc:
        raise StartupError(str(exc)) from exc
    try:  # a key file that cannot be used stops start-up, named
        _check_keys(services.storage, wanted)
    except StorageError as exc:
        raise StartupError(f"storage.keys_dir: {exc}") from exc
    except OSError as exc:
        raise StartupError(f"storage.data_root: {exc}") from exc
    return wanted


def give_up_root(services: Services, run_as: RunAs | None) -> RunAs | None:
    """Become ``run_as`` (ports bound, keys read), or warn about what others
    could read if the server stays who it is; ``StartupError`` if not."""
    try:
        if run_as is None:
            warn_if_open(services)
        else:
            drop_privileges(services, run_as)
    except PrivilegeError as exc:
        raise StartupError(str(exc)) from exc
    return run_as


def bind_listener(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening socket; ``StartupError`` naming the setting if not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        # Bound here rather than by pyftpdlib, whose error hides errno.
        return socket.create_server(
            (host, port), family=family, backlog=128, reuse_port=reuse_port
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"server.port: {host}:{port} is already in use") from exc
        raise StartupError(
            f"server.host: cannot listen on {host}:{port}: {exc.strerror}"
        ) from exc


def implicit_handler(handler: type[CensusHandler]) -> type[CensusHandler]:
    return type("ImplicitHandler", (ImplicitTLSMixin, handler), {})


class ImplicitTLSMixin:
    """Implicit FTPS: TLS from the first byte, banner after the handshake."""

    def handle(self: Any) -> None:
        self.on_connect()
        self.secure_connection(self.ssl_context)

    def handle_ssl_established(self: Any) -> None:
        super().handle_ssl_established()  # type: ignore[misc]
        self._pbsz = True
        self.respond(f"220 {self.banner}")


def _check_keys(storage: Storage, run_as: RunAs | None) -> None:
    """Every round key file must be usable, and the default one must not
    vanish once files are stored: start-up would make a new one, and every
    file under the lost key would stay unreadable.

    The data root is looked at as the user who owns it (``run_as``, when
    the server drops to it), and a folder that cannot be read is an error,
    never taken for an empty one."""
    keyring = storage.keyring
    keyring.verify()
    if keyring.has_round_key(storage.key_name):
        return
    with acting_as(run_as):
        stored = _holds_files(storage.layout.root / "areas")
    if stored:
        path = keyring.keys_dir / "rounds" / f"{storage.key_name}.key"
        raise KeyFileError(
            f"{path} is missing although files are stored; restore the"
            " keys folder from its backup (a new key would not read them)"
        )


def _holds_files(folder: os.PathLike[str]) -> bool:
    for _folder, _dirs, files in os.walk(folder, onerror=_unless_missing):
        if files:
            return True
    return False


def _unless_missing(error: OSError) -> None:
    if not isinstance(error, FileNotFoundError):
        raise error


def _signing_key(settings: Settings) -> Any:
    path = settings.path(settings.audit.signing_key)
    if not path.exists():
        logger.warning("audit signing key %s missing: no automatic checkpoints", path)
        return None
    try:
        return load_signing_key(path)
    except AuditError as exc:
        raise StartupError(f"audit.signing_key: {exc}") from exc


def _minutes(value: int) -> Any:
    import datetime as dt

    return dt.timedelta(minutes=value)
