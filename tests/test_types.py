"""Every source type lands exactly, or as NULL counted in one warning per column: checked value by value.

A table holds a column of every type with ordinary and edge values; after a sync through the SDK's runner each
DuckDB value is compared with the source's value read back with psycopg2, each DuckDB column type is checked, and so
are the warnings. The server runs in America/New_York (local servers) and the process in another zone as well.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg2.extras
import pytest
from conftest import Database, Destination
from fivetran_connector_sdk import Operations
from psycopg2 import sql

from type_mapping import ReadAs, SourceType, fivetran_type, numeric_precision_scale

TABLE = "every_type"


@dataclass(frozen=True)
class Edge:
    """A value the destination type cannot hold: it must land as NULL and be counted in the column's warning."""

    literal: str


def _same(value: Any) -> Any:
    return value


def _float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def _json(text: str) -> Any:
    """JSON with its numbers as Decimal, so that a number rounded on the way shows, and 1.50 equals 1.5."""
    return json.loads(text, parse_float=Decimal)


def _json_numbers(value: Any) -> Any:
    """psycopg2's native floats (and the JSON strings PostgreSQL writes for non-finite ones) as exact decimals."""
    if isinstance(value, list):
        return [_json_numbers(item) for item in value]
    if isinstance(value, dict):
        return {key: _json_numbers(item) for key, item in value.items()}
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return ("Infinity" if value > 0 else "-Infinity") if math.isinf(value) else Decimal(repr(value))
    return value


def _instants(value: list) -> list:
    return [None if item is None else datetime.fromisoformat(item) for item in value]


@dataclass(frozen=True)
class Column:
    """One column of the type table: its values (SQL literals), DuckDB type, and how source and destination compare."""

    name: str
    sql_type: str
    values: tuple[str | Edge, ...]
    duck_type: str
    source: str = "{}"  # how the test reads the source value; {} is the column
    expected: Callable[[Any], Any] = _same  # source value -> the value DuckDB must hold
    landed: Callable[[Any], Any] = _same  # DuckDB value -> comparable form

    @property
    def edges(self) -> int:
        return sum(isinstance(value, Edge) for value in self.values)


def _xml_values_accepted(cursor) -> tuple[str, ...]:
    """The xml test values this server takes: none without libxml; the empty document only where libxml accepts it
    as content (PostgreSQL's own builds do, a Greenplum 6 build with libxml calls it "invalid XML content")."""
    accepted = []
    for value in ("'<a b=\"1\">\u00fc</a>'", "''"):
        try:
            cursor.execute(f"SELECT {value}::xml")  # the source connection is in autocommit: a refusal ends nothing
            accepted.append(value)
        except (psycopg2.errors.FeatureNotSupported, psycopg2.errors.InvalidXmlContent):
            pass
    return tuple(accepted)


