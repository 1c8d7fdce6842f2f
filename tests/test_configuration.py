"""Configuration validation: each mistake gives one message naming its key, before any connection is tried."""

from __future__ import annotations

import json

import pytest

from configuration import ConfigurationError, parse_settings, unknown_keys

SECRET = "s3cret-Pa55word"
VALID = {"HOST": "db.example.com", "PORT": "5432", "DATABASE": "dw", "USERNAME": "fivetran", "PASSWORD": SECRET}


def _error(**changes: str | None) -> str:
    configuration = {**VALID, **changes}
    configuration = {key: value for key, value in configuration.items() if value is not None}
    with pytest.raises(ConfigurationError) as raised:
        parse_settings(configuration)
    message = str(raised.value)
    assert SECRET not in message
    return message


def test_valid_configuration_has_defaults_and_hides_the_password() -> None:
    settings = parse_settings(VALID)
    assert settings.port == 5432
    assert settings.sslmode == "prefer"
    assert settings.batch_size > 0 and settings.checkpoint_rows > 0
    assert SECRET not in repr(settings)


def test_missing_required_keys_are_listed_together() -> None:
    message = _error(HOST=None, PASSWORD="  ")
    assert "HOST" in message and "PASSWORD" in message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("PORT", "five", "PORT: 'five' is not a whole number"),
        ("PORT", "70000", "PORT: 70000 is outside the allowed range"),
        ("BATCH_SIZE", "1e3", "BATCH_SIZE: '1e3' is not a whole number"),
        ("BATCH_SIZE", "0", "BATCH_SIZE: 0 is outside the allowed range"),
        ("CHECKPOINT_ROWS", "-5", "CHECKPOINT_ROWS: -5 is outside the allowed range"),
        ("LOOKBACK_SECONDS", "soon", "LOOKBACK_SECONDS: 'soon' is not a whole number"),
        ("SSLMODE", "strict", "SSLMODE: 'strict' is not one of"),
        ("SSLMODE", "verify-full", "SSLROOTCERT: SSLMODE verify-full needs the CA certificate"),
        ("SSLROOTCERT", "/etc/ssl/ca.pem", "SSLROOTCERT: expected PEM text"),
        ("TABLES", "orders", "TABLES: 'orders' is not of the form schema.table"),
        ("EXCLUDE_TABLES", "public.", "EXCLUDE_TABLES: 'public.' is not of the form schema.table"),
        ("EXCLUDE_COLUMNS", "public.users", "EXCLUDE_COLUMNS: 'public.users' is not of the form schema.table.column"),
        ("CURSOR_COLUMNS", "public.orders", "CURSOR_COLUMNS: 'public.orders' is not of the form schema.table:column"),
        ("CURSOR_COLUMNS", "s.t:a, s.t:b", "CURSOR_COLUMNS: table 's.t' is named twice"),
        ("PRIMARY_KEYS", "s.t", "PRIMARY_KEYS: 's.t' is not of the form schema.table:column1+column2"),
        ("PRIMARY_KEYS", "s.t:a++b", "PRIMARY_KEYS: 's.t:a++b' must name distinct columns joined by '+'"),
        ("PRIMARY_KEYS", "s.t:a+a", "PRIMARY_KEYS: 's.t:a+a' must name distinct columns joined by '+'"),
        ("QUERIES", "[{", "QUERIES: not valid JSON"),
        ("QUERIES", '{"table": "x"}', "QUERIES: expected a JSON array"),
        ("QUERIES", '[{"table": "x"}]', "QUERIES[0]: 'query' must be a non-empty SELECT"),
        ("QUERIES", '[{"query": "SELECT 1"}]', "QUERIES[0]: 'table' must be a non-empty string"),
        ("QUERIES", '[{"table": "x", "query": "SELECT 1", "primary_key": "id"}]', "QUERIES[0]: 'primary_key' must"),
        ("QUERIES", '[{"table": "x", "query": "SELECT 1", "sort": "id"}]', "QUERIES[0]: unknown field(s) sort"),
    ],
)
def test_each_bad_value_names_its_key(key: str, value: str, expected: str) -> None:
    assert expected in _error(**{key: value})


def test_duplicate_query_tables_are_refused() -> None:
    queries = json.dumps([{"table": "a", "query": "SELECT 1 AS x"}, {"table": "a", "query": "SELECT 2 AS x"}])
    assert "QUERIES: table name(s) used twice: a" in _error(QUERIES=queries)


def test_non_string_values_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="PORT: every configuration value must be a string"):
        parse_settings({**VALID, "PORT": 5432})


def test_patterns_and_overrides_are_parsed() -> None:
    settings = parse_settings(
        {
            **VALID,
            "SCHEMAS": "sales, ops",
            "TABLES": "sales.*, ops.order_*",
            "EXCLUDE_TABLES": "sales.tmp_*",
            "EXCLUDE_COLUMNS": "sales.customers.ssn",
            "CURSOR_COLUMNS": "ops.orders:changed",
            "PRIMARY_KEYS": "sales.facts:day + store, ops.orders:id",
            "QUERIES": '[{"table": "q", "query": "SELECT 1 AS id;", "primary_key": ["id"], "cursor": "id"}]',
        }
    )
    assert settings.schemas == ("sales", "ops")
    assert settings.table_selected("sales", "customers")
    assert settings.table_selected("ops", "order_lines")
    assert not settings.table_selected("ops", "shipments")
    assert not settings.table_selected("sales", "tmp_load")
    assert settings.column_excluded("sales", "customers", "ssn")
    assert settings.cursor_columns == {("ops", "orders"): "changed"}
    assert settings.primary_keys == {("sales", "facts"): ("day", "store"), ("ops", "orders"): ("id",)}
    assert settings.queries[0].query == "SELECT 1 AS id"


def test_unknown_keys_are_named_with_the_nearest_known_key() -> None:
    messages = unknown_keys({**VALID, "CURSOR_COLUMN": "s.t:c", "team": "data"})
    assert messages == [
        "Configuration key 'CURSOR_COLUMN' is not one this connector knows, so it changes nothing "
        "(did you mean CURSOR_COLUMNS?).",
        "Configuration key 'team' is not one this connector knows, so it changes nothing.",
    ]
    assert unknown_keys(VALID) == []
    parse_settings({**VALID, "CURSOR_COLUMN": "s.t:c"})  # a warning, never an error
