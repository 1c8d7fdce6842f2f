"""What a full pass finds before it reads a row: the table's leaves, the catalog's facts of its append-optimized
leaves (Greenplum), and the digests of every other leaf's block ranges. Both full strategies start from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg2
from fivetran_connector_sdk import Logging as log

import append_optimized as ao
import block_ranges
import catalog_sql
from catalog import Flavour, RowLocator
from greenplum_client import one_line
from leaves import Leaf, greenplum_leaves

if TYPE_CHECKING:
    from sync import TableSync


class FullPass:
    """What a full strategy's pass works with: its table's `TableSync` (which reads, sends and checkpoints), plan and
    state, and the connection."""

    def __init__(self, table: TableSync) -> None:
        self._table = table
        self._plan = table.plan
        self._state = table.state
        self._client = table.context.client


class DigestCancelled(RuntimeError):
    """statement_timeout cancelled the digest query (one statement over the whole table)."""


@dataclass(frozen=True)
class Survey:
    ao_leaves: dict[str, Leaf]  # append-optimized leaves whose changes the catalog tells
    facts: dict[str, ao.AoFacts]
    current: dict[str, dict[str, str]]  # every other leaf holding rows -> range -> digest
    range_blocks: int | None  # None: leaves read whole (a view, a custom query, a replicated table)
    per_segment: bool  # ranges are per Greenplum segment

    @property
    def leaf_count(self) -> int:
        return len(self.current) + len(self.facts)


def survey(table: TableSync) -> Survey:
    """Raises DigestCancelled when statement_timeout cancels the digest query; anything else that fails the digest
    query (a revoked grant, a dropped column) fails it before anything is deleted or truncated."""
    context, plan, client = table.context, table.plan, table.context.client
    physical = plan.row_locator is RowLocator.CTID
    leaves = greenplum_leaves(client, context.flavour, plan) if context.flavour.is_greenplum and physical else []
    ao_leaves = {leaf.key: leaf for leaf in leaves if leaf.append_optimized}
    facts = _ao_facts(table, list(ao_leaves.values()))
    if not facts:
        ao_leaves = {}
    range_blocks = _range_blocks(table) if physical else None
    per_segment = physical and plan.split_by_segment and bool(context.segments)
    others = [leaf for leaf in leaves if leaf.key not in ao_leaves] if ao_leaves else None
    try:
        current = block_ranges.digests(client, plan, context.hashing, range_blocks, per_segment, others)
    except psycopg2.Error as error:
        if not table.is_cancelled(error):
            raise
        log.warning(f"{plan.state_key}: the digest query was cancelled ({one_line(error)})")
        raise DigestCancelled(one_line(error)) from None
    return Survey(ao_leaves, facts, current, range_blocks, per_segment)


def _ao_facts(table: TableSync, leaves: list[Leaf]) -> dict[str, ao.AoFacts]:
    """The catalog's facts of the AO leaves, or none (with one log line) where the server refuses them: the table
    then falls back to digests."""
    if not leaves:
        return {}
    try:
        return ao.fetch_facts(table.context.client, table.context.flavour, leaves)
    except psycopg2.Error as error:
        log.info(
            f"{table.plan.state_key}: the append-optimized catalog functions are not available ({one_line(error)}); "
            "its leaves are compared by digest instead"
        )
        return {}


def _range_blocks(table: TableSync) -> int:
    """The table's range size: chosen from its size when its first pass begins, kept afterwards."""
    state = table.state
    if state.range_blocks is None:
        legacy = table.context.flavour in (Flavour.GREENPLUM5, Flavour.GREENPLUM6)
        statement = catalog_sql.TABLE_BLOCKS_GREENPLUM6 if legacy else catalog_sql.TABLE_BLOCKS
        ((blocks,),) = table.context.client.query(statement, {"root": int(table.plan.leaf_key)})
        state.range_blocks = block_ranges.choose_range_blocks(blocks or 0)
    return state.range_blocks
