"""Block range digests (a keyed table whose key is too long for a difference digest reads its changed ranges): plain
functions first (what to read and what to save, given digests and saved state), then syncs through the SDK's runner
on a real server of what a row hash counts as a change."""

from __future__ import annotations

from conftest import Database, Destination

import block_ranges
from catalog import detect_flavour
from state import LeafState


def test_range_size_keeps_a_table_within_the_target_number_of_ranges() -> None:
    assert block_ranges.choose_range_blocks(0) == 1
    assert block_ranges.choose_range_blocks(block_ranges.TARGET_RANGES) == 1
    assert block_ranges.choose_range_blocks(block_ranges.TARGET_RANGES + 1) == 2
    billion_rows_of_100_bytes = 10**9 * 100 // 8192
    blocks = block_ranges.choose_range_blocks(billion_rows_of_100_bytes)
    assert billion_rows_of_100_bytes / blocks <= block_ranges.TARGET_RANGES < 2 * billion_rows_of_100_bytes / blocks


def test_changed_and_gone_ranges_in_read_order() -> None:
    saved = {name: block_ranges.fingerprint(digest) for name, digest in (("0", "5:1"), ("1", "5:2"), ("3", "2:9"))}
    current = {"0": "5:1", "1": "5:7", "2": "1:4"}
    assert block_ranges.compare(saved, current) == (["1", "2"], ["3"])
    on_segments = {"1.0": "1:1", "0.7": "1:1", "0.12": "1:1"}
    assert block_ranges.compare({}, on_segments) == (["0.7", "0.12", "1.0"], [])


def test_adjacent_ranges_are_read_as_one_span() -> None:
    assert block_ranges.spans(["3", "1", "2", "7"], 16) == [(None, 16, 64), (None, 112, 128)]
    assert block_ranges.spans(["0.1", "1.2", "0.2"], 4) == [(0, 4, 12), (1, 8, 12)]


def test_a_row_names_its_range_from_its_ctid() -> None:
    assert block_ranges.range_of(None, "(33,7)", 16) == "2"
    assert block_ranges.range_of(2, "(15,1)", 16) == "2.0"


def test_saved_ranges_read_back_and_an_earlier_version_s_leaf_is_range_empty() -> None:
    ranges = {"0": "10:-123:456", "12": "3:99:1", "1.4": "7:0"}
    saved = block_ranges.ranges_state(ranges, "20:-5")
    fingerprints = {name: block_ranges.fingerprint(digest) for name, digest in ranges.items()}
    assert block_ranges.saved_ranges(saved) == fingerprints and saved.digest == "20:-5"
    assert block_ranges.compare(fingerprints, ranges) == ([], [])
    assert block_ranges.saved_ranges(LeafState("30:1:2", 30)) == {"": "30:1:2"}
    earlier = LeafState("", 0, None, saved.ranges.replace(";", "/7;") + "/7")  # keyless ids held, earlier versions
    assert block_ranges.saved_ranges(earlier) == fingerprints


def test_a_leaf_s_key_digest_adds_its_ranges_key_sums() -> None:
    assert block_ranges.key_digest({"0": "2:10:5", "1": "3:20:-7"}) == "5:-2"
    assert block_ranges.key_digest({"0": "2:1:2:3:4", "1": "1:1:1:1:1"}) == "3:4:5", "md5: two halves each"


def test_a_billion_row_table_s_state_stays_under_2_mb() -> None:
    """At most TARGET_RANGES ranges when the first pass begins, each saved as its name and its digest's fingerprint; a
    billion rows of a hundred bytes (about 12 million blocks of 8 KB)."""
    blocks = 10**9 * 100 // 8192
    count = blocks // block_ranges.choose_range_blocks(blocks) + 1
    rows = 10**9 // count
    ranges = {str(n): f"{rows}:-18446744073709551615:-18446744073709551615" for n in range(count)}
    assert len(block_ranges.ranges_state(ranges).ranges) < 2_000_000 / 4, "a quarter of the budget"


# Syncs on a real server.

