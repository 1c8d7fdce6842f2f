"""What the user wrote reaches the server exactly as written: custom queries with `%`, comments, a trailing semicolon
or a CTE, and names holding `%`, `%s` or `%(x)s`, on every strategy. And one table's error is that table's alone."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from conftest import Database, Destination

import sync

NAMES = ["a%b", "k%", "v%s", "p%(x)s"]


def _rows(source, statement: str) -> list[tuple]:
    with source.cursor() as cursor:
        cursor.execute(statement)
        return sorted(cursor.fetchall())


def _text(value: object) -> str:
    """A value as text that reads the same from either side (instants in UTC)."""
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else str(value)


@pytest.fixture
def base(schema: str, source) -> str:
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.t (id int PRIMARY KEY, v int NOT NULL, name text NOT NULL,
                                         updated_at timestamptz NOT NULL DEFAULT '2024-01-01');
            INSERT INTO {schema}.t SELECT g, g, 'n' || g || CASE WHEN g % 3 = 0 THEN '%s' ELSE '%(x)s' END
            FROM generate_series(1, 30) g"""
        )
    return schema


def test_custom_queries_run_as_written(database: Database, base: str, source, destination: Destination) -> None:
    schema = base
    queries = {
        "q_like": (f"SELECT id, name, updated_at FROM {schema}.t WHERE name LIKE 'n1%'", ["id"], "updated_at"),
        "q_modulo": (f"SELECT id, v FROM {schema}.t WHERE v % 2 = 0", ["id"], None),
        "q_keyless": (f"SELECT v % 7 AS r, name FROM {schema}.t WHERE name LIKE '%s'", [], None),
        "q_placeholders": (f"SELECT id, '%s' AS s, '%(x)s' AS x, '%%' AS pp FROM {schema}.t", ["id"], None),
        "q_comment": (f"SELECT id, v FROM {schema}.t -- every row, a comment to the end", ["id"], None),
        "q_block": (f"/* leading */ SELECT id, v FROM {schema}.t /* trailing */", ["id"], None),
        "q_semicolon": (f"SELECT id, v FROM {schema}.t WHERE v > 20;  \n", ["id"], None),
        "q_cte": (f"WITH big AS (SELECT * FROM {schema}.t WHERE v > 25) SELECT id, v FROM big", ["id"], None),
    }
    configuration = database.configuration(
        SCHEMAS=schema,
        QUERIES=json.dumps(
            [
                {"table": table, "query": query, "primary_key": key, **({"cursor": cursor} if cursor else {})}
                for table, (query, key, cursor) in queries.items()
            ]
        ),
    )
    for _ in range(2):  # the first sync, then a sync with a saved state
        destination.sync(configuration)
        for table, (query, _, _) in queries.items():
            with source.cursor() as cursor:
                cursor.execute(f"SELECT * FROM ({query.rstrip().rstrip(';')}\n) AS q")
                columns = ", ".join(f'"{column.name}"' for column in cursor.description)
                expected = sorted(tuple(map(_text, row)) for row in cursor.fetchall())
            landed = destination.query(f"SELECT {columns} FROM tester.{table} WHERE NOT _fivetran_deleted")
            assert sorted(tuple(map(_text, row)) for row in landed) == expected, table
    assert [row[0] for row in destination.query("SELECT pp FROM tester.q_placeholders LIMIT 1")] == ["%%"]


