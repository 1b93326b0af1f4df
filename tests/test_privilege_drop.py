"""``serve --user``: started as root, the server (and every administrative
command) becomes a system user.

Real processes: a throwaway system user made with ``useradd --system`` (and
removed after), ``censusdrop serve`` and other commands started as root in
subprocesses, credentials read from ``/proc/PID/status``, real FTPS
transfers. Needs root (CI runs as root); elsewhere these tests skip, or
fail under ``CENSUSDROP_REQUIRE_ALL``.
"""

from __future__ import annotations

import datetime as dt
import ftplib
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import uuid
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverprocess import start
from serverprocess import stop

from conftest import TEST_PASSWORD
from conftest import Instance
from conftest import require_tool
from conftest import skip_or_fail
from ftpclient import download
from ftpclient import login
from ftpclient import upload

CLI = [sys.executable, "-c", "from censusdrop.cli.main import main; main()"]
CHINA = zoneinfo.ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def system_user() -> Iterator[pwd.struct_passwd]:
    """A system user and group of its own, deleted at the end."""
    if os.geteuid() != 0:
        skip_or_fail("dropping privileges needs the tests to run as root")
    useradd, userdel = require_tool("useradd"), require_tool("userdel")
    name = f"cdtest{uuid.uuid4().hex[:8]}"
    options = ["--system", "--user-group", "--no-create-home"]
    made = subprocess.run(
        [useradd, *options, "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        skip_or_fail(f"cannot create a system user: {made.stderr.strip()}")
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run([userdel, name], capture_output=True, check=False)


class Deployment:
    """Root's folder (configuration, keys, certificate) apart from the run
    user's (SQLite database and data root), as the README lays it out."""

    def __init__(self, root: Path, user: pwd.struct_passwd) -> None:
        self.user = user
        self.state = root / "state"
        self.state.mkdir(mode=0o700)
        self.database = self.state / "censusdrop.db"
        self.data = self.state / "data"
        self.instance = Instance(
            root / "etc",
            f"sqlite:///{self.database}",
            data_root=f'"{self.data}"',
            user=f'"{user.pw_name}"',
        )
        self.instance.add_account("wuhan", "prefecture", "420100")
        self.settings = self.instance.settings
        for path in (self.state, self.database, self.data):
            os.chown(path, user.pw_uid, user.pw_gid)
        from censusdrop.server.privileges import look_up
        from censusdrop.server.privileges import share_round_keys

        share_round_keys(self.settings, look_up(user.pw_name))  # as init does

    @property
    def signing_key(self) -> Path:
        return self.settings.path(self.settings.audit.signing_key)

    @property
    def keys(self) -> Path:
        return self.settings.path(self.settings.storage.keys_dir)

    @property
    def rounds(self) -> Path:
        return self.keys / "rounds"

    def serve(self, *extra: str) -> list[str]:
        return [*CLI, "--config", str(self.instance.config), "serve", *extra]

    def command(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """A CLI command, run as root; it must succeed."""
        result = subprocess.run(
            [*CLI, "--config", str(self.instance.config), *argv],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def carrier(self, name: str, data: bytes) -> Path:
        """A folder to import, where the run user can read it."""
        source = self.state.parent / f"carrier-{uuid.uuid4().hex[:8]}"
        source.mkdir(mode=0o755)
        (source / name).write_bytes(data)
        (source / name).chmod(0o644)
        return source


@pytest.fixture
def deployment(system_user: pwd.struct_passwd) -> Iterator[Deployment]:
    # Not under pytest's 0700 base folder: the run user must reach the state.
    root = Path(tempfile.mkdtemp(prefix="censusdrop-drop-"))
    root.chmod(0o755)
    try:
        yield Deployment(root, system_user)
    finally:
        shutil.rmtree(root)


def _status_ids(pid: int) -> dict[str, set[int]]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        label, _, values = line.partition(":")
        if label in ("Uid", "Gid", "Groups"):
            found[label] = {int(value) for value in values.split()}
    return found


def _address(text: str) -> tuple[str, int]:
    found = re.search(r"listening on ([\d.]+):(\d+)", text)
    assert found, text
    return found[1], int(found[2])


def _wuhan(deployment: Deployment, text: str) -> ftplib.FTP:
    """The prefecture account logged in to the server that printed ``text``."""
    cafile = deployment.instance.cafile
    return login(_address(text), cafile, "wuhan", TEST_PASSWORD)


def _open_window() -> list[str]:
    """A submission window open now (China time, yesterday to tomorrow)."""
    today = dt.datetime.now(CHINA).date()
    day = dt.timedelta(days=1)
    return ["--submission", f"{today - day}..{today + day}"]


def _unit_bounding_set() -> list[str]:
    """``setpriv`` limited to the systemd unit's capability bounding set."""
    setpriv = require_tool("setpriv")
    (names,) = _unit_values("CapabilityBoundingSet")
    allowed = [name.removeprefix("CAP_").lower() for name in names.split()]
    bounding = ",".join(["-all", *(f"+{name}" for name in allowed)])
    argv = [setpriv, "--bounding-set", bounding, "--inh-caps", "-all"]
    return [*argv, "--no-new-privs", "--"]


def _refusal(
    deployment: Deployment,
    *extra: str,
    env: dict[str, str] | None = None,
    prefix: list[str] | None = None,
) -> str:
    """Run ``serve`` expecting a refusal; its one ``Error:`` line."""
    result = subprocess.run(
        [*(prefix or []), *deployment.serve("--port", "0", *extra)],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0, result.stdout
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    return errors[0]


def test_serve_runs_as_the_user_and_transfers_work(deployment: Deployment) -> None:
    user = deployment.user
    process, text = start(
        deployment.serve("--port", "0", "--user", user.pw_name), logs=False
    )
    try:
        ids = _status_ids(process.pid)
        assert ids["Uid"] == {user.pw_uid} and ids["Gid"] == {user.pw_gid}
        assert ids["Groups"] <= {user.pw_gid}
        assert f"running as {user.pw_name}" in text

        address = re.search(r"listening on ([\d.]+):(\d+)", text)
        assert address, text
        client = login(
            (address[1], int(address[2])),
            deployment.instance.cafile,
            "wuhan",
            TEST_PASSWORD,
        )
        upload(client, "普查表.pdf", b"%PDF census" * 1000)
        assert download(client, "普查表.pdf") == b"%PDF census" * 1000
        client.quit()

        # Nothing the server keeps open lies in the keys folder.
        fds = Path(f"/proc/{process.pid}/fd")
        targets = [os.readlink(fd) for fd in fds.iterdir()]
        assert not [t for t in targets if t.startswith(str(deployment.keys))]
    finally:
        assert stop(process) == 0
    stored = list((deployment.data / "areas").rglob("*.pdf"))
    assert stored and all(p.stat().st_uid == user.pw_uid for p in stored)


def test_a_process_with_the_servers_ids_reads_round_keys_but_no_other_key(
    deployment: Deployment,
) -> None:
    user = deployment.user
    process, _ = start(
        deployment.serve("--port", "0", "--user", user.pw_name), logs=False
    )
    try:
        ids = _status_ids(process.pid)
    finally:
        stop(process)
    tls_key = deployment.settings.path(deployment.settings.tls.private_key)
    secret = (deployment.signing_key, deployment.keys / "master.key", tls_key)
    for key in (*secret, deployment.rounds / "default.key"):
        attempt = subprocess.run(
            ["cat", str(key)],
            user=min(ids["Uid"]),
            group=min(ids["Gid"]),
            extra_groups=sorted(ids["Groups"]),
            capture_output=True,
            text=True,
            check=False,
        )
        if key in secret:
            assert attempt.returncode != 0 and "Permission denied" in attempt.stderr
        else:  # wrapped under the master key: harmless to read
            assert attempt.returncode == 0 and "censusdrop round key" in attempt.stdout


def test_files_an_admin_command_writes_are_the_run_users_without_a_walk(
    deployment: Deployment,
) -> None:
    planted = deployment.data / "left-to-root"  # no chown walk may touch it
    planted.write_bytes(b"")
    deployment.command(
        "import", "420100", str(deployment.carrier("普查表.pdf", b"%PDF"))
    )
    made = [path for path in deployment.data.rglob("*") if path != planted]
    assert any(path.name.endswith(".pdf") for path in made)
    assert {path.lstat().st_uid for path in made} == {deployment.user.pw_uid}
    assert planted.stat().st_uid == 0
    planted.unlink()

    user = deployment.user.pw_name
    process, text = start(deployment.serve("--port", "0", "--user", user), logs=False)
    try:
        client = login(
            _address(text), deployment.instance.cafile, "wuhan", TEST_PASSWORD
        )
        assert download(client, "普查表.pdf") == b"%PDF"
        upload(client, "普查表.pdf", b"%PDF replaced")  # over the import
        client.quit()
    finally:
        assert stop(process) == 0


def test_rounds_made_and_destroyed_while_the_server_runs_count_at_once(
    deployment: Deployment,
) -> None:
    from censusdrop.server.storage.crypto import read_header
    from censusdrop.server.storage.keyring import Keyring

    user = deployment.user
    process, text = start(
        deployment.serve("--port", "0", "--user", user.pw_name), logs=False
    )
    try:
        deployment.command("round", "create", "r1", "-p", "420100", *_open_window())
        (made,) = deployment.rounds.glob("round-*.key")
        info = made.stat()
        assert (info.st_uid, info.st_gid) == (0, user.pw_gid)
        assert info.st_mode & 0o777 == 0o640

        client = login(
            _address(text), deployment.instance.cafile, "wuhan", TEST_PASSWORD
        )
        upload(client, "轮次.pdf", b"%PDF round")  # no restart in between
        (stored,) = (deployment.data / "areas").rglob("轮次.pdf")
        with stored.open("rb") as raw:
            assert read_header(raw).round_name == made.stem
        assert download(client, "轮次.pdf") == b"%PDF round"

        Keyring.open(deployment.keys).destroy_round_key(made.stem)
        # Refused for good (the file is crypto-shredded), not served from memory.
        with pytest.raises(ftplib.error_perm, match="^550 .*已按规定销毁"):
            download(client, "轮次.pdf")
        client.quit()
    finally:
        assert stop(process) == 0


def test_a_running_server_keeps_its_round_keys_across_a_master_rotation(
    deployment: Deployment,
) -> None:
    user = deployment.user
    process, text = start(
        deployment.serve("--port", "0", "--user", user.pw_name), logs=False
    )
    try:
        deployment.command("round", "create", "r1", "-p", "420100", *_open_window())
        client = _wuhan(deployment, text)
        upload(client, "前.pdf", b"%PDF before")
        deployment.command("keys", "rotate")  # as root: master.key rewritten
        (key,) = deployment.rounds.glob("round-*.key")
        assert (key.stat().st_gid, key.stat().st_mode & 0o777) == (user.pw_gid, 0o640)

        assert download(client, "前.pdf") == b"%PDF before"
        upload(client, "后.pdf", b"%PDF after")
        assert download(client, "后.pdf") == b"%PDF after"
        client.quit()
    finally:
        assert stop(process) == 0


def test_a_purge_works_as_the_run_user_and_destroys_the_key_as_root(
    deployment: Deployment,
) -> None:
    deployment.command("round", "create", "r1", "-p", "420100", *_open_window())
    (key,) = deployment.rounds.glob("round-*.key")
    deployment.command("import", "420100", str(deployment.carrier("a.pdf", b"%PDF")))
    deployment.command("round", "purge", "r1", "--force", "--reason", "test")

    assert not key.exists()
    tombstone = key.with_suffix(".destroyed")
    assert (tombstone.stat().st_uid, tombstone.stat().st_gid) == (
        0,
        deployment.user.pw_gid,
    )
    assert not list((deployment.data / "areas").rglob("a.pdf"))
    left = list(deployment.data.rglob("*"))
    assert {path.lstat().st_uid for path in left} == {deployment.user.pw_uid}


def test_a_command_started_as_another_user_gets_one_error_line(
    deployment: Deployment,
) -> None:
    deployment.instance.config.chmod(0o644)  # so the refusal is ours
    user = deployment.user
    # Loaded as root, then run as the user: the interpreter itself may lie
    # where only root can read.
    become = (
        "from censusdrop.cli.main import main; import os;"
        f" os.setgroups([]); os.setgid({user.pw_gid}); os.setuid({user.pw_uid});"
        " main()"
    )
    config = str(deployment.instance.config)
    result = subprocess.run(
        [sys.executable, "-c", become, "--config", config, "account", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error:")]
    assert f"server.user is {user.pw_name}: run censusdrop commands as root" in line


def test_a_missing_default_key_is_seen_under_the_units_capabilities(
    deployment: Deployment,
) -> None:
    """Root without CAP_DAC_OVERRIDE cannot read the run user's data root:
    the check for stored files looks as that user, not at nothing."""
    deployment.command("import", "420100", str(deployment.carrier("a.pdf", b"%PDF")))
    (deployment.rounds / "default.key").rename(deployment.keys / "default.key.aside")
    user = deployment.user.pw_name
    line = _refusal(deployment, "--user", user, prefix=_unit_bounding_set())
    assert "default.key is missing although files are stored" in line
    assert not (deployment.rounds / "default.key").exists()


def test_a_signing_key_readable_by_the_user_is_refused(
    deployment: Deployment,
) -> None:
    for folder in (deployment.instance.folder, deployment.keys):
        folder.chmod(0o711)
    user = deployment.user
    os.chown(deployment.signing_key, user.pw_uid, user.pw_gid)  # still 0600
    line = _refusal(deployment, "--user", deployment.user.pw_name)
    assert "audit.signing_key" in line and "readable by" in line


def test_a_data_root_open_to_others_is_refused(deployment: Deployment) -> None:
    deployment.data.chmod(0o755)
    line = _refusal(deployment, "--user", deployment.user.pw_name)
    assert "storage.data_root" in line and "mode 0755" in line


def test_a_database_the_user_does_not_own_is_refused(
    deployment: Deployment,
) -> None:
    os.chown(deployment.database, 0, 0)
    line = _refusal(deployment, "--user", deployment.user.pw_name)
    assert "database.url" in line and "chown it" in line


def test_a_data_root_left_to_root_is_refused(deployment: Deployment) -> None:
    beside = deployment.instance.folder / "data"  # where init would put it
    beside.mkdir(mode=0o700)
    line = _refusal(
        deployment,
        "--user",
        deployment.user.pw_name,
        env={"CENSUSDROP_STORAGE_DATA_ROOT": str(beside)},
    )
    assert "storage.data_root" in line and "belongs to uid 0" in line


def test_an_unknown_user_is_refused(deployment: Deployment) -> None:
    line = _refusal(deployment, "--user", "no-such-user-censusdrop")
    assert "server.user: no such user" in line


def test_root_is_refused_as_the_run_user(deployment: Deployment) -> None:
    line = _refusal(deployment, "--user", "root")
    assert "server.user" in line and "is root" in line


def test_init_with_a_user_sets_up_a_server_that_drops_to_it(
    system_user: pwd.struct_passwd, tmp_path: Path
) -> None:
    root = Path(tempfile.mkdtemp(prefix="censusdrop-init-"))
    root.chmod(0o755)
    etc, state = root / "etc", root / "state"
    name = system_user.pw_name
    try:
        made = subprocess.run(
            [*CLI, "init", str(etc), "--user", name, "--state", str(state)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert made.returncode == 0, made.stdout + made.stderr
        for path, mode in ((state, 0o700), (state / "data", 0o700)):
            info = path.stat()
            assert (info.st_uid, info.st_mode & 0o777) == (system_user.pw_uid, mode)
        database = state / "censusdrop.db"
        assert database.stat().st_mode & 0o777 == 0o600
        assert (etc / "keys").stat().st_uid == 0

        config = str(etc / "censusdrop.toml")
        account = ["wuhan", "--role", "prefecture", "--prefecture", "420100"]
        subprocess.run(
            [*CLI, "--config", config, "account", "add", *account, "--password-stdin"],
            input=TEST_PASSWORD + "\n",
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        process, text = start(
            [*CLI, "--config", config, "serve", "--port", "0"], logs=False
        )
        try:
            assert _status_ids(process.pid)["Uid"] == {system_user.pw_uid}
            address = re.search(r"listening on ([\d.]+):(\d+)", text)
            assert address, text
            client = login(
                (address[1], int(address[2])),
                etc / "tls" / "server.crt",
                "wuhan",
                TEST_PASSWORD,
            )
            upload(client, "a.txt", b"abc")
            client.quit()
        finally:
            assert stop(process) == 0
    finally:
        shutil.rmtree(root)


# --- the systemd unit -----------------------------------------------------

UNIT = Path(__file__).resolve().parent.parent / "config" / "data" / "censusdrop.service"


def _unit_values(key: str) -> list[str]:
    prefix = f"{key}="
    return [
        line[len(prefix) :]
        for line in UNIT.read_text(encoding="utf-8").splitlines()
        if line.startswith(prefix)
    ]


def test_the_systemd_unit_parses_without_a_warning(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    installed = Path(sys.executable).with_name("censusdrop")
    text = UNIT.read_text(encoding="utf-8")
    unit = tmp_path / "censusdrop.service"
    unit.write_text(text.replace("/opt/censusdrop/bin/censusdrop", str(installed)))
    result = subprocess.run(
        [analyze, "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert str(unit) not in result.stdout + result.stderr  # no warning about it


def test_the_systemd_unit_matches_what_init_and_serve_do() -> None:
    from click.testing import CliRunner

    from censusdrop.cli.main import cli
    from censusdrop.config.settings import build_settings
    from censusdrop.server.bootstrap import deployment_config

    command = _unit_values("ExecStart")[0].split()
    assert command[1:3] == ["--config", "/etc/censusdrop/censusdrop.toml"]
    assert command[3:] == ["serve", "--user", "censusdrop"]
    help_text = CliRunner().invoke(cli, ["serve", "--help"]).output
    assert "--user" in help_text

    # The state folder init makes for that user is the one the unit may write.
    (writable,) = _unit_values("ReadWritePaths")
    raw = tomllib.loads(deployment_config("censusdrop", Path(writable)))
    settings = build_settings(raw, Path("/etc/censusdrop"), {})
    assert settings.server.user == "censusdrop"
    assert settings.database_url == f"sqlite:///{writable}/censusdrop.db"
    assert settings.path(settings.storage.data_root) == Path(writable) / "data"
    assert not settings.path(settings.storage.keys_dir).is_relative_to(writable)
    assert _unit_values("UMask") == ["0077"]


def test_the_server_starts_with_only_the_units_capabilities(
    deployment: Deployment,
) -> None:
    """Before its drop the server reads only root's files: the bounding set
    of the unit (no CAP_DAC_OVERRIDE, no CAP_CHOWN) is enough."""
    user = deployment.user.pw_name
    argv = _unit_bounding_set() + deployment.serve("--port", "0", "--user", user)
    process, text = start(argv, logs=False)
    try:
        address = re.search(r"listening on ([\d.]+):(\d+)", text)
        assert address, text
        client = login(
            (address[1], int(address[2])),
            deployment.instance.cafile,
            "wuhan",
            TEST_PASSWORD,
        )
        upload(client, "b.txt", b"bounded")
        assert download(client, "b.txt") == b"bounded"
        client.quit()
    finally:
        assert stop(process) == 0


def test_without_a_user_an_open_data_root_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from conftest import RunningServer

    instance = Instance(tmp_path / "i", f"sqlite:///{tmp_path / 'db.sqlite'}")
    data = instance.settings.path(instance.settings.storage.data_root)
    data.chmod(0o755)
    (tmp_path / "db.sqlite").chmod(0o644)
    with caplog.at_level("WARNING", logger="censusdrop.server.privileges"):
        running = RunningServer(instance)
        running.stop()
    warned = [r.getMessage() for r in caplog.records if "open to other" in r.message]
    assert any("storage.data_root" in line and "0755" in line for line in warned)
    assert any("database.url" in line and "0644" in line for line in warned)


# --- the keyring after a drop (no root needed) ----------------------------


def test_round_key_files_take_the_group_of_a_shared_rounds_folder(
    tmp_path: Path,
) -> None:
    from censusdrop.server.storage.keyring import Keyring

    keyring = Keyring.create(tmp_path / "keys")
    (tmp_path / "keys" / "rounds").chmod(0o750)
    keyring.ensure_round_key("r1")
    keyring.destroy_round_key("r1")
    keyring.ensure_round_key("r2")
    keyring.rotate_master()  # re-wrapped files stay shared
    for name in ("r1.destroyed", "r2.key"):
        assert (tmp_path / "keys" / "rounds" / name).stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "keys" / "master.key").stat().st_mode & 0o777 == 0o600


def test_a_dropped_keyring_reads_live_and_survives_a_rotation_elsewhere(
    tmp_path: Path,
) -> None:
    from censusdrop.server.keykeeper import DroppableKeyring
    from censusdrop.server.storage.errors import KeyDestroyed
    from censusdrop.server.storage.errors import KeyringError
    from censusdrop.server.storage.errors import MasterKeyError
    from censusdrop.server.storage.keyring import Keyring

    admin = Keyring.create(tmp_path / "keys")
    admin.ensure_round_key("before")
    server = DroppableKeyring.open(tmp_path / "keys")
    assert server.drop() == 1
    before = server.round_key("before")

    admin.ensure_round_key("after")  # made after the drop: read at once
    after = server.round_key("after")
    with pytest.raises(KeyringError, match="cannot make it"):
        server.ensure_round_key("never")
    with pytest.raises(KeyringError, match="needs root"):
        server.destroy_round_key("after")

    admin.rotate_master()  # re-wraps under a key the server never held
    assert (server.round_key("before"), server.round_key("after")) == (before, after)
    admin.ensure_round_key("later")
    with pytest.raises(MasterKeyError, match="restart"):
        server.round_key("later")

    admin.destroy_round_key("before")  # felt at once, memory or not
    with pytest.raises(KeyDestroyed):
        server.round_key("before")