def _columns(server_version: int, hstore_schema: str | None, xml_values: tuple[str, ...]) -> list[Column]:
    # PostgreSQL 14 added numeric infinities.
    numeric_infinity = ("'Infinity'", "'-Infinity'") if server_version >= 140000 else ()
    infinity_elements = ",Infinity,-Infinity" if numeric_infinity else ""
    # PostgreSQL 12 accepts subnormal floats as input; older servers (Greenplum 6 and 7) refuse them.
    subnormals = server_version >= 120000
    subnormal_real, subnormal_double = ((Edge("1e-45"),), (Edge("5e-324"),)) if subnormals else ((), ())
    subnormal_element = ",5e-324" if subnormals else ""
    timestamp = datetime.fromisoformat
    columns = [
        Column("c_smallint", "smallint", ("-32768", "32767", "0"), "INTEGER"),
        Column("c_integer", "integer", ("-2147483648", "2147483647"), "INTEGER"),
        Column("c_bigint", "bigint", ("-9223372036854775808", "9223372036854775807"), "BIGINT"),
        Column("c_numeric_p_s", "numeric(10, 2)", ("12345678.91", "-0.01", "0", Edge("'NaN'")), "DECIMAL(10,2)"),
        Column(
            "c_numeric_scale_only", "numeric(38, 38)", ("0.12345678901234567890123456789012345678",), "DECIMAL(38,38)"
        ),
        Column(
            "c_numeric_integral",
            "numeric(38, 0)",
            ("99999999999999999999999999999999999999", "-99999999999999999999999999999999999999"),
            "DECIMAL(38,0)",
        ),
        Column(
            "c_numeric",
            "numeric",
            (
                "1.10",
                "'NaN'",
                "-0.000000000000000000000000000000000000000001",
                "repeat('9', 1000)::numeric",
                *numeric_infinity,
            ),
            "VARCHAR",
            source="{}::text",
        ),
        Column(
            "c_numeric_wide",
            "numeric(50, 10)",
            ("1234567890123456789012345678901234567890.0123456789", "0"),
            "VARCHAR",
            source="{}::text",
        ),
        Column("c_money", "money", ("12.34", "'-92233720368547758.08'"), "VARCHAR", source="{}::numeric::text"),
        Column(
            "c_real",
            "real",
            ("1.1", "'Infinity'", "'-Infinity'", "3.40282347e38", "1.1754944e-38", Edge("'NaN'"), *subnormal_real),
            "FLOAT",
            expected=_float32,
        ),
        Column(
            "c_double",
            "double precision",
            (
                "0.1",
                "1.7976931348623157e308",
                "'Infinity'",
                "'-Infinity'",
                "2.2250738585072014e-308",
                "'-0'",  # lands as 0.0, equal to -0.0 (the destination has no negative zero)
                Edge("'NaN'"),
                *subnormal_double,
            ),
            "DOUBLE",
        ),
        Column("c_boolean", "boolean", ("true", "false"), "BOOLEAN"),
        Column(
            "c_date",
            "date",
            (
                "'2024-02-29'",
                "'0001-01-01'",
                "'9999-12-31'",
                Edge("'infinity'"),
                Edge("'-infinity'"),
                Edge("'0044-03-15 BC'"),
                Edge("'12000-01-01'"),
            ),
            "DATE",
            source="{}::text",
            expected=date.fromisoformat,
        ),
        Column(
            "c_timestamp",
            "timestamp",
            (
                "'2024-02-29 13:45:06.123456'",
                "'2024-02-29 13:45:06.5'",
                "'0001-01-01 00:00:00'",
                "'9999-12-31 23:59:59.999999'",
                Edge("'infinity'"),
                Edge("'-infinity'"),
                Edge("'0044-03-15 12:00:00 BC'"),
                Edge("'12000-01-01 00:00:00'"),
            ),
            "TIMESTAMP",
            source="{}::text",
            expected=timestamp,
        ),
        Column(
            "c_timestamptz",
            "timestamptz",
            (
                "'2024-02-29 13:45:06.123456+05:30'",
                "'2000-01-01 00:00:00.5+00'",
                "'2024-07-01 12:00:00 America/New_York'",
                "'0001-01-01 00:00:00+00'",
                "'9999-12-31 23:59:59.999999+00'",
                Edge("'infinity'"),
                Edge("'-infinity'"),
                Edge("'0044-03-15 00:00:00+00 BC'"),
                Edge("'9999-12-31 23:00:00-05'"),  # year 10000 in UTC
            ),
            "TIMESTAMP WITH TIME ZONE",
            source="{}::text",
            expected=timestamp,
        ),
        Column("c_time", "time", ("'13:45:06.789'", "'00:00'", "'24:00:00'"), "VARCHAR", source="{}::text"),
        Column("c_timetz", "timetz", ("'13:45:06+05:30'", "'00:00:00-12'"), "VARCHAR", source="{}::text"),
        Column(
            "c_interval",
            "interval",
            ("'1 year 2 mons 3 days 04:05:06.789'", "'-1 day'", "'0'", "'-178000000 years'"),
            "VARCHAR",
            source="{}::text",
        ),
        Column(
            "c_text",
            "text",
            (
                "''",
                "'plain'",
                # Every plane: BMP, supplementary multilingual, ideographic, tertiary, special purpose, private use.
                "'\u00e9\u4e2d\ufffd \U0001f600 \U00020000 \U00030000 \U000e0001 \U000f0000 \U0010fffd'",
                "'quotes '' \" and \\ backslash, newline\n, tab\t'",
                "repeat('abcdefghij', 1048576)",  # 10 MiB
            ),
            "VARCHAR",
        ),
        Column("c_varchar", "varchar(20)", ("''", "'\u00fc\U0001f600'"), "VARCHAR"),
        Column("c_char", "char(5)", ("'ab'", "''"), "VARCHAR"),
        Column("c_uuid", "uuid", ("'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",), "VARCHAR"),
        Column(
            "c_json",
            "json",
            (
                '\'{"b": 1, "a": [1.5, "x", null, true, false], "n": 12345678901234567890123, "e": 1E+2}\'',
                "'\"\"'",
                "'[]'",
                "(repeat('[', 400) || '1.25' || repeat(']', 400))::json",  # deep, within the limit
                Edge("'null'"),
                Edge("'{\"x\": 1.10000000000000000000001}'"),
                Edge("'[1e400]'"),
            ),
            "JSON",
            source="{}::text",
            expected=_json,
            landed=_json,
        ),
        Column(
            "c_jsonb",
            "jsonb",
            (
                '\'{"a": 1.50, "b": -0.0, "e": 1e-7, "s": "\u00fc\U0001f600\\u0001 \\"q\\""}\'',
                "'\"text\"'",
                "'3.5'",
                Edge("'null'"),
                Edge("(repeat('{\"a\":', 600) || '1' || repeat('}', 600))::jsonb"),
            ),
            "JSON",
            source="{}::text",
            expected=_json,
            landed=_json,
        ),
        Column("c_int_array", "integer[]", ("'{1,NULL,3}'", "'{{1,2},{3,4}}'", "'{}'"), "JSON", landed=_json),
        Column("c_bigint_array", "bigint[]", ("'{9223372036854775807,-9223372036854775808}'",), "JSON", landed=_json),
        Column(
            "c_text_array",
            "text[]",
            ('\'{"a b",NULL,"","\u00fc\U0001f600","q\\"uote"}\'', "'{{{a,b},{c,d}},{{e,f},{g,NULL}}}'"),
            "JSON",
            landed=_json,
        ),
        Column(
            "c_numeric_array",
            "numeric[]",
            (
                "'{1.10,NaN,NULL,12345678901234567890.123456789012345678901" + infinity_elements + "}'",
                "'{{1,2},{3,4.5}}'",
            ),
            "JSON",
            source="{}::text[]",
            landed=_json,
        ),
        Column("c_money_array", "money[]", ("'{1.5,-2}'",), "JSON", source="{}::numeric[]::text[]", landed=_json),
        Column(
            "c_double_array",
            "double precision[]",
            ("'{0.1,1e308,NaN,Infinity,-Infinity,NULL,2.5e-7" + subnormal_element + "}'",),
            "JSON",
            expected=_json_numbers,
            landed=_json,
        ),
        Column("c_real_array", "real[]", ("'{1.1,NaN,3.40282347e38}'",), "JSON", expected=_json_numbers, landed=_json),
        Column("c_boolean_array", "boolean[]", ("'{t,f,NULL}'",), "JSON", landed=_json),
        Column(
            "c_date_array",
            "date[]",
            ("'{2024-02-29,infinity,0044-03-15 BC,12000-01-01}'",),
            "JSON",
            source="{}::text[]",
            landed=_json,
        ),
        Column(
            "c_timestamptz_array",
            "timestamptz[]",
            ("'{\"2024-02-29 13:45:06.5+05:30\",NULL}'",),
            "JSON",
            landed=lambda text: _instants(_json(text)),
        ),
        Column("c_interval_array", "interval[]", ("'{1 day,PT2H}'",), "JSON", source="{}::text[]", landed=_json),
        Column(
            "c_uuid_array",
            "uuid[]",
            ("'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}'",),
            "JSON",
            source="{}::text[]",
            landed=_json,
        ),
        Column(
            "c_jsonb_array",
            "jsonb[]",
            ("ARRAY['{\"a\": [1, 2.5]}'::jsonb, NULL]",),
            "JSON",
            expected=_json_numbers,
            landed=_json,
        ),
        Column(
            "c_bytea",
            "bytea",
            ("''::bytea", "'\\x00ff10'::bytea", "decode(repeat('deadbeef', 2097152), 'hex')"),  # 8 MiB
            "BLOB",
            expected=bytes,
        ),
        Column("c_xml", "xml", xml_values, "VARCHAR", source="{}::text"),
        Column("c_inet", "inet", ("'10.0.0.1'", "'10.0.0.0/8'", "'::1'", "'2001:db8::1/64'"), "VARCHAR"),
        Column("c_cidr", "cidr", ("'10.0.0.0/8'", "'2001:db8::/32'"), "VARCHAR"),
        Column("c_macaddr", "macaddr", ("'08:00:2b:01:02:03'",), "VARCHAR"),
        Column("c_bit", "bit(4)", ("B'1010'",), "VARCHAR"),
        Column("c_varbit", "varbit", ("B''", "B'101'"), "VARCHAR"),
        Column("c_enum", "{s}.mood", ("'sad'", "'\U0001f600 happy'"), "VARCHAR"),
        Column("c_domain_text", "{s}.email", ("'a@b.c'",), "VARCHAR"),
        Column("c_domain_numeric", "{s}.price", ("123.45", "-0.5"), "DECIMAL(10,2)"),
        Column(
            "c_domain_timestamptz",
            "{s}.moment",
            ("'2024-01-01 00:00:00+00'", Edge("'infinity'")),
            "TIMESTAMP WITH TIME ZONE",
            source="{}::text",
            expected=timestamp,
        ),
        Column("c_domain_array", "{s}.scores", ("'{1,2}'",), "JSON", landed=_json),
        Column("c_int_range", "int4range", ("'[1,10)'", "'empty'"), "VARCHAR", source="{}::text"),
        Column("c_num_range", "numrange", ("'(,1.50]'",), "VARCHAR", source="{}::text"),
        Column(
            "c_tstz_range",
            "tstzrange",
            ("'[2024-01-01 00:00+05,infinity)'",),
            "VARCHAR",
            source="{}::text",
        ),
        Column("c_tsvector", "tsvector", ("to_tsvector('simple', 'the quick fox')", "''::tsvector"), "VARCHAR"),
        Column("c_composite", "{s}.pair", ("ROW(1, 'a b')",), "VARCHAR"),
        Column("c_point", "point", ("'(1.5,2)'",), "VARCHAR"),
        Column("c_lsn", "pg_lsn", ("'16/B374D848'",), "VARCHAR"),
        Column("c_oid", "oid", ("4294967295",), "BIGINT"),
    ]
    if not xml_values:  # a server built without libxml refuses every xml value
        columns = [column for column in columns if column.name != "c_xml"]
    if hstore_schema is not None:
        columns.append(
            Column(
                "c_hstore",
                "{h}.hstore",
                ("'a=>1, \"b c\"=>NULL, \u00fc=>\U0001f600'", "''"),
                "JSON",
                landed=_json,
            )
        )
    return columns


