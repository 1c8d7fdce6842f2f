"""A table's leaves, as a full pass sees them: each partition that holds rows (the table itself when it is not
partitioned), how to read it, and its storage, which decides how its changes are found.

`Leaf` is the value that the reads (`reads.py`), the digests (`block_ranges.py`) and the append-optimized catalog
(`append_optimized.py`) all use, so it sits below them.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg2 import sql

import catalog_sql
from catalog import Flavour
from greenplum_client import GreenplumClient
from planning import TablePlan
from quoting import Identifier

APPEND_OPTIMIZED = ("ao_row", "ao_column")


@dataclass(frozen=True)
class Leaf:
    """How to read one leaf: through its own name when the user may, else through the root, filtered by tableoid."""

    key: str  # the leaf's oid, which names it in the state (the plan's leaf_key when not partitioned)
    relation: sql.Composable
    condition: sql.Composable | None = None
    params: tuple[int, ...] = ()
    storage: str = "heap"
    relfilenode: int = 0  # a new one after TRUNCATE or a rewriting ALTER TABLE

    @property
    def append_optimized(self) -> bool:
        return self.storage in APPEND_OPTIMIZED

    @property
    def literal_condition(self) -> sql.Composable | None:
        """`condition` with its parameter written in, for a statement that takes none (a COPY)."""
        return sql.SQL("tableoid = {}").format(sql.Literal(int(self.key))) if self.condition is not None else None


def leaf_order(leaf: str) -> tuple[int, str]:
    """Leaves in oid order (oids grow as leaves are created: older partitions first)."""
    return (int(leaf), leaf) if leaf.isdigit() else (-1, leaf)


def greenplum_leaves(client: GreenplumClient, flavour: Flavour, plan: TablePlan) -> list[Leaf]:
    """Every leaf of a Greenplum table with its storage, from the catalog (one query)."""
    legacy = flavour in (Flavour.GREENPLUM5, Flavour.GREENPLUM6)
    statement = catalog_sql.LEAVES_GREENPLUM6 if legacy else catalog_sql.LEAVES_GREENPLUM7
    rows = client.query(statement, {"root": int(plan.leaf_key)})
    leaves = []
    for oid, schema, name, readable, storage, relfilenode in rows:
        key = str(oid) if plan.partitioned else plan.leaf_key
        leaves.append(_leaf(plan, key, schema, name, readable, storage, relfilenode))
    return leaves


def named_leaves(client: GreenplumClient, plan: TablePlan, keys: list[str]) -> list[Leaf]:
    """The given leaves (by oid) and how to read each: its own name when the user may read it (the server then scans
    that leaf only)."""
    if not plan.partitioned:
        return [Leaf(key, plan.relation) for key in keys]
    rows = client.query(catalog_sql.LEAF_NAMES, {"oids": [int(key) for key in keys]}) if keys else []
    names = {str(oid): (schema, name, readable) for oid, schema, name, readable in rows}
    return [_leaf(plan, key, *names.get(key, (None, None, False))) for key in keys]


def _leaf(
    plan: TablePlan,
    key: str,
    schema: str | None,
    name: str | None,
    readable: bool,
    storage: str = "heap",
    relfilenode: int = 0,
) -> Leaf:
    if not plan.partitioned:
        return Leaf(key, plan.relation, None, (), storage, relfilenode)
    if readable:
        return Leaf(key, sql.SQL("ONLY {}").format(Identifier(schema, name)), None, (), storage, relfilenode)
    return Leaf(key, plan.relation, sql.SQL("tableoid = %s"), (int(key),), storage, relfilenode)  # as literal_condition
