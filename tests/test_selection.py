"""Which tables and columns are synced: SCHEMAS, TABLES and EXCLUDE_TABLES globs, EXCLUDE_COLUMNS, views."""

from __future__ import annotations

import pytest
from conftest import Database


@pytest.fixture
def two_schemas(database: Database, schema: str, source):
    other = f"{schema}_other"
    with source.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA {other}")
        for name in ("order_lines", "orders", "tmp_load", "customers"):
            cursor.execute(f"CREATE TABLE {schema}.{name} (id int PRIMARY KEY, secret text, note text)")
            cursor.execute(f"INSERT INTO {schema}.{name} VALUES (1, 'hidden', 'kept')")
        cursor.execute(f"CREATE TABLE {other}.orders (id int PRIMARY KEY)")
        cursor.execute(f"CREATE VIEW {schema}.order_view AS SELECT id, note FROM {schema}.orders")
    yield schema, other
    with source.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA {other} CASCADE")


def _synced_tables(destination, *schemas: str) -> set[str]:
    names = {f"tester_{s}": s for s in schemas}
    rows = destination.query(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema LIKE 'tester_%'"
    )
    return {f"{names[s]}.{t}" for s, t in rows if s in names}


def test_schemas_limit_discovery(database: Database, two_schemas, destination) -> None:
    schema, other = two_schemas
    destination.sync(database.configuration(SCHEMAS=other))
    assert _synced_tables(destination, schema, other) == {f"{other}.orders"}


def test_table_globs_and_exclusions(database: Database, two_schemas, destination) -> None:
    schema, other = two_schemas
    configuration = database.configuration(
        SCHEMAS=f"{schema},{other}", TABLES=f"{schema}.order*,{schema}.tmp_*", EXCLUDE_TABLES=f"{schema}.tmp_*"
    )
    destination.sync(configuration)
    # Views are only synced when named exactly: the glob order* does not bring order_view.
    assert _synced_tables(destination, schema, other) == {f"{schema}.orders", f"{schema}.order_lines"}


def test_views_named_exactly_are_synced(database: Database, two_schemas, destination) -> None:
    schema, _ = two_schemas
    destination.sync(database.configuration(SCHEMAS=schema, TABLES=f"{schema}.order_view"))
    assert destination.rows(schema, "order_view", "id, note") == [(1, "kept")]


def test_excluded_columns_are_never_sent(database: Database, two_schemas, destination) -> None:
    schema, _ = two_schemas
    destination.sync(database.configuration(SCHEMAS=schema, EXCLUDE_COLUMNS=f"{schema}.*.secret"))
    for table in ("orders", "customers"):
        columns = destination.column_types(schema, table)
        assert "secret" not in columns and "note" in columns


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"TABLES": "{s}.nope_*"}, "TABLES: '{s}.nope_*' matches no table"),
        ({"EXCLUDE_TABLES": "{s}.nope"}, "EXCLUDE_TABLES: '{s}.nope' matches no table"),
        ({"EXCLUDE_COLUMNS": "{s}.orders.nope"}, "EXCLUDE_COLUMNS: '{s}.orders.nope' matches no column"),
        ({"EXCLUDE_COLUMNS": "{s}.orders.id"}, "EXCLUDE_COLUMNS: key column(s) id of {s}.orders cannot be excluded"),
        ({"CURSOR_COLUMNS": "{s}.orders:nope"}, "CURSOR_COLUMNS: '{s}.orders' has no column 'nope'"),
        ({"CURSOR_COLUMNS": "{s}.orders:note"}, "CURSOR_COLUMNS: {s}.orders.note must be a readable timestamp"),
        ({"PRIMARY_KEYS": "{s}.nope:id"}, "PRIMARY_KEYS: table '{s}.nope' does not exist"),
        ({"PRIMARY_KEYS": "{s}.orders:note"}, "PRIMARY_KEYS: '{s}.orders' already has a key (primary key on id)"),
        ({"PRIMARY_KEYS": "{s}.order_view:id+nope"}, "PRIMARY_KEYS: '{s}.order_view' has no column(s) nope"),
        ({"PRIMARY_KEYS": "{s}.order_view:id"}, "PRIMARY_KEYS: '{s}.order_view' is not synced"),
        (
            {"CURSOR_COLUMNS": "{s}.orders:id", "EXCLUDE_TABLES": "{s}.orders"},
            "CURSOR_COLUMNS: '{s}.orders' is not synced",
        ),
    ],
)
def test_names_that_match_nothing_are_refused(database: Database, two_schemas, destination, keys, message) -> None:
    schema, _ = two_schemas
    keys = {key: value.format(s=schema) for key, value in keys.items()}
    with pytest.raises(Exception) as raised:
        destination.sync(database.configuration(SCHEMAS=schema, **keys))
    assert message.format(s=schema) in str(raised.value)
    assert database.password not in str(raised.value)
