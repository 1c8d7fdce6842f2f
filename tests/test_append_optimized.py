"""The decisions of append-optimized change capture, as plain functions of catalog facts and saved state: what a leaf
needs, which rows a read skips, which ids are deleted, what is saved, and how big that is."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import Database, Destination, killed_after_checkpoint
from psycopg2 import sql

import ao_keyed
import append_optimized as ao
import changed_leaves
import difference_digest as dd
import sync
from catalog import Flavour, detect_flavour
from configuration import parse_settings
from greenplum_client import APPLICATION_NAME, GreenplumClient, HiddenRowsUnavailable
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


def test_raising_the_high_keeps_only_the_highest_row_read() -> None:
    rows = ao.SegmentFileRows()
    assert [rows.raise_high(number) for number in (5, 3, 5, 9)] == [True, False, False, True]
    assert rows.runs == [(1, 9)] and rows.high == 9


@pytest.mark.parametrize(
    ("saved", "facts", "change"),
    [
        (None, ao.AoFacts(10, "1:5:1"), ao.LeafChange.NEW),
        ({"rel": 10, "fp": "1:5:1"}, ao.AoFacts(10, "1:5:1"), ao.LeafChange.UNCHANGED),
        ({"rel": 10, "fp": "1:5:1"}, ao.AoFacts(10, "1:5:2"), ao.LeafChange.CHANGED),  # a delete bumps the count
        ({"rel": 10, "fp": "1:5:1"}, ao.AoFacts(11, "1:5:1"), ao.LeafChange.REWRITTEN),  # TRUNCATE, reloaded alike
        ({"rel": 10, "fp": ""}, ao.AoFacts(10, ""), ao.LeafChange.UNCHANGED),  # empty, and still empty
    ],
)
def test_what_a_leaf_needs_from_its_saved_state_and_the_catalog(saved, facts, change) -> None:
    assert ao.leaf_change(saved, facts) is change


@pytest.mark.parametrize(
    ("facts", "only_lost"),
    [
        (ao.AoFacts(10, "1:5:2,2:3:1"), True),  # a delete bumps a file's count, no row written
        (ao.AoFacts(10, "1:5:1,2:3:1"), True),  # the catalog unchanged: nothing lost either, and the print tells
        (ao.AoFacts(10, "1:6:2,2:3:1"), False),  # a row written: inserted, or an updated row's new version
        (ao.AoFacts(11, "1:5:2,2:3:1"), False),  # TRUNCATE, or a rewrite
        (ao.AoFacts(10, "1:5:2"), False),  # a file compacted away
        (ao.AoFacts(10, "1:5:2,2:3:1,3:1:1"), False),  # a file more
    ],
)
def test_a_leaf_only_lost_rows_when_its_storage_and_the_rows_written_to_each_file_stay(facts, only_lost) -> None:
    now = ao_keyed.AoNow({}, {"7": facts})
    assert now.only_hidden_since("7=10/1:5:1,2:3:1", "7") is only_lost
    assert not now.only_hidden_since("8=10/1:5:1,2:3:1", "7"), "a leaf not saved"
    assert not now.only_hidden_since(None, "7")


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
        (1, 1): ao.SegmentFileRows([(1, 50), (90, 99)], []),
        (35, 2): ao.SegmentFileRows([(401, 406), (501, 502)]),
        (7, 127): ao.SegmentFileRows([(2**40 - 3, 2**40 - 1)]),
    }
    text = ao.encode_files(files)
    assert ao.decode_files(text) == files
    assert ao.decode_files("1.1.1-1e+2i-2r..1e") == {(1, 1): ao.SegmentFileRows([(1, 50), (90, 99)])}, "an earlier form"
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


def test_the_high_water_of_a_scan_is_the_highest_row_number_of_each_file_per_leaf_and_segment() -> None:
    """What a digest's scan notes of where each file's rows end, from the tableoid, segment and ctid it sends."""
    record = np.dtype([("leaf", ">u4"), ("segment", ">i4"), ("block", ">u4"), ("offset", ">u2")])
    rows = [  # (leaf oid, segment, segment file, row number)
        (4_000_000_000, 0, 1, 5),
        (4_000_000_000, 0, 1, 2**40 - 1),
        (4_000_000_000, 0, 1, 7),
        (4_000_000_000, 999, 127, 32768),
        (17, 0, 1, 3),
        (17, 1, 1, 32767),
        (17, 1, 0, 1),
    ]

    def records(chosen: list[tuple[int, int, int, int]]) -> np.ndarray:
        places = []
        for leaf, segment, segno, row_number in chosen:
            block, offset = (int(part) for part in ao.tid(segno, row_number).strip("()").split(","))
            places.append((leaf, segment, block, offset))
        return np.array(places, record)

    high_water = ao_keyed.HighWater(partitioned=True, leaf_key="1")
    high_water.add(records(rows[:2]))
    high_water.add(records(rows[2:]))
    assert high_water.files("4000000000") == {
        (0, 1): ao.SegmentFileRows([(1, 2**40 - 1)]),
        (999, 127): ao.SegmentFileRows([(1, 32768)]),
    }
    assert {place: rows.high for place, rows in high_water.files("17").items()} == {(0, 1): 3, (1, 1): 32767, (1, 0): 1}
    high_water.reset()  # a scan run again after a lost connection
    assert high_water.files("17") == {}
    one_leaf = ao_keyed.HighWater(partitioned=False, leaf_key="17")
    one_leaf.add(records(rows[4:5]))
    assert one_leaf.files("17") == {(0, 1): ao.SegmentFileRows([(1, 3)])}


def test_the_leaves_changed_or_gone_since_the_facts_saved() -> None:
    facts = {"1": ao.AoFacts(10, "1:5:1"), "2": ao.AoFacts(20, "1:7:2"), "3": ao.AoFacts(30, "")}
    now = ao_keyed.AoNow({}, facts)
    saved = "1=10/1:5:1;2=20/1:6:1;4=40/1:1:1"
    assert now.changed_since(saved) == ["2", "3"]
    assert now.gone_since(saved) == ["4"]
    assert now.changed_since(None) == ["1", "2", "3"] and now.gone_since(None) == []
    assert ao_keyed.AoNow({}, now.facts).changed_since(now.text) == []


# On a real Greenplum (GREENPLUM_TEST_DSN): every kind of change and rewrite of append-optimized leaves, with the rows
# each sync sent, the leaves it scanned, and the destination equal to the source as a multiset.

MONTHS = ("2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01", "2024-05-01")
LEAVES = ("facts_1_prt_1", "facts_1_prt_2", "facts_1_prt_3")


class AoFacts:
    """A keyless append-optimized table, partitioned by month or not; ids are unique, so deleted rows can be named."""

    def __init__(self, database: Database, schema: str) -> None:
        flavour = detect_flavour(database.version)
        if flavour is not Flavour.GREENPLUM6:
            needs = "needs Greenplum 6's append-optimized storage and catalog (GREENPLUM_TEST_DSN)"
            pytest.skip(f"{needs}; this is {flavour.value}")
        self.database, self.schema, self.table = database, schema, f"{schema}.facts"
        self.configuration = database.configuration(SCHEMAS=schema, BATCH_SIZE="500", CHECKPOINT_ROWS="400")

    def create(self, orientation: str = "column", rows: int = 3000, partitioned: bool = True) -> None:
        months = f"START (date '{MONTHS[0]}') END (date '{MONTHS[3]}') EVERY (interval '1 month')"
        self.run(
            f"""CREATE TABLE {self.table} (id int, day date, note text)
            WITH (appendonly=true, orientation={orientation}) DISTRIBUTED RANDOMLY
            {f"PARTITION BY RANGE (day) ({months})" if partitioned else ""}"""
        )
        self.insert(1, rows)

    def insert(self, first: int, last: int, day: str | None = None, note: str = "n") -> None:
        when = f"date '{day}'" if day else f"date '{MONTHS[0]}' + (i % 90)"
        self.run(f"INSERT INTO {self.table} SELECT i, {when}, '{note}' || i FROM generate_series({first}, {last}) i")

    def run(self, *statements: str) -> list[tuple]:
        """Runs statements on a connection of their own, closed after: a backend sends its scan counts when it
        ends, so they never land in another sync's count."""
        with contextlib.closing(self.database.connect()) as connection, connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def delete(self, leaf: str, condition: str) -> int:
        """Deletes the leaf's rows meeting the condition; how many there were (some)."""
        ((count,),) = self.run(f"SELECT count(*) FROM {leaf} WHERE {condition}")
        self.run(f"DELETE FROM {leaf} WHERE {condition}")
        assert count
        return count

    def leaf_oid(self, leaf: str) -> int:
        return self.run(f"SELECT '{self.schema}.{leaf}'::regclass::oid")[0][0]

    def rows(self, where: str = "true") -> list[tuple]:
        return sorted(self.run(f"SELECT id, day, note FROM {self.table} WHERE {where}"))

    def scans(self) -> dict[str, int]:
        """Sequential scans of each leaf so far, as the coordinator counts them (its statistics lag a little)."""
        time.sleep(1.0)
        statement = "SELECT relname, seq_scan FROM pg_stat_all_tables WHERE schemaname = '{}' AND relname LIKE 'facts%'"
        return dict(self.run(statement.format(self.schema)))

    def sync(self, destination: Destination, state: dict | None = None) -> tuple[tuple[int, int, int], set[str]]:
        """One sync: its (upserts, deletes, truncates) and the leaves it scanned. The destination equals the source
        after it, and the rows marked deleted are rows the source no longer has."""
        before = self.scans()
        counts = destination.sync(self.configuration, state)
        after = self.scans()
        live, source = destination.rows(self.schema, "facts", "id, day, note"), self.rows()
        assert live == source
        marked = destination.query(
            f'SELECT id, day, note FROM "tester_{self.schema}".facts WHERE _fivetran_deleted ORDER BY ALL'
        )
        assert not (set(marked) - set(live)) & set(source), "a row marked deleted that the source still has"
        scanned = {leaf for leaf in after if after[leaf] != before.get(leaf, 0)}
        return (counts["Upserts"], counts["Deletes"], counts["Truncates"]), scanned