def _hstore_schema(source, schema: str) -> str | None:
    """Where hstore lives: the server's copy, else one created in the test's schema; None when the server lacks it."""
    with source.cursor() as cursor:
        cursor.execute(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = %s",
            ["hstore"],
        )
        row = cursor.fetchone()
        if row is not None:
            return row[0]
        try:
            cursor.execute(sql.SQL("CREATE EXTENSION hstore SCHEMA {}").format(sql.Identifier(schema)))
        except psycopg2.Error:
            return None  # not installed on this server, or not allowed: the spec asks for hstore only where it exists
        return schema


@dataclass(frozen=True)
class TypeTable:
    schema: str
    columns: list[Column]
    rows: int  # ids 1..rows; the last row is NULL in every column


@pytest.fixture
def type_table(schema: str, source) -> TypeTable:
    with source.cursor() as cursor:
        cursor.execute("SELECT current_setting('server_version_num')::int")
        (server_version,) = cursor.fetchone()
        hstore_schema = _hstore_schema(source, schema)
        names = {"s": sql.Identifier(schema), "h": sql.Identifier(hstore_schema or schema)}
        cursor.execute(
            sql.SQL(
                """
                CREATE TYPE {s}.mood AS ENUM ('sad', 'ok', {happy});
                CREATE TYPE {s}.pair AS (a integer, b text);
                CREATE DOMAIN {s}.email AS text CHECK (VALUE LIKE '%@%');
                CREATE DOMAIN {s}.price AS numeric(10, 2);
                CREATE DOMAIN {s}.instant AS timestamptz;
                CREATE DOMAIN {s}.moment AS {s}.instant;
                CREATE DOMAIN {s}.scores AS integer[];
                """
            ).format(happy=sql.Literal("\U0001f600 happy"), **names)
        )
        columns = _columns(server_version, hstore_schema, _xml_values_accepted(cursor))
        rows = max(len(column.values) for column in columns) + 1
        definitions = [sql.SQL("id integer PRIMARY KEY")] + [
            sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.sql_type).format(**names)) for c in columns
        ]
        table = sql.Identifier(schema, TABLE)
        cursor.execute(sql.SQL("CREATE TABLE {} ({})").format(table, sql.SQL(", ").join(definitions)))
        for row in range(1, rows + 1):
            literals = [sql.Literal(row)]
            for column in columns:
                value = column.values[row - 1] if row <= len(column.values) else "NULL"
                literals.append(sql.SQL(value.literal if isinstance(value, Edge) else value))
            cursor.execute(sql.SQL("INSERT INTO {} VALUES ({})").format(table, sql.SQL(", ").join(literals)))
    return TypeTable(schema, columns, rows)


