"""Columns added, renamed, dropped and retyped at the source between syncs, on every strategy: after the next sync the
destination's live rows equal the source's over its current columns, at the cost of at most one operation per live
row, and a change to the key syncs the table again as new."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import Database, Destination, killed_after_checkpoint

import schema_changes
from planning import PlannedColumn, Strategy, TablePlan
from type_mapping import FivetranType

ROWS = 300
# Each strategy's table, its rows (a tenth of them twice, where rows have no key) and the settings that give it.
STRATEGIES = {
    "incremental": (
        "CREATE TABLE {s}.t (id int PRIMARY KEY, name text, amount numeric(10,2), updated_at timestamp NOT NULL)",
        "SELECT i, CASE WHEN i % 7 = 0 THEN '' ELSE 'n' || i END, i / 4.0, timestamp '2024-01-01' + i * interval '1 h'",
        {},
    ),
    "append only": (
        "CREATE TABLE {s}.t (id int, name text, amount numeric(10,2), updated_at timestamp NOT NULL)",
        "SELECT i, 'n' || i, i / 4.0, timestamp '2024-01-01' + i * interval '1 h'",
        {"CURSOR_COLUMNS": "{s}.t:updated_at"},
    ),
    "full with key": (
        "CREATE TABLE {s}.t (id int PRIMARY KEY, name text, amount numeric(10,2))",
        "SELECT i, CASE WHEN i % 7 = 0 THEN '' ELSE 'n' || i END, i / 4.0",
        {},
    ),
    "full without key": (
        "CREATE TABLE {s}.t (id int, name text, amount numeric(10,2))",
        "SELECT i % 270, 'n' || (i % 270), (i % 270) / 4.0",  # 30 rows twice
        {},
    ),
    "custom query with key": (
        "CREATE TABLE {s}.t (id int PRIMARY KEY, name text, amount numeric(10,2), updated_at timestamp NOT NULL)",
        "SELECT i, 'n' || i, i / 4.0, timestamp '2024-01-01' + i * interval '1 h'",
        {"QUERIES": [{"table": "q", "query": "SELECT * FROM {s}.t", "primary_key": ["id"], "cursor": "updated_at"}]},
    ),
    "custom query without key": (
        "CREATE TABLE {s}.t (id int, name text, amount numeric(10,2))",
        "SELECT i % 270, 'n' || (i % 270), (i % 270) / 4.0",
        {"QUERIES": [{"table": "q", "query": "SELECT * FROM {s}.t"}]},
    ),
}
CHANGES = {
    "add with default": "ALTER TABLE {s}.t ADD COLUMN region text DEFAULT 'eu'",
    "add then update": "ALTER TABLE {s}.t ADD COLUMN score int; UPDATE {s}.t SET score = 5 WHERE id % 10 = 0",
    "rename": "ALTER TABLE {s}.t RENAME COLUMN name TO label",
    "drop": "ALTER TABLE {s}.t DROP COLUMN name",
    "retype": "ALTER TABLE {s}.t ALTER COLUMN amount TYPE numeric(12,3)",  # a new scale: 1.50 lands as 1.500
    "key renamed": "ALTER TABLE {s}.t RENAME COLUMN id TO ident",
}


def _source_rows(source, schema: str) -> tuple[list[str], Counter]:
    with source.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {schema}.t LIMIT 0")
        columns = [column.name for column in cursor.description]
        texts = ", ".join(f'"{name}"::text' for name in columns)
        cursor.execute(f"SELECT {texts} FROM {schema}.t")
        return columns, Counter(cursor.fetchall())


def _destination_rows(destination: Destination, table: str, columns: list[str]) -> Counter:
    texts = ", ".join(f'CAST("{name}" AS VARCHAR)' for name in columns)  # timestamps as PostgreSQL writes them
    return Counter(destination.query(f"SELECT {texts} FROM {table} WHERE NOT _fivetran_deleted"))


def _configuration(database: Database, schema: str, case: str) -> dict[str, str]:
    keys = {}
    for key, value in STRATEGIES[case][2].items():
        keys[key] = json.dumps(value).replace("{s}", schema) if key == "QUERIES" else value.format(s=schema)
    if "QUERIES" in keys:
        keys["EXCLUDE_TABLES"] = "*.*"
    return database.configuration(SCHEMAS=schema, **keys)


def _first_sync(database: Database, schema: str, source, destination: Destination, case: str, rows: int, **keys: str):
    """Creates the strategy's table with `rows` rows and syncs it once; returns the configuration."""
    create, select, _ = STRATEGIES[case]
    with source.cursor() as cursor:
        cursor.execute(create.format(s=schema))
        cursor.execute(f"INSERT INTO {schema}.t {select} FROM generate_series(1, {rows}) AS i")
    configuration = _configuration(database, schema, case) | keys
    destination.sync(configuration)
    return configuration