def change_after_the_first_batch_sent(monkeypatch: pytest.MonkeyPatch, change: Callable[[], None]) -> None:
    """The next sync runs `change` at the source once, right after it sends its first batch of rows."""
    real_send, changed = sync.TableSync._send, []

    def send_then_change(self, batch, prepare):
        real_send(self, batch, prepare)
        if not changed:
            changed.append(True)
            change()

    monkeypatch.setattr(sync.TableSync, "_send", send_then_change)


@pytest.fixture
def facts(database: Database, schema: str) -> AoFacts:
    return AoFacts(database, schema)


def test_an_unchanged_table_is_not_scanned_and_appends_cost_the_appended_rows(
    facts: AoFacts, destination: Destination
) -> None:
    """Known by their contents, the rows appended are those a content gained; a changed leaf costs one grouped scan
    of the table (its contents are counted over every leaf), an unchanged table none."""
    facts.create()
    assert facts.sync(destination)[0] == (3000, 0, 1)
    assert facts.sync(destination) == ((0, 0, 0), set()), "nothing changed: the catalog says so, no leaf is scanned"
    facts.insert(5001, 5120, day=MONTHS[1], note="appended")
    assert facts.sync(destination)[0] == (120, 0, 0), "the appended rows alone"
    facts.run(f"BEGIN; INSERT INTO {facts.table} SELECT i, date '{MONTHS[2]}', 'x' FROM generate_series(1, 500) i")
    facts.run("ROLLBACK")
    assert facts.sync(destination)[0] == (0, 0, 0), "an aborted insert changes nothing"
    assert facts.sync(destination) == ((0, 0, 0), set())


def test_deletes_and_updates_land_on_their_own_rows(facts: AoFacts, destination: Destination) -> None:
    """A delete deletes that row's id; an update deletes the old version's id and sends the new version."""
    facts.create()
    facts.sync(destination)
    facts.run(
        f"DELETE FROM {facts.table} WHERE id IN (3, 40, 75, 1030, 2999)",  # day: 1 January + id % 90
        f"UPDATE {facts.table} SET note = 'updated' WHERE id IN (10, 1045, 2060)",
    )
    sent, scanned = facts.sync(destination)
    assert sent == (3, 5 + 3, 0) and scanned == set(LEAVES)
    marked = destination.query(
        f'SELECT id, note FROM "tester_{facts.schema}".facts WHERE _fivetran_deleted ORDER BY id, note'
    )
    expected = [(3, "n3"), (10, "n10"), (40, "n40"), (75, "n75"), (1030, "n1030"), (1045, "n1045"), (2060, "n2060")]
    assert marked == [*expected, (2999, "n2999")], "the rows the source deleted, and the old versions updated away"
    facts.insert(6001, 6010, day=MONTHS[0])
    facts.run(f"DELETE FROM {facts.table} WHERE id BETWEEN 6001 AND 6004")  # inserted and deleted between two syncs
    assert facts.sync(destination)[0] == (6, 0, 0)


def test_changes_spread_over_every_leaf_cost_the_rows_changed(facts: AoFacts, destination: Destination) -> None:
    """As TPC-H's refresh functions change orders and lineitem: new rows and deletes of old ones in every leaf."""
    facts.create(rows=6000)
    facts.sync(destination)
    facts.insert(10_001, 10_030)  # spread over the 90 days
    facts.run(f"DELETE FROM {facts.table} WHERE id % 200 = 7 AND id <= 6000")  # 30 old rows, every leaf
    assert facts.sync(destination)[0] == (30, 30, 0)


@pytest.mark.parametrize("orientation", ["row", "column"])
def test_an_unpartitioned_table_is_one_leaf(facts: AoFacts, destination: Destination, orientation: str) -> None:
    facts.create(orientation=orientation, rows=900, partitioned=False)
    assert facts.sync(destination)[0] == (900, 0, 1)
    assert facts.sync(destination) == ((0, 0, 0), set())
    facts.insert(901, 950)
    facts.run(f"DELETE FROM {facts.table} WHERE id <= 5")
    assert facts.sync(destination) == ((50, 5, 0), {"facts"})


