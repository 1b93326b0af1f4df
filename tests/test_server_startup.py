"""Start-up refuses a bad setup with one clear line, never a traceback."""

from __future__ import annotations

import datetime as dt
import gc
import os
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from censusdrop.cli.main import cli
from censusdrop.server.tls import create_self_signed
from conftest import Instance


def _serve(instance: Instance, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(instance.config), "serve", *args])
    return result.exit_code, result.output


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _instance(tmp_path: Path) -> Instance:
    return Instance(tmp_path / "i", f"sqlite:///{tmp_path / 'db.sqlite'}")


def test_a_port_in_use_is_named(tmp_path: Path) -> None:
    instance = _instance(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out = _serve(instance, "--host", "127.0.0.1", "--port", str(port))
    assert code != 0
    assert f"127.0.0.1:{port} is already in use" in out
    assert "Traceback" not in out


def test_an_unreadable_certificate_is_named(tmp_path: Path) -> None:
    instance = _instance(tmp_path)
    instance.settings.path(instance.settings.tls.certificate).write_text("garbage")
    code, out = _serve(instance)
    assert code != 0
    assert "tls.certificate" in out and "Traceback" not in out


def test_a_key_that_does_not_match_is_named(tmp_path: Path) -> None:
    instance = _instance(tmp_path)
    create_self_signed(
        tmp_path / "other.crt", tmp_path / "other.key", hostname="x", at=_now()
    )
    key = (tmp_path / "other.key").read_bytes()
    instance.settings.path(instance.settings.tls.private_key).write_bytes(key)
    code, out = _serve(instance)
    assert code != 0
    assert "tls.private_key" in out and "Traceback" not in out


def test_a_missing_master_key_is_named(tmp_path: Path) -> None:
    instance = _instance(tmp_path)
    (instance.settings.path(instance.settings.storage.keys_dir) / "master.key").unlink()
    code, out = _serve(instance)
    assert code != 0
    assert "Traceback" not in out
    assert len(out.strip().splitlines()) == 1


def test_a_database_behind_the_code_is_refused(tmp_path: Path) -> None:
    instance = Instance(tmp_path / "i", f"sqlite:///{tmp_path / 'db.sqlite'}")
    (tmp_path / "db.sqlite").unlink()
    code, out = _serve(instance)
    assert code != 0
    assert "censusdrop db upgrade" in out


def test_a_server_that_fails_to_start_leaves_no_descriptor_open(tmp_path: Path) -> None:
    # Its event loop, the loop's wake-up socket pair and any listener bound
    # before the failure are closed: a supervisor that retries the start
    # in one process does not run out of descriptors.
    from censusdrop.server.app import CensusServer
    from censusdrop.server.app import StartupError

    instance = _instance(tmp_path)
    services = instance.services()
    try:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            with pytest.raises(StartupError):  # what is made once: pools, caches
                CensusServer(services, host="127.0.0.1", port=port)
            gc.collect()
            before = _open_descriptors()
            for _ in range(5):
                with pytest.raises(StartupError, match="already in use"):
                    CensusServer(services, host="127.0.0.1", port=port)
            gc.collect()
            # Each start used to leave three (its epoll and a socket pair);
            # a little slack for other threads of the test process.
            assert len(_open_descriptors() - before) < 3
    finally:
        services.engine.dispose()


def _open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))
