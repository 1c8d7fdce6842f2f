"""Change detection for the full strategies: a digest of each leaf partition, computed by the server, and from it
which leaves are read again and which are gone.

A leaf's digest is its row count and two sums over its rows of the two 64-bit halves of `md5` of the row's text
(the selected columns only, as `ROW(...)::text`, floats in their binary form). The sums are exact (`sum(bigint)` is
numeric), independent of row order, and computed where the rows are: on Greenplum each segment aggregates its own
rows in parallel and only partial sums travel. A change to a leaf goes unseen only if the 128-bit sums of the rows
removed and the rows added are equal while the count is too: for changed rows that behave like random ones, a chance
of about 2^-128. `md5` and `bit(64)` casts exist on every server this connector reads (Greenplum 6 is PostgreSQL 9.4,
which has no 64-bit text hash of its own).

Leaves are told apart by `tableoid`, which names the leaf a row of a partitioned root lives in (Greenplum 6 legacy
partitions included); a relation that is not partitioned is its own only leaf. A leaf with no row has no digest:
emptied, dropped and detached leaves are alike "gone", and their rows are deleted in the destination.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg2 import sql

from greenplum_client import GreenplumClient
from leaves import Leaf
from planning import PlannedColumn, TablePlan
from state import LeafState
from type_mapping import ReadAs


@dataclass(frozen=True)
class LeafChanges:
    """What a full pass must do, from the digests taken now and those saved when each leaf was last read."""

    current: dict[str, str]  # leaf -> digest now
    changed: list[str]  # new leaves and leaves whose digest differs from the saved one, in leaf order
    gone: list[str]  # saved leaves that hold no row now

    @property
    def unchanged(self) -> bool:
        return not self.changed and not self.gone


def leaf_digests(client: GreenplumClient, plan: TablePlan, leaves: list[Leaf] | None = None) -> dict[str, str]:
    """leaf -> digest (`count:sum1:sum2`) of every leaf that holds a row: of the given leaves, one query each through
    its own name (where other leaves need no digest), else of the whole table in one aggregate query."""
    row_text = row_md5(plan)
    halves = sql.SQL(
        "count(*), sum(('x' || substr(h, 1, 16))::bit(64)::bigint)::text, "
        "sum(('x' || substr(h, 17, 16))::bit(64)::bigint)::text"
    )
    if leaves is not None:
        rows = []
        for leaf in leaves:
            inner = sql.SQL("SELECT {} AS h FROM {}").format(row_text, leaf.relation)
            if leaf.condition is not None:
                inner = sql.SQL("{} WHERE {}").format(inner, leaf.condition)
            statement = sql.SQL("SELECT {} FROM ({}) AS digested").format(halves, inner)
            rows += [(leaf.key, *row) for row in client.query(statement, list(leaf.params))]
    elif plan.partitioned:
        statement = sql.SQL(
            "SELECT leaf, {} FROM (SELECT tableoid AS leaf, {} AS h FROM {}) AS digested GROUP BY leaf"
        ).format(halves, row_text, plan.relation)
        rows = client.query(statement)
    else:
        statement = sql.SQL("SELECT {} FROM (SELECT {} AS h FROM {}) AS digested").format(
            halves, row_text, plan.relation
        )
        rows = [(plan.leaf_key, *row) for row in client.query(statement)]
    return {str(leaf): f"{count}:{first}:{second}" for leaf, count, first, second in rows if count}


def row_md5(plan: TablePlan) -> sql.Composable:
    """md5 of the row's selected columns, the same text for the same values whatever the session's settings: what
    digests sum, and what the row ids of append-only tables are made of."""
    return sql.SQL("md5(ROW({})::text)").format(sql.SQL(", ").join(map(_digested, plan.columns)))


def _digested(column: PlannedColumn) -> sql.Composable:
    """The column as the digest sees it. Floats in their binary form: their text depends on extra_float_digits, which
    Greenplum does not dispatch to every segment (Greenplum 6 segments inside a cursor, Greenplum 7 and Cloudberry
    never), so the same value could digest differently from one sync to the next, or a change hide in the 17th
    digit."""
    identifier = sql.Identifier(column.name)
    if column.fivetran.read_as is ReadAs.FLOAT_ARRAY:
        return sql.SQL("array_send({})").format(identifier)
    if column.fivetran.name in ("FLOAT", "DOUBLE"):
        return sql.SQL("{}({})").format(
            sql.SQL("float4send" if column.fivetran.name == "FLOAT" else "float8send"), identifier
        )
    return identifier


def compare(saved: dict[str, LeafState], current: dict[str, str], in_progress: str | None = None) -> LeafChanges:
    """The leaves to read again and the leaves gone, given the saved digests; a leaf whose read is `in_progress`
    is neither (its read goes on)."""
    changed = [
        leaf
        for leaf in sorted(current, key=_leaf_order)
        if leaf != in_progress and (leaf not in saved or saved[leaf].digest != current[leaf])
    ]
    gone = [leaf for leaf in sorted(saved, key=_leaf_order) if leaf not in current and leaf != in_progress]
    return LeafChanges(current, changed, gone)


def _leaf_order(leaf: str) -> tuple[int, str]:
    """Leaves in oid order (oids grow as leaves are created: older partitions first)."""
    return (int(leaf), leaf) if leaf.isdigit() else (-1, leaf)
