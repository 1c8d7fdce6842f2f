"""Faults in the middle of a sync: the table continues from its last row, or is skipped with a warning naming it.

Faults are real (a server restart, pg_terminate_backend, the server's own timeouts, a revoked grant, a dropped
table); they are timed by wrapping the connector's own functions, which then call through.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator

import psycopg2
import pytest
from conftest import Database, Destination
from psycopg2 import sql

import connector
import difference_digest as dd
from catalog import detect_flavour
from configuration import parse_settings
from greenplum_client import APPLICATION_NAME, FIRST_FETCH, GreenplumClient

ROWS = 12_000
BATCH = "500"
TABLES = {
    "incremental": "CREATE TABLE {s}.big (id bigint PRIMARY KEY, payload text, updated_at timestamptz NOT NULL)",
    "full without key": "CREATE TABLE {s}.big (id bigint, payload text, updated_at timestamptz NOT NULL)",
}
FILL = """INSERT INTO {s}.big
SELECT i, md5(i::text), timestamptz '2024-01-01' + i * interval '1 second' FROM generate_series(1, {n}) i"""


def _fill(source, schema: str, create: str, rows: int = ROWS) -> None:
    with source.cursor() as cursor:
        cursor.execute(create.format(s=schema))
        cursor.execute(FILL.format(s=schema, n=rows))
        cursor.execute(f"ANALYZE {schema}.big")


def _source_rows(database: Database, statement: str) -> list[tuple]:
    connection = database.connect()  # a fresh connection: the test's own may have died with the fault
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
            return sorted(cursor.fetchall())
    finally:
        connection.close()


def _terminate_connector_backends(database: Database) -> int:
    rows = _source_rows(
        database,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE application_name = '{APPLICATION_NAME}' AND pid <> pg_backend_pid()",
    )
    return len(rows)


def _fault_after_first_batch(monkeypatch: pytest.MonkeyPatch, fault: Callable[[], None], read: int = 1) -> list[int]:
    """Runs `fault` once, after the first batch of the `read`-th read is sent; returns the backend pids that read."""
    real_stream = GreenplumClient.stream
    pids: list[int] = []

    def stream(self: GreenplumClient, statement, params=None, row_bytes=None) -> Iterator[list[tuple]]:
        pids.append(self.connection.get_backend_pid())
        for number, batch in enumerate(real_stream(self, statement, params, row_bytes)):
            yield batch
            if number == 0 and len(pids) == read:
                fault()

    monkeypatch.setattr(GreenplumClient, "stream", stream)
    return pids


def _restart(database: Database) -> None:
    """Restarts the server from a thread and returns once it stopped taking connections, so the next fetch fails."""
    threading.Thread(target=database.server.restart, daemon=True).start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            database.connect().close()
        except psycopg2.OperationalError:
            return
        time.sleep(0.02)
    raise AssertionError("the server did not go down")


@pytest.mark.parametrize("case", list(TABLES))
@pytest.mark.parametrize("fault", ["pg_terminate_backend", "server restart"])
def test_connection_lost_mid_table_continues_from_the_last_row(
    fault: str, case: str, database: Database, schema: str, source, destination: Destination, monkeypatch, capfd
) -> None:
    if fault == "server restart" and not database.is_local:
        pytest.skip("restarting the server needs a local server of our own (GREENPLUM_TEST_DSN is shared)")
    _fill(source, schema, TABLES[case])
    inject = {"pg_terminate_backend": _terminate_connector_backends, "server restart": _restart}[fault]
    pids = _fault_after_first_batch(monkeypatch, lambda: inject(database))

    counts = destination.sync(database.configuration(SCHEMAS=schema, BATCH_SIZE=BATCH))

    assert len(pids) >= 2 and pids[0] != pids[1], "the read went on in a new session"
    assert counts["Upserts"] == ROWS, "the new session continued after the last row sent: nothing read twice"
    expected = _source_rows(database, f"SELECT id, payload, updated_at FROM {schema}.big")
    assert destination.rows(schema, "big", "id, payload, updated_at") == expected
    assert f"{schema}.big: connection lost" in _messages(capfd)


def test_connection_lost_during_discovery_is_retried(
    database: Database, schema: str, source, destination: Destination, monkeypatch, capfd
) -> None:
    _fill(source, schema, TABLES["incremental"], rows=100)
    real_query = GreenplumClient.query
    calls = []

    def query(self: GreenplumClient, statement, params=None):
        calls.append(statement)
        if len(calls) in (2, 5):  # the session is killed while idle, between two catalog queries
            _terminate_connector_backends(database)
        return real_query(self, statement, params)

    monkeypatch.setattr(GreenplumClient, "query", query)
    destination.sync(database.configuration(SCHEMAS=schema))

    assert len(calls) > 5
    assert _messages(capfd).count("Connection lost during a catalog query") == 2
    assert len(destination.rows(schema, "big", "id")) == 100


def test_connection_lost_during_a_digest_s_scan_starts_it_again(
    database: Database, schema: str, source, destination: Destination, monkeypatch, capfd
) -> None:
    """The session is killed while the pairs of a keyed table stream in: the scan runs again on a new connection and
    its cells start over, so the sync sends exactly what changed. The pairs must outgrow what the sockets buffer on
    their way (5 MB did on PostgreSQL; on Greenplum, whose coordinator relays the segments' rows, not always)."""
    rows = 250_000 if detect_flavour(database.version).is_greenplum else 60_000
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.keyed (id text PRIMARY KEY, n int);
            INSERT INTO {schema}.keyed SELECT 'account number ' || lpad(i::text, 40, '0'), i
            FROM generate_series(1, {rows}) AS i"""
        )
    configuration = database.configuration(SCHEMAS=schema)
    destination.sync(configuration)
    with source.cursor() as cursor:
        cursor.execute(f"UPDATE {schema}.keyed SET n = -n WHERE n % 1000 = 0")
        cursor.execute(f"DELETE FROM {schema}.keyed WHERE n % 1000 = 1")
    real_write, killed = dd.PairSink.write, []

    def write(self: dd.PairSink, data: bytes) -> None:
        if not killed:  # the server has 5 MB to send, far more than the socket buffers hold: the COPY breaks off
            killed.append(_terminate_connector_backends(database))
        real_write(self, data)

    monkeypatch.setattr(dd.PairSink, "write", write)
    counts = destination.sync(configuration)

    assert killed == [1]
    assert "Connection lost during a digest's scan" in _messages(capfd)
    assert (counts["Upserts"], counts["Deletes"], counts.get("Truncates", 0)) == (rows // 1000, rows // 1000, 0)
    expected = _source_rows(database, f"SELECT id, n FROM {schema}.keyed")
    assert destination.rows(schema, "keyed", "id, n") == expected


def _messages(capfd: pytest.CaptureFixture) -> str:
    """The messages the SDK printed (one JSON object a line), one a line."""
    lines = capfd.readouterr().out.splitlines()
    return "\n".join(json.loads(line)["message"] for line in lines if line.startswith("{"))


def _server_version_num(database: Database) -> int:
    return int(_source_rows(database, "SHOW server_version_num")[0][0])


def test_idle_in_transaction_timeout_between_fetches(
    database: Database, schema: str, source, destination: Destination, monkeypatch, capfd
) -> None:
    """An admin's idle_in_transaction_session_timeout ends the session while the destination is slow."""
    if _server_version_num(database) < 90600:
        pytest.skip("idle_in_transaction_session_timeout exists from PostgreSQL 9.6 (not in Greenplum 6)")
    _fill(source, schema, TABLES["incremental"])
    # libpq's PGOPTIONS sets the timeout for the connector's sessions, as ALTER ROLE ... SET would.
    monkeypatch.setenv("PGOPTIONS", "-c idle_in_transaction_session_timeout=300")
    _fault_after_first_batch(monkeypatch, lambda: time.sleep(1.0))

    counts = destination.sync(database.configuration(SCHEMAS=schema, BATCH_SIZE=BATCH))

    assert counts["Upserts"] == ROWS
    expected = _source_rows(database, f"SELECT id, payload, updated_at FROM {schema}.big")
    assert destination.rows(schema, "big", "id, payload, updated_at") == expected
    assert f"{schema}.big: connection lost" in _messages(capfd)


@pytest.mark.parametrize("slow_row_stays_slow", [False, True])
def test_statement_timeout_mid_read(
    slow_row_stays_slow: bool, database: Database, schema: str, source, destination: Destination, monkeypatch, capfd
) -> None:
    """statement_timeout cancels a fetch: after progress the read goes on; cancelled again at once, the table is
    skipped with a warning that says what to change, and the other tables still sync."""
    if detect_flavour(database.version).is_greenplum:
        pytest.skip("on Greenplum the segments compute the slow row ahead of the fetch: no fetch is timed out")
    _fill(source, schema, TABLES["incremental"])
    with source.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {schema}.slow_switch (on_ boolean); INSERT INTO {schema}.slow_switch VALUES (true)"
        )
        cursor.execute(f"CREATE TABLE {schema}.other (id int PRIMARY KEY); INSERT INTO {schema}.other VALUES (1), (2)")
    # Row 3000 takes a second to fetch while the switch is on (as seen by the read's snapshot).
    query = (
        f"SELECT b.id, b.payload FROM {schema}.big b WHERE CASE WHEN b.id = 3000 AND EXISTS "
        f"(SELECT 1 FROM {schema}.slow_switch) THEN pg_sleep(1)::text = '' ELSE true END"
    )
    queries = json.dumps([{"table": "slow", "query": query, "primary_key": ["id"]}])
    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=400")
    if not slow_row_stays_slow:
        _fault_after_first_batch(
            monkeypatch, lambda: _source_rows(database, f"DELETE FROM {schema}.slow_switch RETURNING 1"), read=2
        )  # the first read is the table `other`'s
    configuration = database.configuration(SCHEMAS=schema, TABLES=f"{schema}.other", QUERIES=queries, BATCH_SIZE=BATCH)

    counts = destination.sync(configuration)

    out = _messages(capfd)
    assert "query:slow: read cancelled (canceling statement due to statement timeout)" in out
    assert destination.rows(schema, "other", "id") == [(1,), (2,)]
    landed = destination.query("SELECT count(*) FROM tester.slow")[0][0]
    if not slow_row_stays_slow:
        assert counts["Upserts"] == ROWS + 2 and landed == ROWS
        return
    assert "Skipped query:slow: the server cancelled the read before it returned a row" in out
    assert "raise statement_timeout for USERNAME or lower BATCH_SIZE" in out
    assert "1 table(s) skipped: query:slow" in out
    # Batches of 500 rows after a first fetch of 16: the one that holds row 3000 begins after row 2516.
    assert landed == 2500 + FIRST_FETCH, "the rows before the slow batch landed, and the table's position was saved"
    monkeypatch.delenv("PGOPTIONS")
    counts = destination.sync(configuration)
    assert counts["Upserts"] == ROWS - 2500 - FIRST_FETCH, (
        "the rest of the slow table; the other table is unchanged: nothing sent"
    )
    assert destination.query("SELECT count(*) FROM tester.slow")[0][0] == ROWS


