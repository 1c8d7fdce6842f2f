"""Discovery across flavours: partitions read through their root only, inheritance, views, foreign tables.

The Greenplum-only catalog SQL cannot run on PostgreSQL: it is parsed here with PostgreSQL's own parser (pglast),
and run for real when GREENPLUM_TEST_DSN points at a Greenplum cluster.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pglast
import psycopg2
import pytest
from conftest import Database, Destination

import catalog_sql
import connector
from catalog import Flavour, detect_flavour, discover, server_info
from configuration import parse_settings
from greenplum_client import GreenplumClient

PARTITIONED = """
CREATE TABLE {s}.sales (id bigint, region text NOT NULL, sold_on date NOT NULL, amount numeric(10, 2),
                        PRIMARY KEY (id, sold_on, region))
    PARTITION BY RANGE (sold_on);
CREATE TABLE {s}.sales_2024h1 PARTITION OF {s}.sales FOR VALUES FROM ('2024-01-01') TO ('2024-07-01')
    PARTITION BY LIST (region);
CREATE TABLE {s}.sales_2024h1_eu PARTITION OF {s}.sales_2024h1 FOR VALUES IN ('eu');
CREATE TABLE {s}.sales_2024h1_other PARTITION OF {s}.sales_2024h1 DEFAULT;
CREATE TABLE {s}.sales_2024h2 PARTITION OF {s}.sales FOR VALUES FROM ('2024-07-01') TO ('2025-01-01');
CREATE TABLE {s}.sales_rest PARTITION OF {s}.sales DEFAULT;
INSERT INTO {s}.sales
SELECT i, (ARRAY['eu', 'us', 'ap'])[1 + i % 3], date '2023-12-01' + (i % 500), i * 0.5 FROM generate_series(1, 3000) i;

CREATE TABLE {s}.clicks (page text, clicked_on date NOT NULL) PARTITION BY LIST (page);
CREATE TABLE {s}.clicks_home PARTITION OF {s}.clicks FOR VALUES IN ('/');
CREATE TABLE {s}.clicks_other PARTITION OF {s}.clicks DEFAULT;
INSERT INTO {s}.clicks SELECT CASE WHEN i % 4 = 0 THEN '/' ELSE '/p' || i % 3 END, date '2024-01-01' + i % 9
FROM generate_series(1, 2000) i;

CREATE TABLE {s}.animals (id int PRIMARY KEY, name text);
CREATE TABLE {s}.dogs (breed text) INHERITS ({s}.animals);
INSERT INTO {s}.animals VALUES (1, 'generic');
INSERT INTO {s}.dogs VALUES (2, 'rex', 'collie'), (3, 'fido', 'pug');

CREATE VIEW {s}.eu_sales AS SELECT id, amount FROM {s}.sales WHERE region = 'eu';
CREATE MATERIALIZED VIEW {s}.daily AS SELECT sold_on, sum(amount) AS total FROM {s}.sales GROUP BY sold_on;
"""


# The same shapes in Greenplum 5/6's own partition syntax (no declarative partitioning on PostgreSQL 9.4).
LEGACY_GREENPLUM_PARTITIONS = """
CREATE TABLE {s}.sales (id bigint, region text NOT NULL, sold_on date NOT NULL, amount numeric(10, 2),
                        PRIMARY KEY (id, sold_on, region))
    DISTRIBUTED BY (id)
    PARTITION BY RANGE (sold_on) SUBPARTITION BY LIST (region)
    SUBPARTITION TEMPLATE (SUBPARTITION eu VALUES ('eu'), DEFAULT SUBPARTITION other)
    (START (date '2024-01-01') END (date '2025-01-01') EVERY (interval '6 months'), DEFAULT PARTITION rest);
INSERT INTO {s}.sales
SELECT i, (ARRAY['eu', 'us', 'ap'])[1 + i % 3], date '2023-12-01' + (i % 500), i * 0.5 FROM generate_series(1, 3000) i;

CREATE TABLE {s}.clicks (page text, clicked_on date NOT NULL) DISTRIBUTED RANDOMLY
    PARTITION BY LIST (page) (PARTITION home VALUES ('/'), DEFAULT PARTITION other);
