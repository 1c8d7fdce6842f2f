"""What a full pass finds before it reads a row: the table's leaves, the catalog's facts of its append-optimized
leaves (Greenplum), and the digests of every other leaf's block ranges. Both full strategies start from it, and read
appended rows of append-optimized leaves the same way (`FullPass`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg2
from fivetran_connector_sdk import Logging as log

import append_optimized as ao
import block_ranges
import catalog_sql
import reads
from block_ranges import cancelled_as_digest
from catalog import Flavour, RowLocator
from greenplum_client import one_line
from leaves import Leaf, greenplum_leaves

if TYPE_CHECKING:
    from table_sink import TableSink


class FullPass:
    """What a full strategy's pass works with: its table's `TableSink` (which reads, sends and checkpoints), plan and
    state, and the connection."""

    def __init__(self, sink: TableSink) -> None:
        self._sink = sink
        self._plan = sink.plan
        self._state = sink.state
        self._client = sink.source.client

    def _read_ao_rows(
        self, leaf: Leaf, files: dict[tuple[int, int], ao.SegmentFileRows], every_row: bool = False
    ) -> set[tuple[int, int]]:
        """Reads each AO file's rows from its last row read on (every row of a file not read yet), sends those above
        it, and returns the files whose last row read was read again: the witnesses
        that they were not rewritten. What was read is in the files' runs, so a read that starts again after a lost
        connection goes on past them. `every_row`: every live row is read and sent (a column was added or renamed),
        in one scan that still notes the witnesses and the rows appended."""
        witnessed: set[tuple[int, int]] = set()

        def past_the_witness(batch: list[tuple], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            sent = []
            for raw, row in zip(batch, rows, strict=True):
                segment, (segno, row_number) = raw[-2], ao.parse_tid(raw[-1])
                key = (segment, segno)
                rows_of_file = files.setdefault(key, ao.SegmentFileRows())
                if row_number == rows_of_file.high:
                    witnessed.add(key)
                    if not every_row:
                        continue
                elif row_number > rows_of_file.high:
                    rows_of_file.add(row_number)
                elif not every_row:
                    continue
                sent.append(row)
            return sent

        skipped = [] if every_row else ao.read_from(files)
        self._sink.read_all(lambda: reads.ao_rows(self._plan, leaf, skipped), past_the_witness)
        return witnessed


@dataclass(frozen=True)
class Survey:
    ao_leaves: dict[str, Leaf]  # append-optimized leaves whose changes the catalog tells
    facts: dict[str, ao.AoFacts]
    current: dict[str, dict[str, str]]  # every other leaf holding rows -> range -> digest
    range_blocks: int | None  # None: leaves read whole (a view, a custom query, a replicated table)
    per_segment: bool  # ranges are per Greenplum segment


def survey(sink: TableSink) -> Survey:
    """Raises DigestCancelled when statement_timeout cancels the digest query; anything else that fails the digest
    query (a revoked grant, a dropped column) fails it before anything is deleted or truncated."""
    source, plan, client = sink.source, sink.plan, sink.source.client
    physical = plan.row_locator is RowLocator.CTID
    leaves = greenplum_leaves(client, source.flavour, plan) if source.flavour.is_greenplum and physical else []
    ao_leaves = {leaf.key: leaf for leaf in leaves if leaf.append_optimized}
    facts = _ao_facts(sink, list(ao_leaves.values()))
    if not facts:
        ao_leaves = {}
    range_blocks = _range_blocks(sink) if physical else None
    per_segment = physical and plan.split_by_segment and bool(source.segments)
    others = [leaf for leaf in leaves if leaf.key not in ao_leaves] if ao_leaves else None
    with cancelled_as_digest("the digest query that tells which leaves changed"):
        current = block_ranges.digests(client, plan, source.hashing, range_blocks, per_segment, others)
    return Survey(ao_leaves, facts, current, range_blocks, per_segment)


def _ao_facts(sink: TableSink, leaves: list[Leaf]) -> dict[str, ao.AoFacts]:
    """The catalog's facts of the AO leaves, or none (with one log line) where the server refuses them: the table
    then falls back to digests."""
    if not leaves:
        return {}
    try:
        return ao.fetch_facts(sink.source.client, sink.source.flavour, leaves)
    except psycopg2.Error as error:
        log.info(
            f"{sink.plan.state_key}: the append-optimized catalog functions are not available ({one_line(error)}); "
            "its leaves are compared by digest instead"
        )
        return {}


def _range_blocks(sink: TableSink) -> int:
    """The table's range size: chosen from its size when its first pass begins, kept afterwards."""
    state = sink.state
    if state.range_blocks is None:
        legacy = sink.source.flavour in (Flavour.GREENPLUM5, Flavour.GREENPLUM6)
        statement = catalog_sql.TABLE_BLOCKS_GREENPLUM6 if legacy else catalog_sql.TABLE_BLOCKS
        ((blocks,),) = sink.source.client.query(statement, {"root": int(sink.plan.leaf_key)})
        state.range_blocks = block_ranges.choose_range_blocks(blocks or 0)
    return state.range_blocks
