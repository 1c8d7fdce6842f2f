"""Flavour detection and discovery: which relations exist, how to read each, their columns, types and keys.

The catalog queries live in `catalog_sql.py`; this module picks the ones the server's flavour has and turns their
rows into `SourceTable` records that both `schema()` and `update()` plan from.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import catalog_sql
from greenplum_client import GreenplumClient
from type_mapping import SourceType, numeric_precision_scale

REPLICATED = "DISTRIBUTED REPLICATED"  # what pg_get_table_distributedby() says of a replicated table
SYSTEM_SCHEMAS = ["pg_catalog", "information_schema", "gp_toolkit", "pg_aoseg", "pg_bitmapindex", "pg_ext_aux"]


class Flavour(enum.Enum):
    POSTGRES = "PostgreSQL"
    GREENPLUM5 = "Greenplum 5"
    GREENPLUM6 = "Greenplum 6"
    GREENPLUM7 = "Greenplum 7"
    CLOUDBERRY = "Cloudberry"

    @property
    def is_greenplum(self) -> bool:
        return self is not Flavour.POSTGRES


@dataclass(frozen=True)
class ServerInfo:
    flavour: Flavour
    version: str  # version()'s full text, for the log
    server_version_num: int
    has_relispartition: bool


class RelationKind(enum.Enum):
    TABLE = "table"
    PARTITIONED = "partitioned table"
    VIEW = "view"
    MATERIALIZED_VIEW = "materialized view"
    FOREIGN = "foreign table"
    EXTERNAL = "external table"


class RowLocator(enum.Enum):
    """How a keyless leaf's read orders its rows so that it can resume: by `ctid`, unique within one leaf on one
    segment (so on Greenplum a keyless leaf is read one segment at a time), or not at all (a view, a custom query, a
    replicated table whose system columns are hidden: such a read starts again from the beginning)."""

    CTID = "ctid"
    NONE = "none"


@dataclass(frozen=True)
class SourceColumn:
    name: str
    source_type: SourceType
    not_null: bool
    readable: bool


@dataclass(frozen=True)
class SourceTable:
    oid: int
    schema: str
    name: str
    kind: RelationKind
    columns: tuple[SourceColumn, ...]
    primary_key: tuple[str, ...]
    key_origin: str  # "primary key", "unique index <name>", or "" when keyless
    estimated_rows: int
    storage: str
    distributed_by: str | None
    read_only_self: bool  # FROM ONLY: an INHERITS parent must not return its children's rows again
    row_locator: RowLocator
    split_by_segment: bool  # Greenplum: read a keyless relation segment by segment, each part resumable
    indexed_columns: frozenset[str]
    replicated: bool = False  # DISTRIBUTED REPLICATED: read once, without system columns (tableoid, ctid, ...)

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class SkippedRelation:
    schema: str
    name: str
    reason: str


@dataclass(frozen=True)
class Discovery:
    tables: tuple[SourceTable, ...]
    skipped: tuple[SkippedRelation, ...]
    schemas: tuple[str, ...] = ()  # every non-system schema the user may use, with a table or not


_KIND_BY_RELKIND = {
    "r": RelationKind.TABLE,
    "p": RelationKind.PARTITIONED,
    "v": RelationKind.VIEW,
    "m": RelationKind.MATERIALIZED_VIEW,
    "f": RelationKind.FOREIGN,
}


def detect_flavour(version_text: str) -> Flavour:
    """The flavour from version(): Greenplum and Cloudberry name themselves after the PostgreSQL base."""
    if "Cloudberry" in version_text:
        return Flavour.CLOUDBERRY
    match = re.search(r"Greenplum Database (\d+)", version_text)
    if match is None:
        return Flavour.POSTGRES
    major = int(match.group(1))
    if major <= 5:
        return Flavour.GREENPLUM5
    return Flavour.GREENPLUM6 if major == 6 else Flavour.GREENPLUM7


def server_info(client: GreenplumClient) -> ServerInfo:
    ((version_text, version_num),) = client.query("SELECT version(), current_setting('server_version_num')::int")
    (has_relispartition,) = client.query(
        catalog_sql.COLUMN_EXISTS, {"relation": "pg_catalog.pg_class", "column": "relispartition"}
    )[0]
    return ServerInfo(detect_flavour(version_text), version_text, version_num, has_relispartition)


def relations_query(info: ServerInfo) -> str:
    """The relation listing that is valid on this server's catalog."""
    if _is_legacy_greenplum(info):
        return catalog_sql.RELATIONS_GREENPLUM6
    if info.flavour.is_greenplum:
        return catalog_sql.RELATIONS_GREENPLUM7
    return catalog_sql.RELATIONS_POSTGRES if info.has_relispartition else catalog_sql.RELATIONS_POSTGRES_LEGACY


