"""Difference digests of a keyed table: the keys that came, changed or went since the last sync, from one scan and
a saved state of bounded size, whatever the table's size.

A difference digest (an invertible Bloom lookup table: Eppstein et al., "What's the Difference?", SIGCOMM 2011)
holds every row as the pair (its key's words, h), h being the caller's signed 64-bit hash of the whole row, key
included. A pair goes into one cell of each of K = 3 sub-tables, chosen by 21 bits of h each; a cell holds a count
and the sums of the words, of h and of a check value, all modular, so that the cells are the same in any row order:
the server sends each row's pair (`pairs_copy`) and the connector sums them (`PairSink`). Subtracting the saved
cells of the last sync from the current ones leaves the cells of the pairs that differ; peeling (taking out the pair
of a cell that holds just one, which may leave others with one) lists them: +1 came (in the current cells only), -1
went. A key with a +1 pair was inserted or updated; a key with only -1 pairs was deleted.

Peeling fails, and says so (None), when the difference outgrows the cells (`capacity`). It never lists a pair that
is not in the difference: a cell of several pairs passes for a pure one only if its h falls in that very cell and
its check matches (the product of h's halves modulo a 31-bit prime: the words' terms, linear, add nothing to a
cell's sum that the word sums do not hold), and the cells must all come to zero at the end.
"""

from __future__ import annotations

import base64
import enum
import json
import math
import struct
import zlib
from collections import deque
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

import numpy as np
from psycopg2 import sql

from key_ranges import KeyRanges

K = 3
MAX_SUB_SIZE = 2**20  # a cell of a sub-table is chosen by 21 bits of h
CHECK_PRIME = 2_147_483_629  # below 2^31: a check sums eight words times at most 8 in bigint without overflow
KEY_BYTES = 64  # the text codec's 8 words hold the UTF-8 bytes of keys up to this long
_COUNT = 2**16
_CELL_BITS = 2**21 - 1
_HALF = 2**30 - 1


class KeyTooLong(Exception):
    """A key's UTF-8 bytes do not fit the text codec's words: the digest cannot tell it from its first 64 bytes."""

    def __init__(self, length: int) -> None:
        super().__init__(f"a key of {length} bytes is longer than {KEY_BYTES}")


class Codec(enum.Enum):
    """How a key becomes the words of its pair; the value is the number of words."""

    INTEGER = 1  # a single int2, int4 or int8 column, as itself
    CONTENT = 2  # a keyless table's content: its row hash and how many rows hold it (`content_digest.py`)
    TEXT = 8  # a key's text, as its UTF-8 bytes padded with zero bytes, 8 bytes a word read big-endian

    @property
    def words(self) -> int:
        return self.value

    def encode(self, key: int | str | tuple[int, int]) -> tuple[int, ...]:
        if self is Codec.INTEGER:
            return (int(key),)
        if self is Codec.CONTENT:
            return tuple(key)
        data = str(key).encode()
        if len(data) > KEY_BYTES:
            raise KeyTooLong(len(data))
        return struct.unpack(">8q", data.ljust(KEY_BYTES, b"\0"))

    def encode_all(self, keys: Sequence[int | str | tuple[int, int]]) -> np.ndarray:
        """The words of many keys, a row each: a batch's integer keys at C speed, other keys one by one."""
        if self is Codec.INTEGER:
            return np.array(keys, np.int64).reshape(-1, 1)
        return np.array([self.encode(key) for key in keys], np.int64).reshape(len(keys), self.words)

    def decode(self, words: Sequence[int]) -> int | str | None:
        """The key of the words, or None when they are no key's (bytes that are not UTF-8, or hold a NUL; a content held
        by no row)."""
        if self is Codec.INTEGER:
            return words[0]
        if self is Codec.CONTENT:
            return (words[0], words[1]) if words[1] > 0 else None
        data = struct.pack(">8q", *words).rstrip(b"\0")
        try:
            return None if b"\0" in data else data.decode()
        except UnicodeDecodeError:
            return None


class Pair(NamedTuple):
    sign: int  # +1: in the current cells only (came); -1: in the saved cells only (went)
    words: tuple[int, ...]  # signed, as the server's bigints
    h: int


def check(words: Sequence[int], h: int) -> int:
    """A pair's check value, as the server computes it (Python's % is never negative, as ((w % P) + P) % P)."""
    product = ((h & _HALF) * ((h >> 30) & _HALF)) % CHECK_PRIME
    return (product + sum((word % CHECK_PRIME) * (j + 1) for j, word in enumerate(words))) % CHECK_PRIME


