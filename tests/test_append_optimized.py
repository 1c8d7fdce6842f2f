"""The decisions of append-optimized change capture, as plain functions of catalog facts and saved state: what a leaf
needs, which rows a read skips, which ids are deleted, what is saved, and how big that is."""

from __future__ import annotations

import json

import pytest

import append_optimized as ao
from state import LeafState, SyncState, TableState, load_state


@pytest.mark.parametrize("row_number", [1, 2, 32766, 32767, 32768, 32769, 10**9, 2**40 - 1])
@pytest.mark.parametrize("segno", [0, 1, 2, 127])
def test_a_ctid_names_its_segment_file_and_row_number(segno: int, row_number: int) -> None:
    assert ao.parse_tid(ao.tid(segno, row_number)) == (segno, row_number)


def test_ctids_seen_on_greenplum_6() -> None:
    """Row 1 of segment file 1 is (33554432,2): the offset is the row number plus one, the block the file << 25."""
    assert ao.parse_tid("(33554432,2)") == (1, 1)
    assert ao.parse_tid("(67108864,181)") == (2, 180)
    assert ao.tid(1, 401) == "(33554432,402)"


def test_ctid_order_is_row_number_order_within_a_file() -> None:
    tids = [ao.tid(1, n) for n in (1, 32767, 32768, 70000)]
    blocks = [tuple(int(x) for x in t.strip("()").split(",")) for t in tids]
    assert blocks == sorted(blocks)


def test_runs_grow_with_rows_read_and_merge_where_gaps_are_smallest() -> None:
    rows = ao.SegmentFileRows()
    for number in (1, 2, 3, 101, 102, 201):
        rows.add(number)
    assert rows.runs == [(1, 3), (101, 102), (201, 201)] and rows.high == 201
    rows = ao.SegmentFileRows([(1000 * n, 1000 * n + 5) for n in range(ao.MAX_RUNS)])
    rows.runs[3] = (3000, 3990)  # the gap after it is the smallest: 4000 - 3990
    rows.add(ao.MAX_RUNS * 1000)  # one run too many
    assert len(rows.runs) == ao.MAX_RUNS and (3000, 4005) in rows.runs and rows.high == ao.MAX_RUNS * 1000


def test_newly_hidden_rows_are_those_read_and_not_deleted_yet() -> None:
    rows = ao.SegmentFileRows([(1, 10), (101, 110)], [3])
    # 3 was deleted before; 50 was never read (a reserved number, or a row hidden before it was read); 200 is above
    # what was read (inserted and deleted between two syncs).
    assert rows.newly_hidden({3, 5, 50, 105, 200}) == [5, 105]


def test_deletes_highest_first_shrink_what_is_saved() -> None:
    rows = ao.SegmentFileRows([(1, 3), (101, 102)], [2, 102])
    popped = []
    while (number := rows.pop_highest()) is not None:
        popped.append(number)
        assert rows.high <= number
    assert popped == [101, 3, 1] and rows.runs == [] and rows.deleted == []


def test_a_rewritten_file_gives_up_its_rows_up_to_the_witness_and_keeps_those_read_after() -> None:
    rows = ao.SegmentFileRows([(1, 100), (201, 250), (401, 405)], [7, 230])
    old = rows.take_up_to(250)
    assert old.runs == [(1, 100), (201, 250)] and old.deleted == [7, 230]
    assert rows.runs == [(401, 405)] and rows.deleted == []


@pytest.mark.parametrize(
    ("saved", "facts", "change"),
    [
        (None, ao.AoFacts(10, "1:5:1"), ao.LeafChange.NEW),
        ((10, "1:5:1"), ao.AoFacts(10, "1:5:1"), ao.LeafChange.UNCHANGED),
        ((10, "1:5:1"), ao.AoFacts(10, "1:5:2"), ao.LeafChange.CHANGED),  # a delete bumps the modification count
        ((10, "1:5:1"), ao.AoFacts(11, "1:5:1"), ao.LeafChange.REWRITTEN),  # TRUNCATE and reload of as many rows
        ((10, ""), ao.AoFacts(10, ""), ao.LeafChange.UNCHANGED),  # empty, and still empty
    ],
)
def test_what_a_leaf_needs_from_its_saved_state_and_the_catalog(saved, facts, change) -> None:
    assert ao.leaf_change(saved, facts) is change


def test_a_read_skips_what_was_read_but_its_last_row_the_witness() -> None:
    files = {
        (0, 1): ao.SegmentFileRows([(1, 40)]),
        (2, 1): ao.SegmentFileRows([(1, 7), (101, 103)]),
        (1, 2): ao.SegmentFileRows(),
    }
    assert ao.read_from(files) == [
        (0, ao.tid(1, 0), ao.tid(1, 40)),
        (2, ao.tid(1, 0), ao.tid(1, 103)),
    ]


def test_a_file_whose_witness_is_neither_read_nor_hidden_was_rewritten() -> None:
    witnesses = {(0, 1): 40, (1, 1): 30, (2, 1): 20}
    # (0, 1): its row 40 was read again. (1, 1): row 30 is hidden (deleted): not a rewrite. (2, 1): row 20 is gone
    # and not hidden: VACUUM compacted the file (its visibility map entries went with it).
    assert ao.rewritten(witnesses, {(0, 1)}, {(1, 1): {30, 31}}) == [(2, 1)]


def test_saved_files_read_back_as_they_were() -> None:
    files = {
        (0, 1): ao.SegmentFileRows([(1, 1_000_000)], [5, 17, 100_000]),
        (35, 2): ao.SegmentFileRows([(401, 406), (501, 502)]),
        (7, 127): ao.SegmentFileRows([(2**40 - 3, 2**40 - 1)]),
    }
    text = ao.encode_files(files)
    assert ao.decode_files(text) == files
    with pytest.raises(ValueError):
        ao.decode_files("1.2")


def test_the_state_of_1000_leaves_on_100_segments_stays_under_2_mb() -> None:
    """The README's arithmetic: a leaf on each of 100 segments, one segment file each holding 10 million rows read in
    one run, and a fingerprint per leaf, for 1,000 leaves; rows hidden since add their own few bytes each."""
    state = SyncState()
    table = state.tables["s.facts"] = TableState("full without key", leaves={})
    for leaf in range(1000):
        files = {(segment, 1): ao.SegmentFileRows([(1, 10_000_000)]) for segment in range(100)}
        table.leaves[str(100_000 + leaf)] = LeafState(
            "", 0, {"rel": 200_000 + leaf, "fp": "1:1000000000:42", "files": ao.encode_files(files)}
        )
    text = json.dumps(state.as_json())
    assert len(text) < 2_000_000, len(text)
    assert load_state(json.loads(text)).tables["s.facts"].leaves["100000"].ao["rel"] == 200_000
