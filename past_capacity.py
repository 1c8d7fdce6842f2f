"""What a keyed table sends when more rows changed than its difference digest names: the key ranges whose
fingerprints changed (`key_ranges.py`), scanned again, name the difference when the rows they held before are few
(rows inserted in bulk into new ranges); else the rows of those ranges, or of the table, are sent again and the keys
deleted named by the digest of keys (`every_row.py`); else, nothing naming the deletes, a full pass after a truncate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fivetran_connector_sdk import Logging as log
from psycopg2 import sql

import difference_digest as dd
import key_ranges
from ao_keyed import AoNow
from block_ranges import Hashing
from digest_pairs import copy_pairs
from every_row import Outside, read_every_row
from key_ranges import KeyRanges
from keyed_digest import KeyedDigest, Outcome
from planning import PlannedColumn

# The most rows of changed key ranges whose pairs are held to name a difference past the digest's capacity (16 MB of
# integer keys, 72 MB of text keys); more, and the table takes the read of every row.
MAX_RANGE_ROWS = 1_000_000
# The most keys that ranges emptied may span (their keys are listed, 8 bytes each).
MAX_SPANNED_KEYS = 4_000_000


def past_capacity(
    digest: KeyedDigest,
    saved: dd.Cells,
    current: dd.Cells,
    difference: dd.Cells,
    hashed: list[PlannedColumn],
    now: AoNow | None,
) -> list[dd.Pair] | Outcome:
    """The pairs of a difference too large to peel, when the key ranges that changed name them; else what was done
    instead: every row of the ranges that changed, or of the table, sent again (the keys deleted named by the digest
    of keys), or a full pass begun."""
    plan = digest.plan
    capacity = dd.capacity(saved.sub_size)
    too_many = f"{plan.state_key}: more than {capacity:,} rows' worth of changes, too many for its digest to name"
    changed = _scan_changed(digest, saved, current, hashed, too_many)
    pairs = _named_by_ranges(changed, difference, too_many) if changed is not None else None
    if pairs is not None:
        return pairs
    digest.remember(max(difference.estimated_pairs(), 2 * capacity))
    ranged = changed is not None and now is None and hashed == list(plan.columns)
    lacked = changed.lacked(difference) if ranged else None
    if lacked is not None:
        outside = changed.outside(current, lacked)
        emptied = f"; {outside.gone:,} keys of the ranges emptied deleted" if outside.gone else ""
        log.info(
            f"{too_many}: every row of the key ranges changed is sent again, no truncate: its digest of keys names "
            f"the keys deleted{emptied}"
        )
        return read_every_row(digest, saved, hashed, now, outside)
    if difference.keys is not None and difference.keys.peel() is not None:
        log.info(
            f"{too_many}: every row is sent again, no truncate: its digest of keys names the keys deleted; its next "
            "digest is larger"
        )
        return read_every_row(digest, saved, hashed, now)
    log.info(f"{too_many}, or the keys inserted and deleted: the table is read again after a truncate")
    return digest.start_pass(now)


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


def _scan_changed(
    digest: KeyedDigest, saved: dd.Cells, current: dd.Cells, columns: list[PlannedColumn], too_many: str
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
    if not nameable and 2 * rows > digest.rows:
        log.info(f"{too_many}: {where}, too many to name or to read alone")
        return None
    condition = key_ranges.condition(dd.first_word(digest.encoding.codec, digest.encoding.expression), shift, changed)
    keys_sub_size = saved.keys.sub_size if saved.keys is not None else None
    try:
        scanned, pairs = _scan_pairs(digest, columns, saved.sub_size, keys_sub_size, condition, shift, nameable)
    except (dd.KeyTooLong, dd.NullKey) as error:  # a key come since the digest's scan
        log.info(f"{too_many}: {where}, where a key does not fit the digest now ({error})")
        return None
    if not scanned.ranges.same_as(now):
        log.info(f"{too_many}: {where}, which changed again while they were scanned")
        return None
    emptied = np.zeros(0, np.int64)
    if digest.encoding.codec is dd.Codec.INTEGER and keys_sub_size is not None:
        emptied = current.ranges.emptied(saved.ranges, shift, changed)
        spanned = len(emptied) << shift
        lacked = spanned - saved.ranges.within(shift, emptied).rows()
        if spanned > MAX_SPANNED_KEYS or lacked > dd.K * keys_sub_size:
            emptied = emptied[:0]  # more keys than held, or than the digest of keys can name
    return ChangedRanges(where, shift, changed, scanned, pairs, emptied)


def _named_by_ranges(changed: ChangedRanges, difference: dd.Cells, too_many: str) -> list[dd.Pair] | None:
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
    digest: KeyedDigest,
    columns: list[PlannedColumn],
    sub_size: int,
    keys_sub_size: int | None,
    condition: sql.Composable,
    shift: int,
    keep: bool,
) -> tuple[dd.Cells, tuple[np.ndarray, np.ndarray] | None]:
    """The cells, with their digest of keys and their key ranges at `shift`, of the rows meeting the condition;
    with `keep`, their pairs too (words, h)."""
    md5 = digest.hashing is Hashing.MD5_128
    ranges = KeyRanges(shift, key_ranges.UNLIMITED)
    sink = dd.PairSink(sub_size, digest.encoding.codec, keys_sub_size, md5=md5, ranges=ranges, keep=keep)
    copy_pairs(digest.client, digest.plan, digest.hashing, digest.encoding, columns, sink, condition)
    return sink.cells(), sink.pairs() if keep else None
