"""Connection failures and SSL: each fails within a bounded time with one line naming the cause, and no output or
crash report ever holds the password."""

from __future__ import annotations

import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Database, Destination, make_certificates
from fivetran_connector_sdk_cli.crash_report import build_debug_crash_report

import connector
from tools import local_postgres
from tools.fivetran_cli import fivetran, stage_project


def _failure(destination: Destination, configuration: dict[str, str]) -> tuple[str, float]:
    """The text of a failed sync through the SDK's runner, and how long it took."""
    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        destination.sync(configuration)
    return str(raised.value), time.monotonic() - started


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers, like a firewall that swallows packets."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("keys", "message", "seconds"),
    [
        ({"PASSWORD": "wrong-{password}"}, "Authentication failed for USERNAME '{user}' (check USERNAME and", 10),
        ({"DATABASE": "no_such_database"}, "DATABASE 'no_such_database' does not exist on {host}:{port}", 10),
        ({"PORT": "{free_port}"}, "Cannot reach {host}:{free_port} (check HOST and PORT, and that the server", 10),
        ({"HOST": "no-such-host.invalid"}, "HOST 'no-such-host.invalid' cannot be resolved", 30),
        (
            {"PORT": "{silent_port}", "CONNECT_TIMEOUT_SECONDS": "2"},
            "Connecting to {host}:{silent_port} timed out after 2s",
            10,
        ),
        ({"PORT": "54x"}, "PORT: '54x' is not a whole number.", 5),
        ({"USERNAME": " "}, "Missing required configuration value(s): USERNAME.", 5),
    ],
)  # fmt: skip
def test_connection_failures_name_their_cause(
    keys: dict[str, str], message: str, seconds: int, database: Database, destination, silent_server: int
) -> None:
    if "PASSWORD" in keys and not database.checks_passwords():
        pytest.skip("the server trusts its clients (pg_hba trust): it takes a wrong password")
    names = {"password": database.password, "user": database.user, "host": database.host, "port": database.port}
    names |= {"free_port": _free_port(), "silent_port": silent_server}
    keys = {key: value.format(**names) for key, value in keys.items()}
    text, elapsed = _failure(destination, database.configuration(RETRY_SECONDS="0", **keys))

    expected = message.format(**names)
    assert expected in text
    line = next(line for line in text.splitlines() if expected in line)
    assert line.split(expected)[0].endswith(("Error: ", "error: ")), f"one line, the cause first: {line}"
    assert elapsed < seconds
    assert database.password not in text


def test_a_closed_port_on_a_first_sync_answers_within_the_connect_timeout(database: Database, destination) -> None:
    """A first sync that cannot connect most likely has a wrong HOST or PORT: no five minutes of silent retries."""
    port = _free_port()
    configuration = database.configuration(PORT=str(port), RETRY_SECONDS="300", CONNECT_TIMEOUT_SECONDS="5")
    text, elapsed = _failure(destination, configuration)
    assert f"Cannot reach {database.host}:{port} (check HOST and PORT" in text
    assert elapsed < 5 + 3, "retried within CONNECT_TIMEOUT_SECONDS only (the SDK's own start-up takes a moment)"


def test_a_later_sync_retries_an_unreachable_server_and_logs_each_wait(
    database: Database, schema: str, source, destination, capfd, monkeypatch
) -> None:
    """A later sync whose server goes away (here between schema() and update()) retries with backoff, logging
    each wait with its cause, and goes on once the server is back."""
    if not database.is_local:
        pytest.skip("stopping the server needs a local server of our own (GREENPLUM_TEST_DSN is shared)")
    with source.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {schema}.t (id int PRIMARY KEY); INSERT INTO {schema}.t VALUES (1)")
    configuration = database.configuration(SCHEMAS=schema, RETRY_SECONDS="60")
    destination.sync(configuration)  # a first sync saves a state
    real_schema = connector.schema

    def schema_then_outage(configuration: dict[str, str]) -> list[dict[str, object]]:
        declared = real_schema(configuration)
        database.server.shut_down()
        threading.Timer(2.5, database.server.start).start()
        return declared

    monkeypatch.setattr(connector.connector, "schema_method", schema_then_outage)  # what the SDK's runner calls
    capfd.readouterr()
    destination.sync(configuration)
    out = capfd.readouterr().out
    where = f"{database.host}:{database.port}"
    assert re.search(rf"Cannot reach {where} .*\(attempt 1; next try in \d+ s, retrying for up to 60 s\)", out)
    assert "Sync finished; 1 table(s) synced" in out