INSERT INTO {s}.clicks SELECT CASE WHEN i % 4 = 0 THEN '/' ELSE '/p' || i % 3 END, date '2024-01-01' + i % 9
FROM generate_series(1, 2000) i;
"""


def uses_legacy_partitions(database: Database) -> bool:
    return detect_flavour(database.version) in (Flavour.GREENPLUM5, Flavour.GREENPLUM6)


@pytest.fixture
def relations(database: Database, schema: str, source) -> str:
    ddl = PARTITIONED
    if uses_legacy_partitions(database):
        ddl = LEGACY_GREENPLUM_PARTITIONS + PARTITIONED[PARTITIONED.index("CREATE TABLE {s}.animals") :]
    with source.cursor() as cursor:
        cursor.execute(ddl.format(s=schema))
    return schema


def _count(source, statement: str) -> int:
    with source.cursor() as cursor:
        cursor.execute(statement)
        return cursor.fetchone()[0]


def _landed_tables(destination, schema: str) -> set[str]:
    rows = destination.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", [f"tester_{schema}"]
    )
    return {name for (name,) in rows}


def test_partitions_are_read_through_their_root_only(database: Database, relations: str, source, destination) -> None:
    schema = relations
    destination.sync(database.configuration(SCHEMAS=schema))

    assert _landed_tables(destination, schema) == {"sales", "clicks", "animals", "dogs"}
    # Every row exactly once: the keyed root by key, the keyless root by its rows' values.
    sales = destination.rows(schema, "sales", "id, region, sold_on, amount")
    with source.cursor() as cursor:
        cursor.execute(f"SELECT id, region, sold_on, amount FROM {schema}.sales")
        assert sales == sorted(cursor.fetchall())
        cursor.execute(f"SELECT page, clicked_on FROM {schema}.clicks")
        assert destination.rows(schema, "clicks", "page, clicked_on") == sorted(cursor.fetchall())
    # An INHERITS parent holds only its own rows (FROM ONLY); the child lands on its own.
    assert destination.rows(schema, "animals", "id, name") == [(1, "generic")]
    assert destination.rows(schema, "dogs", "id, name, breed") == [(2, "rex", "collie"), (3, "fido", "pug")]


def test_views_and_materialized_views_only_when_named(database: Database, relations: str, source, destination) -> None:
    schema = relations
    destination.sync(database.configuration(SCHEMAS=schema, TABLES=f"{schema}.eu_sales,{schema}.daily"))
    assert _landed_tables(destination, schema) == {"eu_sales", "daily"}
    assert len(destination.rows(schema, "eu_sales", "id")) == _count(
        source, f"SELECT count(*) FROM {schema}.sales WHERE region = 'eu'"
    )
    assert len(destination.rows(schema, "daily", "sold_on")) == _count(source, f"SELECT count(*) FROM {schema}.daily")


def test_foreign_and_external_tables_are_skipped_with_a_log_line(
    database: Database, schema: str, source, destination, capfd: pytest.CaptureFixture
) -> None:
    with source.cursor() as cursor:
        if detect_flavour(database.version).is_greenplum:
            cursor.execute(f"CREATE EXTERNAL WEB TABLE {schema}.outside (line text) EXECUTE 'echo x' FORMAT 'TEXT'")
            expected = f"Skipping {schema}.outside: external table: reads from outside the database"
        else:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS file_fdw")
            cursor.execute("CREATE SERVER IF NOT EXISTS connector_test_files FOREIGN DATA WRAPPER file_fdw")
            cursor.execute(
                f"CREATE FOREIGN TABLE {schema}.outside (line text) SERVER connector_test_files "
                "OPTIONS (filename '/nonexistent/never-read.csv')"
            )
            expected = f"Skipping {schema}.outside: foreign table (server connector_test_files)"
        cursor.execute(f"CREATE TABLE {schema}.inside (id int PRIMARY KEY)")
    destination.sync(database.configuration(SCHEMAS=schema))
    assert _landed_tables(destination, schema) == {"inside"}
    assert expected in capfd.readouterr().out


def test_distribution_and_storage_are_logged(database: Database, schema: str, source, destination, capfd) -> None:
    with source.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {schema}.plain (id int PRIMARY KEY, note text)")
    destination.sync(database.configuration(SCHEMAS=schema))
    output = capfd.readouterr().out
    flavour = detect_flavour(database.version)
    expected = "table, storage heap" + (", DISTRIBUTED BY (id)" if flavour.is_greenplum else "")
    assert f"{schema}.plain: full with key sync ({expected}, key from primary key)" in output
    assert f"Source is {flavour.value}" in output


@pytest.mark.parametrize(
    ("version", "flavour"),
    [
        ("PostgreSQL 15.18 (Debian 15.18-0+deb12u1) on x86_64-pc-linux-gnu", Flavour.POSTGRES),
        ("PostgreSQL 8.3.23 (Greenplum Database 5.29.8 build commit:abc) on x86_64", Flavour.GREENPLUM5),
        ("PostgreSQL 9.4.26 (Greenplum Database 6.24.3 build commit:abc) on x86_64", Flavour.GREENPLUM6),
        ("PostgreSQL 12.12 (Greenplum Database 7.1.0 build commit:abc) on x86_64", Flavour.GREENPLUM7),
        ("PostgreSQL 14.4 (Cloudberry Database 1.6.0 build 1) on x86_64", Flavour.CLOUDBERRY),
        ("PostgreSQL 14.4 (Apache Cloudberry 2.1.0-incubating build 1) on x86_64", Flavour.CLOUDBERRY),
    ],
)
def test_flavour_from_version(version: str, flavour: Flavour) -> None:
    assert detect_flavour(version) is flavour


def _statements() -> dict[str, str]:
    return {
        name: value
        for name, value in vars(catalog_sql).items()
        if name.isupper() and not name.startswith("_") and isinstance(value, str)
    }


@pytest.mark.parametrize("name", sorted(_statements()))
def test_catalog_sql_parses(name: str) -> None:
    """Every catalog query is valid PostgreSQL syntax, Greenplum-only ones included (a typo fails here)."""
    text = re.sub(r"%\((\w+)\)s", "NULL", _statements()[name])
    (statement,) = pglast.parse_sql(text)
    assert statement.stmt is not None


def test_postgres_catalog_sql_runs(database: Database, relations: str, source) -> None:
    """The PostgreSQL-family queries run on this server; the Greenplum ones when it is Greenplum."""
    flavour = detect_flavour(database.version)
    if flavour is Flavour.POSTGRES:
        runnable = [catalog_sql.RELATIONS_POSTGRES, catalog_sql.RELATIONS_POSTGRES_LEGACY]
    elif flavour in (Flavour.GREENPLUM5, Flavour.GREENPLUM6):
        runnable = [
            catalog_sql.RELATIONS_GREENPLUM6,
            catalog_sql.EXTERNAL_LEAVES_GREENPLUM6,
            catalog_sql.PARTITION_ROW_ESTIMATES_GREENPLUM6,
            catalog_sql.PRIMARY_SEGMENTS,
        ]
    else:
        runnable = [catalog_sql.RELATIONS_GREENPLUM7, catalog_sql.PRIMARY_SEGMENTS]
    params = {"system_schemas": ["pg_catalog"], "oids": [], "relation": "pg_catalog.pg_class", "column": "relname"}
    with source.cursor() as cursor:
        for statement in [
            *runnable,
            catalog_sql.COLUMNS,
            catalog_sql.TYPES,
            catalog_sql.KEYS,
            catalog_sql.INDEXED_LEADING_COLUMNS,
            catalog_sql.PARTITION_ROW_ESTIMATES,
            catalog_sql.FOREIGN_LEAVES,
            catalog_sql.LEAF_NAMES,
            catalog_sql.COLUMN_EXISTS,
        ]:
            cursor.execute(statement, params)
            cursor.fetchall()


GREENPLUM_RELATIONS = """
CREATE TABLE {s}.ao_row (id int NOT NULL, note text) WITH (appendonly=true) DISTRIBUTED BY (id);
CREATE TABLE {s}.ao_column (id int, note text) WITH (appendonly=true, orientation=column) DISTRIBUTED RANDOMLY;
CREATE TABLE {s}.legacy_parts (id int, happened date) DISTRIBUTED BY (id)
    PARTITION BY RANGE (happened) (START (date '2024-01-01') END (date '2024-04-01') EVERY (interval '1 month'),
                                   DEFAULT PARTITION other);
