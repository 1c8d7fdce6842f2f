"""Fingerprints of a keyed table's key space, stretch by stretch, kept beside its difference digest: when a difference
is too large for the digest to name, they say where in the key space it lies, and the digest names it after all when
the rows that were there before are few (rows inserted in bulk into new stretches of keys, a few changed elsewhere).

A stretch ("range") is the keys whose first word (`difference_digest.Codec`: the integer itself, or a text key's
first 8 bytes) shifted right by `shift` bits is one number; its fingerprint is its row count and the sum of its pairs'
h mod 2^64, the same in any row order. Neighbours merge (the shift grows) to keep at most 32,768 ranges in memory,
and one per 8 to 16 rows, at most 4,096, in the state (42 KB for a million rows, a twenty-fifth of its digest). A key
stays in its range whatever happens to its row, so an update or a rewrite (VACUUM FULL, a redistribution) changes no
other range.
"""

from __future__ import annotations

import base64
import zlib

import numpy as np
from psycopg2 import sql

# The most ranges kept: 4,096 cost about 42 KB of state, a twenty-fifth of a large table's digest.
MAX_RANGES = 4096
UNLIMITED = 2**62  # a limit for ranges that keep their shift (a scan of given ranges)
# The most ranges held in memory while rows are added: a table grown since its ranges were saved keeps their width
# through the scan (packing coarsens them), where coarsening at MAX_RANGES would halve them for the next sync too.
HELD_RANGES = 8 * MAX_RANGES
# Rows per range that a table's limit aims at, at least: a small table's ranges cost a fraction of its digest.
_ROWS_PER_RANGE = 8


