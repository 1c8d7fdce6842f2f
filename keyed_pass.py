"""A keyed table's sync (a key, no cursor). Its difference digest (`reconciliation.py`) names the keys inserted,
updated and deleted, and only those are sent; this pass reads the whole table in key order after a truncate when the
digest cannot tell (the first sync, more keys inserted and deleted than even its digest of keys names, a hashed column
dropped), so that deleted rows end up deleted, and makes the digest of the rows it reads, for the next sync to compare
with.

Keys no digest carries (a date, a decimal) keep the block range digests: leaves surveyed as a keyless pass surveys
them (`leaf_survey.py`), append-optimized leaves by Greenplum's catalog; when no key came or went, the changed ranges
and the rows appended to append-optimized leaves are upserted alone.
"""

from __future__ import annotations

from typing import Any

from fivetran_connector_sdk import Logging as log

import append_optimized as ao
import block_ranges
import difference_digest as dd
import landing
import reads
import schema_changes
from ao_keyed import LOCATED, PassNotes, append_optimized_now
from block_ranges import DigestCancelled
from declared_keys import check_whole_table, check_windows
from digest_pairs import KeysSince, SentPairs, keys_gone, noting, noting_extra, pair_hash, scan_cells
from key_encoding import KeyEncoding, key_encoding, key_values
from key_ranges import KeyRanges
from keyed_digest import Outcome
from leaf_survey import FullPass, Survey, survey
from leaves import leaf_order, named_leaves
from reconciliation import Reconciliation
from state import LeafState


