"""What an incremental table's cursor never sees: deletes, rows committed after a read passed their cursor, and rows
whose cursor is NULL. Incremental tables and keyed custom queries with a cursor keep, per table, difference digests
(`difference_digest.py`) of what the destination holds, built from the rows the reads send (the server hashes each
row as it is read), and check them against the source:

- the rows with a cursor at or below a bound (the cursor an earlier sync saved), as (key, hash of key and cursor)
  pairs: a check (every sync by default, `DELETE_CHECKS`) scans the source's key and cursor columns below the bound
  and peels the difference. A key the destination holds there and the source has nowhere was deleted (one updated
  past the bound is still there: looked up by key); a key the source has there that the destination lacks was
  committed after a read passed it, or changed without moving its cursor past the bound: it is read and sent. New
  rows lie above the bound and never use up the digest's capacity. Since the check finds what came late, a sync that
  checks reads from right after the last row the last one read: no lookback window is sent again.
- the rows whose cursor is NULL, as (key, hash of the whole row) pairs, checked every sync in place of reading them
  all again: only those inserted, changed or deleted are sent.

A difference past a digest's capacity, or a deleted key held by hash only (`key_encoding.hashed_encoding`), syncs
the table again (`SyncAgain`): a destination row is never left stale. While a table's first read is under way its
checkpoints carry no digest: one killed there is rebuilt from the source's rows up to the saved position.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np
from fivetran_connector_sdk import Logging as log
from psycopg2 import sql

import difference_digest as dd
import landing
import reads
from digest_pairs import KeysSince, keys_gone, pair_hash, read_keys, scan_cells
from key_encoding import hashed_encoding, key_encoding, key_values
from planning import PlannedColumn
from quoting import Identifier, Literal

if TYPE_CHECKING:
    from table_sink import TableSink

_KEYS_PER_LOOKUP = 1000


class SyncAgain(Exception):
    """Rows the destination holds cannot be named for a delete (past a digest's capacity, or keys held by hash): the
    table is synced again, a truncate and every row; the message says why."""


@dataclass(frozen=True)
class Checked:
    """What this sync's checks covered, which its reads then need not read again."""

    values: bool  # the rows at or below the bound: the read starts right after the last row read, no lookback
    nulls: bool  # the rows whose cursor is NULL: they are not read again


class DeleteCheck:
    """One incremental table's digests of what the destination holds, and their checks against the source."""

    def __init__(self, sink: TableSink, lookback_seconds: int) -> None:
        """`lookback_seconds`: how far before the saved cursor the table's read starts when its rows are not
        checked."""
        self._sink, self._plan, self._state = sink, sink.plan, sink.state
        self._lookback_seconds = lookback_seconds
        self._client, self._hashing = sink.source.client, sink.source.hashing
        encoding = None if self._state.deletes_hashed else key_encoding(self._plan)
        self._encoding = encoding or hashed_encoding(self._plan, self._hashing)
        plan = self._plan
        self._pair_columns = [c for c in plan.columns if c.name in plan.primary_key or c.name == plan.cursor.name]
        self._cursor = Identifier(plan.cursor.name)
        self._sent = dd.Cells.unpack(self._state.deletes_digest) if self._state.deletes_digest else None
        self._nulls = dd.Cells.unpack(self._state.deletes_nulls) if self._state.deletes_nulls else None
        # A first read under way: its digest is saved when it ends, not at each checkpoint.
        self._loading = self._loading_nulls = False
        self._keys = KeysSince(self._encoding.codec)  # the keys the values read sent, for the journal (`landing.py`)

    def due(self) -> Checked:
        """What this sync's checks cover, before any runs: a read in progress goes on first, and the check waits for
        a sync that starts one."""
        state, plan = self._state, self._plan
        hours = plan.delete_check_hours or 0
        values = (
            self._sent is not None
            and state.position is None
            and state.deletes_bound is not None
            and time.time() - (state.deletes_checked or 0) >= hours * 3600 - 60
        )
        nulls = plan.cursor.nullable and self._nulls is not None and not (state.phase == "nulls" and state.position)
        return Checked(values, bool(nulls))

    def before_read(self, due: Checked) -> None:
        """Runs the checks that are due; starts a digest where there is none (from the source's rows up to where a
        killed first read stood, or at or below the saved cursor for a table read before this version)."""
        if self._sent is None:
            self._start_values()
        elif due.values:
            self._check_values(self._state.deletes_bound)
        if not self._plan.cursor.nullable:
            self._state.deletes_nulls = None
        elif self._nulls is None:
            self._start_nulls()
        elif due.nulls:
            self._check_nulls()

    def _start_values(self) -> None:
        state, plan = self._state, self._plan
        sub_size = self._sub_size()
        if state.cursor is not None:  # read before this version: the rows it sent are taken from the source
            self._sent = self._scan(self._at_or_below(state.cursor), sub_size)
            state.deletes_bound = state.cursor
            log.info(f"{plan.state_key}: deletes are looked for from now on (keys at or below {state.cursor})")
            state.deletes_checked = time.time()
            self.save()
            return
        self._loading, state.deletes_bound = True, None
        if state.position is not None and state.phase == "values":  # a first read killed: what it had sent
            order = [plan.cursor.name, *plan.primary_key]
            self._sent = self._taken_again(lambda up_to: self._scan(reads.up_to(order, up_to), sub_size))
        else:
            self._sent = self._new_cells(sub_size)
        state.deletes_checked = time.time()

    def _start_nulls(self) -> None:
        state, plan = self._state, self._plan
        self._loading_nulls = True
        if state.phase == "nulls" and state.position is not None:  # their first read killed: what it had sent
            is_null = sql.SQL("{} IS NULL").format(self._cursor)

            def scan(up_to: list[str]) -> dd.Cells:
                condition = sql.SQL("{} AND {}").format(is_null, reads.up_to(plan.primary_key, up_to))
                return self._scan(condition, self._sub_size(), list(plan.columns))

            self._nulls = self._taken_again(scan)
        else:
            self._nulls = self._new_cells(self._sub_size())

    def _taken_again(self, scan: Callable[[list[str]], dd.Cells]) -> dd.Cells:
        """The digest of the rows a killed first read had sent, taken from the source's rows up to the position its
        last checkpoint noted (`scan` of them), where the read goes on: when they are not those it sent (changed,
        deleted or committed since), the table is synced again."""
        plan, state = self._plan, self._state
        fingerprint, position = dd.read_noted(state.deletes_noted)
        if fingerprint is None or position is None:
            raise SyncAgain("its first read stopped before it noted what it had sent")
        cells = scan(position)
        if cells.fingerprint() != fingerprint:
            raise SyncAgain(f"rows it had sent before its first read stopped at {position} changed since")
        log.info(f"{plan.state_key}: the digest of the rows sent up to {position} is taken again")
        state.position = position  # rows sent after its last checkpoint are sent again
        return cells

    def extra_columns(self) -> tuple[tuple[sql.Composable, ...], list[Any]]:
        """What the values read selects besides the row, so that each row sent beyond the bound joins the digest:
        the key as the digest encodes it, the pair's hash, and whether its cursor is beyond the bound."""
        bound = self._state.deletes_bound
        beyond = sql.SQL("{} > %s").format(self._cursor) if bound else sql.SQL("true")
        pair = pair_hash(self._plan, self._hashing, self._pair_columns)
        return (self._encoding.expression, pair, beyond), ([bound] if bound else [])

    def nulls_extra(self) -> tuple[sql.Composable, ...]:
        """What the read of the rows whose cursor is NULL selects besides the row: the key, and the row's hash."""
        return self._encoding.expression, pair_hash(self._plan, self._hashing, list(self._plan.columns))

    def note(self, batch: list[tuple], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Adds the pairs of the rows sent beyond the bound (a `read_all` hook: the rows go on as they are), and
        every row's key to the journal's."""
        if not batch:
            return rows
        words, hashes = self._pairs(batch, -3)
        beyond = np.fromiter(map(itemgetter(-1), batch), bool, len(batch))
        if beyond.any():
            self._sent.add_pairs(words[beyond], hashes[beyond])
        if not self._encoding.hashed:
            self._keys.add(words)
        return rows

    def note_nulls(self, batch: list[tuple], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Adds the pairs of the rows sent whose cursor is NULL, while their first read makes their digest (read again
        for a backfill, they are held already)."""
        if self._loading_nulls and batch:
            self._nulls.add_pairs(*self._pairs(batch, -2))
        return rows

    def _pairs(self, rows: list[tuple], key_at: int) -> tuple[np.ndarray, np.ndarray]:
        """The pairs of raw rows that hold their key at `key_at` (counted from the end) and its hash after it."""
        try:
            words = self._encoding.codec.encode_all(list(map(itemgetter(key_at), rows)))
        except dd.KeyTooLong as error:
            self._hash_keys()
            raise SyncAgain(f"{error} came, which its digest of what the destination holds cannot carry") from None
        return words, np.fromiter(map(itemgetter(key_at + 1), rows), np.int64, len(rows))

    def after_read(self) -> None:
        """The rows read so far are at or below the cursor saved now: the new bound."""
        self._state.deletes_bound, self._loading = self._state.cursor, False
        self.save()

    def after_nulls(self) -> None:
        self._loading_nulls = False
        self.save()

    def save(self) -> None:
        """Writes the digests into the state; of a first read under way, only what its pairs come to. The keys the
        values read sent since the last save go into the journal, with the position of the last row sent."""
        state = self._state
        last = self._last_read()
        since = self._keys.take() if last is not None else None
        if since is not None:
            state.landing = landing.note(state.landing, "reads", [since, list(last)])
        if not self._loading:
            state.deletes_digest = self._sent.pack() if self._sent is not None else None
        if not self._loading_nulls:
            state.deletes_nulls = self._nulls.pack() if self._nulls is not None else None
        loading = self._sent if self._loading else self._nulls if self._loading_nulls else None
        state.deletes_noted = dd.noted(loading, state.position) if loading is not None else None

    # What the last sync sent after its state was saved (`landing.py`).

    def undo_reads(self, entries: list[list[Any]]) -> None:
        """Deletes the keys the last sync read past its saved state that the source no longer holds: the digest of
        the keys it read up to each entry's last row, less the source's keys from the state's position (or the last
        row its last completed read sent) to there, names those it holds and the source does not there; those the
        source has nowhere are deleted. SyncAgain when they cannot be named."""
        plan = self._plan
        order = [plan.cursor.name, *plan.primary_key]
        gone = keys_gone(self._client, plan, self._hashing, self._encoding, order, self._last_read(), entries)
        if gone is None:
            raise SyncAgain("the rows its last sync read past the state it saved changed too much since")
        deleted = sorted(gone - self._existing(sorted(gone)))
        log.info(f"{plan.state_key}: of the keys the last sync read past its state, {len(deleted):,} are gone")
        with self._sink.together(lambda: None):
            for key in deleted:
                self._sink.delete(key_values(self._encoding, key))

    def _last_read(self) -> list[str] | None:
        """The last row the values read sent: in this sync's read, or the last completed one's."""
        state = self._state
        return state.position if state.phase == "values" and state.position else state.cursor_position

    # The checks.

    def _check_values(self, bound: str) -> None:
        """The rows at or below the bound: deletes sent, rows committed late or changed below it read."""
        plan, state = self._plan, self._state
        where = f"at or below {plan.cursor.name} {bound}"
        current, came, deleted, moved = self._reconcile(self._at_or_below(bound), self._sent, self._pair_columns, where)
        state.deletes_checked = time.time()
        log.info(
            f"{plan.state_key}: deletes checked at or below {plan.cursor.name} {bound}: {len(deleted):,} deleted, "
            f"{moved:,} updated past it, {len(came):,} committed late or changed below it (read again)"
        )
        # What the read that follows will not read: the rows up to the last one the last read sent.
        start = reads.IncrementalStart(0, after=state.cursor_position, nulls=False)
        window, params = reads.incremental_window(plan, state, start)
        self._send(current, came, deleted, (sql.SQL("NOT ({})").format(window), params), nulls=False)

    def _check_nulls(self) -> None:
        """The rows whose cursor is NULL: those deleted or given a cursor since, deleted if they are gone; those new or
        changed, read."""
        is_null = sql.SQL("{} IS NULL").format(self._cursor)
        where = f"whose {self._plan.cursor.name} is NULL"
        current, came, deleted, moved = self._reconcile(is_null, self._nulls, list(self._plan.columns), where)
        if came or deleted or moved:
            log.info(
                f"{self._plan.state_key}: rows whose {self._plan.cursor.name} is NULL checked: {len(deleted):,} "
                f"deleted, {moved:,} given a cursor, {len(came):,} new or changed (read)"
            )
        self._send(current, came, deleted, (is_null, []), nulls=True)

    def _reconcile(
        self, window: sql.Composable, saved: dd.Cells, columns: list[PlannedColumn], where: str
    ) -> tuple[dd.Cells, list[int | str], list[int | str], int]:
        """The digest of the source's rows in the window (`where` says which), the keys there that the saved digest
        lacks or holds otherwise, the keys it holds that the source has nowhere now, and how many it holds that left
        the window; SyncAgain when they cannot be named."""
        current = self._scan(window, saved.sub_size, columns)
        difference = current.subtract(saved)
        pairs = difference.peel()
        if pairs is None:
            stale = difference.estimated_pairs()
            self._remember(stale)
            raise SyncAgain(
                f"about {stale:,} of its rows {where} were deleted, changed or committed late, more than its digest "
                "names (its next digest is larger)"
            )
        self._remember(len(pairs))
        came, went = dd.changes(pairs, self._encoding.codec)
        still_there = self._existing(sorted(went))
        deleted = sorted(went - still_there)
        if deleted and self._encoding.hashed:
            raise SyncAgain(f"{len(deleted):,} row(s) were deleted, whose keys its digest holds by hash only")
        return current, sorted(came), deleted, len(still_there)

    def _send(
        self,
        current: dd.Cells,
        came: list[int | str],
        deleted: list[int | str],
        only: tuple[sql.Composable, list[Any]],
        nulls: bool,
    ) -> None:
        """Deletes and reads (those of the came keys meeting `only`) what a check named, then takes the source's
        digest: all of it lands with the digest, or none of it (a checkpoint between them would save a digest of
        what the destination does not hold)."""

        def save() -> None:
            if nulls:
                self._nulls = current
            else:
                self._sent = current
            self.save()

        with self._sink.together(save):
            for key in deleted:
                self._sink.delete(key_values(self._encoding, key))
            read_keys(self._sink, self._encoding, came, only)
            save()

    def _existing(self, keys: list[int | str]) -> set[int | str]:
        """Of the given keys, those the source still has (a row updated past the bound, or given a cursor, is not
        deleted)."""
        plan = self._plan
        found = set()
        for start in range(0, len(keys), _KEYS_PER_LOOKUP):
            chunk = keys[start : start + _KEYS_PER_LOOKUP]
            condition, params = self._encoding.condition(chunk)
            statement = sql.SQL("SELECT {} FROM {} WHERE {}").format(
                self._encoding.expression, plan.relation, condition
            )
            found |= {row[0] for row in self._client.query(statement, params)}
        return found

    # Digests.

    def _scan(self, window: sql.Composable, sub_size: int, columns: list[PlannedColumn] | None = None) -> dd.Cells:
        """The digest of the source's rows in the window (a condition without parameters: a COPY takes none)."""
        try:
            cells, _ = scan_cells(
                self._client,
                self._plan,
                self._hashing,
                self._encoding,
                columns or self._pair_columns,
                sub_size,
                condition=window,
            )
        except dd.KeyTooLong as error:
            self._hash_keys()
            raise SyncAgain(f"{error} is held, which its digest of what the destination holds cannot carry") from None
        return cells

    def _at_or_below(self, bound: str) -> sql.Composable:
        # The bound as a quoted literal, which the server parses as the cursor's type.
        return sql.SQL("{} <= {}").format(self._cursor, Literal(bound))

    def _hash_keys(self) -> None:
        """From now on the digests hold the table's keys by a hash of each."""
        state = self._state
        state.deletes_hashed, state.deletes_digest, state.deletes_nulls = True, None, None
        self._sent = self._nulls = None
        self._encoding = hashed_encoding(self._plan, self._hashing)

    def _new_cells(self, sub_size: int) -> dd.Cells:
        return dd.Cells(sub_size, self._encoding.codec)

    def _sub_size(self) -> int:
        rows = max(self._plan.estimated_rows, 0)
        return dd.choose_sub_size(rows, self._state.deletes_sizes or [], self._encoding.codec.words)

    def _remember(self, pairs: int) -> None:
        self._state.deletes_sizes = dd.with_difference(self._state.deletes_sizes, pairs)
