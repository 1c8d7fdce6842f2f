"""A keyless table's rows known by their content: each row's id is the 64-bit hash of what lands and its ordinal
among the rows identical to it (`hash:1`, `hash:2`, ...), and the table's difference digest holds one pair per
distinct content, (hash, how many rows hold it), from one scan in which the server hashes and groups the rows.

The destination holds ordinals 1 to n of a content n rows hold, so identical rows stay distinct and the live row
count is the source's; a content held once more gets its next ordinal, once less loses its highest, an updated row
is one of each; a row that only moved (VACUUM FULL, CLUSTER, a compaction, a redistribution, an exchanged partition)
changes no content and sends nothing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from psycopg2 import sql

import difference_digest as dd
from block_ranges import Hashing
from digest_pairs import pair_hash
from greenplum_client import GreenplumClient
from leaf_prints import Print, add_prints
from leaves import Leaf
from planning import TablePlan

_MASK = 2**64 - 1
_SIGNATURE = b"PGCOPY\n\xff\r\n\0"
# A row of the grouped COPY: its field count, then the hash and the count, each with its length.
_RECORD = np.dtype([("fields", ">i2"), ("h_length", ">i4"), ("h", ">i8"), ("m_length", ">i4"), ("m", ">i8")])
# The same with the lowest and highest leaf holding the content (`scan_contents(by_leaf=True)`).
_LEAF_RECORD = np.dtype([*_RECORD.descr, ("lo_length", ">i4"), ("lo", ">i8"), ("hi_length", ">i4"), ("hi", ">i8")])


def content_hash(plan: TablePlan, hashing: Hashing) -> sql.Composable:
    """A row's content hash: the 64-bit hash of every column as it lands (the keyed digests' row hash)."""
    return pair_hash(plan, hashing, list(plan.columns))


def row_id(content: int, ordinal: int) -> str:
    """`hash:ordinal`, the hash as 16 hex digits."""
    return f"{content & _MASK:016x}:{ordinal}"


def add_contents(cells: dd.Cells, contents: np.ndarray, counts: np.ndarray) -> None:
    """Adds the pairs of contents and how many rows hold each (int64 arrays)."""
    words = np.stack([contents, counts], axis=1).astype(np.int64)
    cells.add_pairs(words, dd.key_hashes(words))


def move_content(cells: dd.Cells, content: int, before: int, after: int) -> None:
    """A content held by `after` rows where `before` held it: its pair replaced (0: none)."""
    for sign, count in ((-1, before), (1, after)):
        if count:
            cells.add_pair(sign, (content, count), dd.key_hash((content, count)))


@dataclass(frozen=True)
class ContentScan:
    """What one scan of contents found: their digest, the rows holding them, what its pairs come to
    (`leaf_prints.Print`) and, scanned by leaf, what those of each leaf come to (None: not by leaf, or a content
    lies in two leaves)."""

    cells: dd.Cells
    rows: int
    print: Print
    leaf_prints: dict[str, Print] | None
    leaf_cells: dict[str, dd.Cells]  # of the leaves asked for, their own digests


def scan_contents(
    client: GreenplumClient,
    plan: TablePlan,
    hashing: Hashing,
    sub_size: int,
    condition: sql.Composable | None = None,
    leaf: Leaf | None = None,
    by_leaf: bool = False,
    leaf_sizes: dict[str, int] | None = None,
    seeing_hidden: bool = False,
) -> ContentScan:
    """The digest of the relation's contents now (of one leaf's; of the rows meeting the condition, which holds no
    parameter), and how many rows hold them: the server hashes each row and counts the rows of each content; one row
    a content comes back, in a binary COPY summed as it arrives. `by_leaf`: with the lowest and highest leaf
    (tableoid) holding it, so that each leaf's pairs are summed apart, and the leaves of `leaf_sizes` get a digest of
    their own, of that sub-table size. `seeing_hidden` (Greenplum): rows deleted or updated away but not yet
    compacted are counted too."""
    relation = plan.relation if leaf is None else leaf.relation
    conditions = [condition, leaf.literal_condition if leaf is not None else None]
    conditions = [each for each in conditions if each is not None]
    where = sql.SQL(" WHERE {}").format(sql.SQL(" AND ").join(conditions)) if conditions else sql.SQL("")
    leaf_column = sql.SQL(", tableoid::bigint AS o") if by_leaf else sql.SQL("")
    leaves = sql.SQL(", min(o), max(o)") if by_leaf else sql.SQL("")
    copy = sql.SQL(
        "COPY (SELECT h, count(*)::bigint{} FROM (SELECT {} AS h{} FROM {}{}) AS hashed GROUP BY h) TO STDOUT "
        "(FORMAT binary)"
    ).format(leaves, content_hash(plan, hashing), leaf_column, relation, where)
    sink = _ContentSink(sub_size, by_leaf, leaf_sizes or {})
    client.copy_out(copy, sink, seeing_hidden)
    return sink.scan()


class _ContentSink:
    """Sums the rows of the grouped COPY into cells as they arrive (`GreenplumClient.copy_out`'s sink)."""

    def __init__(self, sub_size: int, by_leaf: bool, leaf_sizes: dict[str, int]) -> None:
        self._sub_size, self._by_leaf, self._leaf_sizes = sub_size, by_leaf, leaf_sizes
        self._record = _LEAF_RECORD if by_leaf else _RECORD
        self.reset()

    def reset(self) -> None:
        self._cells = dd.Cells(self._sub_size, dd.Codec.CONTENT)
        self._pending = b""
        self._chunks: list[bytes] = []
        self._header_read = False
        self._rows = 0
        self._print: Print = (0, 0)
        self._leaf_prints: dict[str, Print] | None = {} if self._by_leaf else None
        self._leaf_cells = {key: dd.Cells(size, dd.Codec.CONTENT) for key, size in self._leaf_sizes.items()}

    def write(self, data: bytes) -> None:
        self._chunks.append(data)
        if len(self._chunks) >= 16384:
            self._consume()

    def scan(self) -> ContentScan:
        self._consume()
        if self._pending != b"\xff\xff":  # the trailer: a field count of -1
            raise ValueError("a binary COPY of contents ended where no row ends")
        leaf_cells = self._leaf_cells if self._leaf_prints is not None else {}
        return ContentScan(self._cells, self._rows, self._print, self._leaf_prints, leaf_cells)

    def _consume(self) -> None:
        data = b"".join([self._pending, *self._chunks])
        self._chunks.clear()
        start = 0
        if not self._header_read:
            if len(data) < 19 or len(data) < 19 + struct.unpack_from(">i", data, 15)[0]:
                self._pending = data
                return
            if data[:11] != _SIGNATURE:
                raise ValueError("not a binary COPY")
            start, self._header_read = 19 + struct.unpack_from(">i", data, 15)[0], True
        size = self._record.itemsize
        whole = (len(data) - start) // size
        self._pending = data[start + whole * size :]
        if not whole:
            return
        records = np.frombuffer(data, self._record, whole, start)
        lengths = (records["h_length"] == 8) & (records["m_length"] == 8)
        if self._by_leaf:
            lengths &= (records["lo_length"] == 8) & (records["hi_length"] == 8)
        if not ((records["fields"] == (4 if self._by_leaf else 2)) & lengths).all():
            raise ValueError("a binary COPY of contents holds a row of another layout")
        counts = records["m"].astype(np.int64)
        words = np.stack([records["h"].astype(np.int64), counts], axis=1)
        hashes = dd.key_hashes(words)
        self._cells.add_pairs(words, hashes)
        self._rows += int(counts.sum())
        self._print = add_prints(self._print, hashes)
        if self._leaf_prints is not None:
            lowest, highest = records["lo"].astype(np.int64), records["hi"].astype(np.int64)
            if (lowest != highest).any():  # a content in two leaves: no leaf's print stands for its contents
                self._leaf_prints = None
                return
            for key, cells in self._leaf_cells.items():
                of_leaf = lowest == int(key)
                cells.add_pairs(words[of_leaf], hashes[of_leaf])
            order = np.argsort(lowest, kind="stable")
            leaves, starts = np.unique(lowest[order], return_index=True)
            for leaf, of_leaf in zip(leaves.tolist(), np.split(hashes[order], starts[1:]), strict=True):
                key = str(leaf)
                self._leaf_prints[key] = add_prints(self._leaf_prints.get(key, (0, 0)), of_leaf)
