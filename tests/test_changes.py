"""Source changes between and during syncs: schema changes, NULL cursors, cursor type changes, late commits, and
custom queries that try to write."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from conftest import Database, Destination


def _rows(source, statement: str) -> list[tuple]:
    with source.cursor() as cursor:
        cursor.execute(statement)
        return sorted(cursor.fetchall())


def test_columns_added_and_dropped_between_syncs(database: Database, schema: str, source, destination) -> None:
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.t (id int PRIMARY KEY, old text, updated_at timestamp NOT NULL);
            INSERT INTO {schema}.t SELECT i, 'old ' || i, date '2024-01-01' + i FROM generate_series(1, 5) i"""
        )
    configuration = database.configuration(SCHEMAS=schema)
    destination.sync(configuration)
    with source.cursor() as cursor:
        cursor.execute(
            f"""ALTER TABLE {schema}.t ADD COLUMN added numeric(5, 1), DROP COLUMN old;
            UPDATE {schema}.t SET added = id / 2.0, updated_at = '2024-02-01' WHERE id <= 2;
            INSERT INTO {schema}.t (id, added, updated_at) VALUES (6, 3.5, '2024-02-01')"""
        )
    destination.sync(configuration)

    rows = destination.rows(schema, "t", "id, CAST(added AS VARCHAR), old")
    # Rows sent again (changed, or at the saved cursor: 5) carry the new column and no value for the dropped one;
    # rows not sent again keep what they had.
    assert rows == [
        (1, "0.5", None),
        (2, "1.0", None),
        (3, None, "old 3"),
        (4, None, "old 4"),
        (5, None, None),
        (6, "3.5", None),
    ]