CREATE TABLE {s}.random_rows (note text) DISTRIBUTED RANDOMLY;
INSERT INTO {s}.ao_row SELECT i, 'row ' || i FROM generate_series(1, 500) i;
INSERT INTO {s}.ao_column SELECT i % 10, 'same' FROM generate_series(1, 500) i;
INSERT INTO {s}.legacy_parts SELECT i, date '2023-12-15' + i % 120 FROM generate_series(1, 600) i;
INSERT INTO {s}.random_rows SELECT 'dup' FROM generate_series(1, 900) i;
CREATE EXTERNAL WEB TABLE {s}.outside (line text) EXECUTE 'echo never-read' FORMAT 'TEXT';
CREATE EXTERNAL WEB TABLE {s}.outside_part (id int, happened date) EXECUTE 'echo 1' FORMAT 'TEXT';
CREATE TABLE {s}.mixed_parts (id int, happened date) DISTRIBUTED BY (id)
    PARTITION BY RANGE (happened) (START (date '2024-01-01') END (date '2024-03-01') EVERY (interval '1 month'));
ALTER TABLE {s}.mixed_parts EXCHANGE PARTITION FOR (date '2024-02-01') WITH TABLE {s}.outside_part WITHOUT VALIDATION;
"""


def test_greenplum_storage_kinds_partitions_and_segments(
    database: Database, schema: str, source, destination, capfd: pytest.CaptureFixture
) -> None:
    """Append-optimized tables read like heap tables, legacy partitions through their root; a keyless table's rows
    spread over the segments are known by their contents, identical ones by their ordinals."""
    flavour = detect_flavour(database.version)
    if not flavour.is_greenplum:
        pytest.skip("needs a Greenplum cluster: set GREENPLUM_TEST_DSN")
    with source.cursor() as cursor:
        cursor.execute(GREENPLUM_RELATIONS.format(s=schema))
    destination.sync(database.configuration(SCHEMAS=schema, CHECKPOINT_ROWS="100", BATCH_SIZE="50"))
    # mixed_parts has an external partition: reading its root would read outside the database, so it is skipped.

    # outside_part swapped places with a partition: it is now that (ordinary, empty) table, its old self a leaf.
    landed = {"ao_row", "ao_column", "legacy_parts", "random_rows", "outside_part"}
    assert _landed_tables(destination, schema) == landed
    skipped = f"Skipping {schema}.mixed_parts: partitioned table with external or foreign partition(s)"
    assert skipped in capfd.readouterr().out
    for table, columns in (
        ("ao_row", "id, note"),
        ("ao_column", "id, note"),
        ("legacy_parts", "id, happened"),
        ("random_rows", "note"),
    ):
        with source.cursor() as cursor:
            cursor.execute(f"SELECT {columns} FROM {schema}.{table}")
            assert destination.rows(schema, table, columns) == sorted(cursor.fetchall()), table
    with source.cursor() as cursor:
        cursor.execute(f"SELECT count(DISTINCT gp_segment_id), count(*) FROM {schema}.random_rows")
        segments, count = cursor.fetchone()
    assert segments > 1, "the rows live on several segments"
    ordinals: dict[str, list[int]] = {}
    for (row_id,) in destination.query(f'SELECT _source_row_id FROM "tester_{schema}".random_rows'):
        content, _, ordinal = row_id.partition(":")
        ordinals.setdefault(content, []).append(int(ordinal))
    assert sum(map(len, ordinals.values())) == count, "content:ordinal, one per row"
    for numbers in ordinals.values():  # each content's ordinals count its rows from 1
        assert sorted(numbers) == list(range(1, len(numbers) + 1))


def test_a_partitioned_root_with_a_foreign_leaf_is_skipped(
    database: Database, schema: str, source, destination, capfd: pytest.CaptureFixture
) -> None:
    """A foreign leaf of any server (file_fdw here) would be read through the root: the root is skipped."""
    if uses_legacy_partitions(database):
        pytest.skip("Greenplum 6 legacy partitions take no foreign leaf (the Greenplum-only test exchanges one in)")
    with source.cursor() as cursor:
        try:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS file_fdw")
        except psycopg2.Error as error:
            pytest.skip(f"file_fdw is not available on this server: {error.pgerror}")
        cursor.execute("CREATE SERVER IF NOT EXISTS connector_test_files FOREIGN DATA WRAPPER file_fdw")
        cursor.execute(
            f"""CREATE TABLE {schema}.readings (day date, value int) PARTITION BY RANGE (day);
            CREATE TABLE {schema}.readings_local PARTITION OF {schema}.readings
                FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
            CREATE FOREIGN TABLE {schema}.readings_remote PARTITION OF {schema}.readings
                FOR VALUES FROM ('2024-02-01') TO ('2024-03-01')
                SERVER connector_test_files OPTIONS (filename '/dev/null');
            INSERT INTO {schema}.readings_local VALUES ('2024-01-05', 1);
            CREATE TABLE {schema}.kept (id int PRIMARY KEY); INSERT INTO {schema}.kept VALUES (1)"""
        )
    destination.sync(database.configuration(SCHEMAS=schema))
    out = capfd.readouterr().out
    assert (
        f"Skipping {schema}.readings: partitioned table with external or foreign partition(s) {schema}.readings_remote"
        in out
    )
    assert _landed_tables(destination, schema) == {"kept"}


def test_row_estimates_of_a_partitioned_root_count_each_row_once(database: Database, schema: str, source) -> None:
    """PostgreSQL 14+ (Cloudberry's bases) keeps an ANALYZE estimate on the partitioned root too."""
    if uses_legacy_partitions(database):
        pytest.skip("Greenplum 6 legacy partitions have their own estimate query")
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.p (id int) PARTITION BY RANGE (id);
            CREATE TABLE {schema}.p_low PARTITION OF {schema}.p FOR VALUES FROM (0) TO (500);
            CREATE TABLE {schema}.p_high PARTITION OF {schema}.p FOR VALUES FROM (500) TO (1000);
            INSERT INTO {schema}.p SELECT i FROM generate_series(0, 999) i;
            ANALYZE {schema}.p"""
        )
    with GreenplumClient(parse_settings(database.configuration())) as client:
        (table,) = [t for t in discover(client, server_info(client), (schema,)).tables if t.name == "p"]
    assert table.estimated_rows == 1000


def test_a_keyless_table_split_by_segment_with_no_segment_listed_is_read_whole(
    database: Database, schema: str, source, destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cloudberry's single-node mode lists no segment with content >= 0: a table split by segment is read whole.
    Reproduced here by planning the tables as on Greenplum (split by segment) on a server that lists no segment."""
    if detect_flavour(database.version).is_greenplum:
        pytest.skip("on a Greenplum cluster the segments are listed")
    with source.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {schema}.t (v int); INSERT INTO {schema}.t SELECT i % 4 FROM generate_series(1, 9) i"
        )
    real_discover = connector.discover

    def discover_as_on_greenplum(*args, **kwargs):
        found = real_discover(*args, **kwargs)
        return replace(found, tables=tuple(replace(t, split_by_segment=True) for t in found.tables))

    monkeypatch.setattr(connector, "discover", discover_as_on_greenplum)
    counts = destination.sync(database.configuration(SCHEMAS=schema))
    assert counts["Upserts"] == 9
    assert destination.rows(schema, "t", "v") == sorted((i % 4,) for i in range(1, 10))


