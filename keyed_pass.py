"""A keyed table's full pass (a key, no cursor): when nothing changed nothing is read; when the only change is rows
appended to append-optimized leaves, those rows alone are upserted once their keys are checked; any other change
re-reads the whole table in key order after a truncate, so that rows the source deleted end up deleted.

Leaves are compared as a keyless pass compares them (`keyless_pass.py`): append-optimized leaves by Greenplum's
catalog, every other leaf by digest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg2
from fivetran_connector_sdk import Logging as log
from psycopg2 import sql

import append_optimized as ao
import reads
from changes import compare, leaf_digests
from declared_keys import check_whole_table, check_windows
from greenplum_client import is_statement_cancelled, one_line
from leaves import Leaf, greenplum_leaves
from state import LeafState

if TYPE_CHECKING:
    from sync import TableSync


class KeyedPass:
    """One keyed table's pass, reading and sending through its `TableSync`."""

    def __init__(self, table: TableSync) -> None:
        self._table = table
        self._plan = table.plan
        self._state = table.state
        self._client = table.context.client

    def run(self) -> None:
        plan, state = self._plan, self._state
        if not state.in_pass:
            # The digest query reads every selected column: a table that cannot be read fails here, before its rows
            # are marked deleted.
            ao_leaves, facts = self._ao_leaves()
            other = [leaf for leaf in self._leaves if leaf.key not in ao_leaves] if ao_leaves else None
            digests = self._digests(other)
            changes = self._changes(digests, facts)
            if changes == {}:
                log.info(f"{plan.state_key}: unchanged since the last pass; nothing read")
                return
            if changes is not None and self._appended_only(ao_leaves, facts, changes):
                return
            if plan.declared_key:
                check_whole_table(self._client, plan)
            # Rows upserted after the truncate stay live; those the source no longer has end up deleted.
            self._table.truncate()
            state.in_pass, state.position, state.pass_leaves = True, None, None
            if digests is not None:  # saved at the pass's end, so that the next sync compares with them
                baselines = self._ao_baselines(ao_leaves, facts)
                state.pass_leaves = {key: LeafState(digest) for key, digest in digests.items()} | baselines
        self._read_keyed_pass()
        if state.pass_leaves is not None:
            state.leaves = state.pass_leaves
        state.in_pass, state.position, state.pass_leaves = False, None, None

    # What changed.

    def _ao_leaves(self) -> tuple[dict[str, Leaf], dict[str, ao.AoFacts]]:
        context = self._table.context
        self._leaves = greenplum_leaves(self._client, context.flavour, self._plan) if self._on_greenplum() else []
        ao_leaves = {leaf.key: leaf for leaf in self._leaves if leaf.append_optimized}
        if not ao_leaves:
            return {}, {}
        try:
            return ao_leaves, ao.fetch_facts(self._client, context.flavour, list(ao_leaves.values()))
        except psycopg2.Error as error:
            log.info(
                f"{self._plan.state_key}: the append-optimized catalog functions are not available "
                f"({one_line(error)}); its leaves are compared by digest instead"
            )
            return {}, {}

    def _on_greenplum(self) -> bool:
        from catalog import RowLocator

        return self._table.context.flavour.is_greenplum and self._plan.row_locator is RowLocator.CTID

    def _digests(self, leaves: list[Leaf] | None) -> dict[str, str] | None:
        """The digest of each leaf holding rows (of the given leaves only, when others need none), or None when
        statement_timeout cancelled the query (one statement over the whole table, where a read's fetches are each
        their own): the table is then read in full, as without digests."""
        try:
            return leaf_digests(self._client, self._plan, leaves)
        except psycopg2.Error as error:
            if not is_statement_cancelled(error):
                raise
            log.warning(f"{self._plan.state_key}: the digest query was cancelled ({one_line(error)})")
            return None

    def _changes(self, digests: dict[str, str] | None, facts: dict[str, ao.AoFacts]) -> dict[str, ao.LeafChange] | None:
        """The append-optimized leaves that changed, and how; None when some other leaf changed (or one is gone, or
        nothing was saved): a full pass is needed then."""
        saved = self._state.leaves
        if saved is None or digests is None:
            return None
        saved_ao = {key for key, leaf in saved.items() if leaf.ao is not None}
        if not compare({k: v for k, v in saved.items() if k not in saved_ao}, digests).unchanged:
            return None
        if saved_ao - set(facts):
            return None
        changes = {key: ao.leaf_change(_header(saved.get(key)), fact) for key, fact in facts.items()}
        return {key: change for key, change in changes.items() if change is not ao.LeafChange.UNCHANGED}

    # Appended rows alone.

    def _appended_only(
        self, ao_leaves: dict[str, Leaf], facts: dict[str, ao.AoFacts], changes: dict[str, ao.LeafChange]
    ) -> bool:
        """Upserts the rows appended to the changed leaves when nothing else changed there (no row hidden since, no
        file rewritten), once their keys are checked; returns whether it did. Otherwise the full pass runs."""
        if any(change is ao.LeafChange.REWRITTEN for change in changes.values()):
            return False
        saved = self._state.leaves
        files, hidden = {}, {}
        for key in changes:
            files[key] = ao.decode_files(saved[key].ao["files"]) if key in saved else {}
            hidden[key] = ao.fetch_hidden_counts(self._client, self._table.context.flavour, ao_leaves[key])
            if key in saved and hidden[key] != ao.decode_counts(saved[key].ao.get("hidden", "")):
                log.info(f"{self._plan.state_key}: rows were deleted or updated in leaf {key}: the table is read again")
                return False
        if self._plan.declared_key:
            windows = [reads.ao_rows_window(ao_leaves[key], ao.read_from(files[key], witness=False)) for key in changes]
            check_windows(self._client, self._plan, windows)
        log.info(f"{self._plan.state_key}: rows appended to {len(changes)} leaf(s), nothing else changed: read alone")
        for key in sorted(changes, key=int):
            witnesses = {file: rows.high for file, rows in files[key].items() if rows.high}
            seen = self._read_appended(ao_leaves[key], files[key])
            if ao.rewritten(witnesses, seen, {}):
                log.info(f"{self._plan.state_key}: leaf {key} was rewritten (VACUUM): the table is read again")
                return False
            saved[key] = LeafState(
                "",
                0,
                {
                    "rel": facts[key].relfilenode,
                    "fp": facts[key].fingerprint,
                    "files": ao.encode_files(files[key]),
                    "hidden": ao.encode_counts(hidden[key]),
                },
            )
            self._table.progressed()
        return True

    def _read_appended(self, leaf: Leaf, files: dict[tuple[int, int], ao.SegmentFileRows]) -> set[tuple[int, int]]:
        witnessed: set[tuple[int, int]] = set()

        def appended(batch: list[tuple], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            sent = []
            for raw, row in zip(batch, rows, strict=True):
                segno, row_number = ao.parse_tid(raw[-1])
                key = (raw[-2], segno)
                rows_of_file = files.setdefault(key, ao.SegmentFileRows())
                if row_number == rows_of_file.high:
                    witnessed.add(key)
                    continue
                rows_of_file.runs = [(1, row_number)]
                sent.append(row)
            return sent

        self._table.read_all(lambda: reads.ao_rows(self._plan, leaf, ao.read_from(files)), appended)
        return witnessed

    # The full pass, noting where each append-optimized file's rows end.

    def _ao_baselines(self, ao_leaves: dict[str, Leaf], facts: dict[str, ao.AoFacts]) -> dict[str, LeafState]:
        """What a full pass saves of each AO leaf: the catalog's facts and hidden rows before it began; the highest
        row number of each file is noted as the pass reads."""
        flavour = self._table.context.flavour
        baselines = {}
        for key, leaf in ao_leaves.items():
            hidden = ao.encode_counts(ao.fetch_hidden_counts(self._client, flavour, leaf))
            ao_state = {"rel": facts[key].relfilenode, "fp": facts[key].fingerprint, "files": "", "hidden": hidden}
            baselines[key] = LeafState("", 0, ao_state)
        return baselines

    def _read_keyed_pass(self) -> None:
        plan, state = self._plan, self._state
        tracked = {key for key, leaf in (state.pass_leaves or {}).items() if leaf.ao is not None}
        if not tracked:
            self._table.read_all(lambda: reads.keyed(plan, state))
            return
        files = {key: ao.decode_files(state.pass_leaves[key].ao["files"]) for key in tracked}

        def save() -> None:
            for key in tracked:
                state.pass_leaves[key].ao["files"] = ao.encode_files(files[key])

        def note_highs(batch: list[tuple], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            for raw in batch:
                leaf = str(raw[-3]) if plan.partitioned else plan.leaf_key
                if leaf in files:
                    segno, row_number = ao.parse_tid(raw[-1])
                    rows_of_file = files[leaf].setdefault((raw[-2], segno), ao.SegmentFileRows())
                    if row_number > rows_of_file.high:
                        rows_of_file.runs = [(1, row_number)]
            return rows

        located = (sql.SQL("tableoid::oid"), sql.SQL("gp_segment_id"), sql.SQL("ctid::text AS read_ctid"))
        self._table.on_checkpoint = save
        try:
            self._table.read_all(lambda: reads.keyed(plan, state, extra=located), note_highs)
        finally:
            self._table.on_checkpoint = None
        save()


def _header(saved: LeafState | None) -> tuple[int, str] | None:
    return (saved.ao["rel"], saved.ao["fp"]) if saved is not None and saved.ao is not None else None