def positions(h: int, sub_size: int) -> list[int]:
    """A pair's cell in each sub-table (>> on a negative int shifts arithmetically, as on the server)."""
    return [i * sub_size + ((h >> (21 * i)) & _CELL_BITS) % sub_size for i in range(K)]


class Cells:
    """A digest's cells: counts mod 2^16, sums of each word and of h mod 2^64, sums of checks mod CHECK_PRIME.

    With `keys_sub_size`, a digest of the keys alone goes along (`keys`: each pair's h there is `key_hash` of its
    words), added to and subtracted with these cells: an update leaves no difference in it, so when the rows changed
    are too many to name, the keys inserted and deleted, far fewer as a rule, still may be. With `ranges`, the
    fingerprints of its key ranges (`key_ranges.py`) go along, added to as pairs are."""

    def __init__(
        self, sub_size: int, codec: Codec, keys_sub_size: int | None = None, ranges: KeyRanges | None = None
    ) -> None:
        if not 1 <= sub_size <= MAX_SUB_SIZE:
            raise ValueError(f"sub_size {sub_size} is not within 1 to {MAX_SUB_SIZE}")
        self.sub_size, self.codec = sub_size, codec
        self.counts, *self.words, self.hashes, self.checks = ([0] * K * sub_size for _ in range(codec.words + 3))
        self.keys = Cells(keys_sub_size, codec) if keys_sub_size else None
        self.ranges = ranges
        self._pending: list[np.ndarray] | None = None  # `cell_totals` of pairs added in bulk, not yet in the columns

    def add_pairs(self, words: np.ndarray, h: np.ndarray) -> None:
        """Adds many pairs at once (the rows of a batch): `words` holds a row of int64 words a pair, `h` its int64s.
        Their totals are summed as arrays and go into the columns when these are next read (a read's batches cost a
        vector sum each, not a Python loop over the cells they touch)."""
        if self.keys is not None:
            self.keys.add_pairs(words, key_hashes(words))
        if self.ranges is not None:
            self.ranges.add(words[:, 0], h)
        self._pending = _summed(self._pending, cell_totals(self.sub_size, words, h))

    def _fold(self) -> None:
        """Puts the pending totals into the columns."""
        if self._pending is None:
            return
        totals, self._pending = self._pending, None
        touched = np.flatnonzero(totals[0])
        sparse = len(touched) * 8 < len(totals[0])  # few cells: each one in place, else every column as an array
        for (_, modulus, column), total in zip(self._layout(), totals, strict=True):
            if sparse:
                for cell, value in zip(touched.tolist(), total[touched].tolist(), strict=True):
                    column[cell] = (column[cell] + value) % modulus
            elif modulus == 2**64:  # uint64 sums wrap as the column's do
                column[:] = (np.array(column, np.uint64) + total).tolist()
            else:
                column[:] = ((np.array(column, np.int64) + total) % modulus).tolist()

    def add_pair(self, sign: int, words: Sequence[int], h: int) -> None:
        """Adds a pair to its cells (sign +1) or takes it out (-1)."""
        if self.keys is not None:
            self.keys.add_pair(sign, words, key_hash(words))
        if self.ranges is not None:
            self.ranges.add(np.array(words[:1], np.int64), np.array([h], np.int64), sign)
        values = [1, *words, h, check(words, h)]
        for cell in positions(h, self.sub_size):
            for (_, modulus, column), value in zip(self._layout(), values, strict=True):
                column[cell] = (column[cell] + sign * value) % modulus

    def subtract(self, other: Cells) -> Cells:
        """These cells less another digest's of the same size and codec: the cells of the pairs that differ (and of
        the keys, when both have a digest of keys of the same size)."""
        if (other.sub_size, other.codec) != (self.sub_size, self.codec):
            raise ValueError("digests of different sizes or codecs cannot be subtracted")
        difference = Cells(self.sub_size, self.codec)
        if self.keys is not None and other.keys is not None and self.keys.sub_size == other.keys.sub_size:
            difference.keys = self.keys.subtract(other.keys)
        layouts = zip(difference._layout(), self._layout(), other._layout(), strict=True)
        for (_, modulus, column), (_, _, mine), (_, _, theirs) in layouts:
            column[:] = [(a - b) % modulus for a, b in zip(mine, theirs, strict=True)]
        return difference

    def added(self, other: Cells) -> Cells:
        """These cells with another digest's of the same sizes added: the digest of both sets of pairs, with their
        digests of keys and key ranges where both have them."""
        total = self.subtract(Cells(self.sub_size, self.codec).subtract(other))
        if self.keys is not None and other.keys is not None:
            total.keys = self.keys.added(other.keys)
        if self.ranges is not None and other.ranges is not None:
            total.ranges = self.ranges.plus(other.ranges)
        return total

    def fingerprint(self) -> str:
        """What the pairs held come to, in a few bytes: their number (mod 2^16) and the sum of their h (mod 2^64),
        read off one sub-table (each pair is in one cell of each). Two digests of the same pairs have the same one;
        of others, the same with chance 2^-64."""
        self._fold()
        size = self.sub_size
        return f"{sum(self.counts[:size]) % _COUNT}:{sum(self.hashes[:size]) % 2**64}"

    def copy(self) -> Cells:
        """These cells alone (without their digest of keys or key ranges), to be changed apart."""
        return self.subtract(Cells(self.sub_size, self.codec))

    def estimated_pairs(self) -> int:
        """How many pairs a difference holds, from the share of its cells that hold any (d pairs leave a cell of a
        sub-table of S empty with chance (1 - 1/S)^d): what sizes the next digest when this one does not peel.
        Every cell full says only that it is several times S."""
        size = self.sub_size
        self._fold()
        filled = sum(1 for count, h in zip(self.counts, self.hashes, strict=True) if count or h) / K
        if filled >= size:
            return 4 * K * size
        return round(-size * math.log(1 - filled / size)) if size > 1 else int(filled)

    def is_empty(self) -> bool:
        return not any(any(column) for _, _, column in self._layout())

    def peel(self) -> list[Pair] | None:
        """The pairs of a difference, each with its sign; None when the cells do not peel to zero (more pairs than
        they hold). The cells are left as they were."""
        work = self.copy()
        found: dict[tuple[tuple[int, ...], int], int] = {}
        queue = deque(cell for cell, count in enumerate(work.counts) if count in (1, _COUNT - 1))
        while queue:
            pair = work._pure(queue.popleft())
            if pair is None:
                continue
            if (pair.words, pair.h) in found:
                return None  # a difference of two sets holds a pair once
            found[pair.words, pair.h] = pair.sign
            work.add_pair(-pair.sign, pair.words, pair.h)
            queue.extend(cell for cell in positions(pair.h, self.sub_size) if work.counts[cell] in (1, _COUNT - 1))
        return [Pair(sign, words, h) for (words, h), sign in found.items()] if work.is_empty() else None

    def _pure(self, cell: int) -> Pair | None:
        """The pair a cell holds alone, or None when it does not pass for one."""
        if self.counts[cell] not in (1, _COUNT - 1):
            return None
        sign = 1 if self.counts[cell] == 1 else -1
        words = tuple(_signed(sign * column[cell]) for column in self.words)
        h = _signed(sign * self.hashes[cell])
        if positions(h, self.sub_size)[cell // self.sub_size] != cell:
            return None
        if (sign * self.checks[cell]) % CHECK_PRIME != check(words, h) or self.codec.decode(words) is None:
            return None
        return Pair(sign, words, h)

    def pack(self) -> str:
        """`sub_size:words:base64`, of the zlib of the columns one after another, little-endian: counts (uint16),
        each word (uint64), h (uint64), checks (uint32); then `|` and the digest of keys packed alike, if any, and `|`
        and the key ranges, if any. Empty cells compress to almost nothing."""
        data = b"".join(struct.pack(f"<{len(column)}{form}", *column) for form, _, column in self._layout())
        parts = [f"{self.sub_size}:{self.codec.words}:{base64.b64encode(zlib.compress(data, 6)).decode()}"]
        if self.keys is not None or self.ranges is not None:
            parts.append(self.keys.pack() if self.keys is not None else "")
        if self.ranges is not None:
            parts.append(self.ranges.pack())
        return "|".join(parts)

    @classmethod
    def unpack(cls, text: str) -> Cells:
        main, keys, ranges = [*text.split("|"), "", ""][:3]
        cells = cls._unpack_one(main)
        cells.keys = cls._unpack_one(keys) if keys else None
        cells.ranges = KeyRanges.unpack(ranges) if ranges else None
        return cells

    @classmethod
    def _unpack_one(cls, text: str) -> Cells:
        sub_size, words, packed = text.split(":")
        cells, data = cls(int(sub_size), Codec(int(words))), zlib.decompress(base64.b64decode(packed))
        size, offset = K * cells.sub_size, 0
        if len(data) != size * cell_bytes(cells.codec.words):
            raise ValueError("a packed digest of the wrong length")
        for form, _, column in cells._layout():
            column[:] = struct.unpack_from(f"<{size}{form}", data, offset)
            offset += size * struct.calcsize(form)
        return cells

    def columns(self) -> list[list[int]]:
        """The cells' columns in packed order: counts, each word's sums, h's sums, checks."""
        return [column for _, _, column in self._layout()]

    def _layout(self) -> list[tuple[str, int, list[int]]]:
        """The columns in packed order, each with its struct format and modulus (pending totals folded in first)."""
        self._fold()
        sums = [("Q", 2**64, column) for column in [*self.words, self.hashes]]
        return [("H", _COUNT, self.counts), *sums, ("I", CHECK_PRIME, self.checks)]


def changes(pairs: Iterable[Pair], codec: Codec) -> tuple[set, set]:
    """(keys to upsert, keys to delete) of a peeled difference: a key with a +1 pair was inserted or updated (an
    update is its old pair going and its new one coming); a key with only -1 pairs was deleted."""
    came, went = set(), set()
    for pair in pairs:
        (came if pair.sign > 0 else went).add(codec.decode(pair.words))
    return came, went - came


def noted(cells: Cells, position: list[str] | None) -> str:
    """What a read's checkpoint keeps of the digest it builds: what its pairs come to, and the position of the last
    row they hold (the read's own position may be further on: a table that failed after its last checkpoint)."""
    return json.dumps([cells.fingerprint(), position])


def read_noted(text: str | None) -> tuple[str | None, list[str] | None]:
    """(fingerprint, position) of `noted`'s text; (None, None) when there is none."""
    if text is None:
        return None, None
    fingerprint, position = json.loads(text)
    return fingerprint, position


_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def key_hash(words: Sequence[int]) -> int:
    """A key's h in a digest of keys: splitmix64's finalizer folded over its words, as a signed 64-bit int."""
    value = 0
    for word in words:
        value = (value ^ word) % 2**64
        value = (value + _MIX[0]) % 2**64
        value = ((value ^ (value >> 30)) * _MIX[1]) % 2**64
        value = ((value ^ (value >> 27)) * _MIX[2]) % 2**64
        value ^= value >> 31
    return _signed(value)


def key_hashes(words: np.ndarray) -> np.ndarray:
    """`key_hash` of each row of words (int64), with numpy's wrapping uint64 arithmetic."""
    value = np.zeros(len(words), np.uint64)
    with np.errstate(over="ignore"):
        for column in np.ascontiguousarray(words).view(np.uint64).T:
            value = (value ^ column) + np.uint64(_MIX[0])
            value = (value ^ (value >> np.uint64(30))) * np.uint64(_MIX[1])
            value = (value ^ (value >> np.uint64(27))) * np.uint64(_MIX[2])
            value ^= value >> np.uint64(31)
    return value.view(np.int64)


def _signed(value: int) -> int:
    value %= 2**64
    return value - 2**64 if value >= 2**63 else value


def pairs_copy(
    relation: sql.Composable,
    key: sql.Composable,
    row_hash: sql.Composable,
    codec: Codec,
    condition: sql.Composable | None = None,
    md5: bool = False,
    located: bool = False,
) -> sql.Composed:
    """A binary COPY of the relation's pairs (the rows meeting the condition, which holds no parameter), for
    `PairSink`: each row's h, then its key, so that the connector sums the cells in bulk: the server only hashes, as
    a plain read of the rows would format them, and sends 26 bytes a row with an integer key (a bigint) and 18 and
    the key's with a text one (a text, as it is: the client's encoding is UTF-8, `GreenplumClient.copy_out`), where
    summing three cells a row on the server cost two to three plain reads, and padding each key to a fixed width a
    fifth of a plain read. `md5`: `row_hash` is an md5's hex text, sent as its 16 bytes, whose first 8 are h as
    `hash_of_md5` makes it (on Greenplum 6 the conversion costs the server a sixth of the scan). `located`: each
    row's tableoid, gp_segment_id and ctid follow (Greenplum)."""
    if codec is Codec.INTEGER:
        key = sql.SQL("({})::bigint").format(key)
    hashed = sql.SQL("decode({}, 'hex')" if md5 else "({})::bigint").format(row_hash)
    places = sql.SQL(", tableoid, gp_segment_id, ctid" if located else "")
    scan = sql.SQL("SELECT {}, {}{} FROM {}").format(hashed, key, places, relation)
    if condition is not None:
        scan += sql.SQL(" WHERE {}").format(condition)
    return sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT binary)").format(scan)