def _source_values(database: Database, table: TypeTable) -> dict[str, list[Any]]:
    """The source's values by column, read in a session of the test's own (not the connector's)."""
    connection = database.connect()
    try:
        with connection.cursor() as cursor:
            # Text forms as the spec names them: ISO intervals, timestamps in UTC, floats in their shortest exact form.
            cursor.execute("SET TimeZone = 'UTC'; SET IntervalStyle = 'iso_8601'; SET extra_float_digits = 3")
        if any(column.name == "c_hstore" for column in table.columns):
            psycopg2.extras.register_hstore(connection)
        expressions = [sql.SQL(c.source).format(sql.Identifier(c.name)) for c in table.columns]
        with connection.cursor() as cursor:
            cursor.execute(
                sql.SQL("SELECT {} FROM {} ORDER BY id").format(
                    sql.SQL(", ").join(expressions), sql.Identifier(table.schema, TABLE)
                )
            )
            rows = cursor.fetchall()
    finally:
        connection.close()
    return {column.name: [row[index] for row in rows] for index, column in enumerate(table.columns)}


def _destination_values(destination: Destination, table: TypeTable) -> dict[str, list[Any]]:
    names = ", ".join(f'"{column.name}"' for column in table.columns)
    rows = destination.query(f'SELECT {names} FROM "tester_{table.schema}"."{TABLE}" ORDER BY id')
    return {column.name: [row[index] for row in rows] for index, column in enumerate(table.columns)}


