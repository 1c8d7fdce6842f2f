"""Every key type a primary key can have, on every keyed strategy: the first sync, rows updated, inserted and deleted,
and a difference past the digest's capacity each leave the destination equal to the source, every table synced in
one sync beside the others.

Each table holds rows `(k, v)` keyed by a value of the type under test made from v's starting number; `v` is unique
in the table by construction (Greenplum allows one unique constraint only), so the multiset of live `v` in the
destination says whether every row landed exactly once and every deleted one left.
"""

from __future__ import annotations

import psycopg2.errors
import pytest
from conftest import Database, Destination

# name -> (key columns' definitions, key expressions of g, how many rows; 0: the default)
KEY_TYPES: dict[str, tuple[str, str, int]] = {
    "smallint": ("k smallint", "g::smallint", 0),
    "integer": ("k integer", "g", 0),
    "bigint": ("k bigint", "g * 1000000000000", 0),
    "numeric_scaled": ("k numeric(12,2)", "(g / 4.0)::numeric(12,2)", 0),
    "numeric_whole": ("k numeric(12,0)", "g::numeric(12,0)", 0),
    "numeric_free": ("k numeric", "g::numeric / 7", 0),
    "text": ("k text", "'key ' || g || ' \"é,('", 0),
    "varchar": ("k varchar(40)", "'k' || g", 0),
    "char": ("k char(12)", "'c' || g", 0),
    "long_text": ("k text", "repeat('x', 70) || g", 0),
    "uuid": ("k uuid", "md5(g::text)::uuid", 0),
    "date": ("k date", "date '2000-01-01' + g", 0),
    "timestamp": ("k timestamp", "timestamp '2000-01-01' + g * interval '61.5 seconds'", 0),
    "timestamptz": ("k timestamptz", "timestamptz '2000-01-01 00:00+00' + g * interval '61.5 seconds'", 0),
    "time": ("k time", "time '00:00' + g * interval '1.5 seconds'", 0),
    "interval": ("k interval", "g * interval '1 hour 1 second'", 0),
    "inet": ("k inet", "('10.0.' || g / 256 || '.' || g % 256)::inet", 0),
    "money": ("k money", "(g / 4.0)::numeric::money", 0),
    "bytea": ("k bytea", "decode(md5(g::text), 'hex')", 0),
    "double": ("k double precision", "g * 0.1", 0),
    "real": ("k real", "(g * 0.1)::real", 0),
    "boolean": ("k boolean", "g = 1", 2),
    "text_int": ("k1 text, k2 int", "'a,' || (g % 7), g", 0),
    "date_serial": ("k1 date, k2 int", "date '2024-01-01' + g % 3, g", 0),
    "uuid_int": ("k1 uuid, k2 int", "md5((g % 5)::text)::uuid, g", 0),
    "bytea_int": ("k1 bytea, k2 bigint", "decode(md5((g % 5)::text), 'hex'), g", 0),
}
ROWS = 600


def _create(source, schema: str, incremental: bool) -> list[str]:
    tables = []
    with source.cursor() as cursor:
        cursor.execute("SET TimeZone TO 'UTC'")
        for name, (columns, expressions, rows) in KEY_TYPES.items():
            keys = ", ".join(column.split()[0] for column in columns.split(", "))
            create = (
                f"CREATE TABLE {schema}.{name} ({columns}, v int NOT NULL{_cursor(incremental)}, PRIMARY KEY ({keys}))"
            )
            try:
                cursor.execute(create)
            except psycopg2.errors.UndefinedObject:  # Greenplum: no hash opclass to distribute by the key (money)
                cursor.execute(f"{create} DISTRIBUTED REPLICATED")
            cursor.execute(
                f"""INSERT INTO {schema}.{name} ({keys}, v)
                SELECT {expressions}, g FROM generate_series(1, {rows or ROWS}) g"""
            )
            tables.append(name)
    return tables


def _cursor(incremental: bool) -> str:
    return ", updated_at timestamptz NOT NULL DEFAULT clock_timestamp()" if incremental else ""


def _assert_equal(source, destination: Destination, schema: str, tables: list[str]) -> None:
    for table in tables:
        with source.cursor() as cursor:
            cursor.execute(f"SELECT v FROM {schema}.{table} ORDER BY v")
            expected = [row[0] for row in cursor.fetchall()]
        landed = [row[0] for row in destination.rows(schema, table, "v")]
        assert landed == expected, f"{table}: {len(landed)} live rows, {len(expected)} at the source"


def _change(source, schema: str, tables: list[str], incremental: bool, share: int) -> None:
    """Updates every `share`-th row's v (and cursor), deletes a few rows and inserts new ones (new keys, new v)."""
    touch = ", updated_at = now()" if incremental else ""
    with source.cursor() as cursor:
        for table in tables:
            if table == "boolean":
                cursor.execute(f"UPDATE {schema}.{table} SET v = v + 10{touch} WHERE NOT k")
                continue
            cursor.execute(f"UPDATE {schema}.{table} SET v = v + 100000{touch} WHERE v % {share} = 0")
            cursor.execute(f"DELETE FROM {schema}.{table} WHERE v % {share} = 1")
            _, expressions, _ = KEY_TYPES[table]
            keys = ", ".join(column.split()[0] for column in KEY_TYPES[table][0].split(", "))
            cursor.execute("SELECT coalesce(max(v % 100000), 0) FROM " + f"{schema}.{table}")
            (top,) = cursor.fetchone()
            cursor.execute(
                f"""INSERT INTO {schema}.{table} ({keys}, v)
                SELECT {expressions}, g FROM generate_series({ROWS + 1 + top}, {ROWS + 10 + top}) g"""
            )


@pytest.mark.parametrize("incremental", [False, True], ids=["full_with_key", "incremental"])
def test_every_key_type_syncs_its_changes(
    database: Database, schema: str, source, destination: Destination, incremental: bool
) -> None:
    tables = _create(source, schema, incremental)
    configuration = database.configuration(SCHEMAS=schema)
    counts = destination.sync(configuration)
    _assert_equal(source, destination, schema, tables)
    assert counts["Upserts"] == sum(rows or ROWS for _, _, rows in KEY_TYPES.values())

    _change(source, schema, tables, incremental, share=50)  # a few rows: named by the digests
    destination.sync(configuration)
    _assert_equal(source, destination, schema, tables)

    _change(source, schema, tables, incremental, share=3)  # a third of the rows: past a small digest's capacity
    destination.sync(configuration)
    _assert_equal(source, destination, schema, tables)

    counts = destination.sync(configuration)  # nothing changed
    _assert_equal(source, destination, schema, tables)
    assert counts["Deletes"] == 0 and counts["Truncates"] == 0