def test_rows_with_a_null_cursor_send_what_changed_among_them(
    database: Database, schema: str, source, destination: Destination
) -> None:
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.t (id int PRIMARY KEY, note text, updated_at timestamptz);
            INSERT INTO {schema}.t VALUES (1, 'dated', '2024-01-01 00:00+00'), (2, 'undated', NULL),
                                          (3, 'undated', NULL)"""
        )
    configuration = database.configuration(SCHEMAS=schema, BATCH_SIZE="1")
    counts = destination.sync(configuration)
    assert counts["Upserts"] == 3
    assert destination.rows(schema, "t", "id, note") == [(1, "dated"), (2, "undated"), (3, "undated")]

    with source.cursor() as cursor:  # changes the cursor cannot see: the NULL-cursor rows' digest finds them
        cursor.execute(f"UPDATE {schema}.t SET note = 'changed while NULL' WHERE id = 2")
        cursor.execute(f"INSERT INTO {schema}.t VALUES (4, 'new and undated', NULL)")
    counts = destination.sync(configuration)

    assert counts["Upserts"] == 2, "the NULL-cursor rows changed and inserted, found by their digest; nothing else"
    assert destination.rows(schema, "t", "id, note") == [
        (1, "dated"),
        (2, "changed while NULL"),
        (3, "undated"),
        (4, "new and undated"),
    ]
    assert destination.state["tables"][f"{schema}.t"]["cursor"] == "2024-01-01T00:00:00+00:00"

    with source.cursor() as cursor:  # a NULL-cursor row deleted, another given a cursor
        cursor.execute(f"DELETE FROM {schema}.t WHERE id = 3")
        cursor.execute(f"UPDATE {schema}.t SET updated_at = '2024-02-01 00:00+00' WHERE id = 2")
    counts = destination.sync(configuration)
    assert (counts["Upserts"], counts["Deletes"]) == (1, 1), "the row given a cursor, and the deleted one"
    assert destination.rows(schema, "t", "id, note") == [
        (1, "dated"),
        (2, "changed while NULL"),
        (4, "new and undated"),
    ]
    deleted = destination.query(f'SELECT id FROM "tester_{schema}"."t" WHERE _fivetran_deleted')
    assert deleted == [(3,)]
    counts = destination.sync(configuration)
    assert (counts["Upserts"], counts["Deletes"]) == (0, 0), "a quiet sync sends nothing"


@pytest.mark.parametrize(
    ("before", "after", "re_read"),
    [
        ("timestamp", "timestamptz", True),
        ("date", "timestamp", True),
        ("bigint", "timestamp", True),
        ("integer", "bigint", False),
    ],
)
def test_cursor_type_change(
    before: str, after: str, re_read: bool, database: Database, schema: str, source, destination, capfd
) -> None:
    """A saved cursor of another type is dropped and the table read again from the start (widening an integer
    keeps it); either way the next sync neither fails nor loses a row."""
    value = {"timestamp": "timestamp '2024-01-01' + i * interval '1 day'", "date": "date '2024-01-01' + i"}.get(
        before, "i"
    )
    with source.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {schema}.t (id int PRIMARY KEY, updated_at {before} NOT NULL)")
        cursor.execute(f"INSERT INTO {schema}.t SELECT i, {value} FROM generate_series(1, 10) i")
    configuration = database.configuration(SCHEMAS=schema, LOOKBACK_SECONDS="0")
    destination.sync(configuration)
    using = "to_timestamp(updated_at)::timestamp" if before == "bigint" else f"updated_at::{after}"
    with source.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {schema}.t ALTER COLUMN updated_at TYPE {after} USING {using}")
        cursor.execute(f"INSERT INTO {schema}.t VALUES (11, (SELECT max(updated_at) FROM {schema}.t))")
    capfd.readouterr()
    counts = destination.sync(configuration)

    out = capfd.readouterr().out
    assert counts["Upserts"] == (11 if re_read else 1), "all rows again, or the new one alone"
    assert ("so the table is read again from the start" in out) is re_read
    assert [row[0] for row in destination.rows(schema, "t", "id")] == list(range(1, 12))


def test_late_commit_of_a_transaction_open_during_the_sync(
    database: Database, schema: str, source, destination
) -> None:
    """A transaction that began before the sync and commits after it: its cursor value lies below the saved cursor,
    inside LOOKBACK_SECONDS, and the next sync reads it."""
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.t (id int PRIMARY KEY, updated_at timestamptz NOT NULL DEFAULT now());
            INSERT INTO {schema}.t VALUES (1, now() - interval '1 minute')"""
        )
    late = database.connect()
    late.autocommit = False
    with late.cursor() as cursor:  # now() is the transaction's start: before the rows the sync will see
        cursor.execute(f"INSERT INTO {schema}.t (id) VALUES (100)")
    with source.cursor() as cursor:
        cursor.execute(f"INSERT INTO {schema}.t VALUES (2, clock_timestamp() + interval '1 second')")
    configuration = database.configuration(SCHEMAS=schema, LOOKBACK_SECONDS="60")
    destination.sync(configuration)
    assert [row[0] for row in destination.rows(schema, "t", "id")] == [1, 2]
    saved = destination.state["tables"][f"{schema}.t"]["cursor"]
    late.commit()
    late.close()
    ((late_value,),) = _rows(source, f"SELECT updated_at FROM {schema}.t WHERE id = 100")
    assert late_value < datetime.fromisoformat(saved), "committed below the saved cursor: only the lookback finds it"

    destination.sync(configuration)
    assert [row[0] for row in destination.rows(schema, "t", "id")] == [1, 2, 100]


def test_custom_query_that_writes_fails_and_changes_nothing(
    database: Database, schema: str, source, destination, capfd
) -> None:
    """Every transaction is read only, even after a query turns the session's read-only default off: the query's
    table is skipped, naming why."""
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.t (id int PRIMARY KEY, note text); INSERT INTO {schema}.t VALUES (1, 'kept');
            CREATE FUNCTION {schema}.vandal() RETURNS int LANGUAGE sql AS
                $$ UPDATE {schema}.t SET note = 'vandalised'; DELETE FROM {schema}.t RETURNING 1 $$"""
        )
    queries = [
        {
            "table": "sneaky",
            "query": "SELECT 1 AS id, set_config('default_transaction_read_only', 'off', false) AS x",
            "primary_key": ["id"],
        },
        {"table": "vandal", "query": f"SELECT {schema}.vandal() AS id", "primary_key": ["id"]},
    ]
    destination.sync(database.configuration(SCHEMAS=schema, QUERIES=json.dumps(queries)))
    assert "Skipped query:vandal: cannot execute UPDATE in a read-only transaction" in capfd.readouterr().out
    assert _rows(source, f"SELECT id, note FROM {schema}.t") == [(1, "kept")]
