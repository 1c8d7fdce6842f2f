"""A keyless table's sync by content (`content_digest.py`): each sync takes the digest of the table's contents and
how many rows hold each, peels its difference with the one saved, and sends the ids a content gained (its row, under
its next ordinals) and deletes those it lost (its highest ordinals): the destination mirrors the source as a
multiset, and a row that only moved sends nothing.

On Greenplum, a table whose leaves are all append-optimized is not scanned when the catalog's facts of its leaves are
those saved with the digest; when they say some leaves changed, those are scanned alone where their prints or
digests of their own tell what changed (`changed_leaves.py`), and the rows sent are read from them. The first
sync, a digest that cannot be used (columns changed, ids of an earlier version) and a difference past the digest's
capacity read every row in content order after a truncate, resumably.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
from fivetran_connector_sdk import Logging as log
from psycopg2 import sql

import changed_leaves
import difference_digest as dd
import landing
import leaf_prints
import reads
import schema_changes
from ao_keyed import AoNow, append_optimized_now
from block_ranges import cancelled_as_digest
from content_digest import ContentScan, add_contents, content_hash, move_content, row_id, scan_contents
from leaves import Leaf
from planning import ROW_ID_COLUMN
from table_sink import TableSink

_CONTENTS_PER_READ = 10_000  # contents whose rows are read back in one statement
_DELETES_TOGETHER = 10_000  # the most deletes of one content between two checkpoints


class KeylessPass:
    """One keyless table's sync, sending through its `TableSink`."""

    def __init__(self, sink: TableSink) -> None:
        self._sink, self._plan, self._state = sink, sink.plan, sink.state
        self._client, self._hashing = sink.source.client, sink.source.hashing
        self._content = content_hash(self._plan, self._hashing)
        self._read_rows = 0  # rows a full pass read in this sync

    def run(self) -> None:
        state, plan = self._state, self._plan
        landed, state.landing = state.landing or {}, None
        if landed.get("contents") and state.digest is not None and not state.in_pass:
            self._undo_contents(landed["contents"])
        self._landed_reads = landed.get("reads") or []
        now = append_optimized_now(self._client, self._sink.source.flavour, plan)
        fills = landed.get("fills") if state.digest is not None and not state.in_pass else None
        if fills and not self._undo_fills(fills, now):
            self._full_pass(now, "the rows the last sync sent past its state changed too much since")
            return
        saved = dd.Cells.unpack(state.digest) if state.digest is not None else None
        why = self._why_read_again(saved)
        if why is not None or state.in_pass:
            self._full_pass(now, why)
            return
        if now is not None and now.text == state.digest_ao:
            log.info(f"{plan.state_key}: its append-optimized leaves are unchanged (the catalog says so); nothing read")
            return
        if now is not None:
            flavour = self._sink.source.flavour
            found = changed_leaves.scan_alone(self._client, flavour, plan, self._hashing, state, saved, now)
            if found is not None:
                self._remember(len(found.pairs))
                self._send_noting_leaves(saved, found, now)
                return
        by_leaf = now is not None and plan.partitioned
        sizes = changed_leaves.leaf_digest_sizes(plan, state, now) if by_leaf else None
        scan = self._scan(saved.sub_size, by_leaf, sizes)
        difference = scan.cells.subtract(saved)
        pairs = difference.peel()
        if pairs is None:
            self._remember(difference.estimated_pairs())
            found, flavour = None, self._sink.source.flavour
            if by_leaf:
                larger = self._new_cells().sub_size  # sized for the difference just seen, as a pass's would be
                found = changed_leaves.appended_alone(self._client, flavour, plan, self._hashing, state, now, larger)
            if found is not None:
                if self._send_whole(found, now):
                    return
                why = "rows were deleted from the leaves sent again while they were read"
                self._full_pass(append_optimized_now(self._client, flavour, plan), why)
                return
            self._full_pass(now, f"more than {dd.capacity(saved.sub_size):,} contents changed, past its digest")
            return
        self._remember(len(pairs))
        gained = changed_leaves.where_gained(plan, state, now)
        digests = changed_leaves.digests_after_scan(state, now, scan)
        found = changed_leaves.Found(pairs, scan.cells, scan.leaf_prints, digests, gained)
        self._send_noting_leaves(saved, found, now)

    def _send_noting_leaves(self, held: dd.Cells, found: changed_leaves.Found, now: AoNow | None) -> None:
        """Sends the difference, then saves the leaves' prints and digests, which stand for what the digest holds:
        only when it holds what was expected (a content whose rows were gone by the time they were read back keeps
        what it had). None is saved while the rows land, as the digest moves content by content: a sync killed then,
        and its leaves changed back, would find them as printed and keep what had landed."""
        state = self._state
        state.digest_prints = state.leaf_digests = None
        self._send(held, found.pairs, found.leaves)
        self._noted(held, found, now, *self._filled(held, found, now, saving=True))

    def _send_whole(self, found: changed_leaves.Found, now: AoNow) -> bool:
        """Sends every row of the leaves that only gained rows (or held nothing), past the digest. The saved digest
        stays in the state until they are read and the catalog still shows only rows appended there: it names what
        the destination holds, so what a sync killed meanwhile left, or a row deleted before the reads began, is
        found by the next sync's difference. False when the catalog shows rows gone since: the destination may hold
        one that no read returned."""
        self._state.digest_prints = self._state.leaf_digests = None
        held = found.expected.copy()
        prints, digests = self._filled(held, found, now, saving=False)
        flavour, saved_ao = self._sink.source.flavour, self._state.digest_ao
        if not changed_leaves.still_only_appended(self._client, flavour, self._plan, saved_ao, found.grown):
            return False
        self._state.digest = held.pack()
        self._noted(held, found, now, prints, digests)
        return True

    def _filled(
        self, held: dd.Cells, found: changed_leaves.Found, now: AoNow | None, saving: bool
    ) -> tuple[dict[str, leaf_prints.Print], dict[str, dd.Cells]]:
        """Sends the leaves `found` says to send whole; returns every leaf's print and the leaves' own digests."""
        prints, digests = dict(found.prints or {}), dict(found.digests)
        for key, digest_size in found.filled.items():
            prints[key], cells = self._fill(held, found.expected, now.leaves[key], digest_size, saving)
            digests |= {key: cells} if cells is not None and prints[key][0] else {}
        return prints, digests

    def _noted(
        self,
        held: dd.Cells,
        found: changed_leaves.Found,
        now: AoNow | None,
        prints: dict[str, leaf_prints.Print],
        digests: dict[str, dd.Cells],
    ) -> None:
        """Saves the catalog's facts, and the prints and digests of the leaves when the digest holds what was
        expected."""
        state = self._state
        state.digest_ao = now.text if now is not None else None
        if found.prints is not None and held.fingerprint() == found.expected.fingerprint():
            state.digest_prints = leaf_prints.encode({key: print_ for key, print_ in prints.items() if print_[0]})
            state.leaf_digests = {key: cells.pack() for key, cells in digests.items()} or None
        self._sink.progressed()

    def _fill(
        self, held: dd.Cells, expected: dd.Cells, leaf: Leaf, digest_size: int, saving: bool
    ) -> tuple[leaf_prints.Print, dd.Cells | None]:
        """Every row of a leaf sent whole (it held nothing, or only gained rows), in content order under ordinals
        from 1, over those that landed: no other leaf holds their contents (a row's leaf follows from its values), so
        no digest need name them, however many. Each content's pair joins the table's digest (saved at each
        checkpoint: a sync killed here leaves the rest to the next one's scan of the table), the digest expected, the
        leaf's print and its own digest (of `digest_size`, 0: none) as its run of rows ends. Not `saving`: the
        digest in the state is left as it was."""
        state, plan = self._state, self._plan
        print_: leaf_prints.Print = (0, 0)
        cells = dd.Cells(digest_size, dd.Codec.CONTENT) if digest_size else None
        noted: list[int] = []  # the highest content noted: a read started again after a lost connection reads it again
        run: list[int] = []  # the content of the rows read last, and its highest ordinal: the run not yet ended
        # The pairs sent since the last checkpoint and the first content among them, for the journal (`landing.py`);
        # whether rows were sent since.
        sent, first, since = dd.Cells(landing.READS_SUB_SIZE, dd.Codec.CONTENT), [], [False]

        def note(contents: np.ndarray, counts: np.ndarray) -> None:
            nonlocal print_
            new = contents > noted[0] if noted else np.ones(len(contents), bool)  # contents arrive in order
            if new.any():
                noted[:] = [int(contents[new].max())]
                first[:] = first or [int(contents[new].min())]
            words = np.stack([contents[new], counts[new]], axis=1).astype(np.int64)
            hashes = dd.key_hashes(words)
            for digest in filter(None, (held, expected, cells, sent)):
                digest.add_pairs(words, hashes)
            print_ = leaf_prints.add_prints(print_, hashes)

        def number(batch: list[tuple], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            note(*_numbered(batch, rows, run))
            since[0] = True
            return rows

        def save() -> None:
            nonlocal sent
            if saving:
                state.digest = held.pack()
            if since[0]:  # a journal entry only with the rows it names, or it would outlive them
                since[0] = False
                bounds = first or run[:1]
                entry = [sent.added(_run_cells(sent, run)).pack(), bounds[0], run[0] if run else noted[0], leaf.key]
                state.landing = landing.note(state.landing, "fills", entry)
                sent, first[:] = dd.Cells(landing.READS_SUB_SIZE, dd.Codec.CONTENT), run[:1]

        read = dataclasses.replace(reads.in_content_order(plan, self._content, None, leaf), position_columns=())
        with self._sink.saving(save):
            self._sink.read_all(lambda: read, number, on_restart=run.clear)
            if run:
                note(np.array(run[:1]), np.array(run[1:]))
        save()
        log.info(f"{plan.state_key}: leaf {leaf.key} sent whole: {print_[0]:,} contents")
        return print_, cells

    def _why_read_again(self, saved: dd.Cells | None) -> str | None:
        """Why every row is read (after a truncate), or None when the saved digest tells what changed."""
        state = self._state
        if saved is None and state.leaves is None:
            return "its first sync"
        if saved is None or saved.codec is not dd.Codec.CONTENT:
            return "its rows had ids of where they lay (an earlier version): they are known by their content now"
        if state.digest_columns != schema_changes.column_list(self._plan):
            return "its columns changed, and with them every row's content"
        return None

    # What the last sync sent after its state was saved (`landing.py`).

    def _undo_contents(self, entries: list[list[int]]) -> None:
        """Deletes the ids between the two counts of each content the last sync moved after its state was saved,
        and moves the digest to the lower one: the destination then holds what the digest says, landed or not."""
        held = dd.Cells.unpack(self._state.digest)

        def save() -> None:
            self._state.digest = held.pack()

        log.info(f"{self._plan.state_key}: the last sync stopped with {len(entries):,} contents sent past its state")
        with self._sink.together(save):
            for content, before, after in entries:
                for ordinal in range(min(before, after) + 1, max(before, after) + 1):
                    self._sink.delete({ROW_ID_COLUMN: row_id(content, ordinal)})
                if after < before:
                    move_content(held, content, before, after)
        save()

    def _undo_fills(self, entries: list[list[Any]], now: AoNow | None) -> bool:
        """Deletes the ids of leaves sent whole past the saved state whose contents the leaf now holds fewer times:
        the digest of the (content, rows) pairs sent, less the leaf's pairs from the first content to the last now,
        names them (the state's digest does not hold them: the next difference sends what the leaf holds). False
        when it cannot (the leaf gone, or too much changed): the table is read again."""
        fewer: dict[int, tuple[int, int]] = {}
        for packed, first, last, key in entries:
            leaf = now.leaves.get(key) if now is not None else None
            bounds = sql.SQL("{} BETWEEN {} AND {}").format(self._content, sql.Literal(first), sql.Literal(last))
            if leaf is None or not self._note_fewer(packed, bounds, fewer, leaf):
                return False
        self._delete_past(fewer)
        return True

    def _undo_reads(self) -> bool:
        """Deletes the ids a killed pass read past its saved position that the source no longer holds: the digest
        of the (content, rows) pairs it read there, less the source's pairs of those contents now, names the
        contents now held by fewer rows. False when the difference is past that digest: the pass starts again."""
        state, plan = self._state, self._plan
        if not self._landed_reads:
            return True
        fewer: dict[int, tuple[int, int]] = {}  # content -> (rows now, the most any read sent)
        for packed, last in self._landed_reads:
            bounds = [sql.SQL("{} <= {}").format(self._content, sql.Literal(last))]
            if state.position is not None:
                bounds.append(sql.SQL("{} >= {}").format(self._content, sql.Literal(int(state.position[0]))))
            if not self._note_fewer(packed, sql.SQL(" AND ").join(bounds), fewer):
                log.info(f"{plan.state_key}: the rows the last sync read past its state changed too much since")
                return False
        self._delete_past(fewer)
        self._landed_reads = []
        return True

    def _note_fewer(
        self, packed: str, bounds: sql.Composable, fewer: dict[int, tuple[int, int]], leaf: Leaf | None = None
    ) -> bool:
        """Notes in `fewer` the contents that a journal's digest of the (content, rows) pairs sent says were sent
        more times than the source (the leaf) holds them now, within the bounds: (rows now, the most sent). False
        when the difference is past that digest."""
        sent = dd.Cells.unpack(packed)
        now = scan_contents(self._client, self._plan, self._hashing, sent.sub_size, bounds, leaf).cells
        pairs = now.subtract(sent).peel()
        if pairs is None:
            return False
        rows_now = {pair.words[0]: pair.words[1] for pair in pairs if pair.sign > 0}
        for pair in pairs:
            content, count = pair.words
            if pair.sign < 0 and count > rows_now.get(content, 0):
                fewer[content] = (rows_now.get(content, 0), max(count, fewer.get(content, (0, 0))[1]))
        return True

    def _delete_past(self, fewer: dict[int, tuple[int, int]]) -> None:
        """Deletes each content's ids past the rows the source holds now, up to the most sent."""
        log.info(f"{self._plan.state_key}: of the contents the last sync sent past its state, {len(fewer):,} lost rows")
        with self._sink.together(lambda: None):
            for content, (now_count, most) in sorted(fewer.items()):
                for ordinal in range(now_count + 1, most + 1):
                    self._sink.delete({ROW_ID_COLUMN: row_id(content, ordinal)})

    # What changed: ids gained and lost, content by content.

    def _send(self, held: dd.Cells, pairs: list[dd.Pair], leaves: list[Leaf] | None = None) -> None:
        """Deletes the highest ordinals of the contents held less often, and sends the contents held more often
        under their next ordinals, from one row of each read back. The digest follows what landed, content by
        content, and is saved at every checkpoint; a content whose rows are all gone by the time they are read back
        keeps what it had. The rows are read back from `leaves` alone when given: those where they were gained."""
        state, plan = self._state, self._plan
        before = {pair.words[0]: pair.words[1] for pair in pairs if pair.sign < 0}
        after = {pair.words[0]: pair.words[1] for pair in pairs if pair.sign > 0}
        fewer = {content: held_count for content, held_count in before.items() if after.get(content, 0) < held_count}
        more = {content: count for content, count in after.items() if count > before.get(content, 0)}
        to_send = sum(count - before.get(content, 0) for content, count in more.items())
        log.info(
            f"{plan.state_key}: {len(more):,} contents held by more rows, {len(fewer):,} by fewer: "
            f"{to_send:,} rows to send, "
            f"{sum(count - after.get(content, 0) for content, count in fewer.items()):,} to delete"
        )

        def save() -> None:
            state.digest = held.pack()

        with self._sink.saving(save):
            for content, held_count in sorted(fewer.items()):
                now_count = after.get(content, 0)
                # The digest moves with each run of deletes, and no checkpoint falls inside one: one there would
                # save a count some of whose ids are gone, and a sync killed then would later send too few.
                for upper in range(held_count, now_count, -_DELETES_TOGETHER):
                    lower = max(now_count, upper - _DELETES_TOGETHER)
                    with self._sink.together(save):
                        for ordinal in range(upper, lower, -1):
                            self._sink.delete({ROW_ID_COLUMN: row_id(content, ordinal)})
                        move_content(held, content, upper, lower)
                        state.landing = landing.note(state.landing, "contents", [content, upper, lower])
            self._sink.expect(to_send)
            contents, moved = sorted(more), set()
            for start in range(0, len(contents), _CONTENTS_PER_READ):
                chunk = contents[start : start + _CONTENTS_PER_READ]

                def copies(batch: list[tuple], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
                    sent = []
                    for raw, row in zip(batch, rows, strict=True):
                        content = raw[-1]
                        held_count, count = before.get(content, 0), more[content]
                        if content not in moved:  # a read started again after a lost connection sends it again
                            move_content(held, content, held_count, count)
                            state.landing = landing.note(state.landing, "contents", [content, held_count, count])
                            moved.add(content)
                        sent += [row | {ROW_ID_COLUMN: row_id(content, n)} for n in range(held_count + 1, count + 1)]
                    return sent

                read = reads.of_contents(plan, self._content, chunk, leaves)
                self._sink.read_all(lambda read=read: read, copies, on_restart=lambda: None)
        state.digest, state.digest_columns = held.pack(), schema_changes.column_list(plan)

    # Every row, in content order.

    def _full_pass(self, now: AoNow | None, why: str | None) -> None:
        """Every row after a truncate, in (content, ordinal) order, resumably; its digest is made of the rows read,
        and its checkpoints note what it comes to, not the digest (`difference_digest.noted`)."""
        state, plan = self._state, self._plan
        if not state.in_pass:
            log.info(f"{plan.state_key}: every row read, known by its content: {why}")
            cells = self._new_cells()
            self._sink.probe(reads.in_content_order(plan, self._content, None))
            self._sink.truncate()
            state.in_pass, state.position = True, None
            state.pass_digest = cells.pack()
            state.pass_digest_ao = now.text if now is not None else None
            # ids of an earlier version's go with the truncate
            state.leaves = state.reading = state.digest = state.digest_prints = state.leaf_digests = None
        cells = dd.Cells.unpack(state.pass_digest)
        if not self._undo_reads():
            self._sink.truncate()
            state.position = None
            cells = cells.subtract(cells)
        if state.position is not None:
            cells = self._taken_again(cells)
        run: list[int] = []  # the content of the rows read last, and its highest ordinal: the run not yet ended
        if state.position is not None:
            run = [int(state.position[0]), int(state.position[1])]
        # What the reads since the last checkpoint sent, for the journal (`landing.py`); None: nothing since.
        sent: list[dd.Cells | None] = [None]

        def number(batch: list[tuple], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            ended, counts = _numbered(batch, rows, run)
            add_contents(cells, ended, counts)
            if sent[0] is None:
                sent[0] = dd.Cells(landing.READS_SUB_SIZE, dd.Codec.CONTENT)
            add_contents(sent[0], ended, counts)
            self._read_rows += len(batch)
            return rows

        def note_sent() -> None:
            if sent[0] is not None:
                entry = [sent[0].added(_run_cells(sent[0], run)).pack(), run[0]]
                state.landing, sent[0] = landing.note(state.landing, "reads", entry), None

        def save() -> None:
            noted = cells.added(_run_cells(cells, run))  # the run under way counts as far as it went
            state.pass_noted = dd.noted(noted, state.position)
            note_sent()

        with self._sink.saving(save, checked=True):
            self._sink.read_all(lambda: reads.in_content_order(plan, self._content, state.position), number)
        note_sent()
        if run:
            add_contents(cells, np.array([run[0]]), np.array([run[1]]))
        cells, prints, leaf_cells = self._taken_whole(cells, now)
        state.digest, state.digest_columns = cells.pack(), schema_changes.column_list(plan)
        state.digest_prints = leaf_prints.encode(prints) if prints is not None else None
        state.leaf_digests = {key: leaf.pack() for key, leaf in leaf_cells.items()} or None
        state.digest_ao, state.pass_digest_ao = state.pass_digest_ao, None
        state.in_pass, state.position, state.pass_digest, state.pass_noted = False, None, None, None
        self._sink.progressed()

    def _taken_whole(
        self, cells: dd.Cells, now: AoNow | None
    ) -> tuple[dd.Cells, dict[str, leaf_prints.Print] | None, dict[str, dd.Cells]]:
        """The pass's digest, and where the leaves are append-optimized partitions each leaf's print and the newest
        one's own digest (so that the leaves the catalog next says changed can be scanned alone), from one more scan
        of the source, whose digest is kept when the rows there are still those read; it is taken at the size the
        rows call for when the table held more than its estimate said (a table never analyzed). Elsewhere, and when
        the size is enough, no scan."""
        sub_size = dd.choose_sub_size(self._read_rows, self._state.digest_sizes or [], dd.Codec.CONTENT.words)
        by_leaf = now is not None and self._plan.partitioned
        if sub_size <= cells.sub_size and not by_leaf:
            return cells, None, {}
        newest = changed_leaves.newest_leaf_digest_size(now, self._state.digest_sizes or []) if by_leaf else None
        scan = self._scan(max(sub_size, cells.sub_size), by_leaf, newest)
        if scan.cells.fingerprint() != cells.fingerprint():  # a fingerprint holds whatever the size: their pairs differ
            return cells, None, {}
        if sub_size > cells.sub_size:
            rows = f"{self._read_rows:,} rows"
            log.info(f"{self._plan.state_key}: its digest is taken again at the size its {rows} call for")
        return scan.cells, scan.leaf_prints, scan.leaf_cells

    def _taken_again(self, start: dd.Cells) -> dd.Cells:
        """The digest of a pass killed partway: the contents before the one its noted position reached, and that one
        as far as it went, from the source, when they are those it read; else it starts again after a truncate."""
        state, plan = self._state, self._plan
        fingerprint, position = dd.read_noted(state.pass_noted)
        if fingerprint is not None and position is not None:
            content, ordinal = int(position[0]), int(position[1])
            before = sql.SQL("{} < {}").format(self._content, sql.Literal(content))
            cells = scan_contents(self._client, plan, self._hashing, start.sub_size, before).cells
            cells = start.added(cells)
            if cells.added(_run_cells(cells, [content, ordinal])).fingerprint() == fingerprint:
                log.info(f"{plan.state_key}: the digest of the rows read up to {position} is taken again")
                state.position = position
                return cells
        log.info(f"{plan.state_key}: the pass stopped partway, and the rows it read changed since: it starts again")
        self._sink.truncate()
        state.position = None
        return start.subtract(start)

    def _scan(self, sub_size: int, by_leaf: bool = False, leaf_sizes: dict[str, int] | None = None) -> ContentScan:
        with cancelled_as_digest("the scan of its contents"):
            return scan_contents(
                self._client, self._plan, self._hashing, sub_size, by_leaf=by_leaf, leaf_sizes=leaf_sizes
            )

    def _new_cells(self) -> dd.Cells:
        rows = self._plan.estimated_rows if self._plan.estimated_rows > 0 else self._planner_rows()
        return dd.Cells(dd.choose_sub_size(rows, self._state.digest_sizes or [], 2), dd.Codec.CONTENT)

    def _planner_rows(self) -> int:
        """The planner's estimate of the rows, for a table the catalog has none of (never analyzed): it counts the
        relation's pages, so a digest is sized for the rows there even when they changed while the pass read them."""
        statement = sql.SQL("EXPLAIN (FORMAT JSON) SELECT * FROM {}").format(self._plan.relation)
        ((explained,),) = self._client.query(statement)  # json arrives as text: the client lands it as such
        return max(int(json.loads(explained)[0]["Plan"]["Plan Rows"]), 0)

    def _remember(self, pairs: int) -> None:
        self._state.digest_sizes = dd.with_difference(self._state.digest_sizes, pairs)


def _numbered(batch: list[tuple], rows: list[dict[str, Any]], run: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Gives the rows of a batch read in content order their ids, and returns the contents whose runs of rows the
    batch ended (the run under way before it among them, when the batch starts another) and how many rows hold
    each; `run` becomes the one it ends in, not yet ended (content, highest ordinal)."""
    contents = np.array([raw[-2] for raw in batch], np.int64)
    ordinals = np.array([raw[-1] for raw in batch], np.int64)
    for raw, row in zip(batch, rows, strict=True):
        row[ROW_ID_COLUMN] = row_id(raw[-2], raw[-1])
    ends = np.flatnonzero(contents[:-1] != contents[1:])  # the last row of each run the batch ends
    ended, counts = contents[ends], ordinals[ends]
    if run and run[0] != contents[0]:
        ended, counts = (
            np.concatenate([np.array(run[:1], np.int64), ended]),
            np.concatenate([np.array(run[1:], np.int64), counts]),
        )
    run[:] = [int(contents[-1]), int(ordinals[-1])]
    return ended, counts


def _run_cells(cells: dd.Cells, run: list[int]) -> dd.Cells:
    """A digest of the sizes of `cells` holding the pair of the run under way (none when there is none)."""
    partial = dd.Cells(cells.sub_size, cells.codec)
    if run:
        add_contents(partial, np.array([run[0]]), np.array([run[1]]))
    return partial
