"""Keyed tables without a cursor, synced by their difference digest: each sync sends the rows inserted and updated
and a delete per key deleted, exactly, never the table; rows moved without a change send nothing; a difference too
large to decode reads the table again and sizes the next digest for it; kills and changes during a sync converge."""

from __future__ import annotations

import json

import pytest
from conftest import Database, Destination, killed_after_checkpoint

import keyed_digest

KEYS = {
    "integer": ("id int PRIMARY KEY", "i"),
    "text": ("id text PRIMARY KEY", "'k-' || i || 'é'"),
    "composite": ("id int, part text, PRIMARY KEY (id, part)", "i, 'p, \"' || (i % 3)"),
    "dated": (  # a fixed time: the rows' hashes, and so whether a digest near its capacity peels, are the same each run
        "id int, at timestamptz, day date, PRIMARY KEY (id, at, day)",
        "i, timestamptz '2024-06-01 12:00:00+00' - i * interval '1 s', '2024-1-1'",
    ),
    "sparse": ("id bigint PRIMARY KEY", "i * 1099511627776"),  # 2^40 apart, as ids made of a time and a machine
}
ROWS = 3000


def _create(source, schema: str, kind: str, rows: int = ROWS) -> None:
    key, values = KEYS[kind]
    with source.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {schema}.t ({key}, note text, amount numeric)")
        cursor.execute(f"INSERT INTO {schema}.t SELECT {values}, 'n' || i, i / 3.0 FROM generate_series(1, {rows}) i")


def _run(source, statement: str) -> None:
    with source.cursor() as cursor:
        cursor.execute(statement)


def _source(source, schema: str) -> list[tuple]:
    with source.cursor() as cursor:
        cursor.execute(f"SELECT id::text, note, amount::text FROM {schema}.t")
        return sorted(cursor.fetchall())


def _landed(destination: Destination, schema: str) -> list[tuple]:
    return destination.rows(schema, "t", "CAST(id AS VARCHAR), note, amount")


def _after_the_scan(monkeypatch: pytest.MonkeyPatch, source, statement: str) -> None:
    """Runs the statement at the source right after the digest's scan, in each sync until `monkeypatch.undo()`."""
    real_scan = keyed_digest.KeyedDigest.scan

    def cells_then_change(self, saved, columns, located):
        cells = real_scan(self, saved, columns, located)
        with source.cursor() as cursor:
            cursor.execute(statement)
        return cells

    monkeypatch.setattr(keyed_digest.KeyedDigest, "scan", cells_then_change)


def _deleted_ids(destination: Destination, schema: str) -> list[str]:
    rows = destination.query(f'SELECT CAST(id AS VARCHAR) FROM "tester_{schema}".t WHERE _fivetran_deleted ORDER BY 1')
    return [row[0] for row in rows]


@pytest.mark.parametrize("kind", list(KEYS))
def test_a_sync_sends_exactly_the_rows_inserted_updated_and_deleted(
    kind: str, database: Database, schema: str, source, destination: Destination, capfd
) -> None:
    _create(source, schema, kind)
    configuration = database.configuration(SCHEMAS=schema)
    first = destination.sync(configuration)
    assert (first["Upserts"], first["Truncates"]) == (ROWS, 1)
    assert destination.state["tables"][f"{schema}.t"]["digest"]
    nothing = destination.sync(configuration)
    assert nothing["Upserts"] + nothing["Deletes"] + nothing["Truncates"] == 0, "unchanged: nothing sent"

    with source.cursor() as cursor:
        cursor.execute(f"SELECT id::text FROM {schema}.t WHERE note IN ('n5', 'n77', 'n2999') ORDER BY 1")
        gone = [row[0] for row in cursor.fetchall()]
        cursor.execute(f"DELETE FROM {schema}.t WHERE note IN ('n5', 'n77', 'n2999')")
        cursor.execute(f"UPDATE {schema}.t SET amount = -amount WHERE note LIKE 'n1_'")  # 10 rows
        _, values = KEYS[kind]
        cursor.execute(f"INSERT INTO {schema}.t SELECT {values}, 'new', 0 FROM generate_series(5001, 5020) i")
    capfd.readouterr()
    counts = destination.sync(configuration)

    assert (counts["Upserts"], counts["Deletes"], counts["Truncates"]) == (30, 3, 0)
    assert "difference digest: 20 inserted, 10 updated, 3 deleted" in capfd.readouterr().out
    assert _landed(destination, schema) == _source(source, schema)
    assert _deleted_ids(destination, schema) == sorted(gone), "exactly the keys the source deleted"