@pytest.mark.parametrize("change", list(CHANGES))
@pytest.mark.parametrize("case", list(STRATEGIES))
def test_schema_change_lands_as_the_source_has_it(
    case: str, change: str, database: Database, schema: str, source, destination: Destination, capfd
) -> None:
    configuration = _first_sync(database, schema, source, destination, case, ROWS)
    table = '"tester"."q"' if "custom query" in case else f'"tester_{schema}"."t"'
    with source.cursor() as cursor:
        cursor.execute(CHANGES[change].format(s=schema))
    capfd.readouterr()
    keyed = case in ("incremental", "full with key", "custom query with key")
    if change == "key renamed" and case == "custom query with key":
        destination.sync(configuration)  # its primary_key names a column the query no longer has: a warning
        assert "primary_key column 'id' is not among the query's columns" in capfd.readouterr().out
        return
    if change == "key renamed" and keyed:
        # The destination's rows have no value under the new key: Fivetran's core refuses the key change (and so does
        # the SDK's runner) until the table is re-synced, which drops it. The warning names the change.
        with pytest.raises(Exception, match="Primary key change"):
            destination.sync(configuration)
        assert "the key was id and is now ident; the table is synced again as new" in capfd.readouterr().out
        previous = destination.state
        destination = Destination(destination.project.parent / "resynced")  # the table re-synced: dropped first
        counts = destination.sync(configuration, state=previous)
    else:
        counts = destination.sync(configuration)

    out = capfd.readouterr().out
    columns, expected = _source_rows(source, schema)
    assert _destination_rows(destination, table, columns) == expected
    sent = counts["Upserts"] + counts["Updates"]
    if (change == "key renamed" and keyed) or case == "append only":
        assert counts["Truncates"] == 1 and sent == ROWS, "synced again as new"
        assert "the table is synced again as new" in out
    elif case == "full with key" and change in ("drop", "retype"):
        # Its difference digest hashed the column: deletes can no longer be named, so the table is read again.
        assert counts["Truncates"] == 1 and sent == ROWS
        assert "a column its digest hashed is gone or holds other values" in out
    elif not keyed:
        # A keyless row is known by its content, which a column added, renamed, dropped or retyped changes: every
        # row has a new id, so the table is read again after a truncate (cheaper than a delete per old id).
        assert counts["Truncates"] == 1 and sent == ROWS
        assert "its columns changed, and with them every row's content" in out
    else:
        assert counts["Truncates"] == 0 and counts["Deletes"] == 0
        assert sent <= ROWS, "at most one operation per live row"
    if case != "custom query without key" or change != "key renamed":
        assert "columns changed since the last sync" in out


@pytest.mark.parametrize("case", ["incremental", "full with key"])
def test_a_rename_in_a_keyed_table_costs_at_most_one_operation_per_row(
    case: str, database: Database, schema: str, source, destination: Destination
) -> None:
    configuration = _first_sync(database, schema, source, destination, case, 3000)
    with source.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {schema}.t RENAME COLUMN name TO label")
    counts = destination.sync(configuration)

    assert counts["Truncates"] == 0
    assert counts["Upserts"] + counts["Updates"] <= 3000 + 1  # the row at the saved cursor is read again
    columns, expected = _source_rows(source, schema)
    assert _destination_rows(destination, f'"tester_{schema}"."t"', columns) == expected
    nothing = destination.sync(configuration)
    assert nothing["Upserts"] + nothing["Updates"] <= 1, "the backfill is done once"