class KeyedPass(FullPass):
    """One keyed table's pass, reading and sending through its `TableSink`."""

    def run(self) -> None:
        plan, state = self._plan, self._state
        landed, state.landing = state.landing or {}, None
        if landed.get("keys") and not state.in_pass:
            self._undo_keys(landed["keys"])
        self._landed_reads = landed.get("reads") or []
        if not state.in_pass:
            outcome = self._reconcile()
            if outcome is Outcome.SENT:
                return
            found = None
            if outcome is Outcome.NOT_APPLICABLE or (state.digest is None and state.leaves is not None):
                # Block range digests: keys no difference digest carries, or the sync that brings one. The digest
                # query reads every selected column: a table that cannot be read fails here, before its rows are
                # marked deleted. Cancelled by statement_timeout, the table is read in full, as without digests.
                try:
                    found = survey(self._sink)
                except DigestCancelled as error:
                    log.warning(f"{plan.state_key}: {error}")
                changes = self._changes(found) if found is not None else None
                if changes is not None and self._updated_only(found, *changes):
                    # No digest yet of what the destination holds: the next sync's full pass makes one.
                    state.pass_digest = state.pass_digest_ao = state.pass_digest_leaves = None
                    return
            if plan.declared_key:
                check_whole_table(self._client, plan)
            # Rows upserted after the truncate stay live; those the source no longer has end up deleted.
            self._sink.truncate()
            state.in_pass, state.position, state.pass_leaves = True, None, None
            if found is not None and state.pass_digest is None:  # saved at the pass's end, for the next sync
                state.pass_leaves = {
                    key: block_ranges.ranges_state(ranges, block_ranges.key_digest(ranges))
                    for key, ranges in found.current.items()
                } | self._ao_baselines(found)
        self._read_keyed_pass()
        if state.pass_leaves is not None:
            state.leaves = state.pass_leaves
        state.in_pass, state.position, state.pass_leaves = False, None, None
        self._adopt_digest()

    # What the last sync sent after its state was saved (`landing.py`).

    def _undo_keys(self, entries: list[list[Any]]) -> None:
        """Deletes the keys the last sync sent or deleted after its state was saved, and takes the pairs its digest
        held of them out of it: the destination then holds what the digest says, and the next difference sends
        those the source holds. A digest that cannot name them (hashed keys, another codec) is dropped: the table
        is read again."""
        state, plan = self._state, self._plan
        encoding = key_encoding(plan) if not state.digest_unfit else None
        held = dd.Cells.unpack(state.digest) if state.digest is not None else None
        if encoding is None or encoding.hashed or held is None or held.codec is not encoding.codec:
            log.info(f"{plan.state_key}: the last sync stopped with keys sent past its state: the table is read again")
            state.digest = None
            return

        def save() -> None:
            state.digest = held.pack()

        log.info(f"{plan.state_key}: the last sync stopped with {len(entries):,} keys sent past its state")
        with self._sink.together(save):
            for key, words, h in entries:
                self._sink.delete(key_values(encoding, key))
                if words is not None:
                    held.add_pair(-1, tuple(words), h)
        save()

    def _undo_reads(self, encoding: KeyEncoding) -> bool:
        """Deletes the keys a killed pass read past its saved position that the source no longer holds
        (`digest_pairs.keys_gone`). False when they cannot be named: the pass starts again."""
        plan, state = self._plan, self._state
        if not self._landed_reads:
            return True
        hashing, order = self._sink.source.hashing, list(plan.primary_key)
        gone = keys_gone(self._client, plan, hashing, encoding, order, state.position, self._landed_reads)
        if gone is None:
            log.info(f"{plan.state_key}: the rows the last sync read past its state changed too much since")
            return False
        log.info(f"{plan.state_key}: of the keys the last sync read past its state, {len(gone):,} are gone")
        with self._sink.together(lambda: None):
            for key in sorted(gone):
                self._sink.delete(key_values(encoding, key))
        self._landed_reads = []
        return True

    # The difference digest: what came, changed and went, when the keys can be named from it.

    def _reconcile(self) -> Outcome:
        """Sends what changed when the digest can name it; otherwise says which path reads the table (a full pass
        starts an empty `pass_digest`, which its reads fill)."""
        encoding = key_encoding(self._plan) if not self._state.digest_unfit else None
        if encoding is None:
            return Outcome.NOT_APPLICABLE
        try:
            return Reconciliation(self._sink, encoding).run()
        except DigestCancelled as error:
            log.warning(f"{self._plan.state_key}: {error}")
            self._state.pass_digest = self._state.pass_digest_leaves = None
            return Outcome.FULL_PASS

    def _adopt_digest(self) -> None:
        """The digest of the rows the full pass read becomes the one the next sync compares with, with what it noted
        of the append-optimized leaves that did not change meanwhile."""
        state = self._state
        if state.pass_digest is not None:
            notes = PassNotes(state, self._plan) if state.pass_digest_leaves is not None else None
            now = append_optimized_now(self._client, self._sink.source.flavour, self._plan) if notes else None
            state.digest_leaves = notes.finish(now) if notes is not None else None
            state.digest, state.pass_digest = state.pass_digest, None
            state.digest_ao, state.pass_digest_ao, state.pass_digest_leaves = state.pass_digest_ao, None, None
            state.digest_columns, state.leaves = schema_changes.column_list(self._plan), None

    # What changed.

    def _changes(self, found: Survey) -> tuple[dict[str, list[str]], dict[str, ao.LeafChange]] | None:
        """Per leaf compared by digest, its changed ranges; per append-optimized leaf that changed, how. None when a key
        came or went somewhere, or nothing was saved: the full pass is needed then."""
        saved = self._state.leaves
        if saved is None:
            return None
        saved_ao = {key for key, leaf in saved.items() if leaf.ao is not None}
        if set(saved) - saved_ao != set(found.current) or saved_ao - set(found.facts):
            return None  # a leaf came (rows inserted) or went (rows deleted)
        ranges = {}
        for key, current in found.current.items():
            if saved[key].ranges is None or saved[key].digest != block_ranges.key_digest(current):
                return None
            saved_ranges = block_ranges.saved_ranges(saved[key])
            changed, _ = block_ranges.compare(saved_ranges, current)
            if changed or set(saved_ranges) != set(current):
                ranges[key] = changed
        changes = {
            key: ao.leaf_change(saved[key].ao if key in saved else None, fact) for key, fact in found.facts.items()
        }
        resend = {key for key in changes if key in saved and (saved[key].ao or {}).get("resend")}  # a column added
        return ranges, {
            key: change for key, change in changes.items() if change is not ao.LeafChange.UNCHANGED or key in resend
        }

    def _updated_only(self, found: Survey, ranges: dict[str, list[str]], ao_changes: dict[str, ao.LeafChange]) -> bool:
        """Sends what changed when no key came or went; returns whether it did (else the full pass runs)."""
        plan = self._plan
        if not ranges and not ao_changes:
            log.info(f"{plan.state_key}: unchanged since the last pass; nothing read")
            return True
        if ao_changes and not self._appended_only(found, ao_changes):
            return False
        read = sum(len(names) for names in ranges.values())
        if ranges:
            log.info(f"{plan.state_key}: rows updated, no key came or went: {read} block range(s) read again")
        for key in sorted(ranges, key=leaf_order):
            self._reread_ranges(found, key, ranges[key])
        return True

    # Updated rows: their ranges upserted again.

    def _reread_ranges(self, found: Survey, key: str, names: list[str]) -> None:
        """Upserts the rows of the leaf's changed ranges; each range is saved as read once the read is past it, so a
        sync killed here goes on with the ranges left."""
        state, current = self._state, found.current[key]
        saved = block_ranges.saved_ranges(state.leaves[key])
        done = {name: digest for name, digest in current.items() if name not in names}
        key_digest = state.leaves[key].digest
        reading: list[str] = []

        def save() -> None:
            state.leaves[key] = block_ranges.ranges_state({**saved, **done}, key_digest)

        def mark(batch: list[tuple], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            for raw in batch:
                name = block_ranges.range_of(raw[-2], raw[-1], found.range_blocks)
                if reading and reading[-1] != name:
                    done[reading[-1]] = current[reading[-1]]
                reading[:1] = [name]
            return rows

        for name in set(saved) - set(current):  # emptied: its rows moved to other ranges
            del saved[name]
        (leaf,) = named_leaves(self._client, self._plan, [key])
        state.position = None
        if found.range_blocks is None:  # a view or a query: read whole
            self._sink.read_all(lambda: reads.leaf_whole(self._plan, leaf), on_restart=lambda: None)
        elif names:
            spans = block_ranges.spans(names, found.range_blocks)
            with self._sink.saving(save):
                build = lambda: reads.range_rows(self._plan, leaf, spans, found.per_segment, None)  # noqa: E731
                self._sink.read_all(build, mark, on_restart=lambda: None)  # upserts again: no position kept
        state.position = None
        done |= {name: current[name] for name in names}
        save()
        self._sink.progressed()

    # Appended rows alone.

    def _appended_only(self, found: Survey, changes: dict[str, ao.LeafChange]) -> bool:
        """Upserts the rows appended to the changed AO leaves when nothing else changed there (no row hidden since, no
        file rewritten), once their keys are checked; returns whether it did. Otherwise the full pass runs."""
        if any(change is ao.LeafChange.REWRITTEN for change in changes.values()):
            return False
        saved, flavour = self._state.leaves, self._sink.source.flavour
        files, hidden = {}, {}
        for key in changes:
            files[key] = ao.decode_files(saved[key].ao["files"]) if key in saved else {}
            hidden[key] = ao.fetch_hidden_counts(self._client, flavour, found.ao_leaves[key])
            if key in saved and hidden[key] != ao.decode_counts(saved[key].ao.get("hidden", "")):
                log.info(f"{self._plan.state_key}: rows were deleted or updated in leaf {key}: the table is read again")
                return False
        if self._plan.declared_key:
            windows = [
                reads.ao_rows_window(found.ao_leaves[key], ao.read_from(files[key], witness=False)) for key in changes
            ]
            check_windows(self._client, self._plan, windows)
        log.info(f"{self._plan.state_key}: rows appended to {len(changes)} leaf(s), nothing else changed: read alone")
        for key in sorted(changes, key=int):
            leaf = found.ao_leaves[key]
            witnesses = {file: rows.high for file, rows in files[key].items() if rows.high}
            resend = key in saved and bool(saved[key].ao.get("resend"))  # a column added or renamed: every row
            seen = self._read_ao_rows(leaf, files[key], every_row=resend)
            if ao.rewritten(witnesses, seen, {}):
                log.info(f"{self._plan.state_key}: leaf {key} was rewritten (VACUUM): the table is read again")
                return False
            facts = found.facts[key]
            ao_state = {"rel": facts.relfilenode, "fp": facts.fingerprint, "files": ao.encode_files(files[key])}
            saved[key] = LeafState("", 0, ao_state | {"hidden": ao.encode_counts(hidden[key])})
            self._sink.progressed()
        return True

    # The full pass, noting where each append-optimized file's rows end.

    def _ao_baselines(self, found: Survey) -> dict[str, LeafState]:
        """What a full pass saves of each AO leaf: the catalog's facts and hidden rows before it began; the highest
        row number of each file is noted as the pass reads."""
        flavour = self._sink.source.flavour
        baselines = {}
        for key, leaf in found.ao_leaves.items():
            hidden = ao.encode_counts(ao.fetch_hidden_counts(self._client, flavour, leaf))
            facts = found.facts[key]
            ao_state = {"rel": facts.relfilenode, "fp": facts.fingerprint, "files": "", "hidden": hidden}
            baselines[key] = LeafState("", 0, ao_state)
        return baselines

    def _read_keyed_pass(self) -> None:
        plan, state = self._plan, self._state
        if state.pass_digest is not None:
            self._read_digested_pass()
            return
        tracked = {key for key, leaf in (state.pass_leaves or {}).items() if leaf.ao is not None}
        if not tracked:
            self._sink.read_all(lambda: reads.keyed(plan, state))
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
                    files[leaf].setdefault((raw[-2], segno), ao.SegmentFileRows()).raise_high(row_number)
            return rows

        with self._sink.saving(save):
            self._sink.read_all(lambda: reads.keyed(plan, state, extra=LOCATED), note_highs)
        save()

    def _read_digested_pass(self) -> None:
        """The full pass of a keyed table with a difference digest: the digest is made of the rows as they are read,
        so it holds exactly what the destination holds when the pass ends, whatever changed at the source meanwhile.
        Its checkpoints carry what the pairs read come to (`pass_noted`), not the digest: a pass killed partway takes
        the digest of the rows it had read from the source, and starts again when they changed since."""
        plan, state = self._plan, self._state
        encoding = key_encoding(plan)
        hashed = pair_hash(plan, self._sink.source.hashing, list(plan.columns))
        cells = dd.Cells.unpack(state.pass_digest)
        if not self._undo_reads(encoding):
            cells = self._start_again(cells, "what it read past its state cannot be named")
        if state.position is not None:  # killed partway: its digest from the rows it had read
            cells = self._taken_again(cells, encoding)
        keys = KeysSince(encoding.codec)  # the keys read, for the journal (`landing.py`)
        sent = SentPairs(encoding, [(cells, hashed), (keys.cells, None)])
        notes = PassNotes(state, plan) if state.pass_digest_leaves is not None else None

        def save() -> None:
            state.pass_noted = dd.noted(cells, state.position)
            if notes is not None:
                notes.save()
            since = keys.take() if state.position is not None else None
            if since is not None:
                state.landing = landing.note(state.landing, "reads", [since, list(state.position)])

        with self._sink.saving(save, checked=True):
            self._sink.read_all(lambda: reads.keyed(plan, state, extra=noting_extra(notes, sent)), noting(notes, sent))
        save()
        state.pass_digest, state.pass_noted = (cells.pack() if sent.unfit is None else None), None
        if sent.unfit is not None:
            log.info(f"{plan.state_key}: {sent.unfit}: its digest cannot carry it; block range digests instead")
            state.digest_unfit, state.pass_digest_leaves = True, None

    def _taken_again(self, start: dd.Cells, encoding: KeyEncoding) -> dd.Cells:
        """The digest of a pass killed partway: the rows up to its position, from the source, when they are those it
        read; else the pass starts again (a truncate, and every row)."""
        plan, state = self._plan, self._state
        fingerprint, position = dd.read_noted(state.pass_noted)
        if fingerprint is None or position is None:
            return self._start_again(start, "what it had read was not noted")
        up_to = reads.up_to(plan.primary_key, position)
        keys_sub_size = start.keys.sub_size if start.keys is not None else None
        ranges = KeyRanges(start.ranges.shift) if start.ranges is not None else None
        source = self._sink.source
        scanned, _ = scan_cells(
            self._client,
            plan,
            source.hashing,
            encoding,
            list(plan.columns),
            start.sub_size,
            keys_sub_size,
            up_to,
            None,
            ranges,
        )
        cells = start.added(scanned)
        if cells.fingerprint() != fingerprint:
            return self._start_again(start, f"rows read up to {position} changed since")
        log.info(f"{plan.state_key}: the digest of the rows read up to {position} is taken again")
        state.position = position  # rows read after its last checkpoint are read again
        return cells

    def _start_again(self, start: dd.Cells, why: str) -> dd.Cells:
        """A truncate, and an empty digest of the pass's sizes (an earlier version's partial one is not kept)."""
        log.info(f"{self._plan.state_key}: the pass stopped partway, and {why}: it starts again")
        self._sink.truncate()
        self._state.position = None
        empty = start.subtract(start)
        empty.ranges = KeyRanges() if start.ranges is not None else None
        return empty