def _mismatches(table: TypeTable, source: dict[str, list[Any]], landed: dict[str, list[Any]]) -> list[str]:
    """Every value that did not land as the source holds it (or as NULL for an edge value), one line each."""
    problems = []
    for column in table.columns:
        for index, (held, got) in enumerate(zip(source[column.name], landed[column.name], strict=True)):
            value = column.values[index] if index < len(column.values) else None
            expected = None if held is None or isinstance(value, Edge) else column.expected(held)
            actual = None if got is None else column.landed(got)
            if expected != actual:
                problems.append(f"{column.name} row {index + 1}: expected {expected!r:.200}, landed {actual!r:.200}")
    return problems


@pytest.fixture
def warnings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The messages of op.warning, which still reaches the SDK."""
    recorded: list[str] = []
    real = Operations.warning

    def record(message: str) -> None:
        recorded.append(message)
        real(message)

    monkeypatch.setattr(Operations, "warning", staticmethod(record))
    return recorded


@pytest.fixture(params=["process TZ as is", "Asia/Kolkata"])
def process_time_zone(request: pytest.FixtureRequest) -> Iterator[str]:
    """The sync runs in the machine's zone and in one far from UTC: nothing may shift."""
    saved = os.environ.get("TZ")
    if request.param != "process TZ as is":
        os.environ["TZ"] = request.param
        time.tzset()
    yield request.param
    if saved is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = saved
    time.tzset()


