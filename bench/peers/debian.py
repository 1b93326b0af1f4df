"""The peer servers and curl, from Debian packages, with no service started.

vsftpd, ProFTPD (``proftpd-core``, the package behind ``proftpd-basic`` on
Debian 12) and Pure-FTPd each provide and conflict with ``ftp-server``, so
apt-get cannot install them side by side. A peer whose packages are not
installed is fetched with ``apt-get download`` and unpacked with
``dpkg-deb -x`` into a cache folder (``$CENSUSDROP_BENCH_CACHE``, default
``/var/cache/censusdrop-bench``): no maintainer script runs, so no system
service is created, enabled or started. The shared libraries they link are
ordinary packages and are installed with apt-get, as is curl; those start
nothing. ProFTPD's ``mod_tls`` is a loadable module in ``proftpd-mod-crypto``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

CACHE_ROOT = Path(
    os.environ.get("CENSUSDROP_BENCH_CACHE", "/var/cache/censusdrop-bench")
)
PEER_PACKAGES = {
    "vsftpd": ("vsftpd",),
    "proftpd": ("proftpd-core", "proftpd-mod-crypto"),
    "pure-ftpd": ("pure-ftpd",),
}
APT_TIMEOUT = 900.0
_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


class InstallError(Exception):
    """A package could not be installed or unpacked; the message says why."""


@dataclasses.dataclass(frozen=True)
class PeerFiles:
    """Where a peer's files are: ``/`` or the unpacked tree in the cache."""

    name: str
    root: Path
    version: str

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    @property
    def origin(self) -> str:
        if self.root == Path("/"):
            return f"{self.name} {self.version} (installed)"
        return f"{self.name} {self.version} (unpacked in {self.root})"


class Apt:
    """apt-get and dpkg, with one ``apt-get update`` at most per run."""

    def __init__(self) -> None:
        self._updated = False

    def installed_version(self, package: str) -> str | None:
        result = subprocess.run(  # noqa: S603 - fixed tool, package name
            [_tool("dpkg-query"), "-W", "-f=${Status}\t${Version}", package],
            capture_output=True,
            text=True,
            check=False,
        )
        status, _, version = result.stdout.partition("\t")
        if result.returncode == 0 and status.endswith(" installed"):
            return version
        return None

    def install(self, packages: list[str]) -> None:
        missing = [p for p in packages if self.installed_version(p) is None]
        if not missing:
            return
        _need_root(f"install {' '.join(missing)}")
        self.update_once()
        apt_get = _tool("apt-get")
        _run([apt_get, "install", "-y", "-q", "--no-install-recommends", *missing])

    def download(self, package: str, folder: Path) -> Path:
        """The package's .deb in ``folder``, fetched unless already there."""
        found = sorted(folder.glob(f"{package}_*.deb"))
        if found:
            return found[-1]
        _need_root(f"download {package}")
        command = [_tool("apt-get"), "download", "-o", "APT::Sandbox::User=root"]
        try:
            _run([*command, package], cwd=folder)
        except InstallError:
            if self._updated:
                raise
            self.update_once()
            _run([*command, package], cwd=folder)
        found = sorted(folder.glob(f"{package}_*.deb"))
        if not found:
            raise InstallError(f"apt-get download {package} left no .deb")
        return found[-1]

    def update_once(self) -> None:
        if not self._updated:
            _run([_tool("apt-get"), "update", "-q"])
            self._updated = True


def ensure_curl(apt: Apt) -> Path:
    """The curl executable, installed from Debian when missing."""
    found = shutil.which("curl")
    if found is None:
        apt.install(["curl"])
        found = shutil.which("curl")
    if found is None:
        raise InstallError("curl is still missing after apt-get install curl")
    return Path(found)


def ensure_peer(apt: Apt, name: str) -> PeerFiles:
    """The peer's files: installed ones, or the Debian packages unpacked."""
    packages = PEER_PACKAGES[name]
    versions = [apt.installed_version(p) for p in packages]
    if all(versions):
        return PeerFiles(name, Path("/"), str(versions[0]))
    debs_dir = CACHE_ROOT / "debs"
    debs_dir.mkdir(parents=True, exist_ok=True)
    debs = [apt.download(p, debs_dir) for p in packages]
    version = _field(debs[0], "Version")
    root = CACHE_ROOT / "root" / f"{name}-{version}"
    root.mkdir(parents=True, exist_ok=True)
    marker = root / ".unpacked"
    if not marker.exists():
        for deb in debs:
            _run([_tool("dpkg-deb"), "-x", str(deb), str(root)])
        marker.write_text(version + "\n", encoding="utf-8")
    apt.install(sorted({lib for deb in debs for lib in _library_depends(deb)}))
    return PeerFiles(name, root, version)


def _library_depends(deb: Path) -> list[str]:
    """Shared-library packages the .deb depends on (first of alternatives)."""
    names = []
    for clause in _field(deb, "Depends").split(","):
        first = clause.split("|")[0].strip()
        match = re.match(r"[a-z0-9][a-z0-9+.-]*", first)
        if match and match.group(0).startswith("lib"):
            names.append(match.group(0))
    return names


def _field(deb: Path, name: str) -> str:
    return _run([_tool("dpkg-deb"), "-f", str(deb), name]).strip()


def _need_root(action: str) -> None:
    if os.geteuid() != 0:
        raise InstallError(f"root is needed to {action}")


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise InstallError(f"{name} not found: this benchmark needs Debian's tools")
    return found


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        result = subprocess.run(  # noqa: S603 - fixed tool, package names
            argv,
            cwd=cwd,
            env={**os.environ, **_APT_ENV},
            capture_output=True,
            text=True,
            timeout=APT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        what = " ".join(argv[:3])
        raise InstallError(f"{what}: no end after {exc.timeout}s") from exc
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise InstallError(f"{' '.join(argv[:4])} failed: {' / '.join(tail)}")
    return result.stdout
