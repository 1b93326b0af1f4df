"""Several server processes (``server.workers``): real ``censusdrop serve``
processes on 127.0.0.1 with two workers, real FTPS clients, real files.

Which worker served a session is read from the server's log: with workers,
every line carries the writing process's PID, and the handler logs each
new session with the client's address and port.
"""

from __future__ import annotations

import ftplib
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from test_privilege_drop import Deployment
from test_privilege_drop import _status_ids
from test_privilege_drop import deployment  # noqa: F401 - a fixture
from test_privilege_drop import system_user  # noqa: F401 - a fixture

from censusdrop.cli.main import cli
from censusdrop.config.settings import ConfigError
from censusdrop.config.settings import Settings
from censusdrop.config.settings import build_settings
from censusdrop.server.storage import index
from censusdrop.server.workers import worker_settings
from censusdrop.server.workers_addresses import SharedAddressCounts
from conftest import TEST_PASSWORD
from conftest import Instance
from ftpclient import ReusingFTPS
from ftpclient import download
from ftpclient import login
from ftpclient import upload

CLI = [sys.executable, "-c", "from censusdrop.cli.main import main; main()"]
WUHAN = "420100"
SESSION_OPENED = re.compile(
    r"\[(\d+)\] INFO censusdrop\.server\.handler 127\.0\.0\.1:(\d+)-\S* FTP session"
    r" opened"
)


class Workers:
    """``censusdrop serve --workers 2`` as a child process, its output read
    by a thread so that the pipe never fills. With ``workers=1`` it is one
    plain server process (``worker_pids`` is then its own PID)."""

    def __init__(
        self, instance: Instance, cwd: Path, workers: int = 2, *extra: str
    ) -> None:
        self.instance = instance
        self.process = subprocess.Popen(
            [
                *CLI,
                "--config",
                str(instance.config),
                "serve",
                "--workers",
                str(workers),
                *extra,
            ],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(60):
            self.kill()
            raise AssertionError("server did not start:\n" + self.text)
        text = self.text
        address = re.search(r"listening on ([\d.]+):(\d+)", text)
        pids = re.search(r"worker processes ([\d ]+) \(parent (\d+)\)", text)
        assert address and (pids or workers == 1), text
        self.address = (address[1], int(address[2]))
        self.worker_pids = [self.process.pid]
        if pids:
            self.worker_pids = [int(pid) for pid in pids[1].split()]
            assert int(pids[2]) == self.process.pid
        self.cafile = instance.cafile

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if line.startswith("passive ports"):
                self._ready.set()
        self._ready.set()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def login(self, user: str = "wuhan") -> ReusingFTPS:
        return login(self.address, self.cafile, user, TEST_PASSWORD)

    def worker_of(self, client: ReusingFTPS, timeout: float = 10.0) -> int:
        """The PID of the worker that serves ``client``'s session."""
        port = client.sock.getsockname()[1]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for match in SESSION_OPENED.finditer(self.text):
                if int(match[2]) == port:
                    return int(match[1])
            time.sleep(0.05)
        raise AssertionError(f"no session line for port {port}:\n{self.text}")

    def spread(self, user: str = "wuhan", limit: int = 40) -> dict[int, ReusingFTPS]:
        """One logged-in session on each worker (the kernel picks)."""
        found: dict[int, ReusingFTPS] = {}
        spare: list[ReusingFTPS] = []
        for _ in range(limit):
            client = self.login(user)
            pid = self.worker_of(client)
            if pid in found:
                spare.append(client)
            else:
                found[pid] = client
            if len(found) == len(self.worker_pids):
                break
        for client in spare:
            client.close()
        assert len(found) == len(self.worker_pids), "sessions all on one worker"
        return found

    def stop(self) -> int:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        code = self.process.wait(30)
        self._reader.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code

    def kill(self) -> None:
        for pid in (*getattr(self, "worker_pids", []), self.process.pid):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _instance(
    folder: Path, database_url: str | None = None, **overrides: str
) -> Instance:
    url = database_url or f"sqlite:///{folder / 'db.sqlite'}"
    instance = Instance(folder / "i", url, **overrides)
    instance.add_account("wuhan", "prefecture", WUHAN)
    instance.add_account("expert", "reviewer")
    instance.assign("expert", WUHAN)
    return instance


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    running = Workers(_instance(tmp_path), tmp_path)
    try:
        yield running
    finally:
        running.stop()


def _events(instance: Instance, action: str) -> list[Any]:
    from censusdrop.audit.schema import audit_events as table

    engine = sa.create_engine(instance.settings.database_url)
    try:
        with engine.connect() as conn:
            query = sa.select(table).where(table.c.action == action)
            return list(conn.execute(query.order_by(table.c.seq)))
    finally:
        engine.dispose()


def _versions(instance: Instance, path: str) -> list[Any]:
    engine = sa.create_engine(instance.settings.database_url)
    try:
        with engine.connect() as conn:
            return index.history(conn, WUHAN, path)
    finally:
        engine.dispose()


def _cli(instance: Instance, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(instance.config), *args])
    return result.exit_code, result.output


