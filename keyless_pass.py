"""A keyless table's full pass: what changed since the last pass is found leaf by leaf and replaced exactly, so the
destination mirrors the source as a multiset without a table-wide truncate after the first pass.

- Append-optimized leaves on Greenplum (`append_optimized.py`): the catalog says which leaves changed; appended rows
  are read alone, rows hidden since are deleted by their own ids, rewritten segment files are deleted and re-read.
  An unchanged leaf is not scanned.
- Every other leaf (`block_ranges.py`): a digest per block range; a changed range is read again, its rows numbered
  `leaf:range:ordinal`, and ids beyond its new count deleted. Views and custom queries are one range, read whole.
Every id of a leaf or range that is gone (dropped, detached, exchanged out, emptied) is deleted.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from functools import partial
from typing import Any

from fivetran_connector_sdk import Logging as log

import append_optimized as ao
import block_ranges
import reads
from leaf_survey import FullPass, survey
from leaves import Leaf, leaf_order, named_leaves
from planning import ROW_ID_COLUMN
from state import LeafRead, LeafState


class KeylessPass(FullPass):
    """One keyless table's pass, reading and sending through its `TableSink`."""

    def run(self) -> None:
        plan, state, sink = self._plan, self._state, self._sink
        found = self._survey = survey(sink)  # DigestCancelled skips the table: its ids cannot be told apart
        if state.leaves is None:
            # The first pass: rows another strategy (or an older version) left in the destination have other ids.
            first = named_leaves(self._client, plan, sorted(found.current)[:1]) or [Leaf(plan.leaf_key, plan.relation)]
            sink.probe(self._range_read(first[0], None)())
            sink.truncate()
            state.leaves, state.reading, state.position, state.in_pass = {}, None, None, False
        # The leaf an earlier sync left partway is finished first, on the digests taken before its read began: a
        # change made since is read by the next sync.
        in_progress = state.reading.leaf if state.reading is not None else None
        if in_progress is not None:
            self._go_on_reading()
        digest_leaves = {key for key, saved in state.leaves.items() if saved.ao is None}
        gone = sorted(key for key in digest_leaves if key not in found.current and key not in found.ao_leaves)
        gone_ao = sorted(key for key in set(state.leaves) - digest_leaves if key not in found.facts)
        work = {
            key: block_ranges.compare(block_ranges.saved_ranges(state.leaves.get(key)), ranges)
            for key, ranges in found.current.items()
            if key != in_progress
        }
        work = {key: (changed, gone_ranges) for key, (changed, gone_ranges) in work.items() if changed or gone_ranges}
        self._log_changes(work, gone)
        for key in gone:
            self._sync_ranges(key, [], sorted(block_ranges.saved_ranges(state.leaves[key])))
            del state.leaves[key]
        for key in gone_ao:  # dropped, exchanged out, or its AO functions refused this time
            self._delete_ao_leaf(key)
            del state.leaves[key]
        for key in sorted(work, key=leaf_order):
            self._sync_ranges(key, *work[key])
        for key in sorted(found.ao_leaves, key=int):
            self._sync_ao_leaf(found.ao_leaves[key], found.facts[key])

    def _log_changes(self, work: dict[str, tuple[list[str], list[str]]], gone: list[str]) -> None:
        found, state = self._survey, self._state
        ao_changed = [
            key
            for key, fact in found.facts.items()
            if ao.leaf_change(_ao(state.leaves.get(key)), fact) is not ao.LeafChange.UNCHANGED
        ]
        leaves = f"{found.leaf_count} lea{'f' if found.leaf_count == 1 else 'ves'}"
        if not work and not gone and not ao_changed:
            log.info(f"{self._plan.state_key}: unchanged since the last pass ({leaves}); nothing read")
            return
        ranges = sum(len(changed) for changed, _ in work.values())
        what = f"{len(work) + len(ao_changed)} of {leaves} changed or new"
        if gone:
            what += f", {len(gone)} gone"
        if ranges:
            what += f"; {ranges} block range(s) read again"
        if found.facts:
            what += f"; {len(found.facts) - len(ao_changed)} append-optimized leaves unchanged, not scanned"
        log.info(f"{self._plan.state_key}: {what}")

    # Leaves compared by block range digests: changed ranges read again, rows numbered leaf:range:ordinal.

    def _sync_ranges(self, key: str, changed: list[str], gone: list[str]) -> None:
        """Deletes the ids of the leaf's ranges that are gone, then reads its changed ranges."""
        state = self._state
        saved = state.leaves.get(key)
        if saved is not None and saved.ao is not None:  # was append-optimized: its ids are of the other kind
            self._delete_ao_leaf(key)
            saved = None
        ranges = block_ranges.saved_ranges(saved)

        def save() -> None:
            state.leaves[key] = block_ranges.ranges_state(ranges)

        with self._sink.saving(save):
            for name in gone:
                digest, held = ranges[name]
                self._delete_ids(key, name, held, 0, partial(_note_held, ranges, name, digest))
                del ranges[name]
        save()
        if changed:
            current = self._survey.current[key]
            reading = {name: [current[name], 0, ranges.get(name, ("", 0))[1]] for name in changed}
            state.reading, state.position = LeafRead(key, ranges=reading), None
            self._go_on_reading()

    def _go_on_reading(self) -> None:
        """Reads the ranges of the leaf in `state.reading` from where its read stands, then deletes the ids beyond each
        range's new count and saves its digests."""
        state, found = self._state, self._survey
        reading = state.reading
        if reading.ranges is None:  # an earlier version's read of the whole leaf: its ids (leaf:ordinal) are range ""
            reading.ranges = {"": [reading.digest, reading.sent, max(reading.high, reading.sent)]}
        ranges = block_ranges.saved_ranges(state.leaves.get(reading.leaf))
        if reading.leaf in found.current and (found.range_blocks is None or "" not in reading.ranges):
            (leaf,) = named_leaves(self._client, self._plan, [reading.leaf])
            self._read_ranges(leaf, reading, ranges)
        else:  # the leaf is gone, or was read whole and now has ranges: none of these ids is left
            reading.forget_sent()
        for name, (digest, sent, held) in sorted(reading.ranges.items()):
            self._delete_ids(reading.leaf, name, held, sent, partial(operator.setitem, reading.ranges[name], 2))
            if sent:
                ranges[name] = (digest, sent)
            else:
                ranges.pop(name, None)
        state.leaves[reading.leaf] = block_ranges.ranges_state(ranges)
        state.reading, state.position, state.segment = None, None, None  # segment: read by earlier versions
        self._sink.progressed()

    def _read_ranges(self, leaf: Leaf, reading: LeafRead, saved: dict[str, tuple[str, int]]) -> None:
        found = self._survey
        whole_read = found.range_blocks is None

        def number(batch: list[tuple], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            for raw, row in zip(batch, rows, strict=True):
                name = "" if whole_read else block_ranges.range_of(raw[-2], raw[-1], found.range_blocks)
                entry = reading.ranges.setdefault(name, ["", 0, saved.get(name, ("", 0))[1]])
                entry[1] += 1
                row[ROW_ID_COLUMN] = block_ranges.row_id(leaf.key, name, entry[1])
            return rows

        def restart() -> None:
            """A leaf read in no order starts again from its first row id; ids sent beyond its end are deleted after."""
            reading.forget_sent()

        if whole_read and any(entry[1] for entry in reading.ranges.values()):
            restart()  # an earlier sync's read died partway
        build = self._range_read(leaf, list(reading.ranges))
        self._sink.read_all(build, number, on_restart=restart if whole_read else None)

    def _delete_ids(self, leaf: str, name: str, held: int, keep: int, note_held: Callable[[int], None]) -> None:
        """Deletes the ids leaf:range:keep+1 up to `held`, highest first, noting each time how many are left, so that
        a checkpoint on the way saves how far the deletes got and a sync that dies there goes on from it."""
        while held > keep:
            note_held(held - 1)
            self._sink.delete({ROW_ID_COLUMN: block_ranges.row_id(leaf, name, held)})
            held -= 1

    def _range_read(self, leaf: Leaf, names: list[str] | None):
        """A builder of the read of the given ranges (all when None), after the saved position."""
        found, plan, state = self._survey, self._plan, self._state
        if found.range_blocks is None:
            return lambda: reads.leaf_whole(plan, leaf)
        spans = None if names is None else block_ranges.spans(names, found.range_blocks)
        return lambda: reads.range_rows(plan, leaf, spans, found.per_segment, state.position)

    # Append-optimized leaves: what the catalog says changed.

    def _sync_ao_leaf(self, leaf: Leaf, facts: ao.AoFacts) -> None:
        state = self._state
        saved = state.leaves.get(leaf.key)
        if saved is not None and saved.ao is None:  # was compared by digest: its ids are of the other kind
            self._sync_ranges(leaf.key, [], sorted(block_ranges.saved_ranges(saved)))
            del state.leaves[leaf.key]
            saved = None
        change = ao.leaf_change(_ao(saved), facts)
        resend = change in (ao.LeafChange.UNCHANGED, ao.LeafChange.CHANGED) and saved.ao.pop("resend", 0)
        if change is ao.LeafChange.UNCHANGED and not resend:
            return
        if change is ao.LeafChange.REWRITTEN:
            log.info(f"{self._plan.state_key}: leaf {leaf.key} has new storage (TRUNCATE or a rewrite): read again")
            self._delete_ao_leaf(leaf.key)
        if change in (ao.LeafChange.NEW, ao.LeafChange.REWRITTEN):  # read whole below
            state.leaves[leaf.key] = LeafState("", 0, {"rel": facts.relfilenode, "fp": "", "files": ""})
        saved = state.leaves[leaf.key]
        files = ao.decode_files(saved.ao["files"])
        with self._sink.saving(lambda: _save_files(saved, files)):
            self._delete_stale(leaf.key, files)  # an earlier sync's, killed partway
            hidden = self._delete_hidden(leaf, files) if change is ao.LeafChange.CHANGED else {}
            witnesses = {key: rows.high for key, rows in files.items() if rows.high}
            if resend:
                saved.ao["resend"] = 1  # until every row is sent: a sync killed in between sends them again
            witnessed = self._read_ao_rows(leaf, files, with_ids=True, every_row=bool(resend))
            for key in ao.rewritten(witnesses, witnessed, hidden):
                log.info(f"{self._plan.state_key}: leaf {leaf.key}, segment {key[0]}: segment file {key[1]} rewritten")
                files[key].stale = witnesses[key]
            self._delete_stale(leaf.key, files)
            saved.ao.pop("resend", None)
        _save_files(saved, files)
        saved.ao["fp"] = facts.fingerprint
        self._sink.progressed()

    def _delete_hidden(self, leaf: Leaf, files: dict[tuple[int, int], ao.SegmentFileRows]):
        """Deletes the rows hidden since they were read, by their own ids; returns the hidden rows per file."""
        hidden = ao.fetch_hidden(self._client, leaf)
        for key, row_numbers in sorted(hidden.items()):
            rows = files.get(key)
            for row_number in rows.newly_hidden(row_numbers) if rows is not None else ():
                rows.note_deleted(row_number)
                self._sink.delete({ROW_ID_COLUMN: ao.row_id(leaf.key, *key, row_number)})
        return hidden

    def _delete_ao_leaf(self, key: str) -> None:
        """Deletes every id an AO leaf may hold in the destination, file by file, highest first."""
        saved = self._state.leaves[key]
        files = ao.decode_files(saved.ao["files"])
        with self._sink.saving(lambda: _save_files(saved, files)):
            for file_key in sorted(files, reverse=True):
                self._delete_file(key, file_key, files[file_key])
                del files[file_key]
        _save_files(saved, files)

    def _delete_file(self, leaf: str, key: tuple[int, int], rows: ao.SegmentFileRows) -> None:
        while (row_number := rows.pop_highest()) is not None:
            self._sink.delete({ROW_ID_COLUMN: ao.row_id(leaf, *key, row_number)})

    def _delete_stale(self, leaf: str, files: dict[tuple[int, int], ao.SegmentFileRows]) -> None:
        """Deletes the ids of rewritten files' rows from before the rewrite, keeping the rows read since."""
        for key, rows in sorted(files.items()):
            while rows.stale and (row_number := rows.pop_stale()) is not None:
                self._sink.delete({ROW_ID_COLUMN: ao.row_id(leaf, *key, row_number)})
        for key in [key for key, rows in files.items() if not rows.runs]:
            del files[key]


def _note_held(ranges: dict[str, tuple[str, int]], name: str, digest: str, held: int) -> None:
    ranges[name] = (digest, held)


def _ao(saved: LeafState | None) -> dict[str, Any] | None:
    return saved.ao if saved is not None else None


def _save_files(saved: LeafState, files: dict[tuple[int, int], ao.SegmentFileRows]) -> None:
    saved.ao["files"] = ao.encode_files(files)
