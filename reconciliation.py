"""A keyed table's sync by set reconciliation: the difference digest (`difference_digest.py`) of its (key, row hash)
pairs, from one scan in which the server hashes each row, less the one saved at the last sync, names the keys
inserted, updated and deleted; those rows are read by key and upserted, those keys deleted, and nothing else is
sent. Rows moved without a change (VACUUM FULL, CLUSTER, a redistribution) keep their pairs and send nothing.

Keys are encoded as themselves (one integer column) or as their text (64 bytes at most), so that a deleted key comes
back from the cells; keys of other types or longer keys leave the table to the block range digests. A difference too
large to decode sends every row again, and deletes the keys that a digest of the keys alone names; when that one
cannot either, the table is read again after a truncate. Each is logged, and the next digest is sized for the
difference seen.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg2
from fivetran_connector_sdk import Logging as log
from psycopg2 import sql

import difference_digest as dd
import key_ranges
import reads
import schema_changes
from ao_keyed import LOCATED, AoNow, HighWater, PassNotes, ScanNotes, append_optimized_now, send_changes
from block_ranges import Hashing, row_hash
from declared_keys import check_keys, check_whole_table
from greenplum_client import GreenplumClient, is_statement_cancelled, one_line
from key_encoding import KeyEncoding, key_values
from key_ranges import KeyRanges
from leaf_survey import DigestCancelled
from planning import PlannedColumn, TablePlan

if TYPE_CHECKING:
    from sync import TableSync

# Differences kept to size the next digest.
_RECENT = 5
# Keys read back in one statement, and checked unique in one (a declared key: a scan of the table each).
_KEYS_PER_READ = 1000
_KEYS_PER_CHECK = 50_000
# The most rows of changed key ranges whose pairs are held to name a difference past the digest's capacity (16 MB of
# integer keys, 72 MB of text keys); more, and the table takes the read of every row.
MAX_RANGE_ROWS = 1_000_000
# The most keys that ranges emptied may span (their keys are listed, 8 bytes each).
MAX_SPANNED_KEYS = 4_000_000


@dataclass(frozen=True)
class Outside:
    """What a read of the key ranges that changed starts from: the digest (with its digest of keys and key ranges) of
    the rows outside them, and those ranges as `pass_ranges` saves them."""

    cells: dd.Cells
    held: dd.Cells  # the digest of keys the read starts from
    ranges_text: str
    rows: int  # the rows of the ranges, as the digest's scan counted them
    gone: int  # the keys of the ranges emptied, deleted after the read


@dataclass(frozen=True)
class ChangedRanges:
    """The key ranges whose fingerprints changed, scanned again: what the log says of them, which they are, the
    cells of their rows (as the digest's scan saw them) and, when few enough to name, their pairs."""

    where: str
    shift: int
    ranges: np.ndarray
    scanned: dd.Cells
    pairs: tuple[np.ndarray, np.ndarray] | None
    emptied: np.ndarray  # ranges that held rows and hold none now, spanning few keys they lacked (integer keys)

    def lacked(self, difference: dd.Cells) -> np.ndarray | None:
        """The keys the emptied ranges span but did not hold, when the digest of keys names them with the keys
        inserted and deleted elsewhere (theirs taken out: they span them); None when it does not. Such a key comes
        out as one that came: no range emptied holds a key now."""
        if difference.keys is None:
            return None
        pairs = _with_keys(difference.keys, key_ranges.keys_of(self.shift, self.emptied)).peel()
        if pairs is None:
            return None
        came = np.array([pair.words[0] for pair in pairs if pair.sign > 0], np.int64)
        return np.sort(came[np.isin(came >> self.shift, self.emptied)])

    def outside(self, current: dd.Cells, lacked: np.ndarray) -> Outside:
        """The rows outside these ranges, from the digest's scan of the whole table; the keys read start from theirs
        and those of the ranges emptied."""
        cells = current.subtract(self.scanned)
        cells.ranges = current.ranges.less(self.scanned.ranges)
        gone = key_ranges.held_keys(self.shift, self.emptied, lacked)
        text = key_ranges.encode_ranges(self.shift, self.ranges, self.emptied, lacked)
        return Outside(cells, _with_keys(cells.keys, gone), text, self.scanned.ranges.rows(), len(gone))


def _with_keys(keys_digest: dd.Cells, keys: np.ndarray) -> dd.Cells:
    """A copy of a digest of keys with these integer keys added."""
    cells = keys_digest.copy()
    if len(keys):
        words = keys[:, None]
        cells.add_pairs(words, dd.key_hashes(words))
    return cells


class Outcome(enum.Enum):
    SENT = "sent"  # what changed was sent; the table is done
    FULL_PASS = "full pass"  # the digest cannot tell: a truncate and a full read, whose rows make the next digest
    NOT_APPLICABLE = "not applicable"  # keys the digest cannot carry: the table's other path


class Reconciliation:
    """One keyed table's reconciliation, sending through its `TableSync`."""

    def __init__(self, table: TableSync, encoding: KeyEncoding) -> None:
        self._table, self._plan, self._state = table, table.plan, table.state
        self._client = table.context.client
        self._hashing = table.context.hashing
        self._encoding = encoding
        self._rows = max(self._plan.estimated_rows, 0)  # the table's rows, as the last digest's scan counted them

    def run(self) -> Outcome:
        plan, state = self._plan, self._state
        current_columns = schema_changes.column_list(plan)
        saved = dd.Cells.unpack(state.digest) if state.digest else None
        now = self._append_optimized_now()  # before any scan: what changes after it is seen next time
        catalog = now.text if now is not None else None
        if saved is None or saved.codec is not self._encoding.codec:
            self._start_pass(now)
            return Outcome.FULL_PASS
        if catalog is not None and catalog == state.digest_ao and state.digest_columns == current_columns:
            log.info(f"{plan.state_key}: its append-optimized leaves are unchanged (the catalog says so); nothing read")
            return Outcome.SENT
        changes = schema_changes.compare(state.digest_columns or current_columns, list(plan.primary_key), plan)
        hashed = self._hashed_columns(state.digest_columns or current_columns, changes)
        if hashed is None:
            log.info(
                f"{plan.state_key}: a column its digest hashed is gone or holds other values ({changes.describe()}): "
                "the table is read again"
            )
            self._start_pass(now)
            return Outcome.FULL_PASS
        if changes.backfill or state.pass_held is not None:  # new columns, or such a read killed partway
            return self._read_every_row(saved, hashed, now)
        if now is not None and state.digest_columns == current_columns:
            outcome = self._send_changes(now)
            if outcome is not None:
                return outcome
        flavour = self._table.context.flavour
        notes = ScanNotes(self._client, flavour, now, state.digest_ao, plan) if now is not None else None
        try:
            current = self._cells(saved, hashed, notes.high_water if notes is not None else None)
        except dd.KeyTooLong as error:
            return self._unfit(error)
        except dd.NullKey:
            log.info(f"{plan.state_key}: a row's key is NULL, which no digest holds: the table is read again")
            self._start_pass(now)
            return Outcome.FULL_PASS
        if notes is not None:
            notes.after_scan()
        difference = current.subtract(saved)
        pairs = difference.peel()
        capacity = dd.capacity(saved.sub_size)
        too_many = f"{plan.state_key}: more than {capacity:,} rows' worth of changes, too many for its digest to name"
        changed = None
        if pairs is None:
            changed = self._scan_changed(saved, current, hashed, too_many)
            pairs = self._named_by_ranges(changed, difference, too_many) if changed is not None else None
        if pairs is None:
            self._remember(max(difference.estimated_pairs(), 2 * capacity))
            ranged = changed is not None and now is None and hashed == list(plan.columns)
            lacked = changed.lacked(difference) if ranged else None
            if lacked is not None:
                outside = changed.outside(current, lacked)
                emptied = f"; {outside.gone:,} keys of the ranges emptied deleted" if outside.gone else ""
                log.info(
                    f"{too_many}: every row of the key ranges changed is sent again, no truncate: its digest of keys "
                    f"names the keys deleted{emptied}"
                )
                return self._read_every_row(saved, hashed, now, outside)
            if difference.keys is not None and difference.keys.peel() is not None:
                log.info(
                    f"{too_many}: every row is sent again, no truncate: its digest of keys names the keys deleted; "
                    "its next digest is larger"
                )
                return self._read_every_row(saved, hashed, now)
            log.info(f"{too_many}, or the keys inserted and deleted: the table is read again after a truncate")
            self._start_pass(now)
            return Outcome.FULL_PASS
        came, went = dd.changes(pairs, self._encoding.codec)
        self._remember(len(pairs))
        updated = len(pairs) - len(came) - len(went)  # an updated key has two pairs, and is only in `came`
        log.info(
            f"{plan.state_key}: difference digest: {len(came) - updated:,} inserted, {updated:,} updated, "
            f"{len(went):,} deleted"
        )
        # The digest follows what the destination holds, op by op, and is saved at every checkpoint: a key's old
        # pair leaves it when the key is deleted or sent again, the row sent joins it as read (a row changed or deleted
        # since the scan is then seen next time), so a sync killed anywhere leaves a digest of what landed.
        held = saved
        old_pairs = {self._encoding.codec.decode(pair.words): pair for pair in pairs if pair.sign < 0}

        def forget(key: int | str) -> None:
            old = old_pairs.pop(key, None)
            if old is not None:
                held.add_pair(-1, old.words, old.h)

        def delete(key: int | str) -> None:
            forget(key)
            self._table.delete(key_values(self._encoding, key))

        def save() -> None:
            state.digest = held.pack()

        self._table.expected_rows = len(came)  # the progress lines count against the rows named
        hashed_now = pair_hash(plan, self._hashing, list(plan.columns))
        sent = SentPairs(self._encoding, [(held, hashed_now)], by_key=True, before=forget)
        self._table.on_checkpoint = save
        try:
            for key in sorted(went):
                delete(key)
            read_keys(self._table, self._encoding, sorted(came), sent=sent)
            if sent.unfit is not None:
                return self._unfit(sent.unfit)
            for key in sorted(came - sent.keys):  # a key named that is gone since: deleted too
                delete(key)
        finally:
            self._table.on_checkpoint = None
        if held.ranges is None:  # a digest saved before key ranges: those of the scan, close enough to guide
            held.ranges = current.ranges
        state.digest, state.digest_columns, state.position, state.digest_ao = (
            held.pack(),
            current_columns,
            None,
            catalog,
        )
        state.digest_leaves = notes.entries(state.digest_leaves or {}) if notes is not None else None
        self._table.progressed()
        return Outcome.SENT

    def _scan_changed(
        self, saved: dd.Cells, current: dd.Cells, columns: list[PlannedColumn], too_many: str
    ) -> ChangedRanges | None:
        """The key ranges whose fingerprints changed since the saved digest, scanned again (`key_ranges.py`); None
        when there are none, when they hold too many rows to name or to read alone, or when the scan saw other rows
        there than the digest's scan did."""
        if saved.ranges is None or current.ranges is None:
            return None
        shift, changed = current.ranges.changed(saved.ranges)
        if not len(changed):
            return None
        now = current.ranges.within(shift, changed)
        rows, before = now.rows(), saved.ranges.within(shift, changed).rows()
        total = len(current.ranges.at(shift).ranges)
        where = f"{len(changed):,} of its {total:,} key ranges changed, holding {before:,} rows before, {rows:,} now"
        nameable = before <= dd.K * saved.sub_size and rows <= MAX_RANGE_ROWS  # more pairs than cells never peel
        if not nameable and 2 * rows > self._rows:
            log.info(f"{too_many}: {where}, too many to name or to read alone")
            return None
        condition = key_ranges.condition(dd.first_word(self._encoding.codec, self._encoding.expression), shift, changed)
        keys_sub_size = saved.keys.sub_size if saved.keys is not None else None
        try:
            scanned, pairs = self._scan_pairs(columns, saved.sub_size, keys_sub_size, condition, shift, nameable)
        except (dd.KeyTooLong, dd.NullKey) as error:  # a key come since the digest's scan
            log.info(f"{too_many}: {where}, where a key does not fit the digest now ({error})")
            return None
        if not scanned.ranges.same_as(now):
            log.info(f"{too_many}: {where}, which changed again while they were scanned")
            return None
        emptied = np.zeros(0, np.int64)
        if self._encoding.codec is dd.Codec.INTEGER and keys_sub_size is not None:
            emptied = current.ranges.emptied(saved.ranges, shift, changed)
            spanned = len(emptied) << shift
            lacked = spanned - saved.ranges.within(shift, emptied).rows()
            if spanned > MAX_SPANNED_KEYS or lacked > dd.K * keys_sub_size:
                emptied = emptied[:0]  # more keys than held, or than the digest of keys can name
        return ChangedRanges(where, shift, changed, scanned, pairs, emptied)

    def _named_by_ranges(self, changed: ChangedRanges, difference: dd.Cells, too_many: str) -> list[dd.Pair] | None:
        """The pairs of a difference too large to peel, named with the key ranges' help, or None.

        The rows of the ranges that changed (R, as the digest's scan saw them) less the difference are the digest of
        the pairs those ranges held before (O): few when the keys were new there (rows inserted in bulk), so that it
        peels. R less O came, O less R went. A pair that peels with the wrong sign means the scans disagree: None."""
        if changed.pairs is None:
            return None
        before = changed.scanned.subtract(difference).peel()
        if before is None or any(pair.sign < 0 for pair in before):
            log.info(f"{too_many}: {changed.where}, too many before to name")
            return None
        log.info(f"{too_many}: {changed.where}, which name it")
        words, h = changed.pairs
        old = {(pair.words, pair.h) for pair in before}
        new = set(zip(map(tuple, words.tolist()), h.tolist(), strict=True))
        return [dd.Pair(1, *pair) for pair in new - old] + [dd.Pair(-1, *pair) for pair in old - new]

    def _scan_pairs(
        self,
        columns: list[PlannedColumn],
        sub_size: int,
        keys_sub_size: int | None,
        condition: sql.Composable,
        shift: int,
        keep: bool,
    ) -> tuple[dd.Cells, tuple[np.ndarray, np.ndarray] | None]:
        """The cells, with their digest of keys and their key ranges at `shift`, of the rows meeting the condition;
        with `keep`, their pairs too (words, h)."""
        md5 = self._hashing is Hashing.MD5_128
        ranges = KeyRanges(shift, key_ranges.UNLIMITED)
        sink = dd.PairSink(sub_size, self._encoding.codec, keys_sub_size, md5=md5, ranges=ranges, keep=keep)
        _copy_pairs(self._client, self._plan, self._hashing, self._encoding, columns, sink, condition)
        return sink.cells(), sink.pairs() if keep else None

    def _send_changes(self, now: AoNow) -> Outcome | None:
        """Sends what changed in the append-optimized leaves that changed, when the catalog tells (`ao_keyed.py`);
        None when the table needs the digest's scan."""
        state, plan = self._state, self._plan
        held = dd.Cells.unpack(state.digest)
        sent = SentPairs(self._encoding, [(held, pair_hash(plan, self._hashing, list(plan.columns)))])

        def delete(key: int | str) -> None:
            self._table.delete(key_values(self._encoding, key))

        entries = send_changes(self._table, now, held, sent.extra, sent.note, delete)
        if sent.unfit is not None:
            return self._unfit(sent.unfit)
        if entries is None:
            return None
        state.digest, state.digest_ao, state.digest_leaves, state.position = held.pack(), now.text, entries, None
        self._table.progressed()
        return Outcome.SENT

    def _read_every_row(
        self, saved: dd.Cells, hashed: list[PlannedColumn], now: AoNow | None, outside: Outside | None = None
    ) -> Outcome:
        """Sends every row again (a column added or renamed: the destination holds none of its values; or more rows
        changed than the digest names), in key order and resumable; the destination then holds exactly the rows
        read, so the keys it held that the read did not return are deleted: named by the saved digest of keys less
        the keys read, or (a digest saved without one) by the saved digest less the rows read, in the form it
        hashed. With `outside`, only the rows of the key ranges that changed are read: the digest and the keys read
        start from those of the rows outside them, which the digest's scan saw as they were at the last sync."""
        plan, state, codec = self._plan, self._state, self._encoding.codec
        log.info(f"{plan.state_key}: every row sent again" + (" of the key ranges changed" if outside else ""))
        resuming = state.position is not None and state.pass_digest is not None and state.pass_held is not None
        if not resuming:
            if plan.declared_key:  # the rows are read in key order: two under one key would land as one
                check_whole_table(self._client, plan)
            state.position = None
            # With a saved digest of keys, the read's digest is one of the keys it read, of that size.
            held_size = saved.keys.sub_size if saved.keys is not None else saved.sub_size
            if outside is None:
                state.pass_digest, state.pass_held = self._new_cells().pack(), dd.Cells(held_size, codec).pack()
                state.pass_ranges = None
            else:
                state.pass_digest, state.pass_held = outside.cells.pack(), outside.held.pack()
                state.pass_ranges = outside.ranges_text
                self._table.expected_rows = outside.rows  # the progress lines count against the rows read
            self._start_noting(now)
        fresh, read = dd.Cells.unpack(state.pass_digest), dd.Cells.unpack(state.pass_held)
        read_hash = None if saved.keys is not None else pair_hash(plan, self._hashing, hashed)
        sent = SentPairs(
            self._encoding, [(fresh, pair_hash(plan, self._hashing, list(plan.columns))), (read, read_hash)]
        )
        notes = PassNotes(state, plan) if state.pass_digest_leaves is not None else None

        def save() -> None:
            state.pass_digest, state.pass_held = fresh.pack(), read.pack()
            if notes is not None:
                notes.save()

        within = key_ranges.decode_condition(dd.first_word(codec, self._encoding.expression), state.pass_ranges)

        def in_key_order() -> reads.Read:
            return reads.keyed(plan, state, within, extra=noting_extra(notes, sent))

        self._table.on_checkpoint = save
        try:
            self._table.read_all(in_key_order, noting(notes, sent))
            self._delete_emptied(state.pass_ranges)
        finally:
            self._table.on_checkpoint = None
        state.pass_digest = state.pass_held = state.pass_ranges = None
        entries = notes.finish(self._append_optimized_now()) if notes is not None else None
        started_ao, state.pass_digest_ao, state.pass_digest_leaves = state.pass_digest_ao, None, None
        if sent.unfit is not None:
            return self._unfit(sent.unfit)
        # +1: held and not read; -1: read and not held before
        pairs = (saved.keys or saved).subtract(read).peel()
        if pairs is None:
            log.info(f"{plan.state_key}: the keys deleted meanwhile cannot be named: the table is read again next sync")
            state.digest, state.position, state.digest_leaves = None, None, None
            return Outcome.SENT
        held_only = {codec.decode(p.words) for p in pairs if p.sign > 0} - {
            codec.decode(p.words) for p in pairs if p.sign < 0
        }
        for key in sorted(held_only):
            self._table.delete(key_values(self._encoding, key))
        state.digest, state.digest_columns = fresh.pack(), schema_changes.column_list(plan)
        state.position, state.digest_ao, state.digest_leaves = None, started_ao, entries
        self._table.progressed()
        return Outcome.SENT

    def _delete_emptied(self, ranges_text: str | None) -> None:
        """Deletes the keys of the ranges emptied (`key_ranges.encode_ranges`) that are not there now: after the read,
        so that a key inserted there again since is neither deleted after it was sent nor lost; one that comes after
        the read passed it is sent by the next sync, which its digest lacks. Run again when resumed after a kill."""
        gone = key_ranges.decode_emptied(ranges_text)
        if not len(gone):
            return
        key = self._encoding.expression
        where = key_ranges.decode_condition(dd.first_word(self._encoding.codec, key), ranges_text, emptied=True)
        statement = sql.SQL("SELECT {} FROM {} WHERE {}").format(key, self._plan.relation, where)
        back = {row[0] for row in self._client.query(statement)}
        for value in gone.tolist():
            if value not in back:
                self._table.delete(key_values(self._encoding, value))

    def _start_pass(self, now: AoNow | None) -> None:
        """A full pass begins: its digest is made of the rows it reads (`pass_digest`), with the catalog's facts
        taken before it and what it notes of append-optimized leaves."""
        state = self._state
        state.pass_digest, state.pass_held, state.pass_ranges = self._new_cells().pack(), None, None
        state.digest_ao, state.digest_leaves = None, None
        self._start_noting(now)

    def _start_noting(self, now: AoNow | None) -> None:
        state = self._state
        state.pass_digest_ao = now.text if now is not None else None
        flavour = self._table.context.flavour
        state.pass_digest_leaves = PassNotes.start(self._client, flavour, now) if now is not None else None

    def _unfit(self, error: dd.KeyTooLong) -> Outcome:
        log.info(f"{self._plan.state_key}: {error}: its digest cannot carry it; block range digests instead")
        state = self._state
        state.digest_unfit, state.digest, state.pass_digest, state.pass_held = True, None, None, None
        state.pass_ranges = None
        state.digest_leaves = state.pass_digest_leaves = None
        return Outcome.NOT_APPLICABLE

    def _append_optimized_now(self) -> AoNow | None:
        context = self._table.context
        return append_optimized_now(self._client, context.flavour, self._plan)

    def _hashed_columns(
        self, saved_columns: list[list[str]], changes: schema_changes.ColumnChanges
    ) -> list[PlannedColumn] | None:
        """The plan's columns that the saved digest hashed, in its order (renamed ones under their new names); None
        when one of them is gone or holds other values now."""
        if (
            changes.dropped
            or changes.key_change
            or set(changes.backfill) - set(changes.added) - set(new for _, new in changes.renamed)
        ):
            return None
        names = dict(changes.renamed)
        by_name = {column.name: column for column in self._plan.columns}
        return [by_name[names.get(name, name)] for name, _ in saved_columns]

    def _new_cells(self) -> dd.Cells:
        """An empty digest sized for the table, with its digest of keys."""
        sub_size = dd.choose_sub_size(self._rows, self._state.digest_sizes or [], self._encoding.codec.words)
        ranges = KeyRanges()
        return dd.Cells(sub_size, self._encoding.codec, dd.keys_sub_size(sub_size), ranges)

    def _remember(self, pairs: int) -> None:
        self._state.digest_sizes = [*(self._state.digest_sizes or []), pairs][-_RECENT:]

    def _cells(self, saved: dd.Cells, columns: list[PlannedColumn], located: HighWater | None) -> dd.Cells:
        """The cells of the table's rows now, hashing the given columns, of the saved digest's sizes (`located` takes
        where the rows are); DigestCancelled when statement_timeout cancels the scan."""
        keys_sub_size = saved.keys.sub_size if saved.keys is not None else None
        try:
            cells, self._rows = scan_cells(
                self._client,
                self._plan,
                self._hashing,
                self._encoding,
                columns,
                saved.sub_size,
                keys_sub_size,
                located=located,
                ranges=KeyRanges(saved.ranges.shift if saved.ranges is not None else 0),
            )
        except psycopg2.Error as error:
            if not is_statement_cancelled(error):
                raise
            raise DigestCancelled(
                f"the server cancelled the difference digest's scan ({one_line(error)}); raise statement_timeout for "
                "USERNAME"
            ) from None
        return cells


def read_keys(
    table: TableSync,
    encoding: KeyEncoding,
    keys: list[int | str],
    only: tuple[sql.Composable, list[Any]] | None = None,
    sent: SentPairs | None = None,
) -> None:
    """Reads the rows of the given keys (those meeting `only`, a condition and its params) and upserts them, declared
    keys checked unique among them first; `sent` notes the pairs of the rows sent and their keys."""
    plan, client = table.plan, table.context.client
    extra = sent.extra if sent is not None else ()
    if plan.declared_key:
        for start in range(0, len(keys), _KEYS_PER_CHECK):
            check_keys(client, plan, *encoding.condition(keys[start : start + _KEYS_PER_CHECK]))
    for start in range(0, len(keys), _KEYS_PER_READ):
        condition, params = encoding.condition(keys[start : start + _KEYS_PER_READ])
        if only is not None:
            condition, params = sql.SQL("{} AND {}").format(condition, only[0]), [*params, *only[1]]
        read = reads.Read(reads.select(plan, None, *extra, where=condition), params, ())
        table.read_all(lambda read=read: read, sent.note if sent is not None else None, on_restart=lambda: None)


def scan_cells(
    client: GreenplumClient,
    plan: TablePlan,
    hashing: Hashing,
    encoding: KeyEncoding,
    columns: list[PlannedColumn],
    sub_size: int,
    keys_sub_size: int | None = None,
    condition: sql.Composable | None = None,
    located: dd.Located | None = None,
    ranges: KeyRanges | None = None,
) -> tuple[dd.Cells, int]:
    """The cells of the relation's rows now (those meeting the condition, which holds no parameter) and how many rows
    there are, their pairs hashing the given columns as `pair_hash` does: one COPY of each row's hash and key, summed
    as it arrives. `located` takes where each row is (Greenplum); the cells carry `ranges` (empty), filled by the
    scan."""
    md5 = hashing is Hashing.MD5_128
    sink = dd.PairSink(sub_size, encoding.codec, keys_sub_size, md5, located, ranges)
    _copy_pairs(client, plan, hashing, encoding, columns, sink, condition, located is not None)
    return sink.cells(), sink.rows


def _copy_pairs(
    client: GreenplumClient,
    plan: TablePlan,
    hashing: Hashing,
    encoding: KeyEncoding,
    columns: list[PlannedColumn],
    sink: dd.PairSink,
    condition: sql.Composable | None,
    located: bool = False,
) -> None:
    """Writes the pairs of the rows meeting the condition into the sink, as `pairs_copy` sends them."""
    hashed = row_hash(_with_columns(plan, columns), hashing)
    md5 = hashing is Hashing.MD5_128
    copy = dd.pairs_copy(plan.relation, encoding.expression, hashed, encoding.codec, condition, md5, located)
    client.copy_out(copy, sink)


def pair_hash(plan: TablePlan, hashing: Hashing, columns: list[PlannedColumn]) -> sql.Composable:
    """The 64-bit hash of a row's given columns that its digest pair holds."""
    hashed = row_hash(_with_columns(plan, columns), hashing)
    return dd.hash_of_md5(hashed) if hashing is Hashing.MD5_128 else hashed


class SentPairs:
    """The pairs of the rows a read sends, added to digests as they go by (a `read_all` hook): the read selects the
    key as the digest encodes it and each digest's hash of the row last (`extra`); a digest given no hash is one of
    keys alone (h: `dd.key_hash` of the key). A key the digest cannot carry stops it (`unfit`)."""

    def __init__(
        self,
        encoding: KeyEncoding,
        digests: list[tuple[dd.Cells, sql.Composable | None]],
        by_key: bool = False,
        before: Callable[[int | str], None] | None = None,
    ) -> None:
        """`by_key`: reads of given keys, which start again from their first row after a lost connection: the pairs
        noted are kept per key (`keys`), and a key read again replaces its pair. `before(key)` runs before a key's
        first pair is noted."""
        self._codec = encoding.codec
        self._digests = [cells for cells, _ in digests]
        self._by_key = by_key
        self._before = before
        self._noted: dict[int | str, tuple[tuple[int, ...], list[int]]] = {}
        hashes = [hashed for _, hashed in digests if hashed is not None]
        self.extra: tuple[sql.Composable, ...] = (encoding.expression, *hashes)
        # Per digest, where its hash is in a raw row (counted from the end), or None: the key's own.
        self._columns = [None if hashed is None else len(hashes) - hashes.index(hashed) for _, hashed in digests]
        self.unfit: dd.KeyTooLong | None = None

    @property
    def keys(self) -> set[int | str]:
        return set(self._noted)

    def note(self, batch: list[tuple], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.unfit is not None or not batch:
            return rows
        width = len(self.extra)
        try:
            words = [self._codec.encode(raw[-width]) for raw in batch]
        except dd.KeyTooLong as error:
            self.unfit = error
            return rows
        if self._by_key:
            for raw, key_words in zip(batch, words, strict=True):
                key = raw[-width]
                hashes = [dd.key_hash(key_words) if at is None else raw[-at] for at in self._columns]
                if key in self._noted:  # read again: its earlier pair leaves
                    for cells, h in zip(self._digests, self._noted[key][1], strict=True):
                        cells.add_pair(-1, key_words, h)
                elif self._before is not None:
                    self._before(key)
                self._noted[key] = (key_words, hashes)
        all_words = np.array(words, np.int64)
        for cells, at in zip(self._digests, self._columns, strict=True):
            h = dd.key_hashes(all_words) if at is None else np.array([raw[-at] for raw in batch], np.int64)
            cells.add_pairs(all_words, h)
        return rows


def noting_extra(notes: PassNotes | None, sent: SentPairs) -> tuple[sql.Composable, ...]:
    """What a read of every row selects besides the row: where it is (when it notes that), then the digest's."""
    return (*LOCATED, *sent.extra) if notes is not None else sent.extra


def noting(notes: PassNotes | None, sent: SentPairs) -> Callable[[list[tuple], list[dict[str, Any]]], list[dict]]:
    """The `read_all` hook of a read of every row: where each row is noted, then its pairs."""
    if notes is None:
        return sent.note

    def note(batch: list[tuple], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        notes.note(batch, len(sent.extra))
        return sent.note(batch, rows)

    return note


def _with_columns(plan: TablePlan, columns: list[PlannedColumn]) -> TablePlan:
    return replace(plan, columns=tuple(columns))