def test_a_key_longer_than_any_before_is_sent_and_its_deletes_named(
    database: Database, schema: str, source, destination: Destination
) -> None:
    """The digest's scan sends each text key as long as it is: a key longer than any before changes nothing."""
    _create(source, schema, "text")
    configuration = database.configuration(SCHEMAS=schema)
    destination.sync(configuration)
    long_key = "k-" + "é" * 31  # 64 bytes, where the longest so far is 8
    _run(source, f"INSERT INTO {schema}.t VALUES ('{long_key}', 'long', 1); DELETE FROM {schema}.t WHERE note = 'n9'")
    counts = destination.sync(configuration)
    assert (counts["Upserts"], counts["Deletes"], counts["Truncates"]) == (1, 1, 0)
    assert _landed(destination, schema) == _source(source, schema)
    assert _deleted_ids(destination, schema) == ["k-9é"]
    _run(source, f"DELETE FROM {schema}.t WHERE id = '{long_key}'")
    counts = destination.sync(configuration)
    assert (counts["Upserts"], counts["Deletes"], counts["Truncates"]) == (0, 1, 0)
    assert _deleted_ids(destination, schema) == sorted(["k-9é", long_key])


def test_a_key_too_long_for_the_digest_moves_the_table_to_block_range_digests_and_lands(
    database: Database, schema: str, source, destination: Destination, capfd
) -> None:
    """A key of more than 64 bytes of UTF-8 met by the digest's scan: one log line, and the table goes on by block
    range digests, its rows as the source holds them."""
    _create(source, schema, "text")
    configuration = database.configuration(SCHEMAS=schema)
    destination.sync(configuration)
    long_key = "k-" + "é" * 32  # 66 bytes
    _run(source, f"INSERT INTO {schema}.t VALUES ('{long_key}', 'long', 1); UPDATE {schema}.t SET amount = 0")
    capfd.readouterr()
    destination.sync(configuration)
    assert "a key of 66 bytes is longer than 64: its digest cannot carry it" in capfd.readouterr().out
    assert _landed(destination, schema) == _source(source, schema)
    _run(source, f"UPDATE {schema}.t SET amount = 2 WHERE id = '{long_key}'")
    destination.sync(configuration)
    assert _landed(destination, schema) == _source(source, schema)