# Batches of one, of two and of the whole table: the column checks meet a column of NULLs only, of ordinary values with
# and without NULLs, and of ordinary values mixed with ones the destination cannot hold.
@pytest.mark.parametrize("batch_size", ["1", "2", "5000"])
def test_every_type_lands_exactly(
    database: Database,
    type_table: TypeTable,
    destination: Destination,
    warnings: list[str],
    process_time_zone: str,
    batch_size: str,
) -> None:
    counts = destination.sync(database.configuration(SCHEMAS=type_table.schema, BATCH_SIZE=batch_size))

    assert counts["Upserts"] == type_table.rows
    expected_types = {column.name: column.duck_type for column in type_table.columns}
    landed_types = destination.column_types(type_table.schema, TABLE)
    assert {name: landed_types.get(name) for name in expected_types} == expected_types
    assert (
        _mismatches(type_table, _source_values(database, type_table), _destination_values(destination, type_table))
        == []
    )
    prefix = f"{type_table.schema}.{TABLE}"
    expected_warnings = {
        c.name: f"{prefix}.{c.name}: {c.edges} value(s) the destination type cannot hold"
        for c in type_table.columns
        if c.edges
    }
    by_column = {message.split(": ")[0].rsplit(".", 1)[-1]: message for message in warnings}
    assert sorted(by_column) == sorted(expected_warnings)
    assert len(warnings) == len(by_column)  # one warning per column
    for name, start in expected_warnings.items():
        assert by_column[name].startswith(start), by_column[name]
        assert by_column[name].endswith("were stored as NULL")


def test_results_identical_whatever_the_process_time_zone(
    database: Database, type_table: TypeTable, tmp_path, source
) -> None:
    """The same table synced with the process in UTC and in Asia/Kolkata, the server in another zone: same values."""
    with source.cursor() as cursor:
        cursor.execute("SHOW TimeZone")
        server_zone = cursor.fetchone()[0]
    if database.is_local:
        assert server_zone == "America/New_York"  # the fixture's server is far from UTC on purpose
    landed = []
    saved = os.environ.get("TZ")
    try:
        for zone in ("UTC", "Asia/Kolkata"):
            os.environ["TZ"] = zone
            time.tzset()
            destination = Destination(tmp_path / zone.replace("/", "_"))
            destination.sync(database.configuration(SCHEMAS=type_table.schema))
            landed.append(_destination_values(destination, type_table))
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()
    assert landed[0] == landed[1]
    moments = landed[0]["c_timestamptz"]
    assert moments[0] == datetime.fromisoformat("2024-02-29 08:15:06.123456+00:00")
    assert landed[0]["c_timestamp"][0] == datetime(2024, 2, 29, 13, 45, 6, 123456)  # naive: never shifted


