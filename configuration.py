"""The connector's configuration: validated once, before any connection, into a frozen `Settings`.

Every value arrives as a string (the SDK refuses anything else), so numbers, lists and JSON are parsed here, and each
mistake is reported as one `ConfigurationError` naming the key. The password is kept out of every repr.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
from dataclasses import dataclass, field
from typing import Any

from ssh_tunnel import SshKeyError, SshSettings, parse_host_key, parse_private_key

REQUIRED_KEYS = ("HOST", "PORT", "DATABASE", "USERNAME", "PASSWORD")
OPTIONAL_KEYS = (
    "SCHEMAS",
    "TABLES",
    "EXCLUDE_TABLES",
    "EXCLUDE_COLUMNS",
    "CURSOR_COLUMNS",
    "PRIMARY_KEYS",
    "SSLMODE",
    "SSLROOTCERT",
    "BATCH_SIZE",
    "CHECKPOINT_ROWS",
    "CHECKPOINT_MEGABYTES",
    "CHECKPOINT_SECONDS",
    "LOOKBACK_SECONDS",
    "CONNECT_TIMEOUT_SECONDS",
    "RETRY_SECONDS",
    "QUERIES",
    "DELETE_CHECKS",
    "SSH_HOST",
    "SSH_PORT",
    "SSH_USER",
    "SSH_PRIVATE_KEY",
    "SSH_PASSPHRASE",
    "SSH_HOST_KEY",
)
KNOWN_KEYS = REQUIRED_KEYS + OPTIONAL_KEYS
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
DEFAULT_BATCH_SIZE = 5000
DEFAULT_CHECKPOINT_ROWS = 10000
# What the SDK holds of the rows sent until the next checkpoint: 64 MB of values keeps the connector's process far
# below Fivetran's 1 GB, whatever the rows' width (4,000 rows of 1 MB checkpoint every 64 rows).
DEFAULT_CHECKPOINT_MEGABYTES = 64
DEFAULT_CHECKPOINT_SECONDS = 60
DEFAULT_LOOKBACK_SECONDS = 300
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10
DEFAULT_RETRY_SECONDS = 300


class ConfigurationError(ValueError):
    """A configuration value is missing or malformed; the message names the key."""


@dataclass(frozen=True)
class TablePattern:
    """A `schema.table` shell glob from TABLES or EXCLUDE_TABLES (matching is case-sensitive, like the catalog)."""

    schema: str
    table: str

    def matches(self, schema: str, table: str) -> bool:
        return fnmatch.fnmatchcase(schema, self.schema) and fnmatch.fnmatchcase(table, self.table)

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class ColumnPattern:
    """A `schema.table.column` shell glob from EXCLUDE_COLUMNS."""

    table: TablePattern
    column: str

    def matches(self, schema: str, table: str, column: str) -> bool:
        return self.table.matches(schema, table) and fnmatch.fnmatchcase(column, self.column)

    def __str__(self) -> str:
        return f"{self.table}.{self.column}"


@dataclass(frozen=True)
class DeleteCheck:
    """A DELETE_CHECKS entry: how often an incremental table's deletes are looked for, in hours (0: every sync; None:
    never). Custom queries are named `queries.<table>`; an entry without a pattern (`off`, `24`) applies to every
    table no other entry names."""

    pattern: TablePattern | None
    hours: int | None

    def __str__(self) -> str:
        value = "off" if self.hours is None else str(self.hours)
        return value if self.pattern is None else f"{self.pattern}:{value}"


@dataclass(frozen=True)
class CustomQuery:
    """A table defined by a SELECT, synced incrementally on its declared cursor column."""

    table: str
    query: str
    primary_key: tuple[str, ...]
    cursor: str | None


@dataclass(frozen=True)
class Settings:
    """Everything the connector reads from its configuration, typed."""

    host: str
    port: int
    database: str
    username: str
    password: str = field(repr=False)
    schemas: tuple[str, ...] = ()
    tables: tuple[TablePattern, ...] = ()
    exclude_tables: tuple[TablePattern, ...] = ()
    exclude_columns: tuple[ColumnPattern, ...] = ()
    cursor_columns: dict[tuple[str, str], str] = field(default_factory=dict)
    primary_keys: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    sslmode: str = "prefer"
    sslrootcert: str | None = field(default=None, repr=False)
    batch_size: int = DEFAULT_BATCH_SIZE
    checkpoint_rows: int = DEFAULT_CHECKPOINT_ROWS
    checkpoint_megabytes: int = DEFAULT_CHECKPOINT_MEGABYTES
    checkpoint_seconds: int = DEFAULT_CHECKPOINT_SECONDS
    lookback_seconds: int = DEFAULT_LOOKBACK_SECONDS
    connect_timeout_seconds: int = DEFAULT_CONNECT_TIMEOUT_SECONDS
    retry_seconds: int = DEFAULT_RETRY_SECONDS
    queries: tuple[CustomQuery, ...] = ()
    delete_checks: tuple[DeleteCheck, ...] = ()
    ssh: SshSettings | None = field(default=None, repr=False)  # the bastion to tunnel through, when SSH_HOST is set

    def table_selected(self, schema: str, table: str) -> bool:
        """TABLES (default: all) minus EXCLUDE_TABLES; SCHEMAS is applied by discovery."""
        if self.tables and not any(p.matches(schema, table) for p in self.tables):
            return False
        return not any(p.matches(schema, table) for p in self.exclude_tables)

    def column_excluded(self, schema: str, table: str, column: str) -> bool:
        return any(p.matches(schema, table, column) for p in self.exclude_columns)

    def delete_check_hours(self, schema: str, table: str) -> int | None:
        """Hours between two checks of an incremental table's deletes, from the first DELETE_CHECKS entry that names
        it: 0 (every sync) by default, None when they are off."""
        for check in self.delete_checks:
            if check.pattern is not None and check.pattern.matches(schema, table):
                return check.hours
        return next((check.hours for check in self.delete_checks if check.pattern is None), 0)


def parse_settings(configuration: dict[str, Any]) -> Settings:
    """Validates the SDK's configuration dict; raises ConfigurationError naming the first wrong key.

    Missing required keys are all listed at once, since a user fixing a new configuration wants them together.
    """
    if not isinstance(configuration, dict):
        raise ConfigurationError("The configuration must be a JSON object of string values.")
    for key, value in configuration.items():
        if not isinstance(value, str):
            raise ConfigurationError(f"{key}: every configuration value must be a string, got {type(value).__name__}.")
    missing = [key for key in REQUIRED_KEYS if not configuration.get(key, "").strip()]
    if missing:
        raise ConfigurationError(f"Missing required configuration value(s): {', '.join(missing)}.")

    sslmode = _text(configuration, "SSLMODE") or "prefer"
    if sslmode not in SSL_MODES:
        raise ConfigurationError(f"SSLMODE: '{sslmode}' is not one of {', '.join(SSL_MODES)}.")
    sslrootcert = _text(configuration, "SSLROOTCERT") or None
    if sslmode in ("verify-ca", "verify-full") and not sslrootcert:
        raise ConfigurationError(f"SSLROOTCERT: SSLMODE {sslmode} needs the CA certificate (PEM text).")
    if sslrootcert and "-----BEGIN CERTIFICATE-----" not in sslrootcert:
        raise ConfigurationError("SSLROOTCERT: expected PEM text starting with -----BEGIN CERTIFICATE-----.")

    return Settings(
        host=configuration["HOST"].strip(),
        port=_integer(configuration, "PORT", None, low=1, high=65535),
        database=configuration["DATABASE"].strip(),
        username=configuration["USERNAME"].strip(),
        password=configuration["PASSWORD"],
        schemas=tuple(_list(configuration, "SCHEMAS")),
        tables=tuple(_table_pattern("TABLES", p) for p in _list(configuration, "TABLES")),
        exclude_tables=tuple(_table_pattern("EXCLUDE_TABLES", p) for p in _list(configuration, "EXCLUDE_TABLES")),
        exclude_columns=tuple(_column_pattern(p) for p in _list(configuration, "EXCLUDE_COLUMNS")),
        cursor_columns=_cursor_columns(configuration),
        primary_keys=_primary_keys(configuration),
        sslmode=sslmode,
        sslrootcert=sslrootcert,
        batch_size=_integer(configuration, "BATCH_SIZE", DEFAULT_BATCH_SIZE, low=1, high=1_000_000),
        checkpoint_rows=_integer(configuration, "CHECKPOINT_ROWS", DEFAULT_CHECKPOINT_ROWS, low=1, high=10_000_000),
        checkpoint_megabytes=_integer(
            configuration, "CHECKPOINT_MEGABYTES", DEFAULT_CHECKPOINT_MEGABYTES, low=1, high=100_000
        ),
        checkpoint_seconds=_integer(
            configuration, "CHECKPOINT_SECONDS", DEFAULT_CHECKPOINT_SECONDS, low=1, high=86_400
        ),
        lookback_seconds=_integer(configuration, "LOOKBACK_SECONDS", DEFAULT_LOOKBACK_SECONDS, low=0, high=10**9),
        connect_timeout_seconds=_integer(
            configuration, "CONNECT_TIMEOUT_SECONDS", DEFAULT_CONNECT_TIMEOUT_SECONDS, low=1, high=3600
        ),
        retry_seconds=_integer(configuration, "RETRY_SECONDS", DEFAULT_RETRY_SECONDS, low=0, high=86400),
        queries=_queries(configuration),
        delete_checks=_delete_checks(configuration),
        ssh=_ssh(configuration),
    )


def unknown_keys(configuration: dict[str, Any]) -> list[str]:
    """A warning for each key the connector does not know, with the nearest known key: a typo such as
    CURSOR_COLUMN would otherwise change nothing, silently. Not an error: a deployment may carry other keys."""
    messages = []
    for key in sorted(set(configuration) - set(KNOWN_KEYS)):
        near = difflib.get_close_matches(key.upper(), KNOWN_KEYS, n=1, cutoff=0.7)
        hint = f" (did you mean {near[0]}?)" if near else ""
        messages.append(f"Configuration key '{key}' is not one this connector knows, so it changes nothing{hint}.")
    return messages


def _ssh(configuration: dict[str, Any]) -> SshSettings | None:
    """The bastion, checked before connecting: every SSH key it needs, a readable private key, a host key line."""
    if not _text(configuration, "SSH_HOST"):
        stray = [key for key in KNOWN_KEYS if key.startswith("SSH_") and _text(configuration, key)]
        if stray:
            raise ConfigurationError(f"{stray[0]}: it applies only through a bastion; set SSH_HOST, or leave it empty.")
        return None
    missing = [key for key in ("SSH_USER", "SSH_PRIVATE_KEY") if not _text(configuration, key)]
    if missing:
        raise ConfigurationError(f"SSH_HOST is set: {', '.join(missing)} must be set too.")
    try:
        private_key = parse_private_key(configuration["SSH_PRIVATE_KEY"].strip(), configuration.get("SSH_PASSPHRASE"))
        # Without SSH_HOST_KEY every host key is unknown: the tunnel refuses it and shows the one offered.
        host_key = parse_host_key(configuration["SSH_HOST_KEY"]) if _text(configuration, "SSH_HOST_KEY") else None
    except SshKeyError as error:
        raise ConfigurationError(str(error)) from None
    return SshSettings(
        host=_text(configuration, "SSH_HOST"),
        port=_integer(configuration, "SSH_PORT", 22, low=1, high=65535),
        user=_text(configuration, "SSH_USER"),
        private_key=private_key,
        host_key=host_key,
    )


def _text(configuration: dict[str, Any], key: str) -> str:
    return configuration.get(key, "").strip()


def _list(configuration: dict[str, Any], key: str) -> list[str]:
    return [item.strip() for item in _text(configuration, key).split(",") if item.strip()]


def _integer(configuration: dict[str, Any], key: str, default: int | None, *, low: int, high: int) -> int:
    raw = _text(configuration, key)
    if not raw and default is not None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{key}: '{raw}' is not a whole number.") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{key}: {value} is outside the allowed range {low} to {high}.")
    return value


def _table_pattern(key: str, text: str) -> TablePattern:
    schema, dot, table = text.partition(".")
    if not dot or not schema or not table:
        raise ConfigurationError(f"{key}: '{text}' is not of the form schema.table (globs allowed, e.g. sales.*).")
    return TablePattern(schema, table)


def _column_pattern(text: str) -> ColumnPattern:
    parts = text.split(".")
    if len(parts) != 3 or not all(parts):
        raise ConfigurationError(f"EXCLUDE_COLUMNS: '{text}' is not of the form schema.table.column.")
    return ColumnPattern(TablePattern(parts[0], parts[1]), parts[2])


def _cursor_columns(configuration: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {table: column for table, column in _table_items(configuration, "CURSOR_COLUMNS", "schema.table:column")}


def _primary_keys(configuration: dict[str, Any]) -> dict[tuple[str, str], tuple[str, ...]]:
    keys = {}
    for table, columns in _table_items(configuration, "PRIMARY_KEYS", "schema.table:column1+column2"):
        names = tuple(name.strip() for name in columns.split("+"))
        if not all(names) or len(set(names)) != len(names):
            raise ConfigurationError(
                f"PRIMARY_KEYS: '{table[0]}.{table[1]}:{columns}' must name distinct columns joined by '+'."
            )
        keys[table] = names
    return keys


def _delete_checks(configuration: dict[str, Any]) -> tuple[DeleteCheck, ...]:
    checks = []
    for item in _list(configuration, "DELETE_CHECKS"):
        table, colon, value = item.rpartition(":")
        value = value.strip().lower()
        if not (value == "off" or value.isdigit()) or (colon and not table.strip()):
            raise ConfigurationError(
                f"DELETE_CHECKS: '{item}' is not of the form schema.table:hours or hours alone (0 for every sync, or "
                "off)."
            )
        hours = None if value == "off" else int(value)
        if hours is not None and hours > 24 * 366:
            raise ConfigurationError(f"DELETE_CHECKS: '{item}': at most {24 * 366} hours between checks.")
        if not colon and any(check.pattern is None for check in checks):
            raise ConfigurationError(f"DELETE_CHECKS: '{item}': a second value for every table.")
        pattern = _table_pattern("DELETE_CHECKS", table.strip()) if colon else None
        checks.append(DeleteCheck(pattern, hours))
    return tuple(checks)


def _table_items(configuration: dict[str, Any], key: str, form: str) -> list[tuple[tuple[str, str], str]]:
    """`schema.table:value` items of a comma-separated list; a table named twice is a mistake, not an override."""
    items: list[tuple[tuple[str, str], str]] = []
    for item in _list(configuration, key):
        table, colon, value = item.partition(":")
        schema, dot, name = table.partition(".")
        if not (colon and dot and schema and name and value.strip()):
            raise ConfigurationError(f"{key}: '{item}' is not of the form {form}.")
        if any(existing == (schema, name) for existing, _ in items):
            raise ConfigurationError(f"{key}: table '{schema}.{name}' is named twice.")
        items.append(((schema, name), value.strip()))
    return items


def _queries(configuration: dict[str, Any]) -> tuple[CustomQuery, ...]:
    raw = _text(configuration, "QUERIES")
    if not raw:
        return ()
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ConfigurationError(f"QUERIES: not valid JSON ({error.msg} at position {error.pos}).") from None
    if not isinstance(entries, list):
        raise ConfigurationError("QUERIES: expected a JSON array of objects.")
    queries = []
    for index, entry in enumerate(entries):
        where = f"QUERIES[{index}]"
        if not isinstance(entry, dict):
            raise ConfigurationError(f"{where}: expected an object with table, query, primary_key and cursor.")
        unknown = set(entry) - {"table", "query", "primary_key", "cursor"}
        if unknown:
            raise ConfigurationError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}.")
        table, query = entry.get("table"), entry.get("query")
        if not isinstance(table, str) or not table.strip():
            raise ConfigurationError(f"{where}: 'table' must be a non-empty string.")
        if not isinstance(query, str) or not query.strip():
            raise ConfigurationError(f"{where}: 'query' must be a non-empty SELECT statement.")
        primary_key = entry.get("primary_key", [])
        if not isinstance(primary_key, list) or not all(isinstance(c, str) and c for c in primary_key):
            raise ConfigurationError(f"{where}: 'primary_key' must be a list of column names.")
        cursor = entry.get("cursor")
        if cursor is not None and (not isinstance(cursor, str) or not cursor):
            raise ConfigurationError(f"{where}: 'cursor' must be a column name.")
        queries.append(CustomQuery(table.strip(), query.strip().rstrip(";"), tuple(primary_key), cursor))
    names = [q.table for q in queries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigurationError(f"QUERIES: table name(s) used twice: {', '.join(duplicates)}.")
    return tuple(queries)
