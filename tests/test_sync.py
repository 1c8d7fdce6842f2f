"""End-to-end syncs through the SDK's runner: the destination equals the source after each sync."""

from __future__ import annotations

import gc
import json
from decimal import Decimal

import pytest
from conftest import Database, Destination

SETUP = """
CREATE TABLE {s}.accounts (
    id bigint PRIMARY KEY, name text NOT NULL, balance numeric(12, 2), updated_at timestamptz NOT NULL
);
INSERT INTO {s}.accounts
SELECT i, 'account ' || i, i * 1.25, timestamptz '2024-01-01 00:00:00+00' + (i / 10) * interval '1 hour'
FROM generate_series(1, 500) AS i;

CREATE TABLE {s}.regions (code text PRIMARY KEY, label text NOT NULL, active boolean NOT NULL);
INSERT INTO {s}.regions VALUES ('eu', 'Europe', true), ('us', 'United States', true), ('ap', 'Asia', false);

CREATE TABLE {s}.events (kind text NOT NULL, amount integer, happened_on date);
INSERT INTO {s}.events
SELECT CASE WHEN i % 2 = 0 THEN 'click' ELSE 'view' END, i % 3, date '2024-03-01' + i % 4 FROM generate_series(1, 40) i;
"""


def _query(schema: str) -> str:
    return json.dumps(
        [
            {
                "table": "rich_accounts",
                "query": f"SELECT id, name, balance, updated_at FROM {schema}.accounts WHERE balance > 500",
                "primary_key": ["id"],
                "cursor": "updated_at",
            }
        ]
    )


@pytest.fixture
def populated(schema: str, source) -> str:
    with source.cursor() as cursor:
        cursor.execute(SETUP.format(s=schema))
    return schema


def _source_rows(source, statement: str) -> list[tuple]:
    with source.cursor() as cursor:
        cursor.execute(statement)
        return sorted(cursor.fetchall())


def _assert_accounts_equal(source, destination: Destination, schema: str) -> None:
    expected = _source_rows(source, f"SELECT id, name, balance, updated_at FROM {schema}.accounts")
    assert destination.rows(schema, "accounts", "id, name, balance, updated_at") == expected


def test_first_sync_lands_every_table_exactly(database: Database, populated: str, source, destination) -> None:
    schema = populated
    counts = destination.sync(database.configuration(SCHEMAS=schema, QUERIES=_query(schema)))

    _assert_accounts_equal(source, destination, schema)
    assert destination.rows(schema, "regions", "code, label, active") == _source_rows(
        source, f"SELECT code, label, active FROM {schema}.regions"
    )
    # Keyless: identical source rows stay distinct, so the live count equals the source's.
    assert destination.rows(schema, "events", "kind, amount, happened_on") == _source_rows(
        source, f"SELECT kind, amount, happened_on FROM {schema}.events"
    )
    rich = destination.query("SELECT id, balance FROM tester.rich_accounts WHERE NOT _fivetran_deleted ORDER BY id")
    assert rich == _source_rows(source, f"SELECT id, balance FROM {schema}.accounts WHERE balance > 500")
    assert counts["Upserts"] == 500 + 3 + 40 + len(rich)
    types = destination.column_types(schema, "accounts")
    assert types["balance"] == "DECIMAL(12,2)" and types["updated_at"] == "TIMESTAMP WITH TIME ZONE"
    assert destination.state["tables"][f"{schema}.accounts"]["strategy"] == "incremental"
    assert destination.state["tables"][f"{schema}.regions"]["strategy"] == "full with key"
    assert destination.state["tables"][f"{schema}.events"]["strategy"] == "full without key"


def test_second_sync_picks_up_exactly_the_changes(database: Database, populated: str, source, destination) -> None:
    schema = populated
    configuration = database.configuration(SCHEMAS=schema, LOOKBACK_SECONDS="600", TABLES=f"{schema}.accounts")
    destination.sync(configuration)
    saved_cursor = destination.state["tables"][f"{schema}.accounts"]["cursor"]
    assert saved_cursor == "2024-01-03T02:00:00+00:00"  # the highest updated_at: (500 / 10) hours after the start

    with source.cursor() as cursor:
        # New rows sharing the saved cursor value exactly, an update to a later time, and an update whose new
        # cursor value lies inside the lookback window below the saved cursor (a late commit).
        cursor.execute(
            f"""
            INSERT INTO {schema}.accounts VALUES
                (501, 'tied a', 1, '2024-01-03 02:00:00+00'), (502, 'tied b', 2, '2024-01-03 02:00:00+00');
            UPDATE {schema}.accounts SET name = 'moved later', updated_at = '2024-02-01 00:00:00+00' WHERE id = 7;
            UPDATE {schema}.accounts SET name = 'late commit', updated_at = '2024-01-03 01:55:00+00' WHERE id = 8;
            UPDATE {schema}.accounts SET name = 'too old to see' WHERE id = 9;
            """
        )
    counts = destination.sync(configuration)

    # The changes alone: the rows after the last one read (the tied ones, the one moved later), and the late commit,
    # which the check of what the destination holds below the saved cursor finds. No lookback window is sent again.
    assert counts["Upserts"] == 4
    landed = dict(destination.rows(schema, "accounts", "id, name"))
    assert landed[501] == "tied a" and landed[502] == "tied b"
    assert landed[7] == "moved later" and landed[8] == "late commit"
    assert landed[9] == "account 9"  # changed without touching the cursor: invisible to an incremental read
    assert destination.state["tables"][f"{schema}.accounts"]["cursor"] == "2024-02-01T00:00:00+00:00"


