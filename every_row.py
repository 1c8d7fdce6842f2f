"""A keyed table's every row sent again, in key order and resumable, without a truncate: when a column was added or
renamed (the destination holds none of its values), or when more rows changed than the digest names
(`past_capacity.py`), then of the key ranges that changed alone where they can be told.

The destination then holds exactly the rows read, so the keys it held that the read did not return are deleted:
named by the saved digest of keys less the keys read (or, a digest saved without one, by the saved digest less the
rows read, in the form it hashed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from fivetran_connector_sdk import Logging as log
from psycopg2 import sql

import difference_digest as dd
import key_ranges
import reads
import schema_changes
from ao_keyed import AoNow, PassNotes
from declared_keys import check_whole_table
from digest_pairs import SentPairs, noting, noting_extra, pair_hash, scan_cells
from key_encoding import key_values
from key_ranges import KeyRanges
from keyed_digest import KeyedDigest, Outcome
from planning import PlannedColumn


@dataclass(frozen=True)
class Outside:
    """What a read of the key ranges that changed starts from: the digest (with its digest of keys and key ranges) of
    the rows outside them, and those ranges as `pass_ranges` saves them."""

    cells: dd.Cells
    held: dd.Cells  # the digest of keys the read starts from
    ranges_text: str
    rows: int  # the rows of the ranges, as the digest's scan counted them
    gone: int  # the keys of the ranges emptied, deleted after the read


def read_every_row(
    digest: KeyedDigest, saved: dd.Cells, hashed: list[PlannedColumn], now: AoNow | None, outside: Outside | None = None
) -> Outcome:
    """Sends every row again and deletes the keys the destination held that the read did not return; with
    `outside`, only the rows of the key ranges that changed are read: the digest and the keys read start from those
    of the rows outside them, which the digest's scan saw as they were at the last sync."""
    plan, state, encoding = digest.plan, digest.state, digest.encoding
    log.info(f"{plan.state_key}: every row sent again" + (" of the key ranges changed" if outside else ""))
    resuming = state.position is not None and state.pass_digest is not None and state.pass_held is not None
    if not resuming:
        _start(digest, saved, now, outside)
    # The digests the read started from stay in the state; its checkpoints carry what the pairs it read come to.
    fresh, read = dd.Cells.unpack(state.pass_digest), dd.Cells.unpack(state.pass_held)
    within = key_ranges.decode_condition(dd.first_word(encoding.codec, encoding.expression), state.pass_ranges)
    read_columns = None if saved.keys is not None else hashed
    if resuming:
        fresh, read = _taken_again(digest, fresh, read, read_columns, within)
    read_hash = None if read_columns is None else pair_hash(plan, digest.hashing, read_columns)
    sent = SentPairs(encoding, [(fresh, pair_hash(plan, digest.hashing, list(plan.columns))), (read, read_hash)])
    notes = PassNotes(state, plan) if state.pass_digest_leaves is not None else None

    def save() -> None:
        state.pass_noted = json.dumps([dd.noted(fresh, state.position), read.fingerprint()])
        if notes is not None:
            notes.save()

    def in_key_order() -> reads.Read:
        return reads.keyed(plan, state, within, extra=noting_extra(notes, sent))

    with digest.sink.saving(save, checked=True):
        digest.sink.read_all(in_key_order, noting(notes, sent))
        _delete_emptied(digest, state.pass_ranges)
    state.pass_digest = state.pass_held = state.pass_ranges = state.pass_noted = None
    entries = notes.finish(digest.append_optimized_now()) if notes is not None else None
    started_ao, state.pass_digest_ao, state.pass_digest_leaves = state.pass_digest_ao, None, None
    if sent.unfit is not None:
        return digest.unfit(sent.unfit)
    if not _delete_unread(digest, saved, read):
        log.info(f"{plan.state_key}: the keys deleted meanwhile cannot be named: the table is read again next sync")
        state.digest, state.position, state.digest_leaves = None, None, None
        return Outcome.SENT
    state.digest, state.digest_columns = fresh.pack(), schema_changes.column_list(plan)
    state.position, state.digest_ao, state.digest_leaves = None, started_ao, entries
    digest.sink.progressed()
    return Outcome.SENT


