"""Source names that Fivetran's naming makes one (`Orders` and `orders`, `t1` and `t_1`, columns `Foo` and `foo`,
schemas `Sales` and `sales`) land apart, each destination table equal to its own source table, under names that stay
the same from one sync to the next; plain functions first, then syncs through the SDK's runner on a real server."""

from __future__ import annotations

import json

import pytest
from conftest import Database, Destination, _execute
from fivetran_connector_sdk_core.renaming import Renaming

from destination_names import column_name, schema_name, table_name

NAMES = [
    "Orders", "orders", "t1", "t_1", "Foo", "foo", "customer-id", "customer_id", "Order Date", "_t", "__x1", "éclair",
    "naïve Café", "ABCDef", "a%b", "k%", "2fast", "HTTPServer", "x__y", "日本", "_source_row_id", "ÉCOLE1x", "a.b",
]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_names_land_as_the_sdk_s_runner_renames_them(name: str) -> None:
    """The runner of `fivetran debug` follows Fivetran's naming: what the connector predicts is what it does."""
    renaming = Renaming(True)
    assert (table_name(name), column_name(name)) == (renaming.table(name), renaming.column(name))
    assert renaming.schema(name, "tester") == f"tester_{schema_name(name)}"


def _landed(destination: Destination, schema: str, table: str, columns: str) -> list[tuple]:
    return destination.query(f'SELECT {columns} FROM "{schema}"."{table}" WHERE NOT _fivetran_deleted ORDER BY ALL')


def _source(source, statement: str) -> list[tuple]:
    with source.cursor() as cursor:
        cursor.execute(statement)
        return sorted(cursor.fetchall())


def _tables(destination: Destination) -> set[tuple[str, str]]:
    rows = destination.query("SELECT table_schema, table_name FROM information_schema.tables")
    return {(schema, table) for schema, table in rows if schema.startswith("tester")}


def test_tables_and_columns_that_land_alike_land_apart_and_stay_so(
    database: Database, schema: str, source, destination: Destination, capfd
) -> None:
    """The issue's cases in one schema: every table lands whole under a name of its own, the same on the next sync,
    with one warning per name changed; changes and deletes land on their own table and column."""
    s = schema
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {s}."Orders" (id int PRIMARY KEY, v text);
            INSERT INTO {s}."Orders" SELECT g, 'Upper' FROM generate_series(1, 5) g;
            CREATE TABLE {s}.orders (id int PRIMARY KEY, v text);
            INSERT INTO {s}.orders SELECT g, 'lower' FROM generate_series(3, 8) g;
            CREATE TABLE {s}.t1 (id int PRIMARY KEY, "Foo" text, foo text);
            INSERT INTO {s}.t1 VALUES (1, 'upper', 'lower');
            CREATE TABLE {s}.t_1 (id int PRIMARY KEY, w text);
            INSERT INTO {s}.t_1 VALUES (1, 'of t_1'), (2, 'of t_1');
            CREATE TABLE {s}."customer-id" (n int);
            INSERT INTO {s}."customer-id" VALUES (1), (1), (2);
            CREATE TABLE {s}.customer_id (n int);
            INSERT INTO {s}.customer_id VALUES (7);
            CREATE TABLE {s}.keys ("Id" int, id int, "_source_row_id" text, PRIMARY KEY ("Id", id));
            INSERT INTO {s}.keys VALUES (1, 1, 'a'), (1, 2, 'b'), (2, 1, 'c')"""
        )
    configuration = database.configuration(SCHEMAS=s)
    destination.sync(configuration)
    out = capfd.readouterr().out
    d = f"tester_{s}"
    expected = {
        "orders": ("id, v", f"SELECT id, v FROM {s}.orders"),
        "orders_2": ("id, v", f'SELECT id, v FROM {s}."Orders"'),
        "t_1_2": ("id, foo_2, foo", f'SELECT id, "Foo", foo FROM {s}.t1'),
        "t_1": ("id, w", f"SELECT id, w FROM {s}.t_1"),
        "customer_id": ("n", f"SELECT n FROM {s}.customer_id"),
        "customer_id_2": ("n", f'SELECT n FROM {s}."customer-id"'),
        "keys": ("id_2, id, _source_row_id", f'SELECT "Id", id, "_source_row_id" FROM {s}.keys'),
    }

    def check() -> None:
        assert _tables(destination) == {(d, table) for table in expected}
        for table, (columns, statement) in expected.items():
            assert _landed(destination, d, table, columns) == _source(source, statement), table

    check()
    for warning in (
        f"table '{s}.orders' and table '{s}.Orders' land alike under Fivetran's naming ('orders'): table "
        f"'{s}.Orders' lands as 'orders_2'.",
        f"table '{s}.t_1' and table '{s}.t1' land alike under Fivetran's naming ('t_1'): table '{s}.t1' lands as "
        "'t_1_2'.",
        f"{s}.t1: column 'Foo' and 'foo' land alike under Fivetran's naming ('foo'): it lands as 'foo_2'.",
        f"{s}.keys: column 'Id' and 'id' land alike under Fivetran's naming ('id'): it lands as 'id_2'.",
    ):
        assert warning in out, warning
    assert out.count("land alike under Fivetran's naming") == 5, "one warning a name changed"
    assert "would land as the column '_source_row_id' that Fivetran adds" not in out, "a keyed table has none"

    with source.cursor() as cursor:  # each change lands on its own table and column
        cursor.execute(
            f"""UPDATE {s}."Orders" SET v = 'Upper changed' WHERE id = 4; DELETE FROM {s}.orders WHERE id = 8;
            UPDATE {s}.t1 SET "Foo" = 'upper changed'; DELETE FROM {s}.keys WHERE "Id" = 1 AND id = 2;
            UPDATE {s}.keys SET "_source_row_id" = 'changed' WHERE "Id" = 2;
            DELETE FROM {s}."customer-id" WHERE n = 2"""
        )
    destination.sync(configuration)
    check()
    assert destination.query(f'SELECT id_2, id FROM "{d}".keys WHERE _fivetran_deleted') == [(1, 2)]


def test_a_keyless_table_s_column_named_like_its_row_id_lands_beside_it(
    database: Database, schema: str, source, destination: Destination, capfd
) -> None:
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.k ("_source_row_id" text, "_fivetran_deleted" boolean);
            INSERT INTO {schema}.k VALUES ('mine', true), ('mine', true), ('other', false)"""
        )
    configuration = database.configuration(SCHEMAS=schema)
    destination.sync(configuration)
    out = capfd.readouterr().out
    assert "column '_source_row_id' would land as the column '_source_row_id' that Fivetran adds" in out
    assert "column '_fivetran_deleted' would land as the column '_fivetran_deleted' that Fivetran adds" in out
    landed = _landed(destination, f"tester_{schema}", "k", "_source_row_id_2, _fivetran_deleted_2")
    assert landed == [("mine", True), ("mine", True), ("other", False)]
    with source.cursor() as cursor:
        cursor.execute(f"DELETE FROM {schema}.k WHERE \"_source_row_id\" = 'other'")
    counts = destination.sync(configuration)
    assert (counts["Upserts"], counts["Deletes"]) == (0, 1)
    assert _landed(destination, f"tester_{schema}", "k", "_source_row_id_2") == [("mine",), ("mine",)]


