"""Test fixtures: a real database server, a schema per test, and syncs through the SDK's own runner.

The server is a throwaway local PostgreSQL (system binaries, or the embedded PostgreSQL 12 with
GREENPLUM_TEST_PG=embedded) unless GREENPLUM_TEST_DSN names an existing Greenplum or PostgreSQL database; then each
test creates and drops its own schema there and touches nothing else.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import psycopg2
import psycopg2.extensions
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fivetran_connector_sdk_core.runner as sdk_runner  # noqa: E402
from fivetran_connector_sdk import Logging  # noqa: E402
from fivetran_connector_sdk_cli import core_adapter  # noqa: E402

from tools import local_postgres  # noqa: E402

Logging.LOG_LEVEL = Logging.Level.INFO  # the SDK's log.info raises TypeError while the level is unset
sdk_runner.check_newer_version = lambda *args, **kwargs: None  # no network: skip the 7-second version check
TEST_DATABASE = "connector_test"


@dataclass(frozen=True)
class Database:
    """Where the tests' tables live, and how to connect as the role that creates them."""

    host: str
    port: int
    dbname: str
    user: str
    password: str = field(repr=False)
    version: str = ""
    is_local: bool = False  # a throwaway server of our own: tests may create roles, restart it, and so on
    server: local_postgres.LocalServer | None = None

    def connect(self, **overrides: Any) -> psycopg2.extensions.connection:
        params = {"host": self.host, "port": self.port, "dbname": self.dbname, "user": self.user}
        params.update(overrides)
        connection = psycopg2.connect(**{"password": self.password, **params})
        connection.autocommit = True
        return connection

    def checks_passwords(self) -> bool:
        """Whether the server refuses a wrong password: one that trusts its clients (pg_hba `trust`) takes any."""
        try:
            self.connect(password="wrong-" + self.password).close()
        except psycopg2.OperationalError:
            return True
        return False

    def configuration(self, **keys: str) -> dict[str, str]:
        """A connector configuration for this database; keyword arguments add or override keys."""
        configuration = {
            "HOST": self.host,
            "PORT": str(self.port),
            "DATABASE": self.dbname,
            "USERNAME": self.user,
            "PASSWORD": self.password,
            "RETRY_SECONDS": "20",
        }
        configuration.update(keys)
        return configuration


def pytest_report_header(config: pytest.Config) -> str:
    return f"database: {(os.environ.get('GREENPLUM_TEST_DSN') and 'GREENPLUM_TEST_DSN') or _server_choice()}"


def _server_choice() -> str:
    return os.environ.get("GREENPLUM_TEST_PG", "system")


@pytest.fixture(scope="session")
def database() -> Iterator[Database]:
    dsn = os.environ.get("GREENPLUM_TEST_DSN")
    if dsn:
        params = psycopg2.extensions.parse_dsn(dsn)
        connection = psycopg2.connect(dsn)
        with connection.cursor() as cursor:
            cursor.execute("SELECT version()")
            (version,) = cursor.fetchone()
        connection.close()
        yield Database(
            host=params.get("host", "localhost"),
            port=int(params.get("port", 5432)),
            dbname=params["dbname"],
            user=params["user"],
            password=params.get("password", ""),
            version=version,
            is_local=False,
            server=None,
        )
        return
    choice = _server_choice()
    if choice.startswith("embedded"):
        _, _, version = choice.partition(":")
        bin_dir = local_postgres.fetch_embedded(version or local_postgres.DEFAULT_EMBEDDED_VERSION)
    else:
        bin_dir = local_postgres.find_bin_dir()
    server = local_postgres.start_server(bin_dir, extra_settings={"TimeZone": "America/New_York"})
    try:
        server.create_database(TEST_DATABASE)
        print(f"\n{server.version}", file=sys.stderr)
        yield Database(
            server.host, server.port, TEST_DATABASE, server.user, server.password, server.version, True, server
        )
    finally:
        server.stop()