def _taken_again(
    digest: KeyedDigest,
    fresh: dd.Cells,
    read: dd.Cells,
    read_columns: list[PlannedColumn] | None,
    within: sql.Composable | None,
) -> tuple[dd.Cells, dd.Cells]:
    """The read's digests when it was killed partway: those it started from with the rows up to its position, from
    the source, when these are the rows it read; else it starts again from its first row (what it sent again is
    sent once more)."""
    plan, state, source = digest.plan, digest.state, digest.sink.source
    noted, read_fingerprint = json.loads(state.pass_noted) if state.pass_noted else (None, None)
    fingerprint, position = dd.read_noted(noted)
    if fingerprint is None or position is None:
        log.info(f"{plan.state_key}: the read stopped partway before it noted what it read: it starts again")
        state.position = None
        return fresh, read
    up_to = reads.up_to(plan.primary_key, position)
    condition = up_to if within is None else sql.SQL("{} AND {}").format(within, up_to)
    keys_size = fresh.keys.sub_size if fresh.keys is not None else None
    ranges = KeyRanges(fresh.ranges.shift) if fresh.ranges is not None else None
    columns = list(plan.columns)
    args = (digest.client, plan, source.hashing, digest.encoding)
    rows, _ = scan_cells(*args, columns, fresh.sub_size, keys_size, condition, None, ranges)
    if read_columns is None:  # a digest of the keys read: the keys' digest of a scan
        keys, _ = scan_cells(*args, columns, 1, read.sub_size, condition)
        read_rows = keys.keys
    else:
        read_rows, _ = scan_cells(*args, read_columns, read.sub_size, None, condition)
    fresh_now, read_now = fresh.added(rows), read.added(read_rows)
    if (fresh_now.fingerprint(), read_now.fingerprint()) == (fingerprint, read_fingerprint):
        log.info(f"{plan.state_key}: the digests of the rows read up to {position} are taken again")
        state.position = position  # rows read after its last checkpoint are read again
        return fresh_now, read_now
    log.info(f"{plan.state_key}: rows read up to {position} changed since the read stopped: it starts again")
    state.position = None
    return fresh, read


def _start(digest: KeyedDigest, saved: dd.Cells, now: AoNow | None, outside: Outside | None) -> None:
    """The read's digests: of the rows it reads (from those outside the ranges it reads), and of the keys it reads (of
    the rows, in the form the saved digest hashed, when that one has no digest of keys)."""
    plan, state = digest.plan, digest.state
    if plan.declared_key:  # the rows are read in key order: two under one key would land as one
        check_whole_table(digest.client, plan)
    state.position = None
    held_size = saved.keys.sub_size if saved.keys is not None else saved.sub_size
    if outside is None:
        state.pass_digest = digest.new_cells().pack()
        state.pass_held = dd.Cells(held_size, digest.encoding.codec).pack()
        state.pass_ranges = None
    else:
        state.pass_digest, state.pass_held = outside.cells.pack(), outside.held.pack()
        state.pass_ranges = outside.ranges_text
        digest.sink.expect(outside.rows)  # the progress lines count against the rows read
    digest.start_noting(now)


def _delete_unread(digest: KeyedDigest, saved: dd.Cells, read: dd.Cells) -> bool:
    """Deletes the keys held and not read; returns whether they could be named."""
    codec = digest.encoding.codec
    pairs = (saved.keys or saved).subtract(read).peel()  # +1: held and not read; -1: read and not held before
    if pairs is None:
        return False
    held = {codec.decode(pair.words) for pair in pairs if pair.sign > 0}
    held_only = held - {codec.decode(pair.words) for pair in pairs if pair.sign < 0}
    for key in sorted(held_only):
        digest.sink.delete(key_values(digest.encoding, key))
    return True


def _delete_emptied(digest: KeyedDigest, ranges_text: str | None) -> None:
    """Deletes the keys of the ranges emptied (`key_ranges.encode_ranges`) that are not there now: after the read,
    so that a key inserted there again since is neither deleted after it was sent nor lost; one that comes after the
    read passed it is sent by the next sync, which its digest lacks. Run again when resumed after a kill."""
    gone = key_ranges.decode_emptied(ranges_text)
    if not len(gone):
        return
    key = digest.encoding.expression
    where = key_ranges.decode_condition(dd.first_word(digest.encoding.codec, key), ranges_text, emptied=True)
    statement = sql.SQL("SELECT {} FROM {} WHERE {}").format(key, digest.plan.relation, where)
    back = {row[0] for row in digest.client.query(statement)}
    for value in gone.tolist():
        if value not in back:
            digest.sink.delete(key_values(digest.encoding, value))