@pytest.mark.parametrize("strategy", ["keyed", "keyless", "incremental", "append_only"])
def test_names_holding_percent_signs(
    database: Database, schema: str, source, destination: Destination, strategy: str
) -> None:
    table, column = NAMES[0], NAMES[2]
    key = " PRIMARY KEY" if strategy in ("keyed", "incremental") else ""
    cursor_column = (
        ', "%(x)s_at" timestamptz NOT NULL DEFAULT now()' if strategy in ("incremental", "append_only") else ""
    )
    columns = f'"{NAMES[1]}" int{key}, "{column}" text, "{NAMES[3]}" int{cursor_column}'
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}."{table}" ({columns});
            INSERT INTO {schema}."{table}" SELECT g, '%' || g, g % 3 FROM generate_series(1, 40) g"""
        )
    extra = {"CURSOR_COLUMNS": f"{schema}.{table}:%(x)s_at"} if strategy != "keyed" and cursor_column else {}
    configuration = database.configuration(SCHEMAS=schema, **extra)
    destination.sync(configuration)
    touch = ", \"%(x)s_at\" = now() + interval '1 minute'" if cursor_column else ""
    with source.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {schema}."{table}" SET "{column}" = 'changed %s'{touch} WHERE "{NAMES[1]}" <= 5;
            DELETE FROM {schema}."{table}" WHERE "{NAMES[1]}" > 35"""
            if strategy != "append_only"
            else f"""INSERT INTO {schema}."{table}" SELECT g, '%' || g, g % 3 FROM generate_series(41, 45) g"""
        )
    destination.sync(configuration)
    landed_table = destination.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", [f"tester_{schema}"]
    )
    (name,) = [row[0] for row in landed_table]
    columns = [row[0] for row in destination.query(f'DESCRIBE "tester_{schema}"."{name}"')]
    (first,) = [column for column in columns if column.startswith("k")]
    (value,) = [column for column in columns if column.startswith("v")]
    landed = destination.query(
        f'SELECT "{first}", "{value}" FROM "tester_{schema}"."{name}" WHERE NOT _fivetran_deleted'
    )
    expected = _rows(source, f'SELECT "{NAMES[1]}", "{column}" FROM {schema}."{table}"')
    assert sorted(landed) == expected


def test_one_tables_error_skips_that_table_alone(
    database: Database, base: str, source, destination: Destination, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    schema = base
    with source.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {schema}.u (id int PRIMARY KEY, w int)")
        cursor.execute(f"INSERT INTO {schema}.u SELECT g, g FROM generate_series(1, 30) g")
    # A custom query that the server accepts and then fails on a row, and a fault of the connector's own while
    # table u is read (after its first rows were saved), beside table t, which syncs.
    failing = {"table": "divides", "query": f"SELECT id, 100 / (20 - id) AS x FROM {schema}.t", "primary_key": ["id"]}
    configuration = database.configuration(
        SCHEMAS=schema, QUERIES=json.dumps([failing]), BATCH_SIZE="5", CHECKPOINT_ROWS="5"
    )
    real_send, batches = sync.TableSync._send, []

    def send(table, batch, prepare):
        if table.plan.destination_table == "u":
            batches.append(len(batch))
            if len(batches) == 3:
                raise IndexError("tuple index out of range")
        real_send(table, batch, prepare)

    monkeypatch.setattr(sync.TableSync, "_send", send)
    destination.sync(configuration)
    out = capfd.readouterr().out
    assert "Skipped query:divides: division by zero" in out
    assert f"Skipped {schema}.u: IndexError: tuple index out of range" in out
    assert f"2 table(s) skipped: {schema}.u, query:divides" in out
    assert destination.rows(schema, "t", "id, v") == _rows(source, f"SELECT id, v FROM {schema}.t")
    assert destination.state["tables"][f"{schema}.u"]["position"] == ["10"], "where its read stood is kept"

    monkeypatch.setattr(sync.TableSync, "_send", real_send)
    with source.cursor() as cursor:
        cursor.execute(f"DELETE FROM {schema}.t WHERE id = 20")
    destination.sync(configuration)
    resumed = re.search(rf"{schema}\.u: full with key sync \(.*?\); (.*?)\"", capfd.readouterr().out)
    assert resumed is not None and resumed.group(1) == "resuming after ['10']"
    assert destination.rows(schema, "u", "id, w") == _rows(source, f"SELECT id, w FROM {schema}.u")
    landed = destination.query("SELECT id, x FROM tester.divides WHERE NOT _fivetran_deleted ORDER BY id")
    assert landed == _rows(source, f"SELECT id, 100 / (20 - id) FROM {schema}.t")


def test_a_custom_query_the_server_rejects_fails_a_first_sync_naming_it(
    database: Database, base: str, destination: Destination
) -> None:
    bad = {"table": "broken", "query": f"SELECT id, nope FROM {base}.t", "primary_key": ["id"]}
    configuration = database.configuration(SCHEMAS=base, QUERIES=json.dumps([bad]))
    with pytest.raises(Exception, match="QUERIES table 'broken': the server rejects the query: column \"nope\""):
        destination.sync(configuration)