def test_verify_full_against_a_server_with_a_certificate(database: Database, tmp_path: Path, destination) -> None:
    if not database.is_local:
        pytest.skip("starting a server with SSL needs local server binaries (GREENPLUM_TEST_DSN is given)")
    ca, cert, key = make_certificates(tmp_path, "test")
    other_ca, _, _ = make_certificates(tmp_path / "..", "other")
    server = local_postgres.start_server(database.server.bin_dir, ssl_cert=cert, ssl_key=key)
    try:
        tls = [{"table": "tls", "query": "SELECT pid, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                "primary_key": ["pid"]}]  # fmt: skip
        configuration = {
            "HOST": server.host, "PORT": str(server.port), "DATABASE": "postgres", "USERNAME": server.user,
            "PASSWORD": server.password, "SSLMODE": "verify-full", "SSLROOTCERT": ca, "QUERIES": json.dumps(tls),
            "RETRY_SECONDS": "0",
        }  # fmt: skip
        destination.sync(configuration)
        assert destination.query("SELECT ssl FROM tester.tls") == [(True,)]

        text, _ = _failure(destination, configuration | {"SSLROOTCERT": other_ca})
        assert f"SSL connection to {server.host}:{server.port} failed with SSLMODE verify-full" in text
        assert "certificate verify failed" in text
        assert server.password not in text
    finally:
        server.stop()


def test_require_against_a_server_without_ssl(database: Database, destination) -> None:
    if not database.is_local:
        pytest.skip("whether the server offers SSL is known only for our own local server")
    text, _ = _failure(destination, database.configuration(SSLMODE="require", RETRY_SECONDS="0"))
    line = next(line for line in text.splitlines() if "SSL connection to" in line)
    assert f"SSL connection to {database.host}:{database.port} failed with SSLMODE require: " in line
    assert "server does not support SSL, but SSL was required" in line


@pytest.fixture
def login(database: Database) -> Iterator[tuple[str, str]]:
    """A login role with a password of its own (the configured user's elsewhere): (name, password)."""
    if not database.is_local:
        yield database.user, database.password
        return
    name, password = f"secret_{secrets.token_hex(4)}", secrets.token_urlsafe(20)
    connection = database.connect()
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {name} LOGIN PASSWORD %s", (password,))
    yield name, password
    with connection.cursor() as cursor:
        cursor.execute(f"DROP OWNED BY {name}; DROP ROLE {name}")
    connection.close()


# A custom query whose rows end its own session: every reconnect is lost again, which stops the sync (a table's
# other errors only skip that table).
_HANGS_UP = "SELECT pg_terminate_backend(pg_backend_pid()) AS x"


def test_password_is_in_no_output_nor_crash_report(
    database: Database, schema: str, source, login: tuple[str, str], tmp_path: Path
) -> None:
    """Real `fivetran debug` runs that fail in schema() and in update(): stdout, stderr, crash reports and state."""
    user, password = login
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.t (id int PRIMARY KEY); INSERT INTO {schema}.t VALUES (1);
            GRANT USAGE ON SCHEMA {schema} TO {user}; GRANT SELECT ON {schema}.t TO {user}"""
        )
    base = database.configuration(USERNAME=user, PASSWORD=password, SCHEMAS=schema, RETRY_SECONDS="0")
    failures = {
        "unreachable": base | {"PORT": str(_free_port())},
        "bad query": base | {"QUERIES": json.dumps([{"table": "q", "query": "SELEC nothing"}])},
        "lost in update()": base | {"QUERIES": json.dumps([{"table": "q", "query": _HANGS_UP}])},
    }  # fmt: skip
    for name, configuration in failures.items():
        project = stage_project(tmp_path / name.replace(" ", "_") / "project")
        (project / "configuration.json").write_text(json.dumps(configuration))
        result = fivetran("debug", "--configuration", "configuration.json", project=project, home=tmp_path / "home",
                          capture=True)  # fmt: skip
        assert result.returncode != 0, name
        reports = list((project / "crash-reports").glob("*.log"))
        assert reports, f"{name}: the SDK wrote a crash report\n{result.stdout}\n{result.stderr}"
        texts = [result.stdout, result.stderr] + [path.read_text() for path in project.rglob("*") if path.is_file()
                                                   and path.suffix in ("", ".txt", ".json", ".log")]  # fmt: skip
        texts = [text for text in texts if text != json.dumps(configuration)]  # the file we wrote holds it, of course
        assert all(password not in text for text in texts), name
        if name == "lost in update()":
            assert "server closed the connection" in result.stdout + result.stderr
            assert re.search(r"File .*greenplum_client\.py.*in \w+", reports[0].read_text()), "frames deep in"


def test_crash_report_without_the_sdk_redaction_holds_no_password(database: Database, schema: str, source) -> None:
    """The SDK redacts configuration values from crash reports; the connector keeps the password out of the
    locals it captures anyway (a report built without redaction shows none)."""
    with source.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {schema}.t (id int PRIMARY KEY)")
    queries = json.dumps([{"table": "q", "query": _HANGS_UP}])
    with pytest.raises(Exception) as raised:
        connector.update(database.configuration(SCHEMAS=schema, QUERIES=queries, RETRY_SECONDS="0"), {})
    report = build_debug_crash_report(raised.value, str(Path(connector.__file__).parent), configuration=None)
    assert "Locals:" in report and "settings = Settings(" in report
    assert database.password not in report