@pytest.mark.parametrize("case", ["incremental", "full with key", "full without key"])
def test_a_sync_killed_during_a_backfill_goes_on_and_converges(
    case: str, database: Database, schema: str, source, destination: Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    configuration = _first_sync(
        database, schema, source, destination, case, 5000, BATCH_SIZE="500", CHECKPOINT_ROWS="1000"
    )
    with source.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {schema}.t ADD COLUMN region text DEFAULT 'eu'")
        cursor.execute(f"ALTER TABLE {schema}.t RENAME COLUMN name TO label")
    # The second checkpoint: the first saves the state from before the sync, with a journal of what it holds.
    saved = killed_after_checkpoint(monkeypatch, destination, configuration, f"{schema}.t", lambda _, n: n == 2)
    counts = destination.sync(configuration, state=saved)

    assert counts["Truncates"] == 0
    # The second sync goes on from the checkpoint: a full pass reads again the block range it was in (one block of
    # fewer than 250 of these rows), an incremental backfill only the row at the saved cursor.
    assert counts["Upserts"] + counts["Updates"] <= 5000 - 1000 + (1 if case == "incremental" else 250)
    columns, expected = _source_rows(source, schema)
    assert _destination_rows(destination, f'"tester_{schema}"."t"', columns) == expected


def _plan(*columns: tuple[str, str, str], key: tuple[str, ...] = ("id",)) -> TablePlan:
    planned = tuple(PlannedColumn(name, FivetranType(landed), source) for name, source, landed in columns)
    return TablePlan(
        "s.t", "s", "t", None, planned, key, None, Strategy.FULL_WITH_KEY, None, False, 0, "", "1", False, False
    )


def test_what_changed_is_named() -> None:
    saved = [["id", "int4 INT"], ["name", "text STRING"], ["gone", "int4 INT"], ["n", "int4 INT"]]
    plan = _plan(("id", "int8", "LONG"), ("label", "text", "STRING"), ("n", "text", "STRING"), ("new", "date", "X"))
    changes = schema_changes.compare(saved, ["id"], plan)
    assert changes.renamed == (("name", "label"),)
    assert changes.dropped == ("gone",) and changes.added == ("new",)
    assert changes.retyped == (("id", "int4 INT", "int8 LONG"), ("n", "int4 INT", "text STRING"))
    assert changes.key_change == ""  # widened: its values are the same
    assert changes.backfill == ("new", "label", "n")
    assert "renamed name to label" in changes.describe()
    assert schema_changes.compare(saved[:2], ["name"], _plan(("id", "int4", "INT"), ("name", "text", "STRING")))
    assert not schema_changes.compare(saved[:2], ["id"], _plan(("id", "int4", "INT"), ("name", "text", "STRING")))


def test_a_row_changed_after_a_killed_backfill_sent_it_is_sent_again(
    database: Database, schema: str, source, destination: Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keyed table's read of every row for a renamed column, killed partway: rows it had sent changed before the
    next sync, which finds the rows read no longer those it read (its checkpoints carry what their pairs came to, not
    its digest) and reads every row again: they land as changed, and the sync after it sends nothing."""
    configuration = _first_sync(
        database, schema, source, destination, "full with key", 5000, BATCH_SIZE="500", CHECKPOINT_ROWS="1000"
    )
    with source.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {schema}.t RENAME COLUMN name TO label")
    saved = killed_after_checkpoint(monkeypatch, destination, configuration, f"{schema}.t", lambda _, n: n == 2)
    assert saved["tables"][f"{schema}.t"]["position"] is not None
    with source.cursor() as cursor:
        cursor.execute(f"UPDATE {schema}.t SET label = 'changed after it was sent' WHERE id IN (1, 2, 3)")
    resumed = destination.sync(configuration, state=saved)
    assert (resumed["Upserts"], resumed["Truncates"]) == (5000, 0), "every row again, no truncate"
    assert destination.sync(configuration)["Upserts"] == 0
    columns, expected = _source_rows(source, schema)
    assert _destination_rows(destination, f'"tester_{schema}"."t"', columns) == expected
