"""An SSH tunnel to a database behind a bastion: paramiko's transport, a local port on 127.0.0.1, and a thread per
forwarded connection.

The bastion's host key is checked against SSH_HOST_KEY before any credential is sent: an unknown or different key
refuses the connection with the key the server offered (type, SHA256 fingerprint, and the line to paste after
checking it out of band). Key material stays in memory (paramiko parses the text; nothing is written to disk).
Every failure to open the tunnel is a `TunnelError` whose message names its cause in one line.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import select
import socket
import threading
from dataclasses import dataclass, field

import paramiko

_KEY_CLASSES = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)
_FORWARD_BUFFER = 65536
_LOST = (OSError, EOFError, paramiko.SSHException)  # what a dead bastion or a closed socket raises


class SshKeyError(ValueError):
    """SSH_PRIVATE_KEY, SSH_PASSPHRASE or SSH_HOST_KEY cannot be used; the message names the key."""


class TunnelError(RuntimeError):
    """The tunnel could not be opened; the message names the cause. `retryable`: the bastion may answer later."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class SshSettings:
    host: str
    port: int
    user: str
    private_key: paramiko.PKey = field(repr=False)
    host_key: paramiko.PKey | None  # None: no key is trusted yet


def parse_private_key(text: str, passphrase: str | None) -> paramiko.PKey:
    """The private key from its OpenSSH or PEM text (ed25519, ECDSA or RSA); raises SshKeyError naming the key."""
    key = _load_private_key(text, passphrase)
    if key is not None:
        return key
    encrypted = any(_is_encrypted(cls, text) for cls in _KEY_CLASSES)
    if encrypted and not passphrase:
        raise SshKeyError("SSH_PASSPHRASE: SSH_PRIVATE_KEY is encrypted; give its passphrase.")
    if encrypted:
        raise SshKeyError("SSH_PASSPHRASE: it does not decrypt SSH_PRIVATE_KEY (wrong passphrase).")
    raise SshKeyError(
        "SSH_PRIVATE_KEY: not a private key this connector can read (expected the OpenSSH or PEM text of an ed25519, "
        "ECDSA or RSA key, starting with -----BEGIN)."
    )


def parse_host_key(line: str) -> paramiko.PKey:
    """The bastion's public key from a `known_hosts`-style line (`ssh-ed25519 AAAA...`, a leading host name and a
    trailing comment allowed); raises SshKeyError naming SSH_HOST_KEY."""
    fields = line.split()
    for index, word in enumerate(fields[:-1]):
        if word.startswith(("ssh-", "ecdsa-")):
            try:
                return paramiko.PKey.from_type_string(word, base64.b64decode(fields[index + 1], validate=True))
            except (binascii.Error, paramiko.SSHException, ValueError, TypeError):
                break
    raise SshKeyError(
        "SSH_HOST_KEY: expected the bastion's public host key as one line, e.g. 'ssh-ed25519 AAAAC3Nza...' (from "
        "ssh-keyscan, or /etc/ssh/ssh_host_ed25519_key.pub on the bastion)."
    )


def describe_key(key: paramiko.PKey) -> str:
    """`ssh-ed25519 SHA256:...`: what a person compares with the bastion's own fingerprint."""
    return f"{key.get_name()} {key.fingerprint}"


