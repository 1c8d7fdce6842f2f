"""A keyless table's full pass: what changed since the last pass is found leaf by leaf and replaced exactly, so the
destination mirrors the source as a multiset without a table-wide truncate after the first pass.

- Append-optimized leaves on Greenplum (`append_optimized.py`): the catalog says which leaves changed; appended rows
  are read alone, rows hidden since are deleted by their own ids, rewritten segment files are deleted and re-read.
  An unchanged leaf is not scanned.
- Every other leaf (heap, views, custom queries, and AO leaves where the catalog functions are refused): a digest per
  leaf (`changes.py`); a changed leaf is read again whole, its rows numbered `leaf:ordinal`, and ids beyond its new
  count deleted.
Every id of a leaf that is gone (dropped, detached, exchanged out, emptied) is deleted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg2
from fivetran_connector_sdk import Logging as log

import append_optimized as ao
import reads
from catalog import RowLocator
from changes import compare, leaf_digests
from greenplum_client import one_line
from leaves import Leaf, greenplum_leaves, named_leaves
from planning import ROW_ID_COLUMN
from state import LeafRead, LeafState

if TYPE_CHECKING:
    from sync import TableSync


class KeylessPass:
    """One keyless table's pass, reading and sending through its `TableSync`."""

    def __init__(self, table: TableSync) -> None:
        self._table = table
        self._plan = table.plan
        self._state = table.state
        self._client = table.context.client

    def run(self) -> None:
        plan, state, table = self._plan, self._state, self._table
        leaves = self._greenplum_leaves()
        ao_leaves = {leaf.key: leaf for leaf in leaves if leaf.append_optimized}
        facts = self._ao_facts(list(ao_leaves.values()))
        if not facts:
            ao_leaves = {}
        current = self._digests([leaf for leaf in leaves if leaf.key not in ao_leaves] if ao_leaves else None)
        if state.leaves is None:
            # The first pass: rows another strategy (or an older version) left in the destination have other ids.
            first = leaves[0] if leaves else (named_leaves(self._client, plan, sorted(current)[:1]) or [None])[0]
            table.probe(self._leaf_read(first or Leaf(plan.leaf_key, plan.relation), None))
            table.truncate()
            state.leaves, state.reading, state.position, state.segment, state.in_pass = {}, None, None, None, False
        # The leaf an earlier sync left partway is finished first, on the digest taken before its read began: a change
        # made since is read by the next sync.
        in_progress = state.reading.leaf if state.reading is not None else None
        self._go_on_with_digest_leaf(current)
        saved_ao = {key for key, saved in state.leaves.items() if saved.ao is not None}
        changes = compare({k: v for k, v in state.leaves.items() if k not in saved_ao}, current, in_progress)
        gone_ao = sorted(key for key in saved_ao if key not in facts)
        self._log_changes(current, changes.changed, changes.gone, facts)
        for key in changes.gone:
            if key not in ao_leaves:
                self._delete_ordinals(key, state.leaves[key], 0)
                del state.leaves[key]
        for key in gone_ao:  # dropped, exchanged out, or its AO functions refused this time
            self._delete_ao_leaf(key)
            del state.leaves[key]
        for leaf in named_leaves(self._client, plan, changes.changed):
            self._read_digest_leaf(leaf, current[leaf.key])
        for key in sorted(ao_leaves, key=int):
            self._sync_ao_leaf(ao_leaves[key], facts[key])

    # Leaves and what the server says of them.

    def _greenplum_leaves(self) -> list[Leaf]:
        """The leaves with their storage, on Greenplum tables (where append-optimized storage exists)."""
        context, plan = self._table.context, self._plan
        if not context.flavour.is_greenplum or plan.row_locator is RowLocator.NONE:
            return []
        return greenplum_leaves(self._client, context.flavour, plan)

    def _ao_facts(self, leaves: list[Leaf]) -> dict[str, ao.AoFacts]:
        """The catalog's facts of the AO leaves, or none (with one log line) where the server refuses them: the
        table then falls back to digests."""
        if not leaves:
            return {}
        try:
            return ao.fetch_facts(self._client, self._table.context.flavour, leaves)
        except psycopg2.Error as error:
            log.info(
                f"{self._plan.state_key}: the append-optimized catalog functions are not available "
                f"({one_line(error)}); its leaves are compared by digest instead"
            )
            return {}

    def _digests(self, leaves: list[Leaf] | None) -> dict[str, str]:
        """The digest of each leaf holding rows: of the given leaves one at a time, else of every leaf in one query.
        Fails, before anything is deleted, if the table is unreadable."""
        try:
            return leaf_digests(self._client, self._plan, leaves)
        except psycopg2.Error as error:
            if not self._table.is_cancelled(error):
                raise
            from sync import ReadCancelled

            raise ReadCancelled(
                "the server cancelled the digest query that tells which leaves changed; raise statement_timeout for "
                "USERNAME"
            ) from None

    def _log_changes(
        self, current: dict[str, str], changed: list[str], gone: list[str], facts: dict[str, ao.AoFacts]
    ) -> None:
        state = self._state
        ao_changed = [
            key
            for key, fact in facts.items()
            if ao.leaf_change(_ao_header(state.leaves.get(key)), fact) is not ao.LeafChange.UNCHANGED
        ]
        total = len(current) + len(facts)
        if not changed and not gone and not ao_changed and state.reading is None:
            log.info(f"{self._plan.state_key}: unchanged since the last pass ({_count(total)}); nothing read")
            return
        what = f"{len(changed) + len(ao_changed)} of {_count(total)} changed or new"
        if gone:
            what += f", {len(gone)} gone"
        if facts:
            what += f" ({len(facts)} append-optimized, {len(facts) - len(ao_changed)} of them unchanged: not scanned)"
        log.info(f"{self._plan.state_key}: {what}")

    # Leaves compared by digest: read again whole, rows numbered leaf:ordinal.

    def _go_on_with_digest_leaf(self, current: dict[str, str]) -> None:
        """Finishes the digest leaf whose read an earlier sync left partway, or deletes its ids if it is gone."""
        state = self._state
        reading = state.reading
        if reading is None:
            return
        if reading.leaf not in current:  # the leaf being read is gone since
            reading.high, reading.sent = max(reading.high, reading.sent), 0
            self._delete_ordinals(reading.leaf, reading, 0)
            state.leaves.pop(reading.leaf, None)
            state.reading = None
            return
        (leaf,) = named_leaves(self._client, self._plan, [reading.leaf])
        self._read_digest_leaf(leaf, reading.digest)

    def _read_digest_leaf(self, leaf: Leaf, digest: str) -> None:
        state = self._state
        if state.reading is None or state.reading.leaf != leaf.key:
            saved = state.leaves.get(leaf.key)
            state.reading = LeafRead(leaf.key, digest, 0, saved.rows if saved is not None else 0)
            state.position, state.segment = None, None
        self._read_leaf_by_position(leaf)
        reading = state.reading
        self._delete_ordinals(leaf.key, reading, reading.sent)
        state.leaves[leaf.key] = LeafState(reading.digest, reading.sent)
        state.reading, state.position, state.segment = None, None, None
        self._table.progressed()

    def _read_leaf_by_position(self, leaf: Leaf) -> None:
        table, plan, state = self._table, self._plan, self._state
        if plan.row_locator is RowLocator.NONE:  # a view, a query, a replicated table: no physical position
            if state.reading.sent:  # an earlier sync's read died partway: it starts again from id 1
                self._restart_leaf()
            table.read_all(lambda: self._leaf_read(leaf, None), self._number_rows, on_restart=self._restart_leaf)
            return
        # No segment listed (Cloudberry's single-node mode has none with content >= 0): the leaf is read whole.
        segments = table.context.segments if plan.split_by_segment and table.context.segments else [None]
        start = segments.index(state.segment) if state.segment in segments else 0
        for segment in segments[start:]:
            if state.segment != segment:
                state.segment, state.position = segment, None
            table.read_all(lambda segment=segment: self._leaf_read(leaf, segment), self._number_rows)

    def _leaf_read(self, leaf: Leaf, segment: int | None) -> reads.Read:
        if self._plan.row_locator is RowLocator.NONE:
            return reads.leaf_whole(self._plan, leaf)
        return reads.leaf_physical(self._plan, leaf, segment, self._state)

    def _number_rows(self, batch: list[tuple], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Row ids leaf:ordinal, the ordinal counted across the leaf's read."""
        reading = self._state.reading
        prefix = f"{reading.leaf}:"
        for ordinal, row in enumerate(rows, start=reading.sent + 1):
            row[ROW_ID_COLUMN] = prefix + str(ordinal)
        reading.sent += len(rows)
        return rows

    def _restart_leaf(self) -> None:
        """A leaf read in no order starts again from its first row id; ids sent beyond its end are deleted after."""
        reading = self._state.reading
        reading.high, reading.sent = max(reading.high, reading.sent), 0

    def _delete_ordinals(self, leaf: str, held: LeafState | LeafRead, keep: int) -> None:
        """Deletes the ids leaf:keep+1 up to the highest the destination may hold (`held`'s count), which the source
        no longer has: highest first, lowering the count as it goes, so that a checkpoint on the way saves how far
        the deletes got and a sync that dies there goes on from it."""
        while _held(held) > keep:
            ordinal = _held(held)
            _set_held(held, ordinal - 1)
            self._table.delete({ROW_ID_COLUMN: f"{leaf}:{ordinal}"})

    # Append-optimized leaves: what the catalog says changed.

    def _sync_ao_leaf(self, leaf: Leaf, facts: ao.AoFacts) -> None:
        state = self._state
        saved = state.leaves.get(leaf.key)
        if saved is not None and saved.ao is None:  # was compared by digest: its ids are of the other kind
            self._delete_ordinals(leaf.key, saved, 0)
            del state.leaves[leaf.key]
            saved = None
        change = ao.leaf_change(_ao_header(saved), facts)
        if change is ao.LeafChange.UNCHANGED:
            return
        if change is ao.LeafChange.REWRITTEN:
            log.info(f"{self._plan.state_key}: leaf {leaf.key} has new storage (TRUNCATE or a rewrite): read again")
            self._delete_ao_leaf(leaf.key)
        if change is not ao.LeafChange.CHANGED:
            state.leaves[leaf.key] = LeafState("", 0, {"rel": facts.relfilenode, "fp": "", "files": ""})
        saved = state.leaves[leaf.key]
        files = ao.decode_files(saved.ao["files"])
        self._table.on_checkpoint = lambda: _save_files(saved, files)
        try:
            self._delete_stale(leaf.key, files)  # an earlier sync's, killed partway
            hidden = self._delete_hidden(leaf, files) if change is ao.LeafChange.CHANGED else {}
            witnesses = {key: rows.high for key, rows in files.items() if rows.high}
            witnessed = self._read_ao_rows(leaf, files)
            for key in ao.rewritten(witnesses, witnessed, hidden):
                log.info(f"{self._plan.state_key}: leaf {leaf.key}, segment {key[0]}: segment file {key[1]} rewritten")
                files[key].stale = witnesses[key]
            self._delete_stale(leaf.key, files)
        finally:
            self._table.on_checkpoint = None
        _save_files(saved, files)
        saved.ao["fp"] = facts.fingerprint
        self._table.progressed()

    def _delete_hidden(self, leaf: Leaf, files: dict[tuple[int, int], ao.SegmentFileRows]):
        """Deletes the rows hidden since they were read, by their own ids; returns the hidden rows per file."""
        hidden = ao.fetch_hidden(self._client, leaf)
        for key, row_numbers in sorted(hidden.items()):
            rows = files.get(key)
            for row_number in rows.newly_hidden(row_numbers) if rows is not None else ():
                rows.note_deleted(row_number)
                self._table.delete({ROW_ID_COLUMN: ao.row_id(leaf.key, *key, row_number)})
        return hidden

    def _read_ao_rows(self, leaf: Leaf, files: dict[tuple[int, int], ao.SegmentFileRows]) -> set[tuple[int, int]]:
        """Reads each file's rows from its last row read on (every row of a file not read yet), sends those above it
        with their own ids, and returns the files whose last row read was read again: the witnesses that they were
        not rewritten. What was read is in the files' runs, so a read that starts again after a lost connection
        goes on past them."""
        witnessed: set[tuple[int, int]] = set()

        def identify(batch: list[tuple], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            sent = []
            for raw, row in zip(batch, rows, strict=True):
                segment, (segno, row_number) = raw[-2], ao.parse_tid(raw[-1])
                key = (segment, segno)
                rows_of_file = files.setdefault(key, ao.SegmentFileRows())
                if row_number == rows_of_file.high:
                    witnessed.add(key)
                    continue
                rows_of_file.add(row_number)
                row[ROW_ID_COLUMN] = ao.row_id(leaf.key, segment, segno, row_number)
                sent.append(row)
            return sent

        self._table.read_all(lambda: reads.ao_rows(self._plan, leaf, ao.read_from(files)), identify)
        return witnessed

    def _delete_ao_leaf(self, key: str) -> None:
        """Deletes every id an AO leaf may hold in the destination, file by file, highest first."""
        saved = self._state.leaves[key]
        files = ao.decode_files(saved.ao["files"])
        self._table.on_checkpoint = lambda: _save_files(saved, files)
        try:
            for file_key in sorted(files, reverse=True):
                self._delete_file(key, file_key, files[file_key])
                del files[file_key]
        finally:
            self._table.on_checkpoint = None
        _save_files(saved, files)

    def _delete_file(self, leaf: str, key: tuple[int, int], rows: ao.SegmentFileRows) -> None:
        while (row_number := rows.pop_highest()) is not None:
            self._table.delete({ROW_ID_COLUMN: ao.row_id(leaf, *key, row_number)})

    def _delete_stale(self, leaf: str, files: dict[tuple[int, int], ao.SegmentFileRows]) -> None:
        """Deletes the ids of rewritten files' rows from before the rewrite, keeping the rows read since."""
        for key, rows in sorted(files.items()):
            while rows.stale and (row_number := rows.pop_stale()) is not None:
                self._table.delete({ROW_ID_COLUMN: ao.row_id(leaf, *key, row_number)})
        for key in [key for key, rows in files.items() if not rows.runs]:
            del files[key]


def _ao_header(saved: LeafState | None) -> tuple[int, str] | None:
    """The storage's file number and the catalog's fingerprint saved for an AO leaf."""
    return (saved.ao["rel"], saved.ao["fp"]) if saved is not None and saved.ao is not None else None


def _save_files(saved: LeafState, files: dict[tuple[int, int], ao.SegmentFileRows]) -> None:
    saved.ao["files"] = ao.encode_files(files)


def _held(held: LeafState | LeafRead) -> int:
    return held.rows if isinstance(held, LeafState) else held.high


def _set_held(held: LeafState | LeafRead, count: int) -> None:
    if isinstance(held, LeafState):
        held.rows = count
    else:
        held.high = count


def _count(leaves: int) -> str:
    return f"{leaves} lea{'f' if leaves == 1 else 'ves'}"