REWRITES = {
    # Plain VACUUM compacts segment files whose hidden share passes gp_appendonly_compaction_threshold (10%): their
    # live rows move to another file, with new row numbers.
    "vacuum": (f"DELETE FROM {{t}} WHERE id % 3 = 0 AND day < '{MONTHS[1]}'", "VACUUM {t}"),
    "vacuum full": (f"DELETE FROM {{t}} WHERE id % 50 = 0 AND day >= '{MONTHS[2]}'", "VACUUM FULL {t}"),
    "truncate and reload": (
        "TRUNCATE {t}_1_prt_2",
        f"INSERT INTO {{t}} SELECT i, date '{MONTHS[1]}', 'reload' FROM generate_series(1, 40) i",
    ),
    "exchange partition": (
        "CREATE TABLE {t}_stage (id int, day date, note text) WITH (appendonly=true) DISTRIBUTED RANDOMLY",
        f"INSERT INTO {{t}}_stage SELECT i, date '{MONTHS[2]}', 'exchanged' FROM generate_series(1, 25) i",
        f"ALTER TABLE {{t}} EXCHANGE PARTITION FOR (date '{MONTHS[2]}') WITH TABLE {{t}}_stage",
        "DROP TABLE {t}_stage",
    ),
    "exchange partition for 90% of its rows": (
        "CREATE TABLE {t}_stage (id int, day date, note text) WITH (appendonly=true) DISTRIBUTED RANDOMLY",
        f"INSERT INTO {{t}}_stage SELECT * FROM {{t}} WHERE day >= '{MONTHS[2]}' AND id % 10 <> 0",
        f"ALTER TABLE {{t}} EXCHANGE PARTITION FOR (date '{MONTHS[2]}') WITH TABLE {{t}}_stage",
        "DROP TABLE {t}_stage",
    ),
    "set distributed by": ("ALTER TABLE {t} SET DISTRIBUTED BY (id)",),
    "add partition": (
        f"ALTER TABLE {{t}} ADD PARTITION START (date '{MONTHS[3]}') END (date '{MONTHS[4]}') "
        "WITH (appendonly=true, orientation=column)",
        f"INSERT INTO {{t}} SELECT i, date '{MONTHS[3]}', 'april' FROM generate_series(1, 15) i",
    ),
    "drop partition": (f"ALTER TABLE {{t}} DROP PARTITION FOR (date '{MONTHS[1]}')",),
    "split partition": (
        f"ALTER TABLE {{t}} SPLIT PARTITION FOR (date '{MONTHS[0]}') AT (date '2024-01-15') "
        "INTO (PARTITION a, PARTITION b)",
    ),
}


@pytest.mark.parametrize("rewrite", list(REWRITES))
def test_rewrites_stay_exact_and_cost_the_rows_they_changed(
    facts: AoFacts, destination: Destination, rewrite: str
) -> None:
    """A row that moved (a compaction, VACUUM FULL, a redistribution, a split) is the same content: it sends nothing;
    rows gone or new with a partition cost themselves."""
    facts.create()
    facts.sync(destination)
    statements = REWRITES[rewrite]
    before = Counter(facts.rows())
    facts.run(*(statement.format(t=facts.table) for statement in statements))
    after = Counter(facts.rows())
    expected = (sum((after - before).values()), sum((before - after).values()), 0)
    assert facts.sync(destination)[0] == expected
    assert facts.sync(destination)[0] == (0, 0, 0)


def test_leaves_rewritten_with_their_contents_cost_a_scan_of_those_leaves_alone(
    facts: AoFacts, destination: Destination
) -> None:
    """Known by their contents, the leaves the catalog says changed are scanned alone when they still hold what they
    held (a compaction, VACUUM FULL, an exchange of the same rows): nothing is sent and no other leaf is read. Rows
    deleted from a leaf of which only a print is kept cost that leaf's scans (its rows read again with those hidden);
    a row updated there takes the table's scan."""
    facts.create()
    facts.sync(destination)
    january, february = f"{facts.table}_1_prt_1", f"{facts.table}_1_prt_2"
    deleted = facts.delete(january, "id % 3 = 0")
    assert facts.sync(destination) == ((0, deleted, 0), {"facts_1_prt_1"})

    def touched(leaf: str) -> list[str]:
        """A row inserted straight into the leaf and deleted again: the catalog counts a change, the contents none
        (and a plain VACUUM then compacts its files: greenplum-notes.md, "Forcing a compaction")."""
        return [f"INSERT INTO {leaf} VALUES (0, date '{MONTHS[0]}', 'x')", f"DELETE FROM {leaf} WHERE id = 0"]

    files = f"SELECT segno, tupcount FROM gp_toolkit.__gp_aocsseg('{january}'::regclass) WHERE column_num = 0"
    before = sorted(facts.run(files))
    facts.run(*touched(january), f"VACUUM {january}")
    assert sorted(facts.run(files)) != before, "the leaf's files were compacted"
    assert facts.sync(destination) == ((0, 0, 0), {"facts_1_prt_1"})
    facts.run(*(statement.replace(MONTHS[0], MONTHS[1]) for statement in touched(february)), f"VACUUM FULL {february}")
    assert facts.sync(destination) == ((0, 0, 0), {"facts_1_prt_2"})
    facts.run(
        f"CREATE TABLE {facts.table}_stage (id int, day date, note text) WITH (appendonly=true) DISTRIBUTED RANDOMLY",
        f"INSERT INTO {facts.table}_stage SELECT * FROM {facts.table} WHERE day >= '{MONTHS[2]}'",
        f"ALTER TABLE {facts.table} EXCHANGE PARTITION FOR (date '{MONTHS[2]}') WITH TABLE {facts.table}_stage",
        f"DROP TABLE {facts.table}_stage",
    )
    assert facts.sync(destination) == ((0, 0, 0), {"facts_1_prt_3"}), "the leaf exchanged for one with its rows"
    deleted = facts.delete(february, "id % 10 = 1")
    assert facts.sync(destination) == ((0, deleted, 0), {"facts_1_prt_2"}), "rows deleted from a leaf printed only"
    march = f"{facts.table}_1_prt_3"
    ((updated,),) = facts.run(f"SELECT count(*) FROM {march} WHERE id % 90 = 75")
    facts.run(f"UPDATE {march} SET note = 'fixed' WHERE id % 90 = 75")
    assert updated and facts.sync(destination) == ((updated, updated, 0), set(LEAVES)), "rows updated: the table's scan"
    assert facts.sync(destination) == ((0, 0, 0), set())


def test_reads_of_hidden_rows_see_them_in_every_slice_and_leave_later_reads_seeing_none(facts: AoFacts) -> None:
    """Greenplum's `SET LOCAL gp_select_invisible` reaches the segments' writer processes only: a grouped read (two
    slices) after another read missed the hidden rows its readers scanned, and a session's SET undone by a rollback
    stays on in those readers. A read of hidden rows gets a connection of its own: it counts every row, and the
    reads after it none of the hidden. Lost, that connection is made again, as any other."""
    facts.create(partitioned=False)
    facts.run(f"DELETE FROM {facts.table} WHERE id % 4 = 0")
    grouped = f"SELECT sum(c)::int FROM (SELECT note, count(*) AS c FROM {facts.table} GROUP BY note) AS g"
    with GreenplumClient(parse_settings(facts.configuration)) as client:
        for _ in range(2):
            assert client.query(grouped) == [(2250,)]
            assert client.query(grouped, seeing_hidden=True) == [(3000,)]
        assert client.query(grouped) == [(2250,)]
        ((terminated,),) = facts.run(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE application_name = '{APPLICATION_NAME}' AND pid <> pg_backend_pid()"
        )
        assert terminated == 2, "the connector's two connections"
        assert client.query(grouped, seeing_hidden=True) == [(3000,)]
        assert client.query(grouped) == [(2250,)]