@pytest.fixture
def reader(database: Database, schema: str) -> Iterator[tuple[str, str]]:
    """A non-superuser login role that may read the test schema: (name, password)."""
    if not database.is_local:
        pytest.skip("creating login roles needs a local server of our own (GREENPLUM_TEST_DSN is shared)")
    name, password = f"reader_{secrets.token_hex(4)}", secrets.token_urlsafe(18)
    connection = database.connect()
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {name} LOGIN PASSWORD %s", (password,))
    connection.close()
    yield name, password
    connection = database.connect()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP OWNED BY {name}; DROP ROLE {name}")
    connection.close()


def _as(database: Database, reader: tuple[str, str], **keys: str) -> dict[str, str]:
    return database.configuration(USERNAME=reader[0], PASSWORD=reader[1], **keys)


@pytest.mark.parametrize("when", ["before the sync", "after discovery"])
def test_revoked_table_is_skipped_and_the_others_sync(
    when: str, database: Database, schema: str, source, reader, destination: Destination, monkeypatch, capfd
) -> None:
    role = reader[0]
    with source.cursor() as cursor:
        cursor.execute(
            f"""
            CREATE TABLE {schema}.kept (id int PRIMARY KEY, note text);
            CREATE TABLE {schema}.revoked (id int PRIMARY KEY, note text);
            INSERT INTO {schema}.kept VALUES (1, 'one'); INSERT INTO {schema}.revoked VALUES (1, 'one');
            GRANT USAGE ON SCHEMA {schema} TO {role};
            GRANT SELECT ON {schema}.kept, {schema}.revoked TO {role};
            """
        )
    configuration = _as(database, reader, SCHEMAS=schema)
    destination.sync(configuration)
    assert destination.rows(schema, "revoked", "id, note") == [(1, "one")]

    revoke = f"REVOKE SELECT ON {schema}.revoked FROM {role}; INSERT INTO {schema}.kept VALUES (2, 'two')"
    if when == "before the sync":
        with source.cursor() as cursor:
            cursor.execute(revoke)
    else:
        real_plans, calls = connector._plans, []

        def plans_then_revoke(*args, **kwargs):
            result = real_plans(*args, **kwargs)
            calls.append(1)
            if len(calls) == 2:  # schema() plans first, then update(): revoke right after update's discovery
                with source.cursor() as cursor:
                    cursor.execute(revoke)
            return result

        monkeypatch.setattr(connector, "_plans", plans_then_revoke)
    capfd.readouterr()
    destination.sync(configuration)

    out = _messages(capfd)
    assert f"Skipped {schema}.revoked: permission denied" in out
    assert f"1 table(s) skipped: {schema}.revoked" in out
    assert destination.rows(schema, "kept", "id, note") == [(1, "one"), (2, "two")]
    assert destination.rows(schema, "revoked", "id, note") == [(1, "one")], "what landed before stays"
    assert reader[1] not in out