def limit_for(rows: int) -> int:
    """The ranges kept for a table of this many rows: small ones, so that a difference past the digest's capacity
    (about a sixteenth of the rows) still names the rows held before in a dozen ranges or more."""
    return max(16, min(MAX_RANGES, rows // _ROWS_PER_RANGE))


class KeyRanges:
    """Row counts and sums of h per range of first words, for at most `limit` ranges (a coarser `shift` beyond);
    packed, at most `limit_for` its rows."""

    def __init__(self, shift: int = 0, limit: int = HELD_RANGES) -> None:
        self.shift, self.limit = shift, limit
        self.ranges = np.zeros(0, np.int64)  # the ranges that hold rows, ascending: first word >> shift
        self.counts = np.zeros(0, np.int64)
        self.sums = np.zeros(0, np.uint64)

    def add(self, first_words: np.ndarray, h: np.ndarray, sign: int = 1) -> None:
        """Adds pairs (sign +1) or takes them out (-1), by their keys' first words and their h (int64 arrays)."""
        sums = h.astype(np.int64).view(np.uint64)
        if sign < 0:
            sums = np.zeros_like(sums) - sums  # wraps mod 2^64
        ranges = first_words.astype(np.int64) >> self.shift
        if len(ranges) == 1:  # one pair at a time (a key sent or deleted): in place when its range holds rows
            at = int(np.searchsorted(self.ranges, ranges[0]))
            if at < len(self.ranges) and self.ranges[at] == ranges[0] and self.counts[at] != -sign:
                self.counts[at : at + 1] += sign
                self.sums[at : at + 1] += sums  # an array's sum wraps mod 2^64
                return
        counts = np.full(len(h), sign, np.int64)
        self._merge(np.concatenate([self.ranges, ranges]), np.concatenate([self.counts, counts]), [self.sums, sums])
        while len(self.ranges) > self.limit:
            self.shift += 1
            self._merge(self.ranges >> 1, self.counts, [self.sums])

    def at(self, shift: int) -> KeyRanges:
        """These fingerprints with ranges as wide as `shift` makes them (at least as wide as now)."""
        if shift < self.shift:
            raise ValueError(f"ranges of shift {self.shift} cannot be split to shift {shift}")
        coarse = KeyRanges(shift, self.limit)
        coarse._merge(self.ranges >> (shift - self.shift), self.counts, [self.sums])
        return coarse

    def changed(self, before: KeyRanges) -> tuple[int, np.ndarray]:
        """The ranges whose rows differ from `before`'s, at the coarser shift of the two: (shift, ranges)."""
        difference = self.less(before)
        return difference.shift, difference.ranges

    def plus(self, other: KeyRanges) -> KeyRanges:
        """These fingerprints with another's added, at the coarser shift of the two."""
        shift = max(self.shift, other.shift)
        mine, theirs = self.at(shift), other.at(shift)
        total = KeyRanges(shift, self.limit)
        total._merge(
            np.concatenate([mine.ranges, theirs.ranges]),
            np.concatenate([mine.counts, theirs.counts]),
            [mine.sums, theirs.sums],
        )
        return total

    def less(self, other: KeyRanges) -> KeyRanges:
        """These fingerprints less another's (pairs taken out), at the coarser shift of the two."""
        shift = max(self.shift, other.shift)
        mine, theirs = self.at(shift), other.at(shift)
        difference = KeyRanges(shift, self.limit)
        difference._merge(
            np.concatenate([mine.ranges, theirs.ranges]),
            np.concatenate([mine.counts, -theirs.counts]),
            [mine.sums, np.zeros_like(theirs.sums) - theirs.sums],
        )
        return difference

    def within(self, shift: int, ranges: np.ndarray) -> KeyRanges:
        """The fingerprints of the given ranges alone (at `shift`)."""
        coarse = self.at(shift)
        kept = np.isin(coarse.ranges, ranges)
        part = KeyRanges(shift, self.limit)
        part.ranges, part.counts, part.sums = coarse.ranges[kept], coarse.counts[kept], coarse.sums[kept]
        return part

    def emptied(self, before: KeyRanges, shift: int, ranges: np.ndarray) -> np.ndarray:
        """Of the given ranges (at `shift`), those that held rows before and hold none now: every key they held went,
        and their keys are those they span but the few they lacked (integer keys, 2^shift a range)."""
        return np.intersect1d(np.setdiff1d(ranges, self.at(shift).ranges), before.at(shift).ranges)

    def rows(self) -> int:
        return int(self.counts.sum())

    def same_as(self, other: KeyRanges) -> bool:
        """Whether both hold the same rows, range by range (at the coarser shift)."""
        shift = max(self.shift, other.shift)
        mine, theirs = self.at(shift), other.at(shift)
        return all(
            np.array_equal(a, b)
            for a, b in [(mine.ranges, theirs.ranges), (mine.counts, theirs.counts), (mine.sums, theirs.sums)]
        )

    def pack(self) -> str:
        """`shift:count:base64` of the zlib of the ranges (as differences from the one before), counts and sums,
        little-endian int64s, coarsened to at most `limit_for` the rows they hold."""
        packed = self.at(self.shift)
        while len(packed.ranges) > limit_for(self.rows()):
            packed = packed.at(packed.shift + 1)
        steps = np.diff(packed.ranges, prepend=np.int64(0)) if len(packed.ranges) else packed.ranges
        columns = (steps, packed.counts, packed.sums.view(np.int64))
        data = b"".join(column.astype("<i8").tobytes() for column in columns)
        return f"{packed.shift}:{len(packed.ranges)}:{base64.b64encode(zlib.compress(data, 6)).decode()}"

    @classmethod
    def unpack(cls, text: str) -> KeyRanges:
        shift, count, packed = text.split(":")
        ranges = cls(int(shift))
        columns = np.frombuffer(zlib.decompress(base64.b64decode(packed)), "<i8").astype(np.int64)
        if len(columns) != 3 * int(count):
            raise ValueError("packed key ranges of the wrong length")
        steps, ranges.counts, sums = np.split(columns, 3)
        ranges.ranges, ranges.sums = np.cumsum(steps), sums.view(np.uint64)
        return ranges

    def _merge(self, ranges: np.ndarray, counts: np.ndarray, sums: list[np.ndarray]) -> None:
        """Sets the fingerprints to these, a range's entries added together; ranges that come to nothing leave."""
        unique, inverse = np.unique(ranges, return_inverse=True)
        total_counts = np.zeros(len(unique), np.int64)
        np.add.at(total_counts, inverse, counts)
        total_sums = np.zeros(len(unique), np.uint64)
        np.add.at(total_sums, inverse, np.concatenate(sums))
        kept = (total_counts != 0) | (total_sums != 0)
        self.ranges, self.counts, self.sums = unique[kept], total_counts[kept], total_sums[kept]


def condition(first_word: sql.Composable, shift: int, ranges: np.ndarray) -> sql.Composable:
    """The rows of the given ranges, as runs of neighbouring ranges: `first_word BETWEEN low AND high OR ...`."""
    values = ranges.tolist()
    runs: list[list[int]] = []
    for value in values:
        if runs and runs[-1][1] == value - 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return sql.SQL("({})").format(
        sql.SQL(" OR ").join(
            sql.SQL("{} BETWEEN {} AND {}").format(
                first_word, sql.Literal(low << shift), sql.Literal(((high + 1) << shift) - 1)
            )
            for low, high in runs
        )
    )


def encode_ranges(shift: int, ranges: np.ndarray, emptied: np.ndarray, lacked: np.ndarray) -> str:
    """Ranges exactly as they are, with those of them emptied and the keys these spanned but lacked
    (`shift:range,...;range,...;key,...`): packing fingerprints would coarsen them."""
    return f"{shift}:{_numbers(ranges)};{_numbers(emptied)};{_numbers(lacked)}"


def decode_condition(first_word: sql.Composable, text: str | None, emptied: bool = False) -> sql.Composable | None:
    """The condition of the ranges saved by `encode_ranges`, or of those emptied (None: no ranges, every row)."""
    if text is None:
        return None
    shift, _, rest = text.partition(":")
    return condition(first_word, int(shift), _array(rest.split(";")[1 if emptied else 0]))


def decode_emptied(text: str | None) -> np.ndarray:
    """The keys held in the ranges emptied that `encode_ranges` saved (`held_keys`)."""
    if text is None:
        return np.zeros(0, np.int64)
    shift, _, rest = text.partition(":")
    _, emptied, lacked = rest.split(";")
    return held_keys(int(shift), _array(emptied), _array(lacked))


def held_keys(shift: int, ranges: np.ndarray, lacked: np.ndarray) -> np.ndarray:
    """The integer keys that ranges held: those they span but the ones they lacked, ascending."""
    return np.setdiff1d(keys_of(shift, ranges), lacked)


def _numbers(values: np.ndarray) -> str:
    return ",".join(map(str, values.tolist()))


def _array(text: str) -> np.ndarray:
    return np.array([int(value) for value in text.split(",") if value], np.int64)


def keys_of(shift: int, ranges: np.ndarray) -> np.ndarray:
    """Every integer key the given ranges span, ascending (none for no range, however wide ranges are)."""
    if not len(ranges):
        return np.zeros(0, np.int64)
    width = 1 << shift
    return (ranges.astype(np.int64)[:, None] * width + np.arange(width, dtype=np.int64)[None, :]).ravel()
