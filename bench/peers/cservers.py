"""vsftpd, ProFTPD and Pure-FTPd, each run in the foreground as our child.

Each gets a configuration written into its own folder (no file under /etc
is read or written, except the local user it logs in, see ``accounts``),
the run's certificate, TLS 1.2 with the suite the clients offer, TLS
required before login and on every data connection, and room for
``MAX_SESSIONS`` sessions from one address. All three fork per session.

- vsftpd authenticates through PAM; its service name has no file in
  /etc/pam.d, so PAM uses ``other`` (Debian: common-auth, pam_unix). It
  requires data connections to resume the control session, like censusdrop.
- ProFTPD uses mod_auth_unix (``/etc/shadow`` and crypt), loads mod_tls,
  and requires session reuse on data connections by default.
- Pure-FTPd uses ``-l unix`` (``/etc/shadow`` and crypt) and ``--tls 3``
  (TLS on control and data); it does not require session reuse.
"""

from __future__ import annotations

from pathlib import Path

from .accounts import add_user
from .accounts import remove_user
from .servers import CIPHER
from .servers import MAX_SESSIONS
from .servers import Server
from .servers import base_env


class LocalUserServer(Server):
    """A C server that logs in its own local user, removed on cleanup."""

    def make_user(self) -> Path:
        home = self.folder / "home"
        cost = self.setting.hash_cost.yescrypt_cost
        user = add_user(self.key, home, cost)
        self.user, self.password = user.name, user.password
        self.folder.chmod(0o755)  # the user must reach its home
        return home

    def cleanup(self) -> None:
        if self.user:
            remove_user(self.user)

    def peer_path(self, absolute: str) -> Path:
        return self.setting.peers[self.key].path(absolute)


class Vsftpd(LocalUserServer):
    key = "vsftpd"
    label = "vsftpd"

    def prepare(self) -> tuple[list[str], dict[str, str]]:
        home = self.make_user()
        empty = self.folder / "empty"
        empty.mkdir(mode=0o755, exist_ok=True)
        cert = self.setting.certificate
        options = {
            "listen": "YES",
            "listen_ipv6": "NO",
            "listen_address": "127.0.0.1",
            "listen_port": self.ports.control,
            "background": "NO",
            "anonymous_enable": "NO",
            "local_enable": "YES",
            "write_enable": "YES",
            "local_umask": "022",
            "local_root": home,
            "chroot_local_user": "YES",
            "allow_writeable_chroot": "YES",
            "pam_service_name": "cdbench-vsftpd",
            "secure_chroot_dir": empty,
            "nopriv_user": "nobody",
            "ssl_enable": "YES",
            "ssl_sslv2": "NO",
            "ssl_sslv3": "NO",
            "ssl_tlsv1": "YES",
            "ssl_ciphers": CIPHER,
            "rsa_cert_file": cert.cert,
            "rsa_private_key_file": cert.key,
            "force_local_logins_ssl": "YES",
            "force_local_data_ssl": "YES",
            "require_ssl_reuse": "YES",
            "pasv_enable": "YES",
            "pasv_min_port": self.ports.passive.start,
            "pasv_max_port": self.ports.passive.stop - 1,
            "max_clients": MAX_SESSIONS,
            "max_per_ip": MAX_SESSIONS,
            "xferlog_enable": "NO",
            "vsftpd_log_file": self.folder / "vsftpd.log",
            "userlist_enable": "NO",
            "tcp_wrappers": "NO",
        }
        config = self.folder / "vsftpd.conf"
        config.write_text(
            "".join(f"{key}={value}\n" for key, value in options.items()),
            encoding="utf-8",
        )
        config.chmod(0o600)
        self.notes.append("PAM (pam_unix, yescrypt), require_ssl_reuse=YES")
        return [str(self.peer_path("/usr/sbin/vsftpd")), str(config)], base_env()


class Proftpd(LocalUserServer):
    key = "proftpd"
    label = "ProFTPD"

    def prepare(self) -> tuple[list[str], dict[str, str]]:
        self.make_user()
        cert = self.setting.certificate
        folder = self.folder
        lines = [
            "ServerType standalone",
            'ServerName "censusdrop bench ProFTPD"',
            "DefaultServer on",
            f"Port {self.ports.control}",
            "DefaultAddress 127.0.0.1",
            "SocketBindTight on",
            "UseIPv6 off",
            "User nobody",
            "Group nogroup",
            f"PidFile {folder / 'proftpd.pid'}",
            f"ScoreboardFile {folder / 'proftpd.scoreboard'}",
            f"SystemLog {folder / 'proftpd.log'}",
            "TransferLog none",
            "DelayTable none",
            "WtmpLog off",
            "UseReverseDNS off",
            f"MaxInstances {MAX_SESSIONS}",
            f"MaxClients {MAX_SESSIONS}",
            f"MaxClientsPerHost {MAX_SESSIONS}",
            f"PassivePorts {self.ports.passive.start} {self.ports.passive.stop - 1}",
            "DefaultRoot ~",
            "RequireValidShell on",
            "AuthOrder mod_auth_unix.c",
            "AuthPAM off",
            "Umask 022",
            "AllowOverwrite on",
            f"ModulePath {self.peer_path('/usr/lib/proftpd')}",
            "LoadModule mod_tls.c",
            "TLSEngine on",
            f"TLSLog {folder / 'tls.log'}",
            "TLSProtocol TLSv1.2",
            f"TLSCipherSuite {CIPHER}",
            f"TLSRSACertificateFile {cert.cert}",
            f"TLSRSACertificateKeyFile {cert.key}",
            "TLSRequired on",
            "TLSVerifyClient off",
            "TLSRenegotiate none",
        ]
        config = folder / "proftpd.conf"
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        config.chmod(0o600)
        self.notes.append("mod_auth_unix (yescrypt), TLSRequired on, reuse required")
        argv = [str(self.peer_path("/usr/sbin/proftpd")), "-n", "-c", str(config)]
        return argv, base_env()


class PureFtpd(LocalUserServer):
    key = "pure-ftpd"
    label = "Pure-FTPd"

    def prepare(self) -> tuple[list[str], dict[str, str]]:
        self.make_user()
        cert = self.setting.certificate
        low, high = self.ports.passive.start, self.ports.passive.stop - 1
        argv = [
            str(self.peer_path("/usr/sbin/pure-ftpd")),
            f"--bind=127.0.0.1,{self.ports.control}",
            f"--passiveportrange={low}:{high}",
            "--login=unix",
            "--noanonymous",
            "--chrooteveryone",
            "--dontresolve",
            "--ipv4only",
            "--tls=3",
            f"--certfile={cert.cert},{cert.key}",
            f"--tlsciphersuite={CIPHER}",
            f"--maxclientsnumber={MAX_SESSIONS}",
            f"--maxclientsperip={MAX_SESSIONS}",
            "--syslogfacility=none",
        ]
        self.notes.append("unix login (yescrypt), --tls=3, no session reuse check")
        return argv, base_env()