def test_schemas_that_land_alike_and_a_query_named_like_a_table_land_apart(
    database: Database, schema: str, source, destination: Destination, capfd
) -> None:
    upper, lower = f"{schema}_Sales", f"{schema}_sales"
    try:
        with source.cursor() as cursor:
            for name, rows in ((upper, 3), (lower, 5)):
                cursor.execute(
                    f"""CREATE SCHEMA "{name}"; CREATE TABLE "{name}".orders (id int PRIMARY KEY, v text);
                    INSERT INTO "{name}".orders SELECT g, '{name}' FROM generate_series(1, {rows}) g"""
                )
            cursor.execute(
                f"""CREATE TABLE {schema}.report (id int PRIMARY KEY, v text);
                INSERT INTO {schema}.report VALUES (1, 'the table')"""
            )
        queries = [
            {
                "table": "Report",
                "query": f"SELECT id, v || ' by query' AS v FROM {schema}.report",
                "primary_key": ["id"],
            },
            {"table": "report", "query": f"SELECT id + 10 AS id, v FROM {schema}.report", "primary_key": ["id"]},
        ]
        configuration = database.configuration(SCHEMAS=f"{schema},{upper},{lower}", QUERIES=json.dumps(queries))
        for _ in range(2):
            destination.sync(configuration)
            out = capfd.readouterr().out
            assert _tables(destination) == {
                (f"tester_{lower}", "orders"),
                (f"tester_{lower}_2", "orders"),
                (f"tester_{schema}", "report"),
                ("tester", "report"),
                ("tester", "report_2"),
            }
            assert _landed(destination, f"tester_{lower}", "orders", "id, v") == [(n, lower) for n in range(1, 6)]
            assert _landed(destination, f"tester_{lower}_2", "orders", "id, v") == [(n, upper) for n in range(1, 4)]
            assert _landed(destination, f"tester_{schema}", "report", "id, v") == [(1, "the table")]
            assert _landed(destination, "tester", "report", "id, v") == [(11, "the table")]
            assert _landed(destination, "tester", "report_2", "id, v") == [(1, "the table by query")]
            assert f"Schemas '{lower}' and '{upper}' land alike under Fivetran's naming" in out
            assert "QUERIES table 'report' and QUERIES table 'Report' land alike" in out
    finally:
        for name in (upper, lower):
            _execute(database, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def test_a_renamed_column_keeps_its_values_through_deletes_and_a_backfill(
    database: Database, schema: str, source, destination: Destination
) -> None:
    """An incremental table whose columns `V` and `v` land alike: its deletes check, a column added beside one that
    lands alike (a backfill), and its updates all land in the right column."""
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.inc (id int PRIMARY KEY, updated_at timestamptz NOT NULL, "V" text, v text);
            INSERT INTO {schema}.inc SELECT g, '2024-01-01', 'V' || g, 'v' || g FROM generate_series(1, 20) g"""
        )
    configuration = database.configuration(SCHEMAS=schema)
    columns = 'id, "V", v'
    destination.sync(configuration)
    assert _landed(destination, f"tester_{schema}", "inc", "id, v_2, v") == _source(
        source, f"SELECT {columns} FROM {schema}.inc"
    )
    with source.cursor() as cursor:
        cursor.execute(
            f"""DELETE FROM {schema}.inc WHERE id = 3; ALTER TABLE {schema}.inc ADD COLUMN "W" text DEFAULT 'w';
            ALTER TABLE {schema}.inc ADD COLUMN w text DEFAULT 'lower w';
            UPDATE {schema}.inc SET "V" = 'new', updated_at = '2024-02-01' WHERE id = 5"""
        )
    destination.sync(configuration)
    columns = 'id, "V", v, "W", w'
    assert _landed(destination, f"tester_{schema}", "inc", "id, v_2, v, w_2, w") == _source(
        source, f"SELECT {columns} FROM {schema}.inc"
    )
    assert destination.query(f'SELECT id FROM "tester_{schema}".inc WHERE _fivetran_deleted') == [(3,)]
