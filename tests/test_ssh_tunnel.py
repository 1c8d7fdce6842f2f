"""Syncs through an SSH tunnel: a throwaway OpenSSH server on a free loopback port is the bastion, with host and
user keys generated for the run. Host keys are verified before any credential is sent, the tunnel is re-opened
after the bastion dies, verify-full still checks HOST, and no secret shows anywhere."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Database, make_certificates

import sync
from tools import local_postgres
from tools.fivetran_cli import fivetran, stage_project
from tools.ssh_server import SshServer, UserKey, generate_key


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, UserKey]:
    directory = tmp_path_factory.mktemp("ssh-keys")
    return {
        "ed25519": generate_key(directory, "ed25519", "ed25519"),
        "ecdsa": generate_key(directory, "ecdsa", "ecdsa"),
        "rsa-pem": generate_key(directory, "rsa-pem", "rsa", pem=True),
        "encrypted": generate_key(directory, "encrypted", "ed25519", passphrase="correct horse battery"),
        "stranger": generate_key(directory, "stranger", "ed25519"),
    }


@pytest.fixture
def bastion(keys: dict[str, UserKey]) -> Iterator[SshServer]:
    authorized = [key.public_line for name, key in keys.items() if name != "stranger"]
    with SshServer(authorized) as server:
        yield server


def _through(bastion: SshServer, key: UserKey, **overrides: str) -> dict[str, str]:
    keys = {
        "SSH_HOST": "127.0.0.1",
        "SSH_PORT": str(bastion.port),
        "SSH_USER": bastion.user,
        "SSH_PRIVATE_KEY": key.private_text,
        "SSH_PASSPHRASE": key.passphrase,
        "SSH_HOST_KEY": bastion.host_key_line,
    }
    return keys | overrides


def _fill(source, schema: str, rows: int = 30) -> None:
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.t (id int PRIMARY KEY, note text);
            INSERT INTO {schema}.t SELECT i, md5(i::text) FROM generate_series(1, {rows}) i"""
        )


def _failure(destination, configuration: dict[str, str]) -> str:
    with pytest.raises(Exception) as raised:
        destination.sync(configuration)
    return str(raised.value)


def _expected(source, schema: str) -> list[tuple]:
    with source.cursor() as cursor:
        cursor.execute(f"SELECT id, note FROM {schema}.t")
        return sorted(cursor.fetchall())


def _sshd_owns_the_connection(source) -> bool:
    """Whether the connector's session reaches the database from a socket that sshd holds: the tunnel's far end."""
    with source.cursor() as cursor:
        cursor.execute(
            "SELECT client_port FROM pg_stat_activity WHERE application_name = 'fivetran_greenplum_connector'"
        )
        ports = [row[0] for row in cursor.fetchall()]
    owners = [
        subprocess.run(["ss", "-tnpH", f"( sport = :{port} )"], capture_output=True, text=True, check=False).stdout
        for port in ports
    ]
    return bool(ports) and all('"sshd"' in owner for owner in owners)


@pytest.mark.parametrize("key_name", ["ed25519", "ecdsa", "rsa-pem", "encrypted"])
def test_a_sync_through_the_tunnel_lands_as_a_direct_one_and_its_traffic_goes_through_sshd(
    key_name: str, database: Database, schema: str, source, bastion: SshServer, keys, destination, monkeypatch
) -> None:
    _fill(source, schema)
    seen_through_sshd = []
    real_run = sync.TableSync.run

    def run_and_look(self):
        seen_through_sshd.append(_sshd_owns_the_connection(source))
        return real_run(self)

    monkeypatch.setattr(sync.TableSync, "run", run_and_look)
    counts = destination.sync(database.configuration(SCHEMAS=schema, **_through(bastion, keys[key_name])))
    assert counts["Upserts"] == 30
    assert destination.rows(schema, "t", "id, note") == _expected(source, schema)
    assert seen_through_sshd == [True]
    assert f"Accepted publickey for {bastion.user}" in bastion.log()


