"""Key files that fail: removed, replaced by garbage, or a folder in their
place, while the server runs and at start-up.

Root reads files whatever their mode, so "unreadable" is made by removal,
garbage, or a folder where the file should be, never by chmod.
"""

from __future__ import annotations

import ftplib
import io
import logging
import os
import shutil
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from censusdrop.audit.query import EventFilter
from censusdrop.audit.query import find_events
from censusdrop.cli.main import cli
from conftest import TEST_PASSWORD
from conftest import Instance
from conftest import RunningServer
from conftest import configured_server
from ftpclient import download
from ftpclient import login
from ftpclient import upload

CONTENT = "普查表".encode() * 2000


def _remove(path: Path) -> None:
    path.unlink()


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(200))


def _folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-20] + b"\n")


FAULTS: dict[str, Callable[[Path], None]] = {
    "removed": _remove,
    "garbage": _garbage,
    "folder": _folder,
    "truncated": _truncated,
}


class KeyFiles:
    """Break a key file and put it back exactly as it was."""

    def __init__(self, keys_dir: Path) -> None:
        self.keys_dir = keys_dir
        self._saved: dict[Path, bytes] = {}

    def round_keys(self) -> list[Path]:
        return sorted((self.keys_dir / "rounds").glob("*.key"))

    def master(self) -> Path:
        return self.keys_dir / "master.key"

    def damage(self, path: Path, fault: Callable[[Path], None]) -> None:
        self._saved[path] = path.read_bytes()
        fault(path)

    def restore(self) -> None:
        for path, data in self._saved.items():
            if path.is_dir():
                shutil.rmtree(path)
            path.write_bytes(data)
            path.chmod(0o600)
        self._saved.clear()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[RunningServer]:
    with configured_server(tmp_path) as server:
        yield server


def _keys(server: RunningServer) -> KeyFiles:
    settings = server.instance.settings
    return KeyFiles(settings.path(settings.storage.keys_dir))


@pytest.mark.parametrize("fault", FAULTS)
def test_a_round_key_file_failing_while_running_refuses_transfers_with_451(
    running: RunningServer, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    client = login(running.address, running.cafile, "wuhan", TEST_PASSWORD)
    upload(client, "汇总表.xlsx", CONTENT)
    keys = _keys(running)
    round_keys = keys.round_keys()
    assert round_keys
    for path in round_keys:
        keys.damage(path, FAULTS[fault])

    received = io.BytesIO()
    with pytest.raises(ftplib.error_temp, match="^451.*密钥"):
        client.retrbinary("RETR 汇总表.xlsx", received.write)
    assert received.getvalue() == b""  # never garbage bytes
    with pytest.raises(ftplib.error_temp, match="^451.*密钥"):
        upload(client, "新表.xlsx", b"not stored while the key is gone")
    assert client.nlst() == ["汇总表.xlsx"]

    keys.restore()
    assert download(client, "汇总表.xlsx") == CONTENT
    upload(client, "新表.xlsx", b"stored now")
    assert download(client, "新表.xlsx") == b"stored now"
    client.quit()

    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    named = [line for line in lines if "encryption key unavailable" in line]
    assert named and all(round_keys[0].name in line for line in named), lines
    assert not any("integrity failure" in line for line in lines), lines
    running.services.audit.flush(10)
    failed = find_events(
        running.services.engine, EventFilter(actions=("integrity_failure",))
    )
    rules = {event.details.get("rule") for event in failed}
    assert rules == {"key_unavailable"}  # a key problem, not a damaged file


def test_the_master_key_file_failing_while_running_changes_nothing_until_restart(
    running: RunningServer,
) -> None:
    # The master key is read once, at start-up: running transfers go on, and
    # the next start-up names the problem (see the start-up tests below).
    client = login(running.address, running.cafile, "wuhan", TEST_PASSWORD)
    upload(client, "汇总表.xlsx", CONTENT)
    keys = _keys(running)
    keys.damage(keys.master(), _garbage)
    assert download(client, "汇总表.xlsx") == CONTENT
    upload(client, "另一个.xlsx", b"under the key held in memory")
    assert download(client, "另一个.xlsx") == b"under the key held in memory"
    client.quit()
    keys.restore()


# --- start-up -------------------------------------------------------------------


@pytest.fixture
def stopped(tmp_path: Path) -> Instance:
    instance = Instance(tmp_path / "i", f"sqlite:///{tmp_path / 'db.sqlite'}")
    instance.add_account("wuhan", "prefecture", "420100")
    return instance


def _serve(instance: Instance) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli, ["--config", str(instance.config), "serve", "--port", "0"]
    )
    return result.exit_code, result.output


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("which", ["master", "round"])
def test_an_unusable_key_file_at_start_up_is_one_clear_line(
    stopped: Instance, which: str, fault: str
) -> None:
    settings = stopped.settings
    keys = KeyFiles(settings.path(settings.storage.keys_dir))
    if which == "round":  # a first run makes the round key and stores a file
        first = RunningServer(stopped)
        client = login(first.address, first.cafile, "wuhan", TEST_PASSWORD)
        upload(client, "汇总表.xlsx", CONTENT)
        client.quit()
        first.stop()
    targets = [keys.master()] if which == "master" else keys.round_keys()
    assert targets
    keys.damage(targets[0], FAULTS[fault])

    code, output = _serve(stopped)
    assert code != 0
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("Error:"), output
    assert targets[0].name in lines[0], output
    assert "Traceback" not in output
