"""Key ranges beside a difference digest (`key_ranges.py`): bounded in number whatever the keys, the same in any
order of rows, coarsened exactly, and telling precisely which ranges a change touched."""

from __future__ import annotations

import numpy as np
import pytest
from psycopg2 import sql

from difference_digest import Codec, first_word
from key_ranges import KeyRanges, condition, decode_condition, decode_emptied, encode_ranges, keys_of, limit_for


def _filled(keys: np.ndarray, h: np.ndarray, limit: int = 64, batch: int = 1000) -> KeyRanges:
    ranges = KeyRanges(limit=limit)
    for start in range(0, len(keys), batch):
        ranges.add(keys[start : start + batch], h[start : start + batch])
    return ranges


@pytest.fixture
def rows() -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(7)
    keys = np.concatenate([np.arange(-500, 20_000), generator.integers(-(2**62), 2**62, 300)])
    return keys, generator.integers(-(2**63), 2**63 - 1, len(keys), dtype=np.int64)


def test_ranges_stay_within_their_limit_and_are_the_same_in_any_row_order(rows) -> None:
    keys, h = rows
    ranges = _filled(keys, h)
    assert 0 < len(ranges.ranges) <= 64 and ranges.rows() == len(keys)
    order = np.random.default_rng(1).permutation(len(keys))
    shuffled = _filled(keys[order], h[order], batch=77)
    assert shuffled.same_as(ranges)
    assert np.array_equal(shuffled.ranges, ranges.ranges) and shuffled.shift == ranges.shift


def test_coarser_ranges_are_the_sums_of_finer_ones(rows) -> None:
    keys, h = rows
    fine = _filled(keys, h, limit=10_000)
    coarse = _filled(keys, h)
    assert fine.shift < coarse.shift
    assert fine.at(coarse.shift).same_as(coarse) and coarse.same_as(fine)
    with pytest.raises(ValueError, match="cannot be split"):
        coarse.at(fine.shift)


def test_pairs_taken_out_leave_the_ranges_as_they_were(rows) -> None:
    keys, h = rows
    ranges = _filled(keys, h)
    before = KeyRanges.unpack(ranges.pack())
    extra_keys, extra_h = np.array([3, 10**15, -7]), np.array([11, -(2**63), 2**63 - 1])
    ranges.add(extra_keys, extra_h)
    assert not ranges.same_as(before)
    for key, value in zip(extra_keys, extra_h, strict=True):  # one at a time, as a key deleted is
        ranges.add(np.array([key]), np.array([value]), -1)
    assert ranges.same_as(before)


def test_the_ranges_changed_are_exactly_those_a_change_touched(rows) -> None:
    keys, h = rows
    before = _filled(keys, h)
    changed_h = h.copy()
    changed_h[keys == 4321] += 1  # an update
    kept = keys != 15_000  # a delete
    now = _filled(np.append(keys[kept], 2**40), np.append(changed_h[kept], 5))  # and an insert far above the rest
    shift, changed = now.changed(before)
    touched = sorted({4321 >> shift, 15_000 >> shift, 2**40 >> shift})
    assert shift >= before.shift and changed.tolist() == touched
    assert now.within(shift, changed).rows() == int(np.isin(keys >> shift, touched).sum())
    assert before.changed(before) == (before.shift, pytest.approx(np.zeros(0)))


def test_packed_ranges_come_back_the_same(rows) -> None:
    keys, h = rows
    ranges = _filled(keys, h)
    again = KeyRanges.unpack(ranges.pack())
    assert again.shift == ranges.shift and again.same_as(ranges)
    assert KeyRanges.unpack(KeyRanges().pack()).rows() == 0
    assert len(ranges.pack()) < 64 * 24


def test_packed_ranges_are_at_most_the_limit_for_their_rows(rows) -> None:
    keys, h = rows
    small = _filled(keys[:3000], h[:3000], limit=10_000)
    assert len(small.ranges) == 3000 and small.shift == 0
    packed = KeyRanges.unpack(small.pack())
    assert len(packed.ranges) <= limit_for(3000) < len(small.ranges) and packed.same_as(small)


def test_a_condition_selects_the_rows_of_its_ranges_on_the_server(source) -> None:
    ranges = np.array([-2, 1, 2, 3, 9])
    where = condition(sql.SQL("k"), 4, ranges)
    assert where.as_string(source).count("BETWEEN") == 3, "neighbouring ranges make one run"
    with source.cursor() as cursor:
        statement = sql.SQL("SELECT array_agg(k ORDER BY k) FROM generate_series(-100, 200) k WHERE {}")
        cursor.execute(statement.format(where))
        selected = cursor.fetchone()[0]
    assert selected == [k for k in range(-100, 201) if k >> 4 in ranges.tolist()]


@pytest.mark.parametrize("key", ["", "a", "k-12345é", "12345678", "ÿÿÿÿÿ", '(1,"x")'])
def test_a_text_key_s_first_word_is_the_same_on_the_server(key: str, source) -> None:
    with source.cursor() as cursor:
        cursor.execute(sql.SQL("SELECT {}").format(first_word(Codec.TEXT, sql.Literal(key))))
        assert cursor.fetchone()[0] == Codec.TEXT.encode(key)[0]
        cursor.execute(sql.SQL("SELECT {}").format(first_word(Codec.INTEGER, sql.Literal(-(2**63)))))
        assert cursor.fetchone()[0] == -(2**63)


def test_the_limit_grows_with_the_table_within_bounds() -> None:
    assert [limit_for(rows) for rows in (0, 3000, 1_000_000, 10**9)] == [16, 375, 4096, 4096]


def test_ranges_emptied_are_those_that_held_rows_and_hold_none_now() -> None:
    keys = np.arange(0, 64)  # four ranges of 16 at shift 4
    before = KeyRanges(4)
    before.add(keys[keys != 20], keys[keys != 20] * 7)  # range 1 lacks a key
    now = KeyRanges(4)
    kept = (keys < 16) | (keys >= 48) | (keys == 40)  # ranges 1 emptied, range 2 keeps a key
    now.add(keys[kept], keys[kept] * 7)
    shift, changed = now.changed(before)
    assert (shift, changed.tolist()) == (4, [1, 2])
    assert now.emptied(before, shift, changed).tolist() == [1]
    assert now.emptied(before, shift, np.array([1, 2, 9])).tolist() == [1], "a range that never held a row"
    assert keys_of(shift, np.array([1, 3])).tolist() == [*range(16, 32), *range(48, 64)]
    # No range emptied, ranges as wide as keys 2^40 apart make them: nothing to list (not an array of 2^44 keys).
    assert keys_of(44, np.zeros(0, np.int64)).tolist() == []


def test_ranges_saved_for_a_read_come_back_as_its_conditions_and_the_keys_emptied(source) -> None:
    text = encode_ranges(4, np.array([1, 2, 7]), np.array([2]), np.array([33, 40]))
    with source.cursor() as cursor:
        for emptied, rows in ((False, 48), (True, 16)):
            where = decode_condition(sql.SQL("k"), text, emptied)
            cursor.execute(sql.SQL("SELECT count(*) FROM generate_series(0, 200) k WHERE {}").format(where))
            assert cursor.fetchone()[0] == rows
    assert decode_emptied(text).tolist() == [32, *range(34, 40), *range(41, 48)]
    assert decode_condition(sql.SQL("k"), None) is None and decode_emptied(None).tolist() == []
    assert decode_emptied(encode_ranges(3, np.array([5]), np.zeros(0, np.int64), np.zeros(0, np.int64))).size == 0
