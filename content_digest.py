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

import numpy as np
from psycopg2 import sql

import difference_digest as dd
from block_ranges import Hashing
from digest_pairs import pair_hash
from greenplum_client import GreenplumClient
from planning import TablePlan

_MASK = 2**64 - 1
_SIGNATURE = b"PGCOPY\n\xff\r\n\0"
# A row of the grouped COPY: its field count, then the hash and the count, each with its length.
_RECORD = np.dtype([("fields", ">i2"), ("h_length", ">i4"), ("h", ">i8"), ("m_length", ">i4"), ("m", ">i8")])


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


def scan_contents(
    client: GreenplumClient,
    plan: TablePlan,
    hashing: Hashing,
    sub_size: int,
    condition: sql.Composable | None = None,
) -> tuple[dd.Cells, int]:
    """The digest of the relation's contents now (of the rows meeting the condition, which holds no parameter), and
    how many rows hold them: the server hashes each row and counts the rows of each content; one row a content comes
    back, in a binary COPY summed as it arrives."""
    where = sql.SQL(" WHERE {}").format(condition) if condition is not None else sql.SQL("")
    copy = sql.SQL(
        "COPY (SELECT h, count(*)::bigint FROM (SELECT {} AS h FROM {}{}) AS hashed GROUP BY h) TO STDOUT "
        "(FORMAT binary)"
    ).format(content_hash(plan, hashing), plan.relation, where)
    sink = _ContentSink(sub_size)
    client.copy_out(copy, sink)
    return sink.cells(), sink.rows


class _ContentSink:
    """Sums the rows of the grouped COPY into cells as they arrive (`GreenplumClient.copy_out`'s sink)."""

    def __init__(self, sub_size: int) -> None:
        self._sub_size = sub_size
        self.reset()

    def reset(self) -> None:
        self._cells = dd.Cells(self._sub_size, dd.Codec.CONTENT)
        self._pending = b""
        self._chunks: list[bytes] = []
        self._header_read = False
        self.rows = 0

    def write(self, data: bytes) -> None:
        self._chunks.append(data)
        if len(self._chunks) >= 16384:
            self._consume()

    def cells(self) -> dd.Cells:
        self._consume()
        if self._pending != b"\xff\xff":  # the trailer: a field count of -1
            raise ValueError("a binary COPY of contents ended where no row ends")
        return self._cells

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
        whole = (len(data) - start) // _RECORD.itemsize
        self._pending = data[start + whole * _RECORD.itemsize :]
        if not whole:
            return
        records = np.frombuffer(data, _RECORD, whole, start)
        if not ((records["fields"] == 2) & (records["h_length"] == 8) & (records["m_length"] == 8)).all():
            raise ValueError("a binary COPY of contents holds a row of another layout")
        counts = records["m"].astype(np.int64)
        add_contents(self._cells, records["h"].astype(np.int64), counts)
        self.rows += int(counts.sum())