@pytest.fixture
def schema(database: Database, request: pytest.FixtureRequest) -> Iterator[str]:
    """A schema of the test's own, dropped afterwards."""
    name = "t_" + re.sub(r"\W", "_", request.node.name.lower())[:40] + "_" + secrets.token_hex(3)
    _execute(database, f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        _execute(database, f'DROP SCHEMA "{name}" CASCADE')  # a new connection: the test may have restarted the server


def _execute(database: Database, statement: str) -> None:
    connection = database.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


@pytest.fixture
def source(database: Database) -> Iterator[psycopg2.extensions.connection]:
    """An autocommit connection to the test database, for setting up and changing source data."""
    connection = database.connect()
    yield connection
    connection.close()


class Destination:
    """Syncs through the SDK's runner into one project directory and reads what landed in its DuckDB file."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self.state: dict[str, Any] = {}

    def sync(self, configuration: dict[str, str], state: dict[str, Any] | None = None) -> dict[str, int]:
        """One sync; the state saved by the previous one is used unless another is given."""
        import connector  # the project's connector module, imported as the SDK does

        counts = core_adapter.run(connector.connector, str(self.project), configuration, state or self.state)
        self.state = self.saved_state()
        return counts

    def saved_state(self) -> dict[str, Any]:
        path = self.project / "files" / "state.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def query(self, statement: str, params: list[Any] | None = None) -> list[tuple]:
        connection = duckdb.connect(str(self.project / "files" / "warehouse.db"), read_only=True)
        try:
            return connection.execute(statement, params or []).fetchall()
        finally:
            connection.close()

    def rows(self, schema: str, table: str, columns: str = "*", live_only: bool = True) -> list[tuple]:
        where = " WHERE NOT _fivetran_deleted" if live_only else ""
        return self.query(f'SELECT {columns} FROM "tester_{schema}"."{table}"{where} ORDER BY ALL')

    def column_types(self, schema: str, table: str) -> dict[str, str]:
        rows = self.query(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            [f"tester_{schema}", table],
        )
        return dict(rows)


@pytest.fixture
def destination(tmp_path: Path) -> Destination:
    return Destination(tmp_path)


def killed_after_checkpoint(
    monkeypatch: pytest.MonkeyPatch,
    destination: Destination,
    configuration: dict[str, str],
    table: str,
    when: Callable[[dict, int], bool] = lambda _, number: number == 1,
    if_reached: bool = False,
    landed: bool = False,
) -> dict:
    """Runs a sync that dies right after the checkpoint at which `when(the table's state, checkpoint number)` holds
    (the table's state is `{}` while the state saved has none of it); returns the state it saved. With `landed`,
    it dies inside that checkpoint, after the SDK wrote the rows sent and before it saved the state. With
    `if_reached`, a sync that ends before such a checkpoint runs whole."""
    from fivetran_connector_sdk_cli import runtime

    import sync  # the project's module, imported as the connector imports it

    real_checkpoint, count = sync.op.checkpoint, [0]

    def checkpoint_then_die(state: dict) -> None:
        count[0] += 1
        dies = when(state["tables"].get(table, {}), count[0])
        if dies and landed:
            runtime.current().flush()
        else:
            real_checkpoint(state)
        if dies:
            raise RuntimeError("killed after a checkpoint")

    monkeypatch.setattr(sync.op, "checkpoint", checkpoint_then_die)
    try:
        destination.sync(configuration)
    except Exception as error:  # the SDK's runner wraps what update() raised
        if "killed after a checkpoint" not in str(error):
            raise
    else:
        assert if_reached, "the sync ended before the checkpoint it was to die at"
    monkeypatch.setattr(sync.op, "checkpoint", real_checkpoint)
    return destination.saved_state()


def make_certificates(directory: Path, common_name: str, dns_name: str | None = None) -> tuple[str, Path, Path]:
    """A fresh CA (PEM text) and a server certificate and key it signed (files), for 127.0.0.1, or for the host name
    `dns_name` only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key, issuer: str, issuer_key, extensions) -> x509.Certificate:
        builder = x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        builder = builder.issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        builder = builder.public_key(key.public_key()).serial_number(x509.random_serial_number())
        builder = builder.not_valid_before(now - datetime.timedelta(days=1))
        builder = builder.not_valid_after(now + datetime.timedelta(days=1))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate(
        f"{common_name} CA", ca_key, f"{common_name} CA", ca_key, [(x509.BasicConstraints(True, None), True)]
    )
    name = x509.DNSName(dns_name) if dns_name else x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    san = x509.SubjectAlternativeName([name])
    server = certificate(dns_name or "127.0.0.1", server_key, f"{common_name} CA", ca_key, [(san, False)])
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca.public_bytes(serialization.Encoding.PEM).decode(), cert_path, key_path