def test_text_keys_of_a_database_not_in_utf8_are_named_as_their_text(
    database: Database, schema: str, source, destination: Destination
) -> None:
    """A binary COPY sends text in the client's encoding: the digest's scan asks for UTF-8, so that a LATIN1
    database's keys decode to the text they are."""
    name = f"{schema}_latin1"
    try:
        _run(source, f"CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    except Exception as error:  # a role without CREATEDB
        pytest.skip(f"cannot create a LATIN1 database here: {error}")
    latin1 = database.connect(dbname=name)
    try:
        _run(latin1, "SET client_encoding TO 'LATIN1'")
        _run(latin1, "CREATE SCHEMA s; CREATE TABLE s.t (id text PRIMARY KEY, note text, amount numeric)")
        _run(latin1, "INSERT INTO s.t SELECT 'clé ' || i || ' à', 'n' || i, i FROM generate_series(1, 500) i")
        configuration = database.configuration(DATABASE=name, SCHEMAS="s")
        destination.sync(configuration)
        _run(latin1, "DELETE FROM s.t WHERE note IN ('n7', 'n300'); UPDATE s.t SET amount = -1 WHERE note = 'n8'")
        counts = destination.sync(configuration)
        assert (counts["Upserts"], counts["Deletes"], counts["Truncates"]) == (1, 2, 0)
        assert _deleted_ids(destination, "s") == ["clé 300 à", "clé 7 à"]
    finally:
        latin1.close()
        _run(source, f"DROP DATABASE IF EXISTS {name}")


@pytest.mark.parametrize("rewrite", ["VACUUM FULL {t}", "CLUSTER {t} USING t_pkey"])
def test_rows_moved_without_a_change_send_nothing(
    rewrite: str, database: Database, schema: str, source, destination: Destination
) -> None:
    _create(source, schema, "integer")
    configuration = database.configuration(SCHEMAS=schema)
    destination.sync(configuration)
    with source.cursor() as cursor:
        cursor.execute(f"UPDATE {schema}.t SET note = note WHERE id % 2 = 0")  # new row versions, same values
        cursor.execute(rewrite.format(t=f"{schema}.t"))
    counts = destination.sync(configuration)
    assert counts["Upserts"] + counts["Deletes"] + counts["Truncates"] == 0


def test_a_difference_past_capacity_sends_every_row_and_the_deletes_its_digest_of_keys_names(
    database: Database, schema: str, source, destination: Destination, capfd
) -> None:
    """More rows updated than the digest names, but few keys inserted or deleted: every row is sent again, no
    truncate, and exactly the deleted keys are deleted; the next digest holds a difference that large."""
    _create(source, schema, "integer")
    configuration = database.configuration(SCHEMAS=schema)
    destination.sync(configuration)
    saved = destination.state["tables"][f"{schema}.t"]["digest"]
    with source.cursor() as cursor:
        cursor.execute(f"UPDATE {schema}.t SET note = 'changed' WHERE id % 3 = 0")  # 1,000 rows: 2,000 pairs
        cursor.execute(f"DELETE FROM {schema}.t WHERE id % 3 = 1 AND id < 30")
        cursor.execute(f"INSERT INTO {schema}.t SELECT i, 'new', 1 FROM generate_series(5001, 5010) i")
    capfd.readouterr()
    counts = destination.sync(configuration)

    log = capfd.readouterr().out
    assert "key ranges changed, holding 3,000 rows before, 3,000 now, too many to name or to read alone" in log
    assert "too many for its digest to name: every row is sent again, no truncate" in log
    assert (counts["Upserts"], counts["Deletes"], counts["Truncates"]) == (ROWS - 10 + 10, 10, 0)
    assert _deleted_ids(destination, schema) == sorted(str(i) for i in range(1, 30, 3))
    assert _landed(destination, schema) == _source(source, schema)
    state = destination.state["tables"][f"{schema}.t"]
    assert len(state["digest"]) > len(saved) and state["digest_sizes"]
    with source.cursor() as cursor:  # the next digest holds a difference that large
        cursor.execute(f"UPDATE {schema}.t SET note = 'again' WHERE id % 3 = 0")
        updated = cursor.rowcount
    counts = destination.sync(configuration)
    assert (updated, counts["Upserts"], counts["Deletes"], counts["Truncates"]) == (1004, 1004, 0, 0)
    assert _landed(destination, schema) == _source(source, schema)


BULK = (
    "INSERT INTO {t} SELECT {values}, 'bulk', 2 FROM generate_series(10001, 12000) i",
    "UPDATE {t} SET note = 'changed' WHERE note IN ('n10', 'n11', 'n2999')",
    "DELETE FROM {t} WHERE note IN ('n12', 'n2998')",
)
STRETCH = (
    "UPDATE {t} SET note = 'changed' WHERE id BETWEEN 1001 AND 2200",
    "DELETE FROM {t} WHERE id IN (1100, 1200)",
    "INSERT INTO {t} SELECT i, 'new', 1 FROM generate_series(5001, 5003) i",
)
# The same with keys 2^40 apart: ranges as wide as 2^44 keys, which no list of their keys could hold.
STRETCH_SPARSE = (
    "UPDATE {t} SET note = 'changed' WHERE id BETWEEN 1001 * 1099511627776 AND 2200 * 1099511627776",
    "DELETE FROM {t} WHERE id IN (1100 * 1099511627776, 1200 * 1099511627776)",
    "INSERT INTO {t} SELECT {values}, 'new', 1 FROM generate_series(5001, 5003) i",
)
PURGE = ("DELETE FROM {t} WHERE id BETWEEN 1001 AND 2200", "UPDATE {t} SET note = 'changed' WHERE id = 8")
GAPS = "DELETE FROM {t} WHERE id % 100 = 7"


@pytest.mark.parametrize(
    ("kind", "before", "statements", "logged", "upserts", "deletes"),
    [
        *((kind, (), BULK, "which name it", 2003, 2) for kind in KEYS),
        # 188 ranges of 16 keys (3,000 rows, one range per 8 to 16): the 76 ranges of 1001 to 2200 (992 to 2207 less
        # the two deleted), and the new keys' one.
        ("integer", (), STRETCH, "every row of the key ranges changed is sent again, no truncate", 1216 - 2 + 3, 2),
        ("sparse", (), STRETCH_SPARSE, "every row of the key ranges changed is sent again, no truncate", 1217, 2),
        # The 74 ranges from 1008 to 2191 emptied, their 1,184 keys deleted without naming; 992 to 1000 and 2201 to
        # 2207 sent again, 1001 to 1007 and 2192 to 2200 deleted as the digest of keys names them; 1 to 15 sent again
        # for 8 changed.
        ("integer", (), PURGE, "; 1,184 keys of the ranges emptied deleted", 9 + 7 + 15, 1200),
        # The same with a key in a hundred missing from the start: the 11 keys the emptied ranges lack (1107 to 2107)
        # are named by the digest of keys, and not deleted.
        ("integer", (GAPS,), PURGE, "; 1,173 keys of the ranges emptied deleted", 9 + 6 + 14, 1200 - 12),
    ],
    ids=[
        *(f"inserted in bulk, {kind} key" for kind in KEYS),
        "updated in a stretch of keys",
        "updated in a stretch of keys 2^40 apart",
        "deleted in a stretch of keys",
        "deleted in a stretch of keys with gaps",
    ],
)
def test_a_difference_past_capacity_in_a_few_key_ranges_costs_those_ranges_alone(
    kind: str,
    before: tuple[str, ...],
    statements: tuple[str, ...],
    logged: str,
    upserts: int,
    deletes: int,
    database: Database,
    schema: str,
    source,
    destination: Destination,
    capfd,
) -> None:
    """More rows changed than the digest names, in a few key ranges. Inserted in bulk above the keys held (a few
    updated and deleted elsewhere): those ranges held few rows before, so the digest names the difference after all
    and exactly it is sent. Updated in a stretch of keys: too many were there before to name, so those ranges' rows
    are sent again, not the table. Deleted in a stretch of keys: ranges that held every key they span and hold none
    now name their keys themselves, the digest of keys names the rest. No truncate."""
    _create(source, schema, kind)
    for statement in before:
        _run(source, statement.format(t=f"{schema}.t"))
    configuration = database.configuration(SCHEMAS=schema)
    destination.sync(configuration)
    assert destination.state["tables"][f"{schema}.t"]["digest"].count("|") == 2, "a digest of keys and key ranges"
    with source.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement.format(t=f"{schema}.t", values=KEYS[kind][1]))
    capfd.readouterr()
    counts = destination.sync(configuration)

    log = capfd.readouterr().out
    assert "key ranges changed" in log and logged in log
    assert (counts["Upserts"], counts["Deletes"], counts["Truncates"]) == (upserts, deletes, 0)
    deleted = _deleted_ids(destination, schema)
    with source.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {schema}.t WHERE id::text = ANY(%s)", [deleted])
        assert len(deleted) == deletes and cursor.fetchone()[0] == 0
    assert _landed(destination, schema) == _source(source, schema)
    assert destination.state["tables"][f"{schema}.t"]["pass_ranges"] is None
    again = destination.sync(configuration)
    assert (again["Upserts"], again["Deletes"], again["Truncates"]) == (0, 0, 0)