def _round_trip(running: Workers, number: int, results: dict[int, Any]) -> None:
    try:
        client = running.login()
        data = hashlib.sha256(str(number).encode()).digest() * 8192  # 256 KiB
        upload(client, f"file-{number}.bin", data)
        results[number] = (
            running.worker_of(client),
            download(client, f"file-{number}.bin") == data,
        )
        client.quit()
    except Exception as exc:  # reported by the test
        results[number] = exc


# --- tests --------------------------------------------------------------------


def test_concurrent_sessions_are_served_by_both_workers_and_audited_once(
    tmp_path: Path, database_url: str
) -> None:
    instance = _instance(tmp_path, database_url)
    running = Workers(instance, tmp_path)
    try:
        results: dict[int, Any] = {}
        threads = [
            threading.Thread(target=_round_trip, args=(running, number, results))
            for number in range(16)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert all(
            isinstance(value, tuple) and value[1] for value in results.values()
        ), results
        assert len(results) == 16
        assert {value[0] for value in results.values()} == set(running.worker_pids)
    finally:
        assert running.stop() == 0

    ends = _events(instance, "upload_end")
    assert sorted(row.path for row in ends) == sorted(
        f"/file-{n}.bin" for n in range(16)
    )
    assert len(_events(instance, "download_end")) == 16
    assert len(_events(instance, "login")) == 16
    code, out = _cli(instance, "audit", "verify")
    assert code == 0, out


def test_sigterm_stops_the_parent_and_every_worker(workers: Workers) -> None:
    client = workers.login()
    upload(client, "a.txt", b"a")
    client.quit()
    assert workers.stop() == 0
    assert not any(_alive(pid) for pid in workers.worker_pids)
    assert "server stopped" in workers.text


def test_a_killed_worker_is_restarted_and_the_others_go_on(workers: Workers) -> None:
    sessions = workers.spread()
    victim, survivor = workers.worker_pids
    doomed, other = sessions[victim], sessions[survivor]
    conn = doomed.transfercmd("STOR half.bin")
    conn.sendall(b"x" * 300_000)

    os.kill(victim, signal.SIGKILL)
    upload(other, "during.bin", b"still served")
    assert download(other, "during.bin") == b"still served"
    conn.close()
    doomed.close()

    restarted = re.compile(r"worker=\d pid=(\d+) started")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        pids = {int(pid) for pid in restarted.findall(workers.text)}
        if pids - set(workers.worker_pids):
            break
        time.sleep(0.1)
    assert f"exited on signal {signal.SIGKILL}" in workers.text
    (new_pid,) = pids - set(workers.worker_pids)
    assert _alive(new_pid)
    workers.worker_pids = [new_pid, survivor]

    fresh = workers.spread()  # the successor serves sessions
    client = fresh[new_pid]
    assert "half.bin" not in client.nlst()
    assert download(client, "during.bin") == b"still served"
    for session in fresh.values():
        session.quit()
    other.quit()


def test_revocation_closes_sessions_in_every_worker(workers: Workers) -> None:
    sessions = workers.spread("expert")
    code, out = _cli(
        workers.instance, "account", "revoke", "expert", "--reason", "结束"
    )
    assert code == 0, out
    for client in sessions.values():
        client.sock.settimeout(10)  # each worker's guard reloads every 2 s
        with pytest.raises(ftplib.error_temp, match="^421"):
            client.getresp()
        client.close()
    assert workers.stop() == 0  # the audit writers flush
    assert len(_events(workers.instance, "access_ended")) == 2


def test_two_uploads_of_one_path_in_two_workers_leave_one_current_version(
    workers: Workers,
) -> None:
    sessions = workers.spread()
    first, second = sessions.values()
    bodies = [b"1" * 400_000, b"2" * 300_000]
    conns = [client.transfercmd("STOR 同名.bin") for client in (first, second)]
    for conn, body in zip(conns, bodies, strict=True):
        conn.sendall(body)
    for conn in conns:  # both close at once: the commits race
        conn.unwrap()
        conn.close()
    for client in (first, second):
        assert client.voidresp().startswith("226")

    versions = _versions(workers.instance, "同名.bin")
    assert len(versions) == 2
    (current,) = [v for v in versions if v.state == "current"]
    on_disk = download(first, "同名.bin")
    assert on_disk in bodies
    assert hashlib.sha256(on_disk).hexdigest() == current.sha256
    for client in (first, second):
        client.quit()


def test_the_per_address_limit_holds_across_workers(tmp_path: Path) -> None:
    instance = _instance(tmp_path, max_connections_per_ip="3")
    running = Workers(instance, tmp_path)
    held: list[socket.socket] = []
    try:
        for _ in range(3):
            sock = socket.create_connection(running.address, timeout=10)
            assert sock.recv(1024).startswith(b"220")
            held.append(sock)
        refused = socket.create_connection(running.address, timeout=10)
        assert refused.recv(1024).startswith(b"421")
        refused.close()
        held.pop().close()
        deadline = time.monotonic() + 10
        while True:  # the closed session is counted out by its worker
            again = socket.create_connection(running.address, timeout=10)
            if again.recv(1024).startswith(b"220"):
                held.append(again)
                break
            again.close()
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        for sock in held:
            sock.close()
        assert running.stop() == 0


def test_the_parent_binds_then_every_process_runs_as_the_user(
    deployment: Deployment,  # noqa: F811 - the fixture
) -> None:
    user = deployment.user
    root = deployment.state.parent
    running = Workers(deployment.instance, root, 2, "--user", user.pw_name)
    try:
        assert f"running as {user.pw_name}" in running.text
        for pid in (running.process.pid, *running.worker_pids):
            ids = _status_ids(pid)
            assert ids["Uid"] == {user.pw_uid} and ids["Gid"] == {user.pw_gid}
        for client in running.spread().values():
            upload(client, "普查表.pdf", b"%PDF census" * 1000)
            assert download(client, "普查表.pdf") == b"%PDF census" * 1000
            client.quit()
    finally:
        assert running.stop() == 0
    stored = list((deployment.data / "areas").rglob("*.pdf"))
    assert stored and all(p.stat().st_uid == user.pw_uid for p in stored)


def test_each_worker_gets_its_own_passive_ports(tmp_path: Path) -> None:
    settings = _settings(tmp_path, passive_ports="41000-41009", workers=3)
    slices = [
        worker_settings(settings, index, 3).passive_port_range() for index in range(3)
    ]
    assert [(r.start, r.stop) for r in slices] == [
        (41000, 41003),
        (41003, 41006),
        (41006, 41010),
    ]


def test_workers_are_checked_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="server.workers: must lie within"):
        _settings(tmp_path, workers=0)
    with pytest.raises(ConfigError, match="passive ports of its own"):
        _settings(tmp_path, passive_ports="41000-41001", workers=3)


def test_a_dead_workers_connections_are_counted_out() -> None:
    shared = SharedAddressCounts(2, 8)
    one, two = shared.view(0), shared.view(1)
    one.append("10.0.0.1")
    two.append("10.0.0.1")
    two.append("10.0.0.2")
    assert one.count("10.0.0.1") == 2 and one.count("10.0.0.2") == 1
    shared.clear(1)
    assert one.count("10.0.0.1") == 1 and one.count("10.0.0.2") == 0
    one.remove("10.0.0.1")
    assert two.count("10.0.0.1") == 0


def _settings(folder: Path, **server: Any) -> Settings:
    return build_settings({"server": server}, folder, {})