def first_word(codec: Codec, key: sql.Composable) -> sql.Composable:
    """A key's first word (`Codec.encode`) as the server computes it, for `key_ranges.condition`: an integer key
    itself (not cast, so that an index on it serves), or a text key's first 8 UTF-8 bytes (zero-padded) as a
    big-endian bigint."""
    if codec is Codec.INTEGER:
        return sql.SQL("({})").format(key)
    return sql.SQL(
        "('x' || encode(substring(convert_to({}, 'UTF8') || {} FROM 1 FOR 8), 'hex'))::bit(64)::bigint"
    ).format(key, sql.Literal(bytes(8)))


class Located(Protocol):
    """What takes the places of the rows a scan sends (`PairSink`'s `located`)."""

    def add(self, records: np.ndarray) -> None: ...

    def reset(self) -> None: ...


class NullKey(Exception):
    """A row's key is NULL: no pair holds it (only a PRIMARY_KEYS key can be, and its read then says so)."""


class PairSink:
    """The cells of the rows `pairs_copy` sends, summed as the data arrives (a file-like target of psycopg2's
    copy_expert), a few thousand rows at a time with numpy; with `keys_sub_size`, its digest of keys too."""

    _SIGNATURE = b"PGCOPY\n\xff\r\n\x00"

    def __init__(
        self,
        sub_size: int,
        codec: Codec,
        keys_sub_size: int | None = None,
        md5: bool = False,
        located: Located | None = None,
        ranges: KeyRanges | None = None,
        keep: bool = False,
    ) -> None:
        """`md5`: as `pairs_copy` was given it; `located` (`pairs_copy`'s `located`) is handed each batch's records,
        whose fields `leaf`, `segment`, `block` and `offset` say where its rows are. `ranges`: the key ranges the
        cells carry, added to as rows arrive; `keep`: the pairs are kept too (`pairs`)."""
        self.sub_size, self.codec, self.keys_sub_size = sub_size, codec, keys_sub_size
        self._located = located
        self._ranges_wanted, self._keep = ranges, keep
        self._fields = 5 if located is not None else 2
        self._h_length = 16 if md5 else 8
        self._key_at = 10 + self._h_length  # a row's key bytes, after the field count, h and the key's length
        self._suffix = 26 if located is not None else 0  # tableoid, gp_segment_id and ctid, with their lengths
        self._record = self._record_of(8)  # an integer key's row: every field of a fixed width
        self.reset()

    def reset(self) -> None:
        """Forgets what was written: a COPY run again after a lost connection starts over."""
        self._totals: list[np.ndarray] | None = None
        self._key_totals: list[np.ndarray] | None = None
        self._pending = b""  # the bytes of a row not yet whole, and the header until it is read
        self._chunks: list[bytes] = []  # psycopg2 writes a row at a time: joined and summed 16,384 at a time
        self._header_read = False
        self.rows = 0
        wanted = self._ranges_wanted
        self._ranges = KeyRanges(wanted.shift, wanted.limit) if wanted is not None else None
        self._kept: list[tuple[np.ndarray, np.ndarray]] = []
        if self._located is not None:
            self._located.reset()

    def write(self, data: bytes) -> None:
        self._chunks.append(data)
        if len(self._chunks) >= 16384:
            self._consume()

    def cells(self) -> Cells:
        """The cells of every row written; raises KeyTooLong or NullKey as its rows do."""
        self._consume()
        rest = self._pending
        if rest != b"\xff\xff":  # the trailer: a field count of -1
            at = self._key_at - 4  # where a row's key length is
            if len(rest) >= at + 4 and struct.unpack_from(">i", rest, at)[0] == -1:
                raise NullKey("a row's key is NULL")
            raise ValueError("a binary COPY of pairs ended where no row ends")
        cells = _cells_of(self._totals, self.sub_size, self.codec)
        if self.keys_sub_size:
            cells.keys = _cells_of(self._key_totals, self.keys_sub_size, self.codec)
        cells.ranges = self._ranges
        return cells

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """The words (a row of int64s a pair) and h of every pair written, when kept."""
        if not self._kept:
            return np.zeros((0, self.codec.words), np.int64), np.zeros(0, np.int64)
        return np.concatenate([words for words, _ in self._kept]), np.concatenate([h for _, h in self._kept])

    def _record_of(self, key_bytes: int) -> np.dtype:
        """A row's fields, its key `key_bytes` wide."""
        fields = [
            ("fields", ">i2"),
            ("h_length", ">i4"),
            ("h", ">i8"),
            *([("h_rest", "V8")] if self._h_length == 16 else []),
        ]
        fields += [("key_length", ">i4"), ("key", ">i8", (key_bytes // 8,))]
        if self._located is not None:
            fields += [("leaf_length", ">i4"), ("leaf", ">u4"), ("segment_length", ">i4"), ("segment", ">i4")]
            fields += [("tid_length", ">i4"), ("block", ">u4"), ("offset", ">u2")]
        return np.dtype(fields)

    def _consume(self) -> None:
        pieces = [self._pending, *self._chunks]
        self._chunks.clear()
        data = b"".join(pieces)
        start = 0
        if not self._header_read:
            if len(data) < 19 or len(data) < 19 + struct.unpack_from(">i", data, 15)[0]:
                self._pending = data
                return
            if data[:11] != self._SIGNATURE:
                raise ValueError("not a binary COPY")
            start = 19 + struct.unpack_from(">i", data, 15)[0]
            self._header_read = True
        if self.codec is Codec.INTEGER:
            whole = (len(data) - start) // self._record.itemsize * self._record.itemsize
            self._pending = data[start + whole :]
            if whole:
                self._add_records(np.frombuffer(data, self._record, whole // self._record.itemsize, start), 8)
            return
        buffer = np.frombuffer(data, np.uint8)
        piece_ends = np.cumsum(np.fromiter(map(len, pieces), np.int64, len(pieces)))
        starts, lengths, end = self._text_rows(data, buffer, start, piece_ends)
        self._pending = data[end:]
        if len(starts):
            self._add_text_rows(buffer, starts, lengths)

    def _text_rows(
        self, data: bytes, buffer: np.ndarray, start: int, piece_ends: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Where the whole rows of text keys in `data` start, their keys' lengths, and where the rows end. A text
        key's row is as long as its key: psycopg2 writes a row at a time (the server sends a message a row), so the
        ends of the pieces are taken for the rows' ends, all checked at once against the lengths the rows hold; from
        the first that is not one, the rows are walked one by one."""
        ends = piece_ends[piece_ends > start]
        if not len(ends):
            return self._walk(data, start)
        starts = np.concatenate([[start], ends[:-1]])
        lengths = self._key_lengths(data, buffer, starts, ends)
        whole = (lengths >= 0) & (ends - starts == self._key_at + lengths + self._suffix)
        taken = len(whole) if whole.all() else int(np.argmin(whole))
        walked, walked_lengths, end = self._walk(data, int(ends[taken - 1]) if taken else start)
        return np.concatenate([starts[:taken], walked]), np.concatenate([lengths[:taken], walked_lengths]), end

    def _key_lengths(self, data: bytes, buffer: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """The key lengths the rows from `starts` to `ends` hold, if they are rows: read in place when they start
        evenly (all equally long but perhaps the last: the trailer, or a row cut short), else gathered."""
        at, row_lengths = self._key_at - 4, ends - starts
        evenly = int(row_lengths[0])
        if evenly >= self._key_at and starts[-1] + self._key_at <= len(data) and (row_lengths[:-1] == evenly).all():
            return np.ndarray((len(starts),), ">i4", data, int(starts[0]) + at, (evenly,)).astype(np.int64)
        return _gathered(buffer, starts + at, np.arange(4)).view(">i4").ravel().astype(np.int64)

    def _walk(self, data: bytes, at: int) -> tuple[np.ndarray, np.ndarray, int]:
        """The starts and keys' lengths of the whole rows from `at` on, read one by one, and where they end."""
        starts, lengths = [], []
        while at + self._key_at <= len(data):
            fields, h_length = struct.unpack_from(">hi", data, at)
            if fields == -1:
                break  # the trailer
            (length,) = struct.unpack_from(">i", data, at + self._key_at - 4)
            if length == -1:
                raise NullKey("a row's key is NULL")
            if fields != self._fields or h_length != self._h_length or length < 0:
                raise ValueError("a binary COPY of pairs holds a row of another layout")
            end = at + self._key_at + length + self._suffix
            if end > len(data):
                break
            starts.append(at)
            lengths.append(length)
            at = end
        return np.array(starts, np.int64), np.array(lengths, np.int64), at

    def _add_text_rows(self, buffer: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> None:
        """Adds the rows of text keys that start at `starts`, their keys `lengths` long: each row becomes a record
        whose key is padded with zero bytes (text never holds one) to the longest key's words, all at once when the
        keys are equally long (the rows lie evenly), else gathered."""
        longest = int(lengths.max())
        if longest > KEY_BYTES:
            raise KeyTooLong(longest)
        width = max(8, -(-longest // 8) * 8)
        record, key_end, padded_end = self._record_of(width), self._key_at + longest, self._key_at + width
        if int(lengths.min()) == longest:  # the rows follow one another: equally long, they lie evenly
            row_length = key_end + self._suffix
            rows = buffer[starts[0] : starts[-1] + row_length].reshape(len(starts), row_length)
            records = np.zeros((len(starts), record.itemsize), np.uint8)
            records[:, :key_end] = rows[:, :key_end]
            records[:, padded_end:] = rows[:, key_end:]
        else:
            columns = np.arange(record.itemsize)
            records = _gathered(buffer, starts, columns, np.where(columns >= padded_end, width - lengths[:, None], 0))
            records[(columns >= self._key_at + lengths[:, None]) & (columns < padded_end)] = 0
        self._add_records(records.view(record).ravel(), width)

    def _add_records(self, records: np.ndarray, key_bytes: int) -> None:
        """Adds rows as records of `_record_of(key_bytes)`."""
        layout_ok = (records["fields"] == self._fields) & (records["h_length"] == self._h_length)
        if self.codec is Codec.INTEGER:
            layout_ok &= records["key_length"] == 8
        if self._located is not None:
            layout_ok &= (records["leaf_length"] == 4) & (records["segment_length"] == 4) & (records["tid_length"] == 6)
        if not layout_ok.all():
            raise NullKey("a row's key is NULL")
        words = np.zeros((len(records), self.codec.words), np.int64)  # the words past the longest key are zero
        words[:, : key_bytes // 8] = records["key"]
        self._add(words, records["h"].astype(np.int64), records)

    def _add(self, words: np.ndarray, h: np.ndarray, records: np.ndarray) -> None:
        self._totals = _summed(self._totals, cell_totals(self.sub_size, words, h))
        if self._ranges is not None:
            self._ranges.add(words[:, 0], h)
        if self._keep:
            self._kept.append((words, h))
        if self.keys_sub_size:
            self._key_totals = _summed(self._key_totals, cell_totals(self.keys_sub_size, words, key_hashes(words)))
        if self._located is not None:
            self._located.add(records)
        self.rows += len(words)


def _gathered(buffer: np.ndarray, starts: np.ndarray, columns: np.ndarray, back: np.ndarray | int = 0) -> np.ndarray:
    """Rows of bytes of `buffer`: row i holds its bytes at `starts[i] + columns - back` (offsets past its end read
    its last byte: their rows are not whole)."""
    return buffer[np.minimum(starts[:, None] + columns - back, len(buffer) - 1)]


def _summed(totals: list[np.ndarray] | None, more: list[np.ndarray]) -> list[np.ndarray]:
    """Two `cell_totals` added (uint64 sums wrap mod 2^64; checks reduced mod CHECK_PRIME)."""
    if totals is None:
        return more
    summed = [a + b for a, b in zip(totals, more, strict=True)]
    summed[-1] %= CHECK_PRIME
    return summed


def _cells_of(totals: list[np.ndarray] | None, sub_size: int, codec: Codec) -> Cells:
    """Cells from `cell_totals` (sums as uint64 are already mod 2^64, checks mod CHECK_PRIME; counts reduced here)."""
    cells = Cells(sub_size, codec)
    if totals is not None:
        totals = [totals[0] % _COUNT, *totals[1:]]
        for (_, _, column), total in zip(cells._layout(), totals, strict=True):
            column[:] = total.tolist()
    return cells


def cell_totals(sub_size: int, words: np.ndarray, h: np.ndarray) -> list[np.ndarray]:
    """What many pairs add to each cell, in `Cells`' column order: counts and checks as int64 (checks reduced mod
    CHECK_PRIME), the words' and h's sums as uint64, which wrap as their sums mod 2^64 do."""
    cells = K * sub_size
    word_sums = [np.zeros(cells, np.uint64) for _ in range(words.shape[1])]
    # A word's values side by side, each scatter reading them in a row; words zero in every pair (the tail of short
    # text keys) add nothing anywhere and are left out.
    used = np.flatnonzero(words.any(axis=0))
    columns = np.ascontiguousarray(words[:, used].T)
    weights = (used + 1)[:, None].astype(np.int64)
    product = ((h & _HALF) * ((h >> 30) & _HALF)) % CHECK_PRIME
    check_values = (product + ((columns % CHECK_PRIME) * weights).sum(axis=0)) % CHECK_PRIME
    counts, checks, hashes = np.zeros(cells, np.int64), np.zeros(cells, np.int64), np.zeros(cells, np.uint64)
    for i in range(K):
        cell = i * sub_size + ((h >> (21 * i)) & _CELL_BITS) % sub_size
        counts += np.bincount(cell, minlength=cells)
        np.add.at(hashes, cell, h.view(np.uint64))
        np.add.at(checks, cell, check_values)
        for j, column in zip(used.tolist(), columns.view(np.uint64), strict=True):
            np.add.at(word_sums[j], cell, column)
    return [counts, *word_sums, hashes, checks % CHECK_PRIME]


def hash_of_md5(md5: sql.Composable) -> sql.Composable:
    """h from an md5 hex text, for servers without a 64-bit hash: its first 64 bits as a signed bigint."""
    return sql.SQL("('x' || substr({}, 1, 16))::bit(64)::bigint").format(md5)


# Sizing. With K = 3, peeling a large difference succeeds from about 1.22 cells a pair (where the hypergraph's 2-core
# appears); 1.4 (7/5) leaves a margin. A small one fails mostly when two pairs share all three cells, about
# d^2 / (2 S^3) for sub-tables of S cells, which a spare of 300 cells keeps below 0.4% at every d (the worst near
# d = 430). At the capacity, decoding succeeded in 99.6% to 100% of random trials for d from 1 to 20,000.
_SPARE_CELLS = 300


def keys_sub_size(sub_size: int) -> int:
    """The sub-table size of a digest of keys beside one of `sub_size`: an eighth (a digest of 1 MB carries one of
    125 KB, which names about 3,800 keys inserted and deleted), at least 32 cells a sub-table where the main one is
    larger, so that a few keys decode: it adds a sixth to the state of a table of 3,000 rows."""
    return max(sub_size // 8, min(sub_size, 32))


def cell_bytes(words: int) -> int:
    """A cell's packed size: count, words, h and check."""
    return 2 + 8 * words + 8 + 4


def cells_needed(pairs: int) -> int:
    """The cells that decode a difference of this many pairs reliably, a multiple of K."""
    cells = -(-7 * pairs // 5) + _SPARE_CELLS
    return -(-cells // K) * K


def capacity(sub_size: int) -> int:
    """The pairs a digest of this sub-table size decodes reliably: the most whose `cells_needed` fit."""
    return max(0, 5 * (K * sub_size - _SPARE_CELLS) // 7)


RECENT_DIFFERENCES = 5  # differences a table keeps to size its next digest (`choose_sub_size`)


def with_difference(recent: list[int] | None, pairs: int) -> list[int]:
    """A table's recent differences, with the one just seen: the sizes its next digest leaves room for."""
    return [*(recent or []), pairs][-RECENT_DIFFERENCES:]


def choose_sub_size(rows: int, recent_differences: Iterable[int], words: int, budget_bytes: int = 1_000_000) -> int:
    """A sub-table size for a table of this many rows: room for 4 times its largest recent difference, a sixteenth of
    its rows up to 32,768 pairs, at least 64, and never more than its own difference could be (2 * rows + 64); within
    `budget_bytes` of packed cells. With the integer codec (22 bytes a cell) 1 MB is 45,453 cells, 32,252 pairs:
    16,000 updated rows (each a pair going and one coming) or 32,000 inserted or deleted; with the text codec (78
    bytes) 12,819 cells, 8,942 pairs."""
    pairs = max(64, min(rows // 16, 32_768), 4 * max(recent_differences, default=0))
    cells = min(cells_needed(min(pairs, 2 * rows + 64)), budget_bytes // cell_bytes(words))
    return max(1, min(cells // K, MAX_SUB_SIZE))
