"""Which tables and columns are synced: SCHEMAS, TABLES and EXCLUDE_TABLES globs, EXCLUDE_COLUMNS, views."""

from __future__ import annotations

import json

import pytest
from conftest import Database, Destination


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
        (
            {"PRIMARY_KEYS": "{s}.order_view:id+nope", "TABLES": "{s}.order_view"},
            "PRIMARY_KEYS: '{s}.order_view' has no column(s) nope",
        ),
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


def test_a_table_dropped_at_the_source_warns_and_every_other_table_still_syncs(
    database: Database, two_schemas, source, destination, capfd
) -> None:
    """Strict on the first sync (a typo), lenient later: one dropped table is not an outage of the connection."""
    schema, _ = two_schemas
    named = {
        "TABLES": f"{schema}.orders,{schema}.customers,{schema}.tmp_load",
        "CURSOR_COLUMNS": f"{schema}.tmp_load:id",
        "EXCLUDE_COLUMNS": f"{schema}.tmp_load.secret",
    }
    configuration = database.configuration(SCHEMAS=schema, **named)
    destination.sync(configuration)
    assert _synced_tables(destination, schema) == {f"{schema}.orders", f"{schema}.customers", f"{schema}.tmp_load"}
    with source.cursor() as cursor:
        cursor.execute(f"DROP TABLE {schema}.tmp_load; INSERT INTO {schema}.orders VALUES (2, 'x', 'new')")
    capfd.readouterr()

    destination.sync(configuration)

    out = capfd.readouterr().out
    for warning in (
        f"TABLES: '{schema}.tmp_load' matches no table the user can see.",
        f"CURSOR_COLUMNS: table '{schema}.tmp_load' does not exist or is not readable.",
        f"EXCLUDE_COLUMNS: '{schema}.tmp_load.secret' matches no column.",
    ):
        assert warning in out
    assert "3 setting(s) match nothing or no longer apply (CURSOR_COLUMNS, EXCLUDE_COLUMNS, TABLES" in out
    assert destination.rows(schema, "orders", "id") == [(1,), (2,)]
    assert f"{schema}.tmp_load" in destination.state["tables"], "its position is kept for when it comes back"

    with pytest.raises(Exception, match=f"TABLES: '{schema}.tmp_load' matches no table the user can see"):
        Destination(destination.project).sync(configuration)  # a first sync (no state): strict


def test_a_setting_that_no_longer_applies_leaves_out_its_table_only(
    database: Database, two_schemas, source, destination, capfd
) -> None:
    schema, _ = two_schemas
    with source.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {schema}.facts (day date, n int); INSERT INTO {schema}.facts VALUES (now(), 1)")
    configuration = database.configuration(SCHEMAS=schema, CURSOR_COLUMNS=f"{schema}.facts:day")
    destination.sync(configuration)
    with source.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {schema}.facts RENAME COLUMN day TO happened_on")
        cursor.execute(f"INSERT INTO {schema}.orders VALUES (2, 'x', 'new')")
    destination.sync(configuration)
    out = capfd.readouterr().out
    assert (
        f"CURSOR_COLUMNS: '{schema}.facts' has no column 'day'. {schema}.facts is not synced until that is fixed" in out
    )
    assert destination.rows(schema, "orders", "id") == [(1,), (2,)]


def test_an_existing_schema_with_no_table_is_a_warning(database: Database, schema: str, destination, capfd) -> None:
    counts = destination.sync(database.configuration(SCHEMAS=schema))
    assert f"SCHEMAS: schema '{schema}' has no table yet." in capfd.readouterr().out
    assert counts["Upserts"] == 0
    with pytest.raises(Exception, match="SCHEMAS: schema 'no_such_schema' does not exist, or the user may not use it"):
        Destination(destination.project).sync(database.configuration(SCHEMAS="no_such_schema"))


@pytest.mark.parametrize("with_schemas", [False, True])
def test_a_configuration_of_custom_queries_only(
    database: Database, two_schemas, destination: Destination, with_schemas: bool
) -> None:
    """As Fivetran's original example: its one table comes from a query; EXCLUDE_TABLES *.* leaves out every table."""
    schema, other = two_schemas
    query = json.dumps([{"table": "sessions", "query": "SELECT 1 AS id, 'one' AS label", "primary_key": ["id"]}])
    keys = {"EXCLUDE_TABLES": "*.*", "QUERIES": query} | ({"SCHEMAS": f"{schema},{other}"} if with_schemas else {})
    counts = destination.sync(database.configuration(**keys))
    assert counts["Upserts"] == 1
    tables = destination.query(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema <> 'main'"
    )
    assert tables == [("tester", "sessions")]