ROWS = 20_000


def _create(source, schema: str, keyed: bool = False) -> None:
    key = "PRIMARY KEY" if keyed else ""
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.t (id int {key}, note text, amount numeric(10, 2), at timestamptz)
            {"DISTRIBUTED BY (id)" if _greenplum(source) and keyed else ""};
            INSERT INTO {schema}.t SELECT i, 'row ' || i, i / 7.0, timestamptz '2024-01-01' + i * interval '1 minute'
            FROM generate_series(1, {ROWS}) i"""
        )


def _greenplum(source) -> bool:
    with source.cursor() as cursor:
        cursor.execute("SELECT version()")
        return detect_flavour(cursor.fetchone()[0]).is_greenplum


def _rows(source, schema: str) -> list[tuple]:
    with source.cursor() as cursor:
        cursor.execute(f"SELECT id, note, amount FROM {schema}.t")
        return sorted(cursor.fetchall())


def _count(source, relation: str) -> int:
    with source.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {relation}")
        return cursor.fetchone()[0]


def _sync(destination: Destination, configuration: dict[str, str], source, schema: str) -> tuple[int, int, int]:
    counts = destination.sync(configuration)
    assert destination.rows(schema, "t", "id, note, amount") == _rows(source, schema)
    return counts["Upserts"], counts["Deletes"], counts["Truncates"]


def test_a_keyed_table_sends_the_rows_updated_and_a_delete_per_row_deleted_without_a_truncate(
    database: Database, schema: str, source, destination: Destination
) -> None:
    """Its difference digest names the keys: random updates cost the rows updated, not their block ranges."""
    _create(source, schema, keyed=True)
    configuration = database.configuration(SCHEMAS=schema)
    assert _sync(destination, configuration, source, schema) == (ROWS, 0, 1)
    with source.cursor() as cursor:  # updates only, at random
        cursor.execute(f"UPDATE {schema}.t SET amount = amount + 1 WHERE id % 997 = 1")
    assert _sync(destination, configuration, source, schema) == (21, 0, 0)
    with source.cursor() as cursor:
        cursor.execute(f"DELETE FROM {schema}.t WHERE id = 7")
    assert _sync(destination, configuration, source, schema) == (0, 1, 0)
    assert destination.query(f'SELECT id FROM "tester_{schema}".t WHERE _fivetran_deleted') == [(7,)]
    assert _sync(destination, configuration, source, schema) == (0, 0, 0)


def test_numeric_scale_and_text_case_are_changes(database: Database, schema: str, source, destination) -> None:
    """What lands is the text: 1.0 becoming 1.00 is a change, though numeric equality (and its hash) says equal."""
    with source.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {schema}.t (id int, note text, amount numeric); INSERT INTO {schema}.t VALUES (1, 'a', 1.0)"
        )
    configuration = database.configuration(SCHEMAS=schema)
    destination.sync(configuration)
    for change in ("amount = 1.00", "note = 'A'"):
        with source.cursor() as cursor:
            cursor.execute(f"UPDATE {schema}.t SET {change}")
        assert destination.sync(configuration)["Upserts"] == 1, change
    assert destination.rows(schema, "t", "note, amount") == [("A", "1.00")]


def test_a_jsonb_value_rewritten_alike_is_no_change_and_a_new_one_is(
    database: Database, schema: str, source, destination: Destination
) -> None:
    """jsonb is hashed by value: the same document written with its keys in another order lands alike."""
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.t (id int, doc jsonb, price numeric(8, 2));
            INSERT INTO {schema}.t VALUES (1, '{{"a": 1, "b": [true]}}', 1.5)"""
        )
    configuration = database.configuration(SCHEMAS=schema)
    destination.sync(configuration)
    for change, sent in (("""doc = '{"b": [true], "a": 1}'""", 0), ("""doc = '{"a": 2, "b": [true]}'""", 1)):
        with source.cursor() as cursor:
            cursor.execute(f"UPDATE {schema}.t SET {change}")
        assert destination.sync(configuration)["Upserts"] == sent, change