def test_names_with_capitals_spaces_quotes_dots_unicode_and_reserved_words(
    database: Database, source, destination: Destination
) -> None:
    """Quoted everywhere on the source; the SDK's local runner renames them for the destination, as asserted here."""
    token = secrets.token_hex(3)
    schema = f'Odd "Schema".x \u00fc {token}'
    table = 'Mixed Case."Table" \u00fc'
    keyless = "table"
    columns = [
        "Key Col",
        "Select",
        "user id",
        'a"b',
        "x.y",
        "\u00fcn\u00efc\u00f6d\u00e9",
        "order",
        "CamelCase",
        "Updated_At",
    ]
    s, t, k = sql.Identifier(schema), sql.Identifier(schema, table), sql.Identifier(schema, keyless)
    with source.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE SCHEMA {}").format(s))
    try:
        with source.cursor() as cursor:
            definitions = [sql.SQL("{} text").format(sql.Identifier(name)) for name in columns[1:-1]]
            cursor.execute(
                sql.SQL("CREATE TABLE {} ({} integer PRIMARY KEY, {}, {} timestamptz NOT NULL)").format(
                    t, sql.Identifier(columns[0]), sql.SQL(", ").join(definitions), sql.Identifier(columns[-1])
                )
            )
            cursor.execute(
                sql.SQL("CREATE TABLE {} ({} text, {} integer)").format(k, *map(sql.Identifier, columns[1:3]))
            )
            rows = [
                (i, f"s{i}", f"u {i}", f'q"{i}', f"x.{i}", f"\u00fc{i}", f"o{i}", f"C{i}", f"2024-01-0{i} 00:00:00+00")
                for i in (1, 2, 3)
            ]
            for row in rows:
                cursor.execute(sql.SQL("INSERT INTO {} VALUES %s").format(t), [row])
            cursor.execute(sql.SQL("INSERT INTO {} VALUES ('a', 1), ('a', 1), ('b', NULL)").format(k))

        configuration = database.configuration(SCHEMAS=schema)
        destination.sync(configuration)
        with source.cursor() as cursor:  # an incremental read after the saved position, on quoted names
            cursor.execute(
                sql.SQL("UPDATE {} SET {} = 'changed', {} = '2024-02-01' WHERE {} = 2").format(
                    t, sql.Identifier("Select"), sql.Identifier("Updated_At"), sql.Identifier("Key Col")
                )
            )
        destination.sync(configuration)

        landed_schema = f"tester_odd__schema__x___{token}"
        landed_columns = ["key_col", "select", "user_id", "a_b", "x_y", "unicode", "order", "camel_case", "updated_at"]
        types = destination.query(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = ? ORDER BY ALL",
            [landed_schema],
        )
        assert {name for table_name, name in types if table_name == "mixed_case_table_u"} == {
            *landed_columns,
            "_fivetran_synced",
            "_fivetran_deleted",
        }
        assert {name for table_name, name in types if table_name == keyless} >= {"select", "user_id"}
        quoted = ", ".join(f'"{name}"' for name in landed_columns[:-1])
        landed = destination.query(
            f'SELECT {quoted}, CAST("updated_at" AS VARCHAR) FROM "{landed_schema}"."mixed_case_table_u" ORDER BY 1'
        )
        with source.cursor() as cursor:
            cursor.execute("SET TimeZone = 'UTC'")
            names = sql.SQL(", ").join(sql.Identifier(name) for name in columns[:-1])
            cursor.execute(
                sql.SQL("SELECT {}, to_char({}, 'YYYY-MM-DD HH24:MI:SS') || '+00' FROM {} ORDER BY 1").format(
                    names, sql.Identifier(columns[-1]), t
                )
            )
            expected = cursor.fetchall()
        assert landed == expected
        assert destination.query(f'SELECT "select", "user_id" FROM "{landed_schema}"."{keyless}" ORDER BY ALL') == [
            ("a", 1),
            ("a", 1),
            ("b", None),
        ]
    finally:
        with source.cursor() as cursor:
            cursor.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(s))


def test_every_psycopg2_default_typecaster_is_handled(source) -> None:
    """A type that psycopg2 turns into a Python object by default must not be read plain unless that object is wanted.

    Read plain, a type psycopg2 does not know comes as its output text: that is the fallback for unknown types.
    """
    wanted_plain = {
        "bool", "int2", "int4", "int8", "oid", "float4", "float8", "numeric", "date", "timestamp", "timestamptz",
        "json", "jsonb", "bytea", "text", "varchar", "bpchar", "char", "name", "unknown",
        "_float4", "_float8",  # parsed by the connector's own array typecaster (values.py)
    }  # fmt: skip
    with source.cursor() as cursor:
        cursor.execute(
            "SELECT typname, typcategory FROM pg_type WHERE oid = ANY (%s::oid[])",
            [sorted(psycopg2.extensions.string_types)],
        )
        types = cursor.fetchall()
    assert len(types) > 40
    as_they_are = (ReadAs.PLAIN, ReadAs.FLOAT_ARRAY)  # no cast on the server
    plain = {name for name, category in types if fivetran_type(SourceType(name, category)).read_as in as_they_are}
    assert plain == wanted_plain