class Tunnel:
    """A local port on 127.0.0.1 whose connections reach `remote_host:remote_port` through the bastion."""

    def __init__(self, ssh: SshSettings, remote_host: str, remote_port: int, timeout_seconds: int) -> None:
        self._ssh = ssh
        self._remote = (remote_host, remote_port)
        self._timeout = timeout_seconds
        self._transport: paramiko.Transport | None = None
        self._listener: socket.socket | None = None
        self.local_port = 0

    @property
    def alive(self) -> bool:
        return self._transport is not None and self._transport.is_active()

    def open(self) -> int:
        """Connects, checks the host key, authenticates, checks that the bastion forwards, and listens; returns the
        local port."""
        self.close()
        ssh, where = self._ssh, f"{self._ssh.host}:{self._ssh.port}"
        try:
            sock = socket.create_connection((ssh.host, ssh.port), timeout=self._timeout)
        except OSError as error:
            raise TunnelError(f"SSH_HOST: cannot reach the bastion {where}: {error}", retryable=True) from None
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=self._timeout)
            offered = transport.get_remote_server_key()
            expected = ssh.host_key
            if expected is None or (offered.get_name(), offered.asbytes()) != (expected.get_name(), expected.asbytes()):
                trusted = "SSH_HOST_KEY is empty" if expected is None else f"SSH_HOST_KEY is {describe_key(expected)}"
                raise TunnelError(
                    f"SSH_HOST_KEY: the bastion {where} offered the host key {describe_key(offered)}, and "
                    f"{trusted}: refused before any credential was sent. After checking out of band that this is the "
                    f"bastion's key, set SSH_HOST_KEY to: {offered.get_name()} {offered.get_base64()}"
                )
            try:
                transport.auth_publickey(ssh.user, ssh.private_key)
            except paramiko.AuthenticationException:
                raise TunnelError(
                    f"SSH_USER: the bastion {where} refused SSH_USER '{ssh.user}' with SSH_PRIVATE_KEY "
                    "(is its public key in the user's authorized_keys?)"
                ) from None
            self._check_forwarding(transport, where)
        except TunnelError:
            transport.close()
            raise
        except (paramiko.SSHException, OSError, EOFError) as error:
            transport.close()
            raise TunnelError(f"SSH connection to the bastion {where} failed: {error}", retryable=True) from None
        transport.set_keepalive(30)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        self._transport, self._listener, self.local_port = transport, listener, listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(transport, listener), name="ssh-tunnel", daemon=True).start()
        return self.local_port

    def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
        if self._transport is not None:
            self._transport.close()
        self._transport, self._listener = None, None

    def _check_forwarding(self, transport: paramiko.Transport, where: str) -> None:
        """Opens and closes one forwarded channel, so that a refusal is named now rather than as a lost connection."""
        host, port = self._remote
        try:
            channel = transport.open_channel("direct-tcpip", self._remote, ("127.0.0.1", 0), timeout=self._timeout)
        except paramiko.ChannelException as error:
            if error.code == paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED:
                raise TunnelError(
                    f"the bastion {where} refused to forward to HOST:PORT {host}:{port} (its sshd_config needs "
                    "AllowTcpForwarding yes, and PermitOpen must allow that address)"
                ) from None
            raise TunnelError(
                f"the bastion {where} cannot reach HOST:PORT {host}:{port}: {error.text}", retryable=True
            ) from None
        channel.close()

    def _accept(self, transport: paramiko.Transport, listener: socket.socket) -> None:
        while True:
            try:
                client, peer = listener.accept()
            except OSError:
                return  # closed
            try:
                channel = transport.open_channel("direct-tcpip", self._remote, peer, timeout=self._timeout)
            except _LOST:
                client.close()  # the database connection fails as lost, and the client opens the tunnel again
                continue
            threading.Thread(target=_forward, args=(client, channel), name="ssh-forward", daemon=True).start()


def _forward(client: socket.socket, channel: paramiko.Channel) -> None:
    """Copies bytes both ways until either side closes."""
    try:
        while True:
            readable, _, _ = select.select([client, channel], [], [], 60)
            if client in readable:
                data = client.recv(_FORWARD_BUFFER)
                if not data:
                    return
                channel.sendall(data)
            if channel in readable:
                data = channel.recv(_FORWARD_BUFFER)
                if not data:
                    return
                client.sendall(data)
            if channel.closed:
                return
    except _LOST:
        return
    finally:
        with contextlib.suppress(*_LOST):  # closing a channel writes to a transport that may be dead by now
            channel.close()
        client.close()


def _load_private_key(text: str, passphrase: str | None) -> paramiko.PKey | None:
    for cls in _KEY_CLASSES:
        try:
            return cls.from_private_key(io.StringIO(text), password=passphrase or None)
        except (paramiko.SSHException, ValueError, TypeError, IndexError):
            continue
    return None


def _is_encrypted(cls: type[paramiko.PKey], text: str) -> bool:
    try:
        cls.from_private_key(io.StringIO(text))
    except paramiko.PasswordRequiredException:
        return True
    except (paramiko.SSHException, ValueError, TypeError, IndexError):
        return False
    return False