def discover(client: GreenplumClient, info: ServerInfo, schemas: tuple[str, ...]) -> Discovery:
    """Every relation of the given schemas (default: all non-system ones) with its columns and key.

    Foreign and external tables are listed as skipped, and so are partitioned roots with an external leaf: reading
    the root would read from outside the database.
    """
    rows = client.query(relations_query(info), {"system_schemas": SYSTEM_SCHEMAS})
    if schemas:
        rows = [row for row in rows if row[1] in schemas]
    skipped: list[SkippedRelation] = []
    candidates = []
    for oid, schema, name, relkind, reltuples, storage, distributed_by, partition_root, foreign_server in rows:
        if relkind == "f":
            external = foreign_server == "gp_exttable_server"
            reason = "external table" if external else f"foreign table (server {foreign_server})"
            skipped.append(SkippedRelation(schema, name, f"{reason}: reads from outside the database"))
            continue
        if storage == "external":
            skipped.append(SkippedRelation(schema, name, "external table: reads from outside the database"))
            continue
        kind = RelationKind.PARTITIONED if partition_root else _KIND_BY_RELKIND[relkind]
        candidates.append((oid, schema, name, kind, reltuples, storage, distributed_by))

    oids = [row[0] for row in candidates]
    partitioned = [row[0] for row in candidates if row[3] is RelationKind.PARTITIONED]
    external_leaves = _external_leaves(client, info, partitioned)
    estimates = dict(client.query(_partition_estimates_query(info), {"oids": partitioned})) if partitioned else {}
    columns = _columns(client, oids)
    keys = _keys(client, oids)
    indexed: dict[int, set[str]] = {}
    for relid, column in client.query(catalog_sql.INDEXED_LEADING_COLUMNS, {"oids": oids}) if oids else []:
        indexed.setdefault(relid, set()).add(column)

    tables = []
    for oid, schema, name, kind, reltuples, storage, distributed_by in candidates:
        if oid in external_leaves:
            leaves = ", ".join(sorted(external_leaves[oid]))
            reason = f"partitioned table with external or foreign partition(s) {leaves}"
            skipped.append(SkippedRelation(schema, name, reason))
            continue
        primary_key, key_origin = keys.get(oid, ((), ""))
        # Every segment holds all of a replicated table's rows, and the parser hides its system columns.
        replicated = distributed_by == REPLICATED
        tables.append(
            SourceTable(
                oid=oid,
                schema=schema,
                name=name,
                kind=kind,
                columns=tuple(columns.get(oid, ())),
                primary_key=primary_key,
                key_origin=key_origin,
                estimated_rows=max(int(estimates.get(oid, reltuples) or 0), 0),
                storage=storage,
                distributed_by=distributed_by or None,
                read_only_self=kind is RelationKind.TABLE,
                row_locator=RowLocator.NONE if replicated else _row_locator(kind),
                split_by_segment=info.flavour.is_greenplum and kind is not RelationKind.VIEW and not replicated,
                indexed_columns=frozenset(indexed.get(oid, ())),
                replicated=replicated,
            )
        )
    visible = [row[0] for row in client.query(catalog_sql.SCHEMAS, {"system_schemas": SYSTEM_SCHEMAS})]
    return Discovery(tuple(tables), tuple(skipped), tuple(visible))


def _is_legacy_greenplum(info: ServerInfo) -> bool:
    return info.flavour in (Flavour.GREENPLUM5, Flavour.GREENPLUM6)


def _partition_estimates_query(info: ServerInfo) -> str:
    if _is_legacy_greenplum(info):
        return catalog_sql.PARTITION_ROW_ESTIMATES_GREENPLUM6
    return catalog_sql.PARTITION_ROW_ESTIMATES


def _row_locator(kind: RelationKind) -> RowLocator:
    if kind is RelationKind.VIEW:
        return RowLocator.NONE
    return RowLocator.CTID


def _external_leaves(client: GreenplumClient, info: ServerInfo, partitioned: list[int]) -> dict[int, list[str]]:
    if not partitioned:
        return {}
    statement = catalog_sql.EXTERNAL_LEAVES_GREENPLUM6 if _is_legacy_greenplum(info) else catalog_sql.FOREIGN_LEAVES
    leaves: dict[int, list[str]] = {}
    for root, leaf in client.query(statement, {"oids": partitioned}):
        leaves.setdefault(root, []).append(leaf)
    return leaves


def _columns(client: GreenplumClient, oids: list[int]) -> dict[int, list[SourceColumn]]:
    if not oids:
        return {}
    rows = client.query(catalog_sql.COLUMNS, {"oids": oids})
    types = TypeResolver(client, {row[2] for row in rows})
    columns: dict[int, list[SourceColumn]] = {}
    for relid, name, type_oid, typmod, not_null, readable in rows:
        columns.setdefault(relid, []).append(SourceColumn(name, types.resolve(type_oid, typmod), not_null, readable))
    return columns


class TypeResolver:
    """Resolves (type oid, typmod) to a SourceType, unwrapping domains, from one catalog read."""

    def __init__(self, client: GreenplumClient, type_oids: set[int]) -> None:
        rows = client.query(catalog_sql.TYPES, {"oids": sorted(type_oids)})
        self._types = {row[0]: row[1:] for row in rows}

    def resolve(self, type_oid: int, typmod: int) -> SourceType:
        name, typtype, category, base_oid, own_typmod = self._types.get(type_oid, ("unknown", "b", "X", 0, -1))
        for _ in range(32):  # a domain chain is short; the bound guards against a catalog oddity
            if typtype != "d" or base_oid not in self._types:
                break
            typmod = own_typmod if own_typmod != -1 else typmod  # a domain over numeric(p,s) carries the typmod
            name, typtype, category, base_oid, own_typmod = self._types[base_oid]
        precision, scale = numeric_precision_scale(typmod) if name == "numeric" else (None, None)
        return SourceType(name, category, precision, scale)


def _keys(client: GreenplumClient, oids: list[int]) -> dict[int, tuple[tuple[str, ...], str]]:
    """The primary key, else the narrowest unique index whose columns are all NOT NULL."""
    if not oids:
        return {}
    best: dict[int, tuple[tuple[int, int, str], tuple[str, ...], str]] = {}
    for relid, is_primary, index_name, columns, all_not_null in client.query(catalog_sql.KEYS, {"oids": oids}):
        if not is_primary and not all_not_null:
            continue
        rank = (0 if is_primary else 1, len(columns), index_name)
        origin = "primary key" if is_primary else f"unique index {index_name}"
        if relid not in best or rank < best[relid][0]:
            best[relid] = (rank, tuple(columns), origin)
    return {relid: (columns, origin) for relid, (_, columns, origin) in best.items()}