@pytest.mark.parametrize("host_key", ["unknown", "changed"])
def test_an_unknown_or_changed_host_key_is_refused_before_any_credential_is_sent(
    host_key: str, database: Database, schema: str, source, bastion: SshServer, keys, destination
) -> None:
    _fill(source, schema)
    trusted = "" if host_key == "unknown" else keys["stranger"].public_line
    configuration = database.configuration(SCHEMAS=schema, **_through(bastion, keys["ed25519"], SSH_HOST_KEY=trusted))
    with pytest.raises(Exception) as raised:
        destination.sync(configuration)
    text = str(raised.value)
    fingerprint = subprocess.run(
        ["ssh-keygen", "-lf", str(bastion.directory / "host_ed25519.pub")], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert f"SSH_HOST_KEY: the bastion 127.0.0.1:{bastion.port} offered the host key ssh-ed25519 {fingerprint}" in text
    assert "refused before any credential was sent" in text
    assert f"set SSH_HOST_KEY to: {bastion.host_key_line}" in text
    assert "publickey" not in bastion.log(), "no authentication was attempted"


def test_a_key_the_bastion_does_not_accept_and_a_wrong_passphrase_have_their_own_messages(
    database: Database, bastion: SshServer, keys, destination
) -> None:
    with pytest.raises(Exception, match=f"SSH_USER: the bastion 127.0.0.1:{bastion.port} refused SSH_USER"):
        destination.sync(database.configuration(**_through(bastion, keys["stranger"])))
    wrong = _through(bastion, keys["encrypted"], SSH_PASSPHRASE="wrong")
    with pytest.raises(Exception, match="SSH_PASSPHRASE: it does not decrypt SSH_PRIVATE_KEY"):
        destination.sync(database.configuration(**wrong))
    with pytest.raises(Exception, match="SSH_PASSPHRASE: SSH_PRIVATE_KEY is encrypted; give its passphrase"):
        destination.sync(database.configuration(**_through(bastion, keys["encrypted"], SSH_PASSPHRASE="")))
    for key, value, message in (
        ("SSH_PRIVATE_KEY", "not a key", "SSH_PRIVATE_KEY: not a private key this connector can read"),
        ("SSH_HOST_KEY", "ssh-ed25519 not-base64!", "SSH_HOST_KEY: expected the bastion's public host key"),
        ("SSH_USER", "", "SSH_HOST is set: SSH_USER must be set too"),
    ):
        with pytest.raises(Exception, match=message):
            destination.sync(database.configuration(**_through(bastion, keys["ed25519"], **{key: value})))
    with pytest.raises(Exception, match="SSH_USER: it applies only through a bastion; set SSH_HOST"):
        destination.sync(database.configuration(SSH_USER="someone"))


def test_a_bastion_that_does_not_forward_is_named(database: Database, keys, destination) -> None:
    with SshServer([keys["ed25519"].public_line], allow_forwarding=False) as bastion:
        text = _failure(destination, database.configuration(**_through(bastion, keys["ed25519"])))
    assert "refused to forward to HOST:PORT" in text and "AllowTcpForwarding yes" in text


def test_sshd_killed_and_restarted_mid_table_the_sync_resumes_and_converges(
    database: Database, schema: str, source, bastion: SshServer, keys, destination, monkeypatch, capfd
) -> None:
    _fill(source, schema, rows=3000)
    configuration = database.configuration(
        SCHEMAS=schema,
        BATCH_SIZE="100",
        CHECKPOINT_ROWS="500",
        RETRY_SECONDS="60",
        **_through(bastion, keys["ed25519"]),
    )
    real_send, sent = sync.TableSync._send, []

    def send_and_kill_once(self, batch, prepare):
        real_send(self, batch, prepare)
        sent.append(len(batch))
        if len(sent) == 7:  # the bastion dies mid-table and comes back 2 s later
            bastion.kill()
            threading.Timer(2.0, bastion.start).start()

    monkeypatch.setattr(sync.TableSync, "_send", send_and_kill_once)
    destination.sync(configuration)
    out = capfd.readouterr().out
    assert f"{schema}.t: connection lost" in out
    assert destination.rows(schema, "t", "id, note") == _expected(source, schema)
    assert sum(sent) < 3000 + 2 * 100, "continued after the last row sent, not from the start"


def test_verify_full_through_the_tunnel_checks_host_not_the_tunnel_address(
    database: Database, tmp_path: Path, bastion: SshServer, keys, destination
) -> None:
    """The certificate names only `localhost`: it verifies only if libpq checks it against HOST (the database as
    the bastion sees it), not against the tunnel's 127.0.0.1."""
    if not database.is_local:
        pytest.skip("starting a server with SSL needs local server binaries (GREENPLUM_TEST_DSN is given)")
    ca, cert, key = make_certificates(tmp_path, "tunnel", dns_name="localhost")
    other_ca, _, _ = make_certificates(tmp_path / "..", "other", dns_name="localhost")
    server = local_postgres.start_server(database.server.bin_dir, ssl_cert=cert, ssl_key=key)
    try:
        tls = [{"table": "tls", "query": "SELECT pid, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                "primary_key": ["pid"]}]  # fmt: skip
        configuration = {
            "HOST": "localhost", "PORT": str(server.port), "DATABASE": "postgres", "USERNAME": server.user,
            "PASSWORD": server.password, "SSLMODE": "verify-full", "SSLROOTCERT": ca, "QUERIES": json.dumps(tls),
            "RETRY_SECONDS": "0", **_through(bastion, keys["ed25519"]),
        }  # fmt: skip
        destination.sync(configuration)
        assert destination.query("SELECT ssl FROM tester.tls") == [(True,)]
        with pytest.raises(Exception, match="certificate verify failed"):
            destination.sync(configuration | {"SSLROOTCERT": other_ca})
    finally:
        server.stop()


def test_no_secret_of_the_tunnel_shows_in_any_output_or_crash_report(
    database: Database, schema: str, bastion: SshServer, keys, tmp_path: Path
) -> None:
    """A sync that fails after the tunnel is open (a custom query that cannot run), through the SDK's CLI: its output,
    its files and its crash report hold neither the private key, its passphrase, nor the password."""
    key = keys["encrypted"]
    queries = json.dumps([{"table": "q", "query": "SELEC nothing"}])
    configuration = database.configuration(SCHEMAS=schema, QUERIES=queries, **_through(bastion, key))
    project = stage_project(tmp_path / "project")
    (project / "configuration.json").write_text(json.dumps(configuration))
    result = fivetran("debug", "--configuration", "configuration.json", project=project, home=tmp_path / "home",
                      capture=True)  # fmt: skip
    assert result.returncode != 0
    assert list((project / "crash-reports").glob("*.log")), "the SDK wrote a crash report"
    texts = [result.stdout, result.stderr]
    texts += [path.read_text() for path in project.rglob("*") if path.is_file() and path.name != "configuration.json"
              and path.suffix in ("", ".txt", ".json", ".log")]  # fmt: skip
    body = key.private_text.split("\n")[1]  # a line of the key's base64 body
    for text in texts:
        assert body not in text and key.passphrase not in text and database.password not in text
    assert "Accepted publickey" in bastion.log(), "the tunnel was open when the sync failed"


def test_the_setup_forms_connection_test_goes_through_the_tunnel(
    database: Database, schema: str, source, bastion: SshServer, keys
) -> None:
    import connector

    _fill(source, schema)
    result = connector.connection_test(database.configuration(SCHEMAS=schema, **_through(bastion, keys["ed25519"])))
    assert result.success is True
    assert f"Accepted publickey for {bastion.user}" in bastion.log()
    refused = connector.connection_test(database.configuration(**_through(bastion, keys["stranger"])))
    assert "SSH_USER: the bastion" in refused.failure


def test_an_unreachable_bastion_is_named(database: Database, bastion: SshServer, keys, destination) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    configuration = database.configuration(
        CONNECT_TIMEOUT_SECONDS="2", **_through(bastion, keys["ed25519"], SSH_PORT=str(closed))
    )
    assert f"SSH_HOST: cannot reach the bastion 127.0.0.1:{closed}" in _failure(destination, configuration)