def test_a_sync_killed_while_it_deletes_the_keys_of_ranges_emptied_converges(
    database: Database, schema: str, source, destination: Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed among the deletes of emptied ranges' keys (after the read of the ranges changed), with a key inserted
    there again meanwhile: the rows read are no longer those the read sent, so the next sync reads the ranges again
    (no truncate) and deletes the keys gone; the sync after it sends nothing."""
    _create(source, schema, "integer")
    configuration = database.configuration(SCHEMAS=schema, CHECKPOINT_ROWS="100", BATCH_SIZE="50")
    destination.sync(configuration)
    _run(source, f"DELETE FROM {schema}.t WHERE id BETWEEN 1001 AND 2200")
    saved = killed_after_checkpoint(
        monkeypatch, destination, configuration, f"{schema}.t", lambda table, _: table.get("pass_ranges") is not None
    )
    assert saved["tables"][f"{schema}.t"]["position"] == ["2207"], "the ranges changed were read"
    _run(source, f"INSERT INTO {schema}.t SELECT 1500, 'n1500', 1500 / 3.0")
    counts = destination.sync(configuration, state=saved)

    assert counts["Truncates"] == 0 and 0 < counts["Deletes"] < 1200 and counts["Upserts"] > 0
    assert destination.state["tables"][f"{schema}.t"]["pass_ranges"] is None
    again = destination.sync(configuration)
    assert (again["Upserts"], again["Deletes"], again["Truncates"]) == (0, 0, 0)
    assert _landed(destination, schema) == _source(source, schema)
    assert len(_deleted_ids(destination, schema)) == 1199


def test_key_ranges_changed_again_while_they_are_scanned_name_nothing(
    database: Database, schema: str, source, destination: Destination, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    """A row inserted into a changed range between the digest's scan and the ranges' scan: the two disagree, so the
    ranges name nothing (they would name that row's pair as one held before); the table is read again, exactly (after
    a truncate: its digest of keys does not name 1,000 keys inserted either)."""
    _create(source, schema, "integer")
    configuration = database.configuration(SCHEMAS=schema)
    destination.sync(configuration)
    with source.cursor() as cursor:
        cursor.execute(f"INSERT INTO {schema}.t SELECT i, 'bulk', 2 FROM generate_series(10001, 11000) i")
    _after_the_scan(
        monkeypatch, source, f"INSERT INTO {schema}.t VALUES (11001, 'between', 1); DELETE FROM {schema}.t WHERE id = 7"
    )
    capfd.readouterr()
    counts = destination.sync(configuration)
    monkeypatch.undo()
    assert "which changed again while they were scanned" in capfd.readouterr().out
    assert (counts["Upserts"], counts["Deletes"], counts["Truncates"]) == (ROWS + 1000, 0, 1)
    assert _deleted_ids(destination, schema) == ["7"]
    assert _landed(destination, schema) == _source(source, schema)


@pytest.mark.parametrize("kind", ["text", "composite"])
def test_past_capacity_the_digest_of_keys_names_text_and_composite_keys_deleted(
    kind: str, database: Database, schema: str, source, destination: Destination
) -> None:
    _create(source, schema, kind)
    configuration = database.configuration(SCHEMAS=schema)
    destination.sync(configuration)
    with source.cursor() as cursor:
        cursor.execute(f"DELETE FROM {schema}.t WHERE note IN ('n7', 'n700', 'n2999')")
        cursor.execute(f"UPDATE {schema}.t SET note = 'changed'")  # every row: far past the digest's capacity
    deleted_before = set(_deleted_ids(destination, schema))
    counts = destination.sync(configuration)

    assert (counts["Upserts"], counts["Deletes"], counts["Truncates"]) == (ROWS - 3, 3, 0)
    assert _landed(destination, schema) == _source(source, schema)
    deleted = set(_deleted_ids(destination, schema)) - deleted_before
    with source.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {schema}.t WHERE id::text = ANY(%s)", [sorted(deleted)])
        assert len(deleted) == 3 and cursor.fetchone()[0] == 0


def test_a_digest_saved_without_a_digest_of_keys_still_names_deletes_and_past_capacity_truncates(
    database: Database, schema: str, source, destination: Destination
) -> None:
    """A digest saved by the version before digests of keys: a read of every row (a column added) names the keys
    deleted from the digest itself; past its capacity the table is read again after a truncate, and the digest made
    then has its digest of keys."""
    _create(source, schema, "integer")
    configuration = database.configuration(SCHEMAS=schema)
    destination.sync(configuration)
    state = destination.state
    table = state["tables"][f"{schema}.t"]
    table["digest"] = table["digest"].partition("|")[0]
    with source.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {schema}.t ADD COLUMN region text DEFAULT 'eu'")
        cursor.execute(f"DELETE FROM {schema}.t WHERE id IN (3, 30)")
    counts = destination.sync(configuration, state=state)
    assert (counts["Upserts"], counts["Deletes"], counts["Truncates"]) == (ROWS - 2, 2, 0)
    assert _deleted_ids(destination, schema) == ["3", "30"]
    assert "|" in destination.state["tables"][f"{schema}.t"]["digest"]

    state = destination.state
    table = state["tables"][f"{schema}.t"]
    table["digest"] = table["digest"].partition("|")[0]
    with source.cursor() as cursor:
        cursor.execute(f"UPDATE {schema}.t SET note = 'changed' WHERE id % 3 = 0")
    counts = destination.sync(configuration, state=state)
    assert (counts["Upserts"], counts["Truncates"]) == (ROWS - 2, 1)
    assert _landed(destination, schema) == _source(source, schema)
    assert "|" in destination.state["tables"][f"{schema}.t"]["digest"]


def test_too_many_keys_deleted_to_name_read_the_table_again_after_a_truncate(
    database: Database, schema: str, source, destination: Destination, capfd
) -> None:
    _create(source, schema, "integer")
    configuration = database.configuration(SCHEMAS=schema)
    destination.sync(configuration)
    with source.cursor() as cursor:
        cursor.execute(f"DELETE FROM {schema}.t WHERE id % 3 = 1")  # 1,000 keys: past its digest of keys too
    capfd.readouterr()
    counts = destination.sync(configuration)

    assert "or the keys inserted and deleted: the table is read again after a truncate" in capfd.readouterr().out
    assert (counts["Upserts"], counts["Truncates"]) == (ROWS - 1000, 1)
    assert _landed(destination, schema) == _source(source, schema)
    assert len(_deleted_ids(destination, schema)) == 1000


def test_rows_changed_between_the_scan_and_the_reads_land_as_they_are(
    database: Database, schema: str, source, destination: Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row updated and one deleted after the digest's scan, before the rows are read by key: the update is sent as
    read, the deleted key deleted in the same sync; a row inserted then is sent by the next one. The digest holds
    what was sent, so nothing is hidden (found by the convergence test on Greenplum)."""
    _create(source, schema, "integer")
    configuration = database.configuration(SCHEMAS=schema)
    destination.sync(configuration)
    with source.cursor() as cursor:
        cursor.execute(f"UPDATE {schema}.t SET note = 'first' WHERE id IN (1, 2)")
    _after_the_scan(
        monkeypatch,
        source,
        f"""UPDATE {schema}.t SET note = 'second' WHERE id = 1; DELETE FROM {schema}.t WHERE id = 2;
        INSERT INTO {schema}.t VALUES (9001, 'between', 1)""",
    )
    counts = destination.sync(configuration)
    monkeypatch.undo()
    assert (counts["Upserts"], counts["Deletes"], counts["Truncates"]) == (1, 1, 0)
    assert _deleted_ids(destination, schema) == ["2"]
    counts = destination.sync(configuration)
    assert (counts["Upserts"], counts["Deletes"], counts["Truncates"]) == (1, 0, 0), "the row inserted meanwhile"
    assert _landed(destination, schema) == _source(source, schema)


def test_a_sync_killed_while_it_sends_the_difference_converges(
    database: Database, schema: str, source, destination: Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    _create(source, schema, "integer")
    configuration = database.configuration(SCHEMAS=schema, CHECKPOINT_ROWS="20", BATCH_SIZE="10")
    destination.sync(configuration)
    with source.cursor() as cursor:  # 140 pairs: within the digest of a 3,000-row table
        cursor.execute(f"UPDATE {schema}.t SET note = 'changed' WHERE id <= 60")
        cursor.execute(f"DELETE FROM {schema}.t WHERE id > 2980")
    saved = killed_after_checkpoint(monkeypatch, destination, configuration, f"{schema}.t")
    counts = destination.sync(configuration, state=saved)

    # The deletes went first; killed after the checkpoint whose state journals them (they may have landed or not),
    # the next sync deletes them again, then sends the updates.
    assert (counts["Upserts"], counts["Deletes"], counts["Truncates"]) == (60, 20, 0)
    assert _landed(destination, schema) == _source(source, schema)
    assert _deleted_ids(destination, schema) == sorted(str(i) for i in range(2981, 3001))
    assert destination.sync(configuration)["Upserts"] == 0


@pytest.mark.parametrize(
    ("updated", "read"),
    [("id % 3 = 0", ROWS), ("id BETWEEN 1001 AND 2200", 1216)],
    ids=["every row", "the key ranges changed"],
)
def test_a_sync_killed_while_it_sends_rows_again_past_capacity_goes_on_and_converges(
    updated: str,
    read: int,
    database: Database,
    schema: str,
    source,
    destination: Destination,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed partway through sending rows again (a difference past capacity: every row, or those of the key ranges
    changed), the next sync goes on from the last checkpoint, after a scan of the rows read finds them those it read,
    and deletes exactly the keys gone; a row changed during the pause is sent by it where it still reads. Where a row
    it had read changed (row 7, when every row is read), it reads every row again instead."""
    _create(source, schema, "integer")
    configuration = database.configuration(SCHEMAS=schema, CHECKPOINT_ROWS="100", BATCH_SIZE="50")
    destination.sync(configuration)
    with source.cursor() as cursor:
        cursor.execute(f"UPDATE {schema}.t SET note = 'changed' WHERE {updated}")
        cursor.execute(f"DELETE FROM {schema}.t WHERE id IN (1100, 2999)")
    saved = killed_after_checkpoint(
        monkeypatch, destination, configuration, f"{schema}.t", lambda table, _: table.get("position") is not None
    )
    table = saved["tables"][f"{schema}.t"]
    assert table["pass_held"] and bool(table["pass_ranges"]) == (read < ROWS)
    with source.cursor() as cursor:
        cursor.execute(f"UPDATE {schema}.t SET note = 'late' WHERE id IN (2199, 7)")
    counts = destination.sync(configuration, state=saved)

    restarted = read == ROWS
    assert counts["Truncates"] == 0
    assert counts["Upserts"] == ROWS - 2 if restarted else counts["Upserts"] < read
    assert _deleted_ids(destination, schema) == ["1100", "2999"]
    assert destination.state["tables"][f"{schema}.t"]["pass_held"] is None
    assert destination.state["tables"][f"{schema}.t"]["pass_ranges"] is None
    again = destination.sync(configuration)
    assert (again["Upserts"], again["Deletes"], again["Truncates"]) == ((0 if restarted else 1), 0, 0), "row 7"
    assert _landed(destination, schema) == _source(source, schema)


@pytest.mark.parametrize("kind", ["integer", "text", "composite"])
def test_keys_landed_past_the_state_saved_are_undone_when_the_source_changes_them_back(
    kind: str, database: Database, schema: str, source, destination: Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row updated and another deleted; the sync that sends them dies once they landed, before the state saying so
    was saved (the SDK writes the rows, then saves the state); the source then puts both back as they were. The
    digest saved is the source's again: only the state's journal tells that the destination holds otherwise."""
    _create(source, schema, kind)
    configuration = database.configuration(SCHEMAS=schema)
    destination.sync(configuration)
    before = _source(source, schema)
    with source.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE kept AS SELECT * FROM {schema}.t WHERE note IN ('n5', 'n9')")
        cursor.execute(f"UPDATE {schema}.t SET note = 'changed' WHERE note = 'n5'")
        cursor.execute(f"DELETE FROM {schema}.t WHERE note = 'n9'")
    # The end's two checkpoints: the first saves the journal of what it holds, the second lands it.
    saved = killed_after_checkpoint(
        monkeypatch, destination, configuration, f"{schema}.t", lambda _, n: n == 2, landed=True
    )
    assert len(saved["tables"][f"{schema}.t"]["landing"]["keys"]) == 2
    assert _landed(destination, schema) == _source(source, schema), "the changes landed"
    with source.cursor() as cursor:
        cursor.execute(f"DELETE FROM {schema}.t WHERE note = 'changed'")
        cursor.execute(f"INSERT INTO {schema}.t SELECT * FROM kept")
    counts = destination.sync(configuration, state=saved)
    assert (counts["Upserts"], counts["Deletes"], counts["Truncates"]) == (2, 2, 0)
    assert _landed(destination, schema) == _source(source, schema) == before


def test_a_pass_killed_once_keys_landed_past_its_saved_position_deletes_those_gone_since(
    database: Database, schema: str, source, destination: Destination, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    """A first pass dies once its third checkpoint wrote the rows it read past the position the state saved; five of
    those rows are deleted before the next sync, which deletes them (the digest of the keys read past the position,
    less the source's keys there, names them) and goes on from the position, without a truncate."""
    _create(source, schema, "integer")
    configuration = database.configuration(SCHEMAS=schema, CHECKPOINT_ROWS="500", BATCH_SIZE="100")
    saved = killed_after_checkpoint(
        monkeypatch, destination, configuration, f"{schema}.t", lambda _, n: n == 3, landed=True
    )
    table = saved["tables"][f"{schema}.t"]
    (_, last), position = table["landing"]["reads"][-1], int(table["position"][0])
    assert len(_landed(destination, schema)) == int(last[0]) > position
    _run(source, f"DELETE FROM {schema}.t WHERE id IN (SELECT id FROM {schema}.t WHERE id > {position} LIMIT 5)")
    capfd.readouterr()
    counts = destination.sync(configuration, state=saved)
    assert (counts["Upserts"], counts["Deletes"], counts["Truncates"]) == (ROWS - 5 - position, 5, 0)
    assert "of the keys the last sync read past its state, 5 are gone" in capfd.readouterr().out
    assert _landed(destination, schema) == _source(source, schema)


def test_a_declared_key_shared_by_two_rows_skips_the_table_until_it_is_unique_again(
    database: Database, schema: str, source, destination: Destination, capfd
) -> None:
    """PRIMARY_KEYS on a table without one: the keys the digest names are checked unique in one statement before
    their rows are read, and the whole table before every row is sent again past capacity; a key shared by two rows
    sends nothing of the table, and once one row is gone the sync goes on."""
    _run(source, f"CREATE TABLE {schema}.t (id int, note text, amount numeric)")
    _run(source, f"INSERT INTO {schema}.t SELECT i, 'n' || i, i FROM generate_series(1, {ROWS}) i")
    configuration = database.configuration(SCHEMAS=schema, PRIMARY_KEYS=f"{schema}.t:id")
    assert destination.sync(configuration)["Upserts"] == ROWS
    for change, sent in (("id <= 10", 11), ("true", ROWS + 1)):  # within the digest's capacity, then past it
        _run(source, f"INSERT INTO {schema}.t VALUES (5, 'twin', 0); UPDATE {schema}.t SET amount = 0 WHERE {change}")
        capfd.readouterr()
        counts = destination.sync(configuration)
        assert counts["Upserts"] + counts["Deletes"] + counts["Truncates"] == 0, change
        assert "('5') is shared by 2 row(s)" in capfd.readouterr().out
        _run(source, f"DELETE FROM {schema}.t WHERE note = 'twin'; INSERT INTO {schema}.t VALUES (3001, 'new', 1)")
        counts = destination.sync(configuration)
        assert (counts["Upserts"], counts["Deletes"], counts["Truncates"]) == (sent, 0, 0), change
        assert _landed(destination, schema) == _source(source, schema)
        _run(source, f"DELETE FROM {schema}.t WHERE id = 3001")
        assert destination.sync(configuration)["Deletes"] == 1


@pytest.mark.parametrize("kind", ["integer", "text"])
@pytest.mark.parametrize("changed_in_the_pause", [False, True])
def test_a_first_pass_carries_no_digest_until_it_ends_and_a_killed_one_takes_it_again(
    kind: str,
    changed_in_the_pause: bool,
    database: Database,
    schema: str,
    source,
    destination: Destination,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path,
) -> None:
    """A keyed table's first pass checkpoints its position and what its pairs came to, not its digest: killed there,
    the next sync takes the digest of the rows read from the source and ends with the digest an uninterrupted pass
    saves; when one of those rows changed in the pause, it reads the table again (after a truncate), exactly."""
    _create(source, schema, kind, rows=5000)
    configuration = database.configuration(SCHEMAS=schema, CHECKPOINT_ROWS="1000", BATCH_SIZE="500")
    key = f"{schema}.t"
    saved = killed_after_checkpoint(monkeypatch, destination, configuration, key, lambda _, number: number == 3)
    table = saved["tables"][key]
    assert table["position"] is not None and table["pass_noted"] is not None and table["digest"] is None
    assert len(json.dumps({**saved, "tables": {key: {**table, "landing": None}}})) < 4000, "no digest in them"
    assert len(json.dumps(table["landing"])) < 3000, "the journal of the keys it holds (`landing.py`): a few cells"
    if changed_in_the_pause:
        _run(source, f"UPDATE {schema}.t SET note = 'changed' WHERE note = 'n1'")  # read first in either order
    counts = destination.sync(configuration, state=saved)
    assert counts["Truncates"] == (1 if changed_in_the_pause else 0)
    assert _landed(destination, schema) == _source(source, schema)
    uninterrupted = Destination(tmp_path / "uninterrupted")
    uninterrupted.sync(configuration)
    assert destination.state["tables"][key]["digest"] == uninterrupted.state["tables"][key]["digest"]
    assert destination.sync(configuration)["Upserts"] == 0
