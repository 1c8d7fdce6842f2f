"""One `TablePlan` per destination table, built from discovery and the settings, feeding both schema() and update().

The plan decides everything about a table before a row is read: its destination name, declared columns and types,
key, cursor column and strategy. Configuration that names something that does not exist fails here, naming the key.
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

import psycopg2.errors
from psycopg2 import sql

from catalog import Discovery, RelationKind, RowLocator, SourceTable, TypeResolver
from configuration import ConfigurationError, CustomQuery, Settings
from greenplum_client import GreenplumClient, is_connection_lost, one_line
from quoting import Identifier, subquery
from type_mapping import FivetranType, ReadAs, SourceType, cursor_kind, fivetran_type
from values import (
    ColumnCheck,
    dates_in_range,
    decimals_finite,
    floats4_storable,
    floats8_storable,
    json_decoded,
)

# The source changed under one table (dropped or renamed, a column gone, a grant revoked): that table is left out
# (a custom query that cannot be described, a read that fails) and the others still sync.
SOURCE_CHANGED = (
    psycopg2.errors.UndefinedTable,
    psycopg2.errors.UndefinedColumn,
    psycopg2.errors.InsufficientPrivilege,
)
CURSOR_COLUMN_NAMES = ("updated_at", "modified_at", "last_modified", "last_updated", "updated")
# The key of a keyless table's rows in the destination: leaf and ordinal within the leaf (full), or the row's hash and
# its ordinal among identical rows (append-only). Identical rows stay distinct, and a re-read row keeps its id.
ROW_ID_COLUMN = "_source_row_id"
# What every plan's relation is named in its statements, so that the reads can name the source's own columns.
SOURCE_ALIAS = "_fivetran_source"
# The schema custom queries are named under in table patterns (DELETE_CHECKS): `queries.<table>`.
QUERIES_SCHEMA = "queries"
# What each batch's column of a type goes through before it is sent: values no destination type can hold become NULL
# (with a warning), and JSON text is decoded.
_COLUMN_CHECKS: dict[str, ColumnCheck] = {
    "DECIMAL": decimals_finite,
    "NAIVE_DATE": dates_in_range,
    "NAIVE_DATETIME": dates_in_range,
    "UTC_DATETIME": dates_in_range,
    "FLOAT": floats4_storable,
    "DOUBLE": floats8_storable,
    "JSON": json_decoded,
}


class Strategy(enum.Enum):
    INCREMENTAL = "incremental"
    FULL_WITH_KEY = "full with key"
    FULL_WITHOUT_KEY = "full without key"
    APPEND_ONLY = "append only"

    @property
    def is_full(self) -> bool:
        """Full strategies re-read what changed, found by digests of the leaves."""
        return self in (Strategy.FULL_WITH_KEY, Strategy.FULL_WITHOUT_KEY)

    @property
    def has_row_ids(self) -> bool:
        return self in (Strategy.FULL_WITHOUT_KEY, Strategy.APPEND_ONLY)


@dataclass(frozen=True)
class PlannedColumn:
    name: str
    fivetran: FivetranType
    source_type: str = ""  # the base type's name (int4, numeric, _text, ...): how a digest hashes the column
    landed: str = ""  # the name it is sent under where it would land as another column (`destination_names.py`)

    @property
    def destination_name(self) -> str:
        return self.landed or self.name

    def select_expression(self) -> sql.Composable:
        column = Identifier(self.name)
        read_as = self.fivetran.read_as
        if read_as is ReadAs.TEXT:
            return sql.SQL("{}::text").format(column)
        if read_as is ReadAs.JSON:
            return sql.SQL("to_json({})").format(column)
        if read_as is ReadAs.NUMERIC_TEXT:
            return sql.SQL("{}::numeric::text").format(column)
        if read_as is ReadAs.JSON_OF_TEXT:
            return sql.SQL("to_json({}::text[])").format(column)
        if read_as is ReadAs.JSON_OF_NUMERIC_TEXT:
            return sql.SQL("to_json({}::numeric[]::text[])").format(column)
        return column


@dataclass(frozen=True)
class CursorColumn:
    name: str
    kind: str  # "timestamp", "date" or "integer": how the lookback is subtracted
    nullable: bool
    indexed: bool


@dataclass(frozen=True)
class TablePlan:
    state_key: str
    destination_schema: str | None  # None: the connection's default schema (custom queries)
    destination_table: str
    relation: sql.Composable  # what follows FROM
    columns: tuple[PlannedColumn, ...]
    primary_key: tuple[str, ...]
    cursor: CursorColumn | None
    strategy: Strategy
    row_locator: RowLocator
    split_by_segment: bool
    estimated_rows: int
    description: str  # kind, storage, distribution and key origin, for the log
    leaf_key: str  # the name of the only leaf of a relation that is not partitioned (its oid)
    partitioned: bool  # leaves are told apart by tableoid
    declared_key: bool  # the key comes from PRIMARY_KEYS, so it is checked unique at the source
    delete_check_hours: int | None = 0  # incremental: hours between checks of its deletes (None: never)

    def declaration(self) -> dict[str, object]:
        """The table as schema() declares it."""
        columns = {column.destination_name: column.fivetran.declaration() for column in self.columns}
        if self.strategy.has_row_ids:
            columns[ROW_ID_COLUMN] = "STRING"
        table: dict[str, object] = {"table": self.destination_table, "columns": columns}
        if self.primary_key or self.strategy.has_row_ids:
            table["primary_key"] = [self.sent_as.get(name, name) for name in self.primary_key] or [ROW_ID_COLUMN]
        if self.destination_schema is not None:
            table["schema"] = self.destination_schema
        return table

    @cached_property
    def sent_as(self) -> dict[str, str]:
        """Source column -> the name it is sent under, for the columns sent under another name."""
        return {column.name: column.landed for column in self.columns if column.landed}

    @property
    def column_checks(self) -> tuple[tuple[int, str, ColumnCheck], ...]:
        """(index, name, check) of the columns whose batches need a check before they are sent."""
        return tuple(
            (index, column.name, _COLUMN_CHECKS[column.fivetran.name])
            for index, column in enumerate(self.columns)
            if column.fivetran.name in _COLUMN_CHECKS and column.fivetran.read_as is not ReadAs.FLOAT_ARRAY
        )


@dataclass(frozen=True)
class Planning:
    """The plans of the tables to sync, and the warnings that say which settings match nothing or no longer apply
    (each names its key), and which tables are left out for it."""

    plans: list[TablePlan]
    warnings: list[str]
    renamed: list[str] = field(default_factory=list)  # names sent under another (`destination_names.keep_apart`)


def plan_tables(settings: Settings, discovery: Discovery, client: GreenplumClient, *, strict: bool) -> Planning:
    """Plans for the selected tables and the custom queries.

    `strict` (the setup form's test, a first sync): a name that matches nothing is most likely a typo, and a setting
    that cannot apply to its table a mistake: both raise ConfigurationError naming the key. Otherwise (later syncs:
    a table was dropped, a column renamed) each is a warning, the table it concerns is left out, and every other
    table syncs. A schema that exists but has no table yet is a warning either way.
    """
    warnings = []
    for message, likely_typo in _unmatched(settings, discovery):
        if likely_typo and strict:
            raise ConfigurationError(message)
        warnings.append(message)
    plans = []
    for table in discovery.tables:
        if not _wanted(settings, table) or _unreadable_reason(table) is not None:
            continue
        try:
            plans.append(_plan_table(settings, table))
        except ConfigurationError as error:
            if strict:
                raise
            warnings.append(f"{error} {table.qualified_name} is not synced until that is fixed.")
    for query in settings.queries:
        try:
            plans.append(_plan_query(settings, query, client))
        except (ConfigurationError, *SOURCE_CHANGED) as error:
            if strict:
                raise
            reason = one_line(error).removeprefix(f"QUERIES table '{query.table}': ")
            warnings.append(f"QUERIES table '{query.table}' is not synced: {reason}")
    incremental = [plan for plan in plans if plan.strategy is Strategy.INCREMENTAL]
    for check in settings.delete_checks:
        if check.pattern is None:  # every table's: it names none
            continue
        if not any(check.pattern.matches(*_pattern_name(plan)) for plan in incremental):
            message = f"DELETE_CHECKS: '{check.pattern}' matches no incremental table (or custom query with a cursor)."
            if strict:
                raise ConfigurationError(message)
            warnings.append(message)
    return Planning(plans, warnings)


def _pattern_name(plan: TablePlan) -> tuple[str, str]:
    """(schema, table) as table patterns name the plan's table; custom queries are `queries.<table>`."""
    return (plan.destination_schema or QUERIES_SCHEMA, plan.destination_table)


def unreadable_tables(settings: Settings, discovery: Discovery) -> dict[str, str]:
    """Selected tables the user may not read, which plan_tables leaves out: name -> why, for a warning."""
    reasons = {t.qualified_name: _unreadable_reason(t) for t in discovery.tables if _wanted(settings, t)}
    return {name: reason for name, reason in reasons.items() if reason is not None}


def _unreadable_reason(table: SourceTable) -> str | None:
    """Why the user cannot read the table (a revoked grant, say); None when it can."""
    if table.columns and not any(column.readable for column in table.columns):
        return "permission denied: the user has no SELECT privilege on it"
    unreadable_key = [c.name for c in table.columns if c.name in table.primary_key and not c.readable]
    if unreadable_key:
        return f"permission denied for key column(s) {', '.join(unreadable_key)}"
    return None


def _wanted(settings: Settings, table: SourceTable) -> bool:
    if table.kind in (RelationKind.VIEW, RelationKind.MATERIALIZED_VIEW):
        # Views are re-read in full on every sync: only when the user names one exactly.
        return any(p.schema == table.schema and p.table == table.name for p in settings.tables) and not any(
            p.matches(table.schema, table.name) for p in settings.exclude_tables
        )
    return settings.table_selected(table.schema, table.name)


def _unmatched(settings: Settings, discovery: Discovery) -> Iterator[tuple[str, bool]]:
    """(message naming the key, whether it is most likely a typo) for each name that matches nothing."""
    names = [(t.schema, t.name) for t in discovery.tables]
    schemas = set(discovery.schemas)
    for key, patterns in (("TABLES", settings.tables), ("EXCLUDE_TABLES", settings.exclude_tables)):
        for pattern in patterns:
            if any(pattern.matches(schema, name) for schema, name in names):
                continue
            if pattern.table == "*" and any(fnmatch.fnmatchcase(schema, pattern.schema) for schema in schemas):
                yield f"{key}: '{pattern}' matches no table yet: its schema has none.", False
            else:
                yield f"{key}: '{pattern}' matches no table the user can see.", True
    for schema in settings.schemas:
        if any(t.schema == schema for t in discovery.tables):
            continue
        if schema in schemas:
            yield f"SCHEMAS: schema '{schema}' has no table yet.", False
        else:
            yield f"SCHEMAS: schema '{schema}' does not exist, or the user may not use it.", True
    for pattern in settings.exclude_columns:
        if not any(pattern.matches(t.schema, t.name, c.name) for t in discovery.tables for c in t.columns):
            yield f"EXCLUDE_COLUMNS: '{pattern}' matches no column.", True
    tables = {(t.schema, t.name): t for t in discovery.tables}
    for key, named in (("CURSOR_COLUMNS", settings.cursor_columns), ("PRIMARY_KEYS", settings.primary_keys)):
        for schema, name in named:
            table = tables.get((schema, name))
            if table is None:
                yield f"{key}: table '{schema}.{name}' does not exist or is not readable.", True
            elif not _wanted(settings, table):
                yield (
                    f"{key}: '{schema}.{name}' is not synced (TABLES, EXCLUDE_TABLES; views only when named in "
                    "TABLES).",
                    True,
                )


def _declared_key(settings: Settings, table: SourceTable) -> tuple[str, ...] | None:
    """The table's PRIMARY_KEYS entry, checked against its columns and its own key."""
    key = settings.primary_keys.get((table.schema, table.name))
    if key is None:
        return None
    unknown = [column for column in key if column not in {c.name for c in table.columns}]
    if unknown:
        raise ConfigurationError(f"PRIMARY_KEYS: '{table.qualified_name}' has no column(s) {', '.join(unknown)}.")
    if table.primary_key:
        raise ConfigurationError(
            f"PRIMARY_KEYS: '{table.qualified_name}' already has a key ({table.key_origin} on "
            f"{', '.join(table.primary_key)}); a declared key applies only to a table without one."
        )
    return key


def _plan_table(settings: Settings, table: SourceTable) -> TablePlan:
    columns = []
    for column in table.columns:
        if not column.readable or settings.column_excluded(table.schema, table.name, column.name):
            continue
        columns.append(PlannedColumn(column.name, fivetran_type(column.source_type), column.source_type.name))
    names = {c.name for c in columns}
    declared_key = _declared_key(settings, table)
    primary_key = declared_key or table.primary_key
    key_origin = "PRIMARY_KEYS" if declared_key else table.key_origin
    missing_key = [k for k in primary_key if k not in names]
    if missing_key:
        raise ConfigurationError(
            f"EXCLUDE_COLUMNS: key column(s) {', '.join(missing_key)} of {table.qualified_name} cannot be excluded "
            "(or are not readable by the user)."
        )
    cursor = _cursor_column(settings, table, names)
    declared_cursor = (table.schema, table.name) in settings.cursor_columns
    strategy = _strategy(primary_key, cursor, append_only=declared_cursor)
    relation = sql.SQL("ONLY {} AS {}" if table.read_only_self else "{} AS {}").format(
        Identifier(table.schema, table.name), Identifier(SOURCE_ALIAS)
    )
    details = [table.kind.value, f"storage {table.storage}"]
    if table.distributed_by:
        details.append(table.distributed_by)
    details.append(f"key from {key_origin}" if primary_key else "no key")
    return TablePlan(
        state_key=table.qualified_name,
        destination_schema=table.schema,
        destination_table=table.name,
        relation=relation,
        columns=tuple(columns),
        primary_key=primary_key,
        cursor=cursor if strategy in (Strategy.INCREMENTAL, Strategy.APPEND_ONLY) else None,
        strategy=strategy,
        row_locator=table.row_locator,
        split_by_segment=table.split_by_segment,
        estimated_rows=table.estimated_rows,
        description=", ".join(details),
        leaf_key=str(table.oid),
        # A replicated root hides tableoid: its leaves cannot be told apart, so the root is one leaf.
        partitioned=table.kind is RelationKind.PARTITIONED and not table.replicated,
        declared_key=declared_key is not None,
        delete_check_hours=settings.delete_check_hours(table.schema, table.name),
    )


def _cursor_column(settings: Settings, table: SourceTable, names: set[str]) -> CursorColumn | None:
    by_name = {c.name: c for c in table.columns if c.name in names}
    override = settings.cursor_columns.get((table.schema, table.name))
    if override is not None and override not in {c.name for c in table.columns}:
        raise ConfigurationError(f"CURSOR_COLUMNS: '{table.qualified_name}' has no column '{override}'.")
    if override is not None:
        column = by_name.get(override)
        kind = cursor_kind(column.source_type) if column else None
        if kind is None:
            raise ConfigurationError(
                f"CURSOR_COLUMNS: {table.qualified_name}.{override} must be a readable timestamp, date or integer "
                "column."
            )
        return CursorColumn(override, kind, not column.not_null, override in table.indexed_columns)
    lowered = {name.lower(): column for name, column in by_name.items()}
    for candidate in CURSOR_COLUMN_NAMES:
        column = lowered.get(candidate)
        if column is not None and cursor_kind(column.source_type):
            return CursorColumn(
                column.name, cursor_kind(column.source_type), not column.not_null, column.name in table.indexed_columns
            )
    return None


def _strategy(primary_key: tuple[str, ...], cursor: CursorColumn | None, *, append_only: bool) -> Strategy:
    """A keyless table whose cursor the user named (CURSOR_COLUMNS) only receives inserts: append-only."""
    if primary_key and cursor is not None:
        return Strategy.INCREMENTAL
    if primary_key:
        return Strategy.FULL_WITH_KEY
    return Strategy.APPEND_ONLY if append_only and cursor is not None else Strategy.FULL_WITHOUT_KEY


def _plan_query(settings: Settings, query: CustomQuery, client: GreenplumClient) -> TablePlan:
    where = f"QUERIES table '{query.table}'"
    relation = subquery(query.query, SOURCE_ALIAS)
    try:
        description = client.describe(relation)
    except psycopg2.Error as error:
        if is_connection_lost(error):
            raise
        diagnostics = getattr(error, "diag", None)
        reason = one_line((diagnostics and diagnostics.message_primary) or error)
        raise ConfigurationError(f"{where}: the server rejects the query: {reason}") from None
    resolver = TypeResolver(client, {column.type_code for column in description})
    columns = []
    kinds = {}
    for column in description:
        source = resolver.resolve(column.type_code, -1)
        if source.name == "numeric":
            source = SourceType("numeric", source.category, column.precision, column.scale)
        columns.append(PlannedColumn(column.name, fivetran_type(source), source.name))
        kinds[column.name] = cursor_kind(source)
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{where}: the query returns a column name twice; give each column its own alias.")
    for key in query.primary_key:
        if key not in names:
            raise ConfigurationError(f"{where}: primary_key column '{key}' is not among the query's columns.")
    cursor = None
    if query.cursor is not None:
        if query.cursor not in names:
            raise ConfigurationError(f"{where}: cursor column '{query.cursor}' is not among the query's columns.")
        if kinds[query.cursor] is None:
            raise ConfigurationError(f"{where}: cursor column '{query.cursor}' must be a timestamp, date or integer.")
        cursor = CursorColumn(query.cursor, kinds[query.cursor], nullable=True, indexed=True)
    strategy = _strategy(query.primary_key, cursor, append_only=False)
    if cursor is not None and strategy is not Strategy.INCREMENTAL:
        raise ConfigurationError(f"{where}: a cursor needs a primary_key, so that re-read rows replace themselves.")
    return TablePlan(
        state_key=f"query:{query.table}",
        destination_schema=None,
        destination_table=query.table,
        relation=relation,
        columns=tuple(columns),
        primary_key=query.primary_key,
        cursor=cursor,
        strategy=strategy,
        row_locator=RowLocator.NONE,
        split_by_segment=False,
        estimated_rows=0,
        description="custom query",
        leaf_key="query",
        partitioned=False,
        declared_key=False,
        delete_check_hours=settings.delete_check_hours(QUERIES_SCHEMA, query.table),
    )