GREENPLUM_REPLICATED = """
CREATE TABLE {s}.dim_keyless (code text, label text) DISTRIBUTED REPLICATED;
CREATE TABLE {s}.dim_keyed (id int PRIMARY KEY, label text) DISTRIBUTED REPLICATED;
INSERT INTO {s}.dim_keyless SELECT 'c' || (i % 5), 'same' FROM generate_series(1, 40) i;
INSERT INTO {s}.dim_keyed SELECT i, 'label ' || i FROM generate_series(1, 30) i;
"""


def test_greenplum_replicated_tables_land_exactly_once(
    database: Database, schema: str, source, destination: Destination
) -> None:
    """Every segment holds a replicated table whole and hides its system columns: read once, not per segment."""
    if not detect_flavour(database.version).is_greenplum:
        pytest.skip("DISTRIBUTED REPLICATED needs a Greenplum cluster: set GREENPLUM_TEST_DSN")
    with source.cursor() as cursor:
        cursor.execute(GREENPLUM_REPLICATED.format(s=schema))
    configuration = database.configuration(SCHEMAS=schema, BATCH_SIZE="7")
    counts = destination.sync(configuration)
    assert counts["Upserts"] == 40 + 30
    for table, columns in (("dim_keyless", "code, label"), ("dim_keyed", "id, label")):
        with source.cursor() as cursor:
            cursor.execute(f"SELECT {columns} FROM {schema}.{table}")
            assert destination.rows(schema, table, columns) == sorted(cursor.fetchall()), table
    assert destination.sync(configuration)["Upserts"] == 0, "unchanged: nothing read again"
    with source.cursor() as cursor:
        cursor.execute(f"DELETE FROM {schema}.dim_keyless WHERE code = 'c0'")
    counts = destination.sync(configuration)
    assert (counts["Upserts"], counts["Deletes"]) == (0, 8), "a delete per row gone, nothing of the rest"
    assert len(destination.rows(schema, "dim_keyless", "code")) == 32
