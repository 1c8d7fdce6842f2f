"""Deletes in incremental tables and keyed custom queries with a cursor, which a cursor never sees.

The rows the destination holds with a cursor at or below a bound (the cursor an earlier sync saved) are kept as a
difference digest (`difference_digest.py`) of (key, hash of key and cursor) pairs, built from the rows the
incremental reads send: the server hashes each row as it is read. A check computes the same digest of the source's
rows at or below the bound, in one scan of the key and cursor columns, and peels their difference: the keys
the destination holds there and the source no longer has (deleted, or updated past the bound: looked up by key, only
the missing ones are deleted), and the keys the source has there that the destination lacks (committed after the
lookback window passed them, or changed without moving their cursor past the bound: read and sent). New rows lie
above the bound: they never use up the digest's capacity. Rows whose cursor is NULL are not covered.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fivetran_connector_sdk import Logging as log
from psycopg2 import sql

import difference_digest as dd
import reads
from digest_pairs import pair_hash, read_keys, scan_cells
from key_encoding import hashed_encoding, key_encoding, key_values
from quoting import Identifier, Literal

if TYPE_CHECKING:
    from table_sink import TableSink

_RECENT = 5  # differences kept to size the next digest
_KEYS_PER_LOOKUP = 1000


class SyncAgain(Exception):
    """Rows the destination holds cannot be named for a delete (keys held by hash): the table is synced again, a
    truncate and every row; the message says why."""


class DeleteCheck:
    """One incremental table's digest of what the destination holds, and the check of its deletes."""

    def __init__(self, sink: TableSink, lookback_seconds: int) -> None:
        """`lookback_seconds`: how far before the saved cursor the table's read starts, which reads those rows."""
        self._sink, self._plan, self._state = sink, sink.plan, sink.state
        self._lookback_seconds = lookback_seconds
        self._client = sink.source.client
        encoding = None if self._state.deletes_hashed else key_encoding(self._plan)
        self._encoding = encoding or hashed_encoding(self._plan, sink.source.hashing)
        plan = self._plan
        self._pair_columns = [c for c in plan.columns if c.name in plan.primary_key or c.name == plan.cursor.name]
        self._hash = pair_hash(plan, sink.source.hashing, self._pair_columns)
        self._sent = dd.Cells.unpack(self._state.deletes_digest) if self._state.deletes_digest else None

    def before_read(self) -> None:
        """Checks the deletes when a check is due; starts the digest of what the destination holds when there is
        none (from the source's rows at or below the saved cursor when the table was read before this version)."""
        state = self._state
        if state.position is not None and self._sent is not None:
            return  # a read in progress goes on first; the check waits for a sync that starts one
        if self._sent is None:
            sub_size = self._sub_size()
            if state.cursor is None:
                self._sent, state.deletes_bound = dd.Cells(sub_size, self._encoding.codec), None
            else:
                try:
                    self._sent, state.deletes_bound = self._cells(sub_size, state.cursor), state.cursor
                except dd.KeyTooLong as error:
                    log.info(f"{self._plan.state_key}: {error}: its digest holds keys by hash")
                    self._hash_keys()
                    self._sent, state.deletes_bound = self._cells(sub_size, state.cursor), state.cursor
                except dd.NullKey as error:
                    log.info(f"{self._plan.state_key}: {error}: its deletes are not looked for")
                    return
                log.info(
                    f"{self._plan.state_key}: deletes are looked for from now on (keys at or below {state.cursor})"
                )
            state.deletes_checked = time.time()
            self.save()
            return
        hours = self._plan.delete_check_hours or 0
        if state.deletes_bound is not None and time.time() - (state.deletes_checked or 0) >= hours * 3600 - 60:
            self._check(state.deletes_bound)

    def extra_columns(self) -> tuple[tuple[sql.Composable, ...], list[Any]]:
        """What the incremental read selects besides the row, so that each row sent beyond the bound joins the
        digest: the key as the digest encodes it, the pair's hash, and whether its cursor is beyond the bound."""
        bound = self._state.deletes_bound
        beyond = sql.SQL("{} > %s").format(Identifier(self._plan.cursor.name)) if bound else sql.SQL("true")
        return (self._encoding.expression, self._hash, beyond), ([bound] if bound else [])

    def note(self, batch: list[tuple], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Adds the pairs of the rows sent beyond the bound (a `read_all` hook: the rows go on as they are)."""
        codec, sent = self._encoding.codec, self._sent
        try:
            for raw in batch:
                if raw[-1] and sent is not None:
                    sent.add_pair(1, codec.encode(raw[-3]), raw[-2])
        except dd.KeyTooLong as error:
            self._hash_keys()
            raise SyncAgain(f"{error} came, which its digest of what the destination holds cannot carry") from None
        return rows

    def _hash_keys(self) -> None:
        """From now on the digest holds the table's keys by a hash of each."""
        self._state.deletes_hashed, self._state.deletes_digest, self._sent = True, None, None
        self._encoding = hashed_encoding(self._plan, self._sink.source.hashing)

    def after_read(self) -> None:
        """The rows read so far are at or below the cursor saved now: the new bound."""
        self._state.deletes_bound = self._state.cursor
        self.save()

    def save(self) -> None:
        self._state.deletes_digest = self._sent.pack() if self._sent is not None else None

    def _check(self, bound: str) -> None:
        plan, state, codec = self._plan, self._state, self._encoding.codec
        try:
            current = self._cells(self._sent.sub_size, bound)
        except dd.KeyTooLong as error:
            self._hash_keys()
            raise SyncAgain(f"{error} is held, which its digest of what the destination holds cannot carry") from None
        except dd.NullKey as error:
            log.info(f"{plan.state_key}: {error}: its deletes are no longer looked for")
            self._sent = None
            self.save()
            return
        difference = current.subtract(self._sent)
        pairs = difference.peel()
        state.deletes_checked = time.time()
        if pairs is None:
            stale = difference.estimated_pairs()
            self._remember(stale)
            raise SyncAgain(
                f"about {stale:,} rows at or below {plan.cursor.name} {bound} were deleted, changed or committed late, "
                "more than its digest names (its next digest is larger)"
            )
        self._remember(len(pairs))
        came, went = dd.changes(pairs, codec)
        still_there = self._existing(sorted(went))
        deleted = sorted(went - still_there)
        if deleted and self._encoding.hashed:
            raise SyncAgain(f"{len(deleted):,} row(s) were deleted, whose keys its digest holds by hash only")
        log.info(
            f"{plan.state_key}: deletes checked at or below {plan.cursor.name} {bound}: {len(deleted):,} deleted, "
            f"{len(still_there):,} updated past it, {len(came):,} committed late or changed below it (read again)"
        )
        window, params = reads.incremental_window(plan, state, self._lookback_seconds)
        below = sql.SQL("NOT ({})").format(window)  # the rows of the window are read next anyway
        # These deletes and reads land with the digest of the source's rows below the bound, or not at all: a
        # checkpoint between them would save a digest of what the destination does not hold.
        with self._sink.together(self.save):
            for key in deleted:
                self._sink.delete(key_values(self._encoding, key))
            read_keys(self._sink, self._encoding, sorted(came), (below, params))
            self._sent = current
            self.save()

    def _existing(self, keys: list[int | str]) -> set[int | str]:
        """Of the given keys, those the source still has (a row updated past the bound is not deleted)."""
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

    def _cells(self, sub_size: int, bound: str) -> dd.Cells:
        # The bound as a quoted literal (the server parses it as the cursor's type): a COPY takes no parameter.
        condition = sql.SQL("{} <= {}").format(Identifier(self._plan.cursor.name), Literal(bound))
        hashing = self._sink.source.hashing
        cells, _ = scan_cells(
            self._client, self._plan, hashing, self._encoding, self._pair_columns, sub_size, condition=condition
        )
        return cells

    def _sub_size(self) -> int:
        rows = max(self._plan.estimated_rows, 0)
        return dd.choose_sub_size(rows, self._state.deletes_sizes or [], self._encoding.codec.words)

    def _remember(self, pairs: int) -> None:
        self._state.deletes_sizes = [*(self._state.deletes_sizes or []), pairs][-_RECENT:]
