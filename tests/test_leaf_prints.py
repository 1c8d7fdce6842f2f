"""What each leaf of a keyless table holds, in a print (`leaf_prints.py`): the sums that let a sync scan the leaves the
catalog says changed and no other, when their contents did not change. The decisions are plain functions; the scans
run on the real server (PostgreSQL's partitions and inheritance stand in for Greenplum's leaves here; the path that
uses them, on Greenplum 6, is tested in `test_append_optimized.py`)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import Database

import changed_leaves
import leaf_prints
import reads
from block_ranges import Hashing, hashing_for
from catalog import detect_flavour, discover, server_info
from configuration import Settings, parse_settings
from content_digest import ContentScan, content_hash, scan_contents
from greenplum_client import GreenplumClient
from leaves import Leaf, named_leaves
from planning import TablePlan, plan_tables
from quoting import Identifier


def test_a_print_counts_pairs_and_sums_their_hashes_wrapping_at_64_bits() -> None:
    hashes = np.array([-1, 5, 2**62], np.int64)
    assert leaf_prints.add_prints((0, 0), hashes) == (3, (2**64 - 1 + 5 + 2**62) % 2**64)
    assert leaf_prints.add_prints((2, 7), np.array([], np.int64)) == (2, 7)


def test_prints_are_saved_as_text_and_read_back() -> None:
    prints = {"16384": (0, 0), "16390": (12, 2**64 - 1), "16400": (3, 12345)}
    assert leaf_prints.decode(leaf_prints.encode(prints)) == prints
    assert leaf_prints.decode(None) == {} == leaf_prints.decode("")


@pytest.mark.parametrize(
    ("scanned", "gone", "kept"),
    [
        ({"1": (4, 100)}, [], True),  # a leaf compacted or rewritten: the same pairs
        ({"1": (4, 101)}, [], False),  # one of its contents is held by another count now
        ({"1": (5, 100)}, [], False),
        ({"9": (4, 100)}, ["1"], True),  # an exchange: a leaf gone, one come with its contents
        ({"9": (4, 100)}, [], False),  # a leaf never saved held nothing
        ({"1": (4, 100), "2": (2, 50)}, [], True),
        ({"1": (3, 70), "2": (3, 80)}, [], True),  # the sums of the leaves changed together are what count
    ],
)
def test_leaves_changed_kept_their_contents_when_their_prints_sum_to_those_saved(
    scanned: dict, gone: list, kept: bool
) -> None:
    saved = {"1": (4, 100), "2": (2, 50), "3": (7, 9)}
    assert leaf_prints.contents_kept(saved, scanned, gone) is kept


@pytest.mark.parametrize(
    ("changed", "gone", "held_nothing"),
    [
        (["1", "9"], [], ["9"]),  # a leaf added: not printed
        (["3"], [], ["3"]),  # a leaf created ahead, printed empty
        (["2"], [], []),  # a leaf with rows
        (["9"], ["1"], []),  # an exchange: the leaf come may hold the contents of the one gone
    ],
)
def test_a_leaf_held_nothing_when_its_print_said_so_and_no_leaf_is_gone(
    changed: list, gone: list, held_nothing: list
) -> None:
    saved = {"1": (4, 100), "2": (2, 50), "3": (0, 0)}
    assert changed_leaves.held_nothing(saved, changed, gone) == held_nothing


def _scan(
    database: Database,
    schema: str,
    table: str,
    by_leaf: bool,
    leaf: str | None = None,
    relation: Leaf | None = None,
    leaf_sizes: dict[str, int] | None = None,
) -> ContentScan:
    """A scan of the table's contents (of one leaf's; of another relation's, read through the table's plan)."""
    settings = parse_settings(database.configuration(SCHEMAS=schema))
    with GreenplumClient(settings) as client:
        plan, hashing = _plan(client, settings, schema, table)
        (named,) = named_leaves(client, plan, [leaf]) if leaf else (relation,)
        return scan_contents(client, plan, hashing, 64, leaf=named, by_leaf=by_leaf, leaf_sizes=leaf_sizes)


def _plan(client: GreenplumClient, settings: Settings, schema: str, table: str) -> tuple[TablePlan, Hashing]:
    """The table's plan, and how the server hashes rows."""
    info = server_info(client)
    (plan,) = [
        p
        for p in plan_tables(settings, discover(client, info, [schema]), client, strict=True).plans
        if p.state_key == f"{schema}.{table}"
    ]
    return plan, hashing_for(info.server_version_num)