def test_without_a_connection_for_hidden_rows_only_a_scan_of_one_slice_reads_them(facts: AoFacts) -> None:
    """Where no connection of its own opens (a role's connection limit, which this shared cluster's tests do not
    create: the client is told it failed), a filtered scan, one slice, reads hidden rows on the sync's connection
    with `SET LOCAL`; a grouped scan is refused rather than run there, as readers made in its transaction would keep
    seeing deleted rows in the sync's later scans."""
    facts.create(partitioned=False)
    facts.run(f"DELETE FROM {facts.table} WHERE id % 4 = 0")
    grouped = f"SELECT sum(c)::int FROM (SELECT note, count(*) AS c FROM {facts.table} GROUP BY note) AS g"
    with GreenplumClient(parse_settings(facts.configuration)) as client:
        client._hidden_unavailable = True
        assert client.query(f"SELECT count(*)::int FROM {facts.table} WHERE id <= 100", seeing_hidden=True) == [(100,)]
        copied = []
        sink = SimpleNamespace(reset=copied.clear, write=copied.append)
        with pytest.raises(HiddenRowsUnavailable):
            client.copy_out(sql.SQL(f"COPY ({grouped}) TO STDOUT"), sink, seeing_hidden=True)
        assert not copied
        assert client.query(grouped) == [(2250,)]


def test_rows_deleted_from_a_leaf_printed_only_cost_that_leaf_unless_rows_were_hidden_there_when_printed(
    facts: AoFacts, destination: Destination
) -> None:
    """A leaf that only lost rows since it was printed holds, hidden rows included, what it held then: its rows read
    back with `gp_select_invisible` name the rows deleted, and the leaf gets a digest of its own; so do they past
    the leaf's own digest. Where rows were already hidden when it was printed (deleted before the first sync, not
    compacted), its hidden rows print otherwise, and the table's scan names them."""
    facts.create()
    january, february = f"{facts.table}_1_prt_1", f"{facts.table}_1_prt_2"
    facts.run(f"DELETE FROM {january} WHERE id % 50 = 0")
    facts.sync(destination)

    deleted = facts.delete(february, "id % 40 = 1")
    assert facts.sync(destination) == ((0, deleted, 0), {"facts_1_prt_2"}), "no row hidden in February when printed"
    deleted = facts.delete(january, "id % 40 = 1")
    assert facts.sync(destination) == ((0, deleted, 0), set(LEAVES)), "rows hidden in January: the table's scan"
    deleted = facts.delete(february, "id % 40 = 2")
    assert facts.sync(destination) == ((0, deleted, 0), {"facts_1_prt_2"}), "February's own digest now"
    deleted = facts.delete(january, "id % 40 = 3")
    assert facts.sync(destination) == ((0, deleted, 0), {"facts_1_prt_1"}), "January's, from the table's scan"
    march = destination.saved_state()["tables"][facts.table]["leaf_digests"][str(facts.leaf_oid("facts_1_prt_3"))]
    deleted = facts.delete(f"{facts.table}_1_prt_3", "id % 5 IN (0, 1)")
    assert deleted > dd.capacity(dd.Cells.unpack(march).sub_size), "past March's own digest, from the first sync"
    assert facts.sync(destination) == ((0, deleted, 0), {"facts_1_prt_3"})


def test_rows_deleted_from_a_leaf_past_the_table_s_digest_are_named_without_a_truncate(
    facts: AoFacts, destination: Destination
) -> None:
    """A leaf that only lost rows names them by its rows read back hidden however many there are (within what a sync
    holds in memory): more than the table's digest holds, without a truncate or a read of another leaf."""
    facts.create(rows=90_000)
    facts.sync(destination)
    capacity = dd.capacity(dd.Cells.unpack(destination.saved_state()["tables"][facts.table]["digest"]).sub_size)
    january = f"{facts.table}_1_prt_1"
    deleted = facts.delete(january, "id % 10 <> 0")
    assert deleted > capacity
    assert facts.sync(destination) == ((0, deleted, 0), {"facts_1_prt_1"})
    assert facts.sync(destination) == ((0, 0, 0), set())


def test_a_leaf_whose_rows_changed_last_finds_its_next_changes_alone(facts: AoFacts, destination: Destination) -> None:
    """The table's scan gives the few leaves it found changed a digest of their own (this month's partition, taking
    loads): their next changes cost a scan of that leaf and the rows that changed; a row updated in another leaf
    takes the table's scan again, and that leaf gets a digest too, the others keeping theirs. The first sync gives one
    to the newest leaf holding rows."""
    facts.create()
    facts.sync(destination)
    january, february = f"{facts.table}_1_prt_1", f"{facts.table}_1_prt_2"
    facts.insert(6001, 6050, day=MONTHS[2])
    assert facts.sync(destination) == ((50, 0, 0), {"facts_1_prt_3"}), "March's digest, from the first sync"
    facts.insert(5001, 5100, day=MONTHS[1])
    assert facts.sync(destination) == ((100, 0, 0), set(LEAVES))
    facts.insert(5101, 5130, day=MONTHS[1], note="again")
    facts.insert(5101, 5102, day=MONTHS[1], note="again")  # two rows identical to two just inserted
    assert facts.sync(destination) == ((32, 0, 0), {"facts_1_prt_2"})
    ((deleted,),) = facts.run(f"SELECT count(*) FROM {february} WHERE id % 7 = 0")
    facts.run(
        f"DELETE FROM {february} WHERE id % 7 = 0",
        f"UPDATE {february} SET note = 'updated' WHERE id BETWEEN 5001 AND 5010 AND id % 7 <> 0",
    )
    assert facts.sync(destination) == ((9, deleted + 9, 0), {"facts_1_prt_2"})
    facts.run(f"UPDATE {january} SET note = 'fixed' WHERE id = 1")
    assert facts.sync(destination) == ((1, 1, 0), set(LEAVES))
    facts.run(f"DELETE FROM {january} WHERE id = 2", f"DELETE FROM {february} WHERE id = 5011")
    assert facts.sync(destination) == ((0, 2, 0), {"facts_1_prt_1", "facts_1_prt_2"}), "February's digest stayed"
    facts.run(f"DELETE FROM {january} WHERE id = 4")
    assert facts.sync(destination) == ((0, 1, 0), {"facts_1_prt_1"}), "January's and February's digests"


