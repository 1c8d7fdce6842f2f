"""The pairs of a keyed table's rows, as its difference digests hold them: scanned by the server into cells in one
COPY, noted from the rows a read sends, and the rows of given keys read and sent. Shared by the keyed tables'
passes and the incremental tables' check of their deletes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np
from psycopg2 import sql

import difference_digest as dd
import landing
import reads
from ao_keyed import LOCATED, PassNotes
from block_ranges import Hashing, row_hash
from declared_keys import check_keys
from greenplum_client import GreenplumClient
from key_encoding import KeyEncoding
from key_ranges import KeyRanges
from planning import PlannedColumn, TablePlan

if TYPE_CHECKING:
    from table_sink import TableSink

# Keys read back in one statement, and checked unique in one (a declared key: a scan of the table each).
_KEYS_PER_READ = 1000
_KEYS_PER_CHECK = 50_000


def read_keys(
    sink: TableSink,
    encoding: KeyEncoding,
    keys: list[int | str],
    only: tuple[sql.Composable, list[Any]] | None = None,
    sent: SentPairs | None = None,
) -> None:
    """Reads the rows of the given keys (those meeting `only`, a condition and its params) and upserts them, declared
    keys checked unique among them first; `sent` notes the pairs of the rows sent and their keys."""
    plan, client = sink.plan, sink.source.client
    extra = sent.extra if sent is not None else ()
    if plan.declared_key:
        for start in range(0, len(keys), _KEYS_PER_CHECK):
            check_keys(client, plan, *encoding.condition(keys[start : start + _KEYS_PER_CHECK]))
    for start in range(0, len(keys), _KEYS_PER_READ):
        condition, params = encoding.condition(keys[start : start + _KEYS_PER_READ])
        if only is not None:
            condition, params = sql.SQL("{} AND {}").format(condition, only[0]), [*params, *only[1]]
        read = reads.Read(reads.select(plan, None, *extra, where=condition), params, ())
        sink.read_all(lambda read=read: read, sent.note if sent is not None else None, on_restart=lambda: None)


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
    copy_pairs(client, plan, hashing, encoding, columns, sink, condition, located is not None)
    return sink.cells(), sink.rows


def copy_pairs(
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
            all_words = self._codec.encode_all(list(map(itemgetter(-width), batch)))
        except dd.KeyTooLong as error:
            self.unfit = error
            return rows
        if self._by_key:
            for raw, key_words in zip(batch, map(tuple, all_words.tolist()), strict=True):
                key = raw[-width]
                hashes = [dd.key_hash(key_words) if at is None else raw[-at] for at in self._columns]
                if key in self._noted:  # read again: its earlier pair leaves
                    for cells, h in zip(self._digests, self._noted[key][1], strict=True):
                        cells.add_pair(-1, key_words, h)
                elif self._before is not None:
                    self._before(key)
                self._noted[key] = (key_words, hashes)
        for cells, at in zip(self._digests, self._columns, strict=True):
            if at is None:
                h = dd.key_hashes(all_words)
            else:
                h = np.fromiter(map(itemgetter(-at), batch), np.int64, len(batch))
            cells.add_pairs(all_words, h)
        return rows


class KeysSince:
    """A digest of the keys a read sends (`cells`), and of those sent since the last one taken: a journal entry's
    (`landing.py`)."""

    def __init__(self, codec: dd.Codec) -> None:
        self.cells = dd.Cells(landing.READS_SUB_SIZE, codec)
        self._taken = self.cells.copy()

    def add(self, words: np.ndarray) -> None:
        self.cells.add_pairs(words, dd.key_hashes(words))

    def take(self) -> str | None:
        """The packed digest of the keys sent since the last one taken; None when none were."""
        since = self.cells.subtract(self._taken)
        if since.is_empty():
            return None
        self._taken = self.cells.copy()
        return since.pack()


def keys_gone(
    client: GreenplumClient,
    plan: TablePlan,
    hashing: Hashing,
    encoding: KeyEncoding,
    order: list[str],
    lower: list[str] | None,
    entries: list[list[Any]],
) -> set[int | str] | None:
    """Of the keys a read sent past a position (`lower`, in `order`; None: from the start) up to each journal entry's
    last one (`KeysSince.take`), those the source no longer holds there: its keys there now, less those sent. None
    when the difference is past the entry's digest, or the keys are held by hash (they name no row)."""
    gone: set[int | str] = set()
    for packed, last in entries:
        sent = dd.Cells.unpack(packed)
        bounds = [reads.up_to(order, last)]
        if lower is not None:
            bounds.append(sql.SQL("NOT {}").format(reads.up_to(order, lower)))
        condition = sql.SQL(" AND ").join(bounds)
        now, _ = scan_cells(client, plan, hashing, encoding, list(plan.columns), 1, sent.sub_size, condition)
        pairs = now.keys.subtract(sent).peel() if not encoding.hashed else None
        if pairs is None:
            return None
        gone |= dd.changes(pairs, encoding.codec)[1]
    return gone


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