@pytest.mark.parametrize(
    ("source_type", "declared", "read_as"),
    [
        (SourceType("bool", "B"), "BOOLEAN", ReadAs.PLAIN),
        (SourceType("int2", "N"), "INT", ReadAs.PLAIN),
        (SourceType("int4", "N"), "INT", ReadAs.PLAIN),
        (SourceType("int8", "N"), "LONG", ReadAs.PLAIN),
        (SourceType("numeric", "N", 10, 2), {"type": "DECIMAL", "precision": 10, "scale": 2}, ReadAs.PLAIN),
        (SourceType("numeric", "N", 38, 38), {"type": "DECIMAL", "precision": 38, "scale": 38}, ReadAs.PLAIN),
        (SourceType("numeric", "N", 39, 2), "STRING", ReadAs.PLAIN),
        (SourceType("numeric", "N", 5, -2), "STRING", ReadAs.PLAIN),  # PostgreSQL 15's negative scale
        (SourceType("numeric", "N", 2, 5), "STRING", ReadAs.PLAIN),  # scale above precision (PostgreSQL 15)
        (SourceType("numeric", "N"), "STRING", ReadAs.PLAIN),
        (SourceType("money", "N"), "STRING", ReadAs.NUMERIC_TEXT),
        (SourceType("float4", "N"), "FLOAT", ReadAs.PLAIN),
        (SourceType("float8", "N"), "DOUBLE", ReadAs.PLAIN),
        (SourceType("date", "D"), "NAIVE_DATE", ReadAs.PLAIN),
        (SourceType("timestamp", "D"), "NAIVE_DATETIME", ReadAs.PLAIN),
        (SourceType("timestamptz", "D"), "UTC_DATETIME", ReadAs.PLAIN),
        (SourceType("time", "D"), "STRING", ReadAs.TEXT),
        (SourceType("timetz", "D"), "STRING", ReadAs.TEXT),
        (SourceType("interval", "T"), "STRING", ReadAs.TEXT),
        (SourceType("json", "U"), "JSON", ReadAs.PLAIN),
        (SourceType("jsonb", "U"), "JSON", ReadAs.PLAIN),
        (SourceType("_int4", "A"), "JSON", ReadAs.JSON),
        (SourceType("_numeric", "A"), "JSON", ReadAs.JSON_OF_TEXT),
        (SourceType("_money", "A"), "JSON", ReadAs.JSON_OF_NUMERIC_TEXT),
        (SourceType("_mood", "A"), "JSON", ReadAs.JSON),  # an array of a user type
        (SourceType("hstore", "U"), "JSON", ReadAs.JSON),
        (SourceType("bytea", "U"), "BINARY", ReadAs.PLAIN),
        (SourceType("xml", "U"), "XML", ReadAs.PLAIN),
        (SourceType("text", "S"), "STRING", ReadAs.PLAIN),
        (SourceType("bpchar", "S"), "STRING", ReadAs.PLAIN),
        (SourceType("uuid", "U"), "STRING", ReadAs.PLAIN),
        (SourceType("inet", "I"), "STRING", ReadAs.PLAIN),
        (SourceType("varbit", "V"), "STRING", ReadAs.PLAIN),
        (SourceType("mood", "E"), "STRING", ReadAs.PLAIN),
        (SourceType("int4range", "R"), "STRING", ReadAs.TEXT),
        (SourceType("floatrange", "R"), "STRING", ReadAs.TEXT),  # a user-defined range
        (SourceType("int4multirange", "R"), "STRING", ReadAs.TEXT),
        (SourceType("tsvector", "U"), "STRING", ReadAs.PLAIN),
        (SourceType("some_extension_type", "U"), "STRING", ReadAs.PLAIN),
        (SourceType("oid", "N"), "LONG", ReadAs.PLAIN),
    ],
)
def test_type_mapping(source_type: SourceType, declared: object, read_as: ReadAs) -> None:
    mapped = fivetran_type(source_type)
    assert (mapped.declaration(), mapped.read_as) == (declared, read_as)


@pytest.mark.parametrize(
    ("typmod", "expected"),
    [
        (-1, (None, None)),
        (((10 << 16) | 2) + 4, (10, 2)),
        (((38 << 16) | 0) + 4, (38, 0)),
        (((5 << 16) | 2046) + 4, (5, -2)),
    ],
)
def test_numeric_precision_scale(typmod: int, expected: tuple[int | None, int | None]) -> None:
    assert numeric_precision_scale(typmod) == expected