def test_a_partition_added_or_created_ahead_sends_its_rows_alone_however_many(
    facts: AoFacts, destination: Destination
) -> None:
    """A leaf that held nothing (a partition added, or one created ahead and loaded since) is read alone, and every
    row of it sent, more than the table's digest could name: no other leaf holds their contents, so none need be
    named. The leaf gets a digest of its own, for the loads that follow. The first sync prints each leaf, so a
    rewrite right after it costs that leaf alone."""
    facts.create()
    assert facts.sync(destination)[0] == (3000, 0, 1)
    march = f"{facts.table}_1_prt_3"
    facts.run(
        f"INSERT INTO {march} VALUES (0, date '{MONTHS[2]}', 'x')",
        f"DELETE FROM {march} WHERE id = 0",
        f"VACUUM FULL {march}",
    )
    assert facts.sync(destination) == ((0, 0, 0), {"facts_1_prt_3"}), "the first sync's prints"

    def added(start: str, end: str) -> str:
        storage = "WITH (appendonly=true, orientation=column)"  # else a heap leaf, on Greenplum 6
        facts.run(f"ALTER TABLE {facts.table} ADD PARTITION START (date '{start}') END (date '{end}') {storage}")
        leaves = (
            f"SELECT partitiontablename, partitionrangestart FROM pg_partitions WHERE schemaname = '{facts.schema}'"
        )
        return next(name for name, bound in facts.run(leaves) if start in bound)

    april = added(MONTHS[3], MONTHS[4])
    facts.insert(10001, 15000, day=MONTHS[3])
    facts.insert(10001, 10002, day=MONTHS[3])  # two rows identical to two just inserted
    assert facts.sync(destination) == ((5002, 0, 0), {april}), "5,002 rows, past the digest of 3,000: no truncate"
    facts.insert(15001, 15030, day=MONTHS[3])
    assert facts.sync(destination) == ((30, 0, 0), {april}), "the leaf's own digest"
    may = added(MONTHS[4], "2024-06-01")
    assert facts.sync(destination)[0] == (0, 0, 0)
    facts.insert(20001, 24000, day=MONTHS[4])
    facts.run(f"DELETE FROM {facts.schema}.{april} WHERE id % 100 = 0")
    assert facts.sync(destination) == ((4000, 50, 0), {april, may})
    assert facts.sync(destination) == ((0, 0, 0), set())


def test_rows_appended_past_the_digest_send_the_leaves_that_only_gained_again_not_the_table(
    facts: AoFacts, destination: Destination
) -> None:
    """Past the digest's capacity, the leaves the catalog says only gained rows (none hidden since, no file emptied)
    are sent again whole: no truncate, and the other leaves' rows are not sent. A row deleted with such a load takes
    the read of every row after a truncate, as nothing else names it."""
    facts.create()
    facts.sync(destination)
    saved = destination.saved_state()["tables"][facts.table]["digest"]
    capacity = dd.capacity(dd.Cells.unpack(saved).sub_size)
    february = f"{facts.table}_1_prt_2"
    facts.insert(10001, 10000 + 2 * capacity, day=MONTHS[1])
    ((held,),) = facts.run(f"SELECT count(*) FROM {february}")
    assert facts.sync(destination)[0] == (held, 0, 0), "February's rows, all of them"
    assert facts.sync(destination) == ((0, 0, 0), set())
    larger = dd.capacity(dd.Cells.unpack(destination.saved_state()["tables"][facts.table]["digest"]).sub_size)
    assert larger > capacity, "the digest is sized for the difference seen"
    facts.insert(30001, 30000 + 2 * larger, day=MONTHS[1])
    facts.run(f"DELETE FROM {february} WHERE id = 10001")
    assert facts.sync(destination)[0][2] == 1, "a row deleted: the read of every row"
    assert facts.sync(destination) == ((0, 0, 0), set())