def test_table_dropped_after_discovery_is_skipped(
    database: Database, schema: str, source, destination: Destination, monkeypatch, capfd
) -> None:
    with source.cursor() as cursor:
        cursor.execute(
            f"""
            CREATE TABLE {schema}.kept (id int PRIMARY KEY); INSERT INTO {schema}.kept VALUES (1), (2);
            CREATE TABLE {schema}.doomed (id int PRIMARY KEY); INSERT INTO {schema}.doomed VALUES (1);
            """
        )
    real_plans, calls = connector._plans, []

    def plans_then_drop(*args, **kwargs):
        result = real_plans(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            with source.cursor() as cursor:
                cursor.execute(f"DROP TABLE {schema}.doomed")
        return result

    monkeypatch.setattr(connector, "_plans", plans_then_drop)
    destination.sync(database.configuration(SCHEMAS=schema))

    out = _messages(capfd)
    assert f'Skipped {schema}.doomed: relation "{schema}.doomed" does not exist' in out
    assert f"1 table(s) skipped: {schema}.doomed" in out
    assert destination.rows(schema, "kept", "id") == [(1,), (2,)]


def test_a_read_abandoned_mid_table_stops_fetching_ahead(database: Database, schema: str, source) -> None:
    """Closing a read after its first batch, with the next one fetched ahead, ends the helper thread and the
    transaction, and leaves the connection usable; every batch read before holds distinct rows in key order."""
    _fill(source, schema, TABLES["incremental"])
    threads_before = set(threading.enumerate())
    with GreenplumClient(parse_settings(database.configuration(BATCH_SIZE=BATCH))) as client:
        statement = sql.SQL("SELECT id FROM {}.big ORDER BY id").format(sql.Identifier(schema))
        reading = client.stream(statement)
        first, second = next(reading), next(reading)
        assert [row[0] for row in first + second] == list(range(1, len(first) + len(second) + 1))
        assert len(first) == FIRST_FETCH and len(second) == int(BATCH), "a first fetch sees how wide the rows are"
        time.sleep(0.2)  # the fetcher now holds a batch nobody will read, waiting for room
        reading.close()
        assert set(threading.enumerate()) == threads_before
        assert client.connection.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        assert client.query(sql.SQL("SELECT count(*) FROM {}.big").format(sql.Identifier(schema))) == [(ROWS,)]
