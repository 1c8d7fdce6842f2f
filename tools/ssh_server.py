"""Throwaway OpenSSH servers for the tunnel tests: Debian's sshd started by hand on a free loopback port, with host
and user keys generated for the run in a temporary directory; never the system service.

`find_sshd()` installs Debian's openssh-server when sshd is missing and we may (root, apt-get), with the package's
service start suppressed, as `local_postgres` does for PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD_CANDIDATES = (Path("/usr/sbin/sshd"), Path("/usr/local/sbin/sshd"))
_POLICY = Path("/usr/sbin/policy-rc.d")  # Debian's hook that tells a package's scripts not to start services


@dataclass(frozen=True)
class UserKey:
    private_text: str = field(repr=False)
    public_line: str
    passphrase: str = field(default="", repr=False)


def find_sshd() -> Path:
    """sshd's path, installing Debian's openssh-server (without starting its service) when it is missing."""
    for candidate in (*SSHD_CANDIDATES, Path(shutil.which("sshd") or "/nonexistent")):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(
            "sshd was not found: install OpenSSH's server (Debian/Ubuntu: apt-get install openssh-server)"
        )
    print("installing Debian's openssh-server with apt-get (its service is not started)", file=sys.stderr)
    placed = not _POLICY.exists()
    if placed:
        _POLICY.write_text("#!/bin/sh\nexit 101\n")
        _POLICY.chmod(0o755)
    try:
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=True, stdout=sys.stderr, env=environment)
        install = ["apt-get", "install", "-y", "openssh-server"]
        subprocess.run(install, check=True, stdout=sys.stderr, env=environment)
    finally:
        if placed:
            _POLICY.unlink()
    return next(path for path in SSHD_CANDIDATES if path.is_file())


def generate_key(directory: Path, name: str, kind: str, passphrase: str = "", pem: bool = False) -> UserKey:
    """A fresh key pair made by ssh-keygen: `kind` is ed25519, ecdsa or rsa; `pem` writes PEM instead of OpenSSH."""
    path = directory / name
    command = ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-f", str(path), "-C", name]
    if pem:
        command += ["-m", "PEM"]
    subprocess.run(command, check=True, capture_output=True)
    return UserKey(path.read_text(), path.with_suffix(".pub").read_text().strip(), passphrase)


class SshServer:
    """One sshd on 127.0.0.1, accepting the given public keys for the current user."""

    def __init__(self, authorized: list[str], *, allow_forwarding: bool = True) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="connector-sshd-"))
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.port = _free_port()
        self.host_key = generate_key(self.directory, "host_ed25519", "ed25519")
        (self.directory / "authorized_keys").write_text("\n".join(authorized) + "\n")
        self.log_file = self.directory / "sshd.log"
        forwarding = "yes" if allow_forwarding else "no"
        (self.directory / "sshd_config").write_text(
            f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.directory / "host_ed25519"}
PidFile {self.directory / "sshd.pid"}
AuthorizedKeysFile {self.directory / "authorized_keys"}
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding {forwarding}
UsePAM no
LogLevel VERBOSE
"""
        )
        self._sshd = find_sshd()
        self._process: subprocess.Popen | None = None

    @property
    def host_key_line(self) -> str:
        """The host key as SSH_HOST_KEY takes it (`ssh-ed25519 AAAA...`)."""
        return " ".join(self.host_key.public_line.split()[:2])

    def start(self) -> SshServer:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        log = self.log_file.open("a")
        command = [str(self._sshd), "-D", "-e", "-f", str(self.directory / "sshd_config")]
        self._process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"sshd exited at start:\n{self.log_file.read_text()[-3000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not listen on {self.port}:\n{self.log_file.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the listening sshd and every session it forked, as a crashed or restarted bastion would."""
        if self._process is None:
            return
        children = subprocess.run(
            ["pgrep", "-P", str(self._process.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        for pid in [self._process.pid, *map(int, children)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._process.wait()
        self._process = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def __enter__(self) -> SshServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