def test_full_pass_marks_hard_deletes(database: Database, populated: str, source, destination) -> None:
    schema = populated
    configuration = database.configuration(SCHEMAS=schema, TABLES=f"{schema}.regions, {schema}.events")
    destination.sync(configuration)
    with source.cursor() as cursor:
        cursor.execute(f"DELETE FROM {schema}.regions WHERE code = 'us'")
        cursor.execute(f"UPDATE {schema}.regions SET label = 'Asia Pacific' WHERE code = 'ap'")
        cursor.execute(f"DELETE FROM {schema}.events WHERE kind = 'click'")
    destination.sync(configuration)

    assert destination.rows(schema, "regions", "code, label") == [("ap", "Asia Pacific"), ("eu", "Europe")]
    deleted = destination.query(f'SELECT code FROM "tester_{schema}".regions WHERE _fivetran_deleted')
    assert deleted == [("us",)]
    assert destination.rows(schema, "events", "kind, amount, happened_on") == _source_rows(
        source, f"SELECT kind, amount, happened_on FROM {schema}.events"
    )


def test_custom_query_reproduces_the_original_example(database: Database, destination) -> None:
    with open("configuration.json.example") as file:
        example = json.load(file)
    queries = json.loads(example["QUERIES"])
    assert queries[0]["table"] == "sample_table" and queries[0]["cursor"] == "query_start"
    configuration = database.configuration(QUERIES=example["QUERIES"], TABLES="nothing_here.*")
    with pytest.raises(Exception, match=r"TABLES: 'nothing_here\.\*' matches no table"):
        destination.sync(configuration)
    configuration = database.configuration(QUERIES=example["QUERIES"], SCHEMAS="pg_catalog_is_not_listed")
    with pytest.raises(Exception, match="SCHEMAS: schema 'pg_catalog_is_not_listed'"):
        destination.sync(configuration)


def test_sample_table_query_syncs(database: Database, schema: str, source, destination) -> None:
    with open("configuration.json.example") as file:
        example = json.load(file)
    # Only the custom query: the test schema is empty, and every other schema is excluded by SCHEMAS.
    with source.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {schema}.placeholder (id int PRIMARY KEY)")
    destination.sync(database.configuration(QUERIES=example["QUERIES"], SCHEMAS=schema))
    rows = destination.query("SELECT pid, query_start FROM tester.sample_table")
    assert rows, "pg_stat_activity shows at least the connector's own session"
    assert all(isinstance(pid, int) for pid, _ in rows)


def test_numeric_values_are_exact(database: Database, schema: str, source, destination) -> None:
    with source.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {schema}.money (id int PRIMARY KEY, exact numeric(38, 10), free numeric)")
        cursor.execute(
            f"INSERT INTO {schema}.money VALUES (1, 1234567890123456789012345678.0123456789, "
            "123456789012345678901234567890.123456789012345678901234567890)"
        )
    destination.sync(database.configuration(SCHEMAS=schema))
    ((exact, free),) = destination.rows(schema, "money", "exact, free")
    assert exact == Decimal("1234567890123456789012345678.0123456789")
    assert free == "123456789012345678901234567890.123456789012345678901234567890"


def test_what_lives_all_sync_is_frozen_while_tables_sync_and_thawed_after(
    database: Database, populated: str, destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector's full passes skip what lives all sync while tables sync; nothing stays frozen after, a sync
    that fails included, since a frozen object is never collected."""
    import connector

    frozen_while_syncing, real = [], connector.sync_table

    def observed(context, plan):
        frozen_while_syncing.append(gc.get_freeze_count())
        if plan.state_key.endswith(".regions"):
            raise RuntimeError("a table failed")
        return real(context, plan)

    monkeypatch.setattr(connector, "sync_table", observed)
    with pytest.raises(Exception, match="a table failed"):
        destination.sync(database.configuration(SCHEMAS=populated))
    assert frozen_while_syncing and min(frozen_while_syncing) > 0
    assert gc.get_freeze_count() == 0