def test_a_scan_by_leaf_sums_each_leaf_s_pairs_as_a_scan_of_that_leaf_does(database: Database, schema: str) -> None:
    flavour = detect_flavour(database.version)
    if flavour.is_greenplum:
        pytest.skip(
            f"PostgreSQL's declarative partitions; {flavour.value}'s leaves are tested in test_append_optimized"
        )
    with database.connect() as connection, connection.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.p (id int, note text) PARTITION BY RANGE (id);
            CREATE TABLE {schema}.p_low PARTITION OF {schema}.p FOR VALUES FROM (0) TO (100);
            CREATE TABLE {schema}.p_high PARTITION OF {schema}.p FOR VALUES FROM (100) TO (1000);
            CREATE TABLE {schema}.p_empty PARTITION OF {schema}.p FOR VALUES FROM (1000) TO (2000);
            INSERT INTO {schema}.p SELECT i % 300, 'n' FROM generate_series(1, 900) i;
            SELECT '{schema}.p_low'::regclass::oid, '{schema}.p_high'::regclass::oid"""
        )
        low, high = (str(oid) for oid in cursor.fetchone())
    whole = _scan(database, schema, "p", by_leaf=True)
    assert whole.rows == 900 and whole.print[0] == 300, "300 contents, each held by 3 rows"
    assert set(whole.leaf_prints) == {low, high}, "an empty leaf holds no pair"
    assert leaf_prints.summed(whole.leaf_prints.values()) == whole.print
    assert whole.print == _scan(database, schema, "p", by_leaf=False).print
    for leaf in (low, high):
        assert _scan(database, schema, "p", by_leaf=False, leaf=leaf).print == whole.leaf_prints[leaf]
    with_digest = _scan(database, schema, "p", by_leaf=True, leaf_sizes={high: 64})
    assert set(with_digest.leaf_cells) == {high}
    alone = _scan(database, schema, "p", by_leaf=False, leaf=high).cells
    assert with_digest.leaf_cells[high].subtract(alone).is_empty(), "a leaf's own digest, as a scan of it alone"
    assert not with_digest.leaf_cells[high].subtract(whole.cells).is_empty()


def test_a_content_in_two_leaves_leaves_no_print_standing(database: Database, schema: str) -> None:
    """Rows of one content in two leaves (inheritance allows it; Greenplum, after an exchange without validation):
    no leaf's print stands for its contents, so none is kept."""
    with database.connect() as connection, connection.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.parent (id int, note text);
            CREATE TABLE {schema}.child (CHECK (id > 0)) INHERITS ({schema}.parent);
            INSERT INTO {schema}.parent SELECT i, 'n' FROM generate_series(1, 50) i;
            INSERT INTO {schema}.child SELECT i, 'c' FROM generate_series(1, 50) i"""
        )
    with_children = Leaf("parent and child", Identifier(schema, "parent"))  # a plain table's plan reads it ONLY
    scan = _scan(database, schema, "parent", by_leaf=True, relation=with_children)
    assert scan.leaf_prints is not None and len(scan.leaf_prints) == 2, "contents apart: the prints stand"
    with database.connect() as connection, connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {schema}.child VALUES (7, 'n')")
    scan = _scan(database, schema, "parent", by_leaf=True, relation=with_children)
    assert scan.leaf_prints is None and scan.rows == 101


def test_a_leaf_is_read_in_content_order_with_ordinals_among_its_own_rows(database: Database, schema: str) -> None:
    """The read that sends every row of a leaf that held nothing: that leaf's rows alone, each content's rows numbered
    from 1."""
    flavour = detect_flavour(database.version)
    if flavour.is_greenplum:
        pytest.skip(f"PostgreSQL's declarative partitions; {flavour.value}'s are read in test_append_optimized")
    with database.connect() as connection, connection.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.p (id int, note text) PARTITION BY RANGE (id);
            CREATE TABLE {schema}.p_low PARTITION OF {schema}.p FOR VALUES FROM (0) TO (100);
            CREATE TABLE {schema}.p_high PARTITION OF {schema}.p FOR VALUES FROM (100) TO (1000);
            INSERT INTO {schema}.p SELECT i % 200, 'n' FROM generate_series(1, 500) i;
            SELECT '{schema}.p_high'::regclass::oid"""
        )
        (high,) = cursor.fetchone()
    settings = parse_settings(database.configuration(SCHEMAS=schema))
    with GreenplumClient(settings) as client:
        plan, hashing = _plan(client, settings, schema, "p")
        (leaf,) = named_leaves(client, plan, [str(high)])
        read = reads.in_content_order(plan, content_hash(plan, hashing), None, leaf)
        rows = client.query(read.statement, read.params)
    assert sorted(row[0] for row in rows) == sorted(i % 200 for i in range(1, 501) if i % 200 >= 100)
    assert [row[-2:] for row in rows] == sorted(row[-2:] for row in rows), "in (content, ordinal) order"
    for number in {row[0] for row in rows}:
        ordinals = sorted(row[-1] for row in rows if row[0] == number)
        assert ordinals == list(range(1, len(ordinals) + 1))