def test_a_row_deleted_before_the_leaves_that_only_gained_are_read_again_is_deleted(
    facts: AoFacts, destination: Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row deleted from such a leaf after the catalog said it only gained rows, before its rows are read: the read
    misses it, so it would stay live; the catalog read again says so, and the sync reads every row after a
    truncate."""
    facts.create()
    facts.sync(destination)
    capacity = dd.capacity(dd.Cells.unpack(destination.saved_state()["tables"][facts.table]["digest"]).sub_size)
    facts.insert(10001, 10000 + 2 * capacity, day=MONTHS[1])
    real = changed_leaves.appended_alone

    def then_delete(*args, **kwargs):
        found = real(*args, **kwargs)
        facts.run(f"DELETE FROM {facts.table} WHERE id = 35")  # a February row the destination holds
        return found

    monkeypatch.setattr(changed_leaves, "appended_alone", then_delete)
    sent, _ = facts.sync(destination)
    assert sent[2] == 1, "every row, after a truncate"
    monkeypatch.undo()
    assert facts.sync(destination) == ((0, 0, 0), set())


def test_a_sync_killed_while_it_sends_a_leaf_that_held_nothing_converges(
    facts: AoFacts, destination: Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed while it sends a partition added, whose rows then change: the digest saved holds the contents whose
    rows all landed, and the next sync finds the rest by the table's scan (here past its digest: a read of every
    row)."""
    facts.create()
    facts.sync(destination)
    april = f"START (date '{MONTHS[3]}') END (date '{MONTHS[4]}') WITH (appendonly=true, orientation=column)"
    facts.run(f"ALTER TABLE {facts.table} ADD PARTITION {april}")
    facts.insert(10001, 12000, day=MONTHS[3])
    # The second checkpoint: the first lands nothing of the table (its rows are held until it has saved).
    state = killed_after_checkpoint(monkeypatch, destination, facts.configuration, facts.table, lambda _, n: n == 2)
    landed = destination.query(f'SELECT count(*) FROM "tester_{facts.schema}".facts WHERE id > 10000')[0][0]
    assert 0 < landed < 2000, "the sync was killed among the rows it sent"
    facts.run(f"DELETE FROM {facts.table} WHERE id > 10000 AND id % 5 = 0")
    facts.sync(destination, state=state)
    assert facts.sync(destination) == ((0, 0, 0), set())


def test_rows_of_a_leaf_sent_whole_landed_past_the_state_saved_and_deleted_since_are_deleted(
    facts: AoFacts, destination: Destination, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    """A partition added, its rows sent whole; the sync dies once the SDK wrote the rows held until its second
    checkpoint, before it saved the state that says so; one row in a hundred of the partition is deleted. The digest
    saved never held the rows held then: the state's journal of the leaf's contents sent names those the leaf now
    holds fewer times."""
    facts.create()
    facts.sync(destination)
    april = f"START (date '{MONTHS[3]}') END (date '{MONTHS[4]}') WITH (appendonly=true, orientation=column)"
    facts.run(f"ALTER TABLE {facts.table} ADD PARTITION {april}")
    facts.insert(10001, 12000, day=MONTHS[3])
    state = killed_after_checkpoint(
        monkeypatch, destination, facts.configuration, facts.table, lambda _, n: n == 3, landed=True
    )
    assert state["tables"][facts.table]["landing"]["fills"]
    landed = destination.query(f'SELECT count(*) FROM "tester_{facts.schema}".facts WHERE id > 10000')[0][0]
    assert 0 < landed < 2000, "the sync was killed among the rows it sent"
    facts.run(f"DELETE FROM {facts.table} WHERE id > 10000 AND id % 100 = 0")
    capfd.readouterr()
    facts.sync(destination, state=state)
    assert "of the contents the last sync sent past its state" in capfd.readouterr().out
    assert facts.sync(destination) == ((0, 0, 0), set())


def test_a_sync_killed_while_it_sends_a_leaf_s_rows_and_the_leaf_changed_back_converges(
    facts: AoFacts, destination: Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows appended to a leaf, a sync killed while it sends them, the rows deleted again: the leaf holds what its
    print said, but the destination does not; the next sync deletes what landed, and what the state's journal says
    may have (the rows held when it died)."""
    facts.create()
    facts.sync(destination)
    facts.run(f"DELETE FROM {facts.table} WHERE id % 3 = 0 AND day < '{MONTHS[1]}'")
    facts.sync(destination)  # the table's scan: each leaf's print
    facts.insert(5001, 5900, day=MONTHS[1])
    # The second checkpoint: the first lands nothing of the table (its rows are held until it has saved).
    state = killed_after_checkpoint(monkeypatch, destination, facts.configuration, facts.table, lambda _, n: n == 2)
    landed = destination.query(f'SELECT count(*) FROM "tester_{facts.schema}".facts WHERE id > 5000')[0][0]
    assert 0 < landed < 900, "the sync was killed among the rows it sent"
    facts.run(f"DELETE FROM {facts.table} WHERE id > 5000")
    held = state["tables"][facts.table]["landing"]["contents"]
    assert facts.sync(destination, state=state)[0] == (0, landed + sum(abs(a - b) for _, b, a in held), 0)
    assert facts.sync(destination) == ((0, 0, 0), set())


@pytest.mark.parametrize("february_alone", [False, True])
def test_changes_committed_while_a_sync_reads_are_caught_by_the_next(
    facts: AoFacts, destination: Destination, monkeypatch: pytest.MonkeyPatch, february_alone: bool
) -> None:
    """Rows appended to February, and while the sync sends them, more there and deletes in January and February;
    `february_alone`: February has a digest of its own (room for 64 contents), and the sync scans it alone."""
    facts.create()
    facts.sync(destination)
    appended = 600
    if february_alone:
        facts.insert(4001, 4010, day=MONTHS[1])
        assert facts.sync(destination) == ((10, 0, 0), set(LEAVES))
        appended = 40
    facts.insert(5001, 5000 + appended, day=MONTHS[1])

    def change() -> None:
        facts.insert(7001, 7010, day=MONTHS[1], note="during")
        facts.run(f"DELETE FROM {facts.table} WHERE id IN (5, 5001, 7001)")

    change_after_the_first_batch_sent(monkeypatch, change)
    counts = destination.sync(facts.configuration)
    monkeypatch.undo()
    assert counts["Upserts"] >= appended - 1
    facts.sync(destination)  # equal to the source after it
    assert facts.sync(destination)[0] == (0, 0, 0)


@pytest.mark.parametrize("kill_at", [1, 2, 3])
def test_a_sync_killed_anywhere_goes_on_and_converges(
    facts: AoFacts, destination: Destination, monkeypatch: pytest.MonkeyPatch, kill_at: int
) -> None:
    """Deletes of hidden rows, appended rows and a compacted file's deletes, killed after the n-th checkpoint."""
    facts.create()
    facts.sync(destination)
    facts.run(f"DELETE FROM {facts.table} WHERE id % 4 = 0 AND day < '{MONTHS[1]}'")
    facts.insert(5001, 5900)
    facts.run(f"DELETE FROM {facts.table} WHERE id % 3 = 0 AND day >= '{MONTHS[2]}'", f"VACUUM {facts.table}")
    real_checkpoint, taken = sync.op.checkpoint, []

    def checkpoint_then_die(state: dict) -> None:
        real_checkpoint(state)
        taken.append(1)
        if len(taken) == kill_at:
            raise RuntimeError("killed after a checkpoint")

    monkeypatch.setattr(sync.op, "checkpoint", checkpoint_then_die)
    with pytest.raises(Exception, match="killed after a checkpoint"):
        destination.sync(facts.configuration)
    monkeypatch.undo()
    facts.sync(destination, state=destination.saved_state())
    assert facts.sync(destination)[0] == (0, 0, 0)


def test_a_keyed_table_upserts_appended_rows_alone_once_their_keys_are_checked(
    facts: AoFacts, destination: Destination, capfd
) -> None:
    """PRIMARY_KEYS on an append-optimized table without a cursor: appends alone are upserted without a truncate;
    a duplicate key skips the table; once it is gone, nothing is left to send."""
    facts.create()
    facts.configuration["PRIMARY_KEYS"] = f"{facts.table}:id"
    assert facts.sync(destination)[0] == (3000, 0, 1)
    assert facts.sync(destination) == ((0, 0, 0), set())
    facts.insert(5001, 5050, day=MONTHS[1], note="appended")
    assert facts.sync(destination)[0] == (50, 0, 0), "the appended rows alone, no truncate"
    capfd.readouterr()

    facts.insert(2, 2, day=MONTHS[1], note="duplicate")
    assert facts.run(f"SELECT count(*) FROM {facts.table} WHERE id = 2") == [(2,)]
    counts = destination.sync(facts.configuration)
    assert counts["Upserts"] == 0 and "('2') is shared by 2 row(s)" in capfd.readouterr().out
    facts.run(f"DELETE FROM {facts.table} WHERE note = 'duplicate2'")
    assert facts.sync(destination)[0] == (0, 0, 0), "the duplicate came and went: its digest is as it was"
    assert facts.sync(destination) == ((0, 0, 0), set())


def test_a_keyed_table_sends_what_its_digest_names_and_nothing_for_a_rewrite(
    facts: AoFacts, destination: Destination
) -> None:
    """PRIMARY_KEYS on a partitioned append-optimized table: inserts, updates and deletes cost themselves, VACUUM FULL
    (every row moved) nothing; an unchanged table is not scanned (the catalog says so)."""
    facts.create()
    facts.configuration["PRIMARY_KEYS"] = f"{facts.table}:id"
    assert facts.sync(destination)[0] == (3000, 0, 1)
    assert facts.sync(destination) == ((0, 0, 0), set()), "unchanged: no leaf scanned"
    facts.run(
        f"DELETE FROM {facts.table} WHERE id IN (3, 40, 75, 1030, 2999)",
        f"UPDATE {facts.table} SET note = 'updated' WHERE id IN (10, 1045, 2060)",
    )
    facts.insert(5001, 5020, day=MONTHS[2], note="new")
    assert facts.sync(destination)[0] == (3 + 20, 5, 0)
    deleted = destination.query(f'SELECT id FROM "tester_{facts.schema}".facts WHERE _fivetran_deleted ORDER BY 1')
    assert deleted == [(3,), (40,), (75,), (1030,), (2999,)]
    facts.run(f"VACUUM FULL {facts.table}")
    assert facts.sync(destination)[0] == (0, 0, 0), "rows moved, none changed"
    assert facts.sync(destination) == ((0, 0, 0), set())


@pytest.mark.parametrize("partitioned", [True, False])
@pytest.mark.parametrize("orientation", ["column", "row"])
def test_a_column_added_or_renamed_lands_with_its_values(
    orientation: str, partitioned: bool, facts: AoFacts, destination: Destination
) -> None:
    """Greenplum adds a column to column-oriented storage without rewriting it (no catalog fact changes): the saved
    column list tells. Every row's content changed with its columns: the table is read again after a truncate."""
    facts.create(orientation, partitioned=partitioned)
    facts.sync(destination)
    facts.run(f"ALTER TABLE {facts.table} ADD COLUMN region text DEFAULT 'eu'")
    before = facts.scans()
    counts = destination.sync(facts.configuration)
    scanned = {leaf: count - before.get(leaf, 0) for leaf, count in facts.scans().items()}
    columns = "id, day, note, region"
    assert destination.rows(facts.schema, "facts", columns) == sorted(facts.run(f"SELECT {columns} FROM {facts.table}"))
    assert (counts["Upserts"], counts["Deletes"], counts["Truncates"]) == (3000, 0, 1)
    # Counted as scans of each leaf: the probe (LIMIT 0), the read, the planner's estimate of a table never analyzed
    # (Greenplum counts an EXPLAIN as a scan) and, partitioned, the grouped scan that prints each leaf.
    assert all(count <= (4 if partitioned else 3) for count in scanned.values()), scanned

    facts.run(f"ALTER TABLE {facts.table} RENAME COLUMN note TO label")
    counts = destination.sync(facts.configuration)
    columns = "id, day, label, region"
    assert destination.rows(facts.schema, "facts", columns) == sorted(facts.run(f"SELECT {columns} FROM {facts.table}"))
    assert (counts["Upserts"], counts["Deletes"], counts["Truncates"]) == (3000, 0, 1)


def test_a_keyed_table_reads_what_changed_in_the_changed_leaves_alone(
    facts: AoFacts, destination: Destination, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    """PRIMARY_KEYS on a partitioned append-optimized table: once a digest's scan noted where a leaf's rows end and
    which are hidden, the rows appended there are read alone, and the rows hidden since (deleted, or updated away)
    are read back by ctid (the key check still reads every leaf's keys: Greenplum 6 has no unique index on
    append-optimized storage); a change during those reads, VACUUM or a leaf not noted yet sends the table to the
    digest's scan. Every sync lands exactly the source, and the keys marked deleted are exactly those deleted."""
    facts.create()
    facts.configuration["PRIMARY_KEYS"] = f"{facts.table}:id"
    assert facts.sync(destination)[0] == (3000, 0, 1)
    found = "{} leaf(s) changed, {} row(s) hidden since (deleted or updated away)"
    facts.run(f"DELETE FROM {facts.table} WHERE id = 1000")  # the first leaf; hidden from here on
    facts.insert(5001, 5050, day=MONTHS[1], note="a")
    capfd.readouterr()
    assert facts.sync(destination)[0] == (50, 1, 0)
    out = capfd.readouterr().out
    assert found.format(2, 1) in out and "50 inserted, 0 updated, 1 deleted" in out, "the full pass noted its leaves"
    facts.insert(5051, 5090, day=MONTHS[1], note="b")
    assert facts.sync(destination)[0] == (40, 0, 0)
    out = capfd.readouterr().out
    assert found.format(1, 0) in out and "40 inserted, 0 updated, 0 deleted" in out
    facts.insert(5091, 5100, day=MONTHS[1], note="c")
    facts.insert(5101, 5130, day=MONTHS[2], note="c")
    assert facts.sync(destination)[0] == (40, 0, 0)
    assert found.format(2, 0) in capfd.readouterr().out

    facts.run(
        f"DELETE FROM {facts.table} WHERE id IN (5060, 5120, 1003)",
        f"UPDATE {facts.table} SET note = 'updated' WHERE id IN (5070, 1010, 5125)",
    )
    facts.insert(5131, 5140, day=MONTHS[2], note="d")
    assert facts.sync(destination)[0] == (13, 3, 0)
    out = capfd.readouterr().out
    assert found.format(3, 6) in out and "10 inserted, 3 updated, 3 deleted" in out
    deleted = destination.query(f'SELECT id FROM "tester_{facts.schema}".facts WHERE _fivetran_deleted ORDER BY 1')
    assert deleted == [(1000,), (1003,), (5060,), (5120,)]

    real_read, updated = ao_keyed._read_appended, []

    def read_then_update(*args, **kwargs):
        result = real_read(*args, **kwargs)
        if not updated:
            updated.append(True)
            facts.run(f"UPDATE {facts.table} SET note = 'during' WHERE id IN (5141, 9)")
        return result

    facts.insert(5141, 5150, day=MONTHS[1], note="g")
    monkeypatch.setattr(ao_keyed, "_read_appended", read_then_update)
    counts = destination.sync(facts.configuration)
    monkeypatch.undo()
    assert "rows were deleted or updated while the changes were read" in capfd.readouterr().out
    assert (counts["Deletes"], counts["Truncates"]) == (0, 0)
    assert facts.sync(destination)[0] == (0, 0, 0)

    (before,) = facts.run(f"SELECT count(*) FROM {facts.table}")
    facts.run(f"DELETE FROM {facts.table} WHERE id % 5 = 0 AND day < '{MONTHS[1]}'", f"VACUUM {facts.table}")
    (after,) = facts.run(f"SELECT count(*) FROM {facts.table}")
    assert facts.sync(destination)[0] == (0, before[0] - after[0], 0), "the deletes alone; rows moved send nothing"
    assert "was compacted (VACUUM)" in capfd.readouterr().out
    facts.insert(5171, 5180, day=MONTHS[0], note="h")
    facts.run(f"DELETE FROM {facts.table} WHERE id IN (11, 12)")
    assert facts.sync(destination)[0] == (10, 2, 0)
    assert found.format(1, 2) in capfd.readouterr().out
    assert facts.sync(destination) == ((0, 0, 0), set())


def test_a_leaf_changed_during_a_keyed_full_pass_is_not_noted_and_takes_the_digest_s_scan(
    facts: AoFacts, destination: Destination, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    """The full pass notes where each leaf's rows end as it reads; a leaf that changed while it ran (the pass may
    or may not have read the change) is not noted: its first change after takes the digest's scan."""
    facts.create()
    facts.configuration["PRIMARY_KEYS"] = f"{facts.table}:id"
    change_after_the_first_batch_sent(monkeypatch, lambda: facts.insert(9001, 9001, day=MONTHS[2], note="during"))
    destination.sync(facts.configuration)
    monkeypatch.undo()
    facts.insert(5001, 5010, day=MONTHS[1])
    capfd.readouterr()
    facts.sync(destination)  # the row inserted during the pass, if the pass did not read it, and the 10 rows
    assert f"leaf {facts.leaf_oid(LEAVES[2])} changed, and where its rows end was not noted" in capfd.readouterr().out
    facts.insert(5011, 5020, day=MONTHS[2])
    assert facts.sync(destination)[0] == (10, 0, 0)
    assert "1 leaf(s) changed, 0 row(s) hidden since" in capfd.readouterr().out


def test_a_row_changed_after_a_killed_read_of_every_row_read_it_is_sent_by_a_later_sync(
    facts: AoFacts, destination: Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A column added: every row is sent again, in key order; killed partway, the read goes on in the next sync. A row
    it had read, updated between the two, is found afterwards: the facts saved are those from before it began."""
    facts.create()
    facts.configuration["PRIMARY_KEYS"] = f"{facts.table}:id"
    facts.sync(destination)
    facts.run(f"ALTER TABLE {facts.table} ADD COLUMN region text DEFAULT 'eu'")
    killed_after_checkpoint(monkeypatch, destination, facts.configuration, facts.table)
    facts.run(f"UPDATE {facts.table} SET note = 'after the kill' WHERE id = 1")
    destination.sync(facts.configuration, state=destination.saved_state())
    facts.sync(destination)
    assert ("after the kill",) in destination.query(f'SELECT note FROM "tester_{facts.schema}".facts WHERE id = 1')
    assert facts.sync(destination) == ((0, 0, 0), set())


@pytest.mark.parametrize("kill_at", [1, 2, 3])
def test_a_keyed_table_killed_while_it_sends_what_the_catalog_told_converges(
    facts: AoFacts, destination: Destination, monkeypatch: pytest.MonkeyPatch, capfd, kill_at: int
) -> None:
    """Rows appended, updated and deleted in noted leaves, the sync killed after its n-th checkpoint (every 400
    rows): the next one goes on from the state saved and converges; the keys marked deleted are those deleted."""
    facts.create()
    facts.configuration["PRIMARY_KEYS"] = f"{facts.table}:id"
    facts.sync(destination)
    facts.insert(5001, 5010, day=MONTHS[1])
    facts.run(f"DELETE FROM {facts.table} WHERE id IN (1, 40, 70)")  # one in each leaf: every leaf noted by the scan
    facts.sync(destination)
    facts.insert(5011, 6500, day=MONTHS[1])
    facts.run(
        f"DELETE FROM {facts.table} WHERE id % 7 = 0 AND id < 3000",
        f"UPDATE {facts.table} SET note = 'updated' WHERE id % 11 = 0 AND id < 3000",
    )
    killed_after_checkpoint(
        monkeypatch, destination, facts.configuration, facts.table, lambda _, number: number == kill_at
    )
    capfd.readouterr()
    facts.sync(destination, state=destination.saved_state())
    assert "3 leaf(s) changed" in capfd.readouterr().out, "what changed read alone, not the digest's scan"
    deleted = destination.query(f'SELECT id FROM "tester_{facts.schema}".facts WHERE _fivetran_deleted ORDER BY 1')
    assert deleted == [(i,) for i in range(1, 3000) if i in (1, 40, 70) or i % 7 == 0]
    assert facts.sync(destination) == ((0, 0, 0), set())


@pytest.mark.parametrize("limit", ["MAX_HIDDEN_READ", "MAX_HIDDEN_NOTED"])
def test_more_rows_hidden_than_are_read_back_or_noted_take_the_digest_s_scan(
    facts: AoFacts, destination: Destination, monkeypatch: pytest.MonkeyPatch, capfd, limit: str
) -> None:
    facts.create()
    facts.configuration["PRIMARY_KEYS"] = f"{facts.table}:id"
    monkeypatch.setattr(ao_keyed, limit, 2)
    facts.sync(destination)
    facts.run(f"DELETE FROM {facts.table} WHERE id IN (1, 40, 70)")  # one in each leaf: every leaf noted by the scan
    assert facts.sync(destination)[0] == (0, 3, 0)
    facts.run(f"DELETE FROM {facts.table} WHERE id IN (4, 41, 71)")
    capfd.readouterr()
    assert facts.sync(destination)[0] == (0, 3, 0)
    why = "more than are read back by ctid" if limit == "MAX_HIDDEN_READ" else "hides more rows than are noted"
    assert why in capfd.readouterr().out
    deleted = destination.query(f'SELECT id FROM "tester_{facts.schema}".facts WHERE _fivetran_deleted ORDER BY 1')
    assert deleted == [(1,), (4,), (40,), (41,), (70,), (71,)]


RANDOM_STEPS = 12


def test_random_changes_between_syncs_some_killed_land_exactly(
    facts: AoFacts, destination: Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seeded random changes between syncs, a third of the syncs killed after a random checkpoint: after each clean
    sync the destination equals the source (`AoFacts.sync` checks). The changes take the paths a keyless partitioned
    table has: loads small and past the digest into a leaf with its own digest, with only a print, or added empty;
    copies of rows; deletes and updates spread or in one leaf; compactions, VACUUM FULL, a leaf truncated."""
    seed = int(os.environ.get("RANDOM_CHANGES_SEED", "20261205"))
    rng, history = random.Random(seed), []
    facts.create()
    facts.sync(destination)
    ids, months = iter(range(100_001, 10_000_000, 10_000)), list(MONTHS[:3])

    def leaves() -> list[str]:
        statement = f"SELECT partitiontablename FROM pg_partitions WHERE schemaname = '{facts.schema}'"
        return sorted(name for (name,) in facts.run(statement))

    def past_the_digest() -> int:
        digest = destination.saved_state()["tables"][facts.table].get("digest")
        return 2 * dd.capacity(dd.Cells.unpack(digest).sub_size) if digest else 2500

    def load() -> str:
        first, month = next(ids), rng.choice(months)
        rows = rng.choice([4, 60, past_the_digest()])
        facts.insert(first, first + rows, day=month)
        return f"{rows + 1} rows loaded into {month}"

    def add_partition() -> str:
        if len(months) == len(MONTHS):
            return load()
        start, end = MONTHS[len(months)], f"2024-{len(months) + 2:02d}-01"
        storage = "WITH (appendonly=true, orientation=column)"
        facts.run(f"ALTER TABLE {facts.table} ADD PARTITION START (date '{start}') END (date '{end}') {storage}")
        months.append(start)
        return f"partition added for {start}, then " + load() if rng.random() < 0.7 else f"partition {start} added"

    def copies() -> str:
        facts.run(f"INSERT INTO {facts.table} SELECT * FROM {facts.table} WHERE id % 89 = {rng.randrange(89)}")
        return "copies of rows"

    def delete() -> str:
        leaf = rng.choice(leaves())
        where = rng.choice([f"id % 41 = {rng.randrange(41)}", f"id % 5 = {rng.randrange(5)}"])
        facts.run(f"DELETE FROM {facts.schema}.{leaf} WHERE {where}")
        return f"delete from {leaf} where {where}"

    def update() -> str:
        facts.run(f"UPDATE {facts.table} SET note = note || 'u' WHERE id % 53 = {rng.randrange(53)}")
        return "update spread"

    def rewrite() -> str:
        leaf, how = rng.choice(leaves()), rng.choice(["VACUUM", "VACUUM FULL", "TRUNCATE"])
        facts.run(f"{how} {facts.schema}.{leaf}")
        return f"{how} {leaf}"

    changes = [load, load, add_partition, copies, delete, delete, update, rewrite]
    for step in range(RANDOM_STEPS):
        history.extend(rng.choice(changes)() for _ in range(rng.randint(1, 3)))
        if rng.random() < 0.35:
            when = functools.partial(lambda dies_at, _, number: number == dies_at, rng.randint(1, 2))
            killed_after_checkpoint(monkeypatch, destination, facts.configuration, facts.table, when, if_reached=True)
            history.append("killed sync")
        try:
            facts.sync(destination, state=destination.saved_state())
        except AssertionError as error:
            raise AssertionError(f"seed {seed}, step {step}: {'; '.join(history)}") from error
        history.append("sync")
