"""Deletes in incremental tables and keyed custom queries with a cursor: after the next sync the destination's live
rows are the source's rows, the keys marked deleted are exactly those the source deleted, an updated row is never
taken for a deleted one, and rows committed after the lookback window passed them are read."""

from __future__ import annotations

import json
import time

import pytest
from conftest import Database, Destination, killed_after_checkpoint

from configuration import ConfigurationError, parse_settings

ROWS = 3000


def _create(source, schema: str, rows: int = ROWS) -> None:
    with source.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {schema}.t (id int PRIMARY KEY, note text, updated_at timestamp NOT NULL)")
        cursor.execute(
            f"INSERT INTO {schema}.t SELECT i, 'n' || i, timestamp '2024-01-01' + i * interval '1 minute' "
            f"FROM generate_series(1, {rows}) i"
        )


def _run(source, statement: str) -> list[tuple]:
    with source.cursor() as cursor:
        cursor.execute(statement)
        return sorted(cursor.fetchall()) if cursor.description else []


def _live(destination: Destination, table: str) -> list[tuple]:
    return destination.query(f"SELECT id, note FROM {table} WHERE NOT _fivetran_deleted ORDER BY ALL")


def _deleted(destination: Destination, table: str) -> list[int]:
    return [row[0] for row in destination.query(f"SELECT id FROM {table} WHERE _fivetran_deleted ORDER BY 1")]


def test_deleted_rows_are_marked_deleted_and_updated_rows_are_not(
    database: Database, schema: str, source, destination: Destination, capfd
) -> None:
    _create(source, schema)
    configuration = database.configuration(SCHEMAS=schema)
    destination.sync(configuration)
    table = f'"tester_{schema}"."t"'
    _run(
        source,
        f"""DELETE FROM {schema}.t WHERE id IN (5, 700, 2999);
        UPDATE {schema}.t SET note = 'moved', updated_at = '2030-01-01' WHERE id IN (6, 701);
        DELETE FROM {schema}.t WHERE id = 3000""",  # inside the lookback window: the last row read
    )
    capfd.readouterr()
    counts = destination.sync(configuration)

    assert "4 deleted, 2 updated past it, 0 committed late" in capfd.readouterr().out
    assert (counts["Deletes"], counts["Truncates"]) == (4, 0)
    assert _live(destination, table) == _run(source, f"SELECT id, note FROM {schema}.t")
    assert _deleted(destination, table) == [5, 700, 2999, 3000], "exactly the keys the source deleted"
    nothing = destination.sync(configuration)
    assert (nothing["Deletes"], nothing["Upserts"]) == (0, 0), "a quiet sync sends nothing: no lookback window"


def test_inserts_never_use_up_the_capacity(database: Database, schema: str, source, destination: Destination) -> None:
    _create(source, schema)
    configuration = database.configuration(SCHEMAS=schema, LOOKBACK_SECONDS="0")
    destination.sync(configuration)
    _run(
        source,
        f"""INSERT INTO {schema}.t SELECT i, 'new', timestamp '2025-01-01' + i * interval '1 second'
        FROM generate_series(100001, 130000) i;
        DELETE FROM {schema}.t WHERE id IN (10, 20, 30)""",
    )
    counts = destination.sync(configuration)
    assert (counts["Upserts"], counts["Deletes"], counts["Truncates"]) == (30000, 3, 0)
    assert _deleted(destination, f'"tester_{schema}"."t"') == [10, 20, 30]


def test_a_row_committed_after_the_lookback_window_passed_it_is_read(
    database: Database, schema: str, source, destination: Destination, capfd
) -> None:
    _create(source, schema)
    configuration = database.configuration(SCHEMAS=schema, LOOKBACK_SECONDS="0")
    destination.sync(configuration)
    # A long transaction's row: its cursor is far below the saved one, outside the lookback window.
    _run(source, f"INSERT INTO {schema}.t VALUES (9001, 'late', '2024-01-01 00:00:30')")
    capfd.readouterr()
    counts = destination.sync(configuration)
    assert "1 committed late or changed below it (read again)" in capfd.readouterr().out
    assert counts["Upserts"] == 1, "the late row alone: the row at the saved cursor is not sent again"
    assert _live(destination, f'"tester_{schema}"."t"') == _run(source, f"SELECT id, note FROM {schema}.t")


def test_checks_are_spaced_or_turned_off_by_delete_checks(
    database: Database, schema: str, source, destination: Destination
) -> None:
    _create(source, schema)
    configuration = database.configuration(SCHEMAS=schema, DELETE_CHECKS=f"{schema}.*:24")
    destination.sync(configuration)
    _run(source, f"DELETE FROM {schema}.t WHERE id = 42")
    assert destination.sync(configuration)["Deletes"] == 0, "checked less than 24 hours ago"
    destination.state["tables"][f"{schema}.t"]["deletes_checked"] -= 25 * 3600
    assert destination.sync(configuration)["Deletes"] == 1, "due again"

    off = database.configuration(SCHEMAS=schema, DELETE_CHECKS=f"{schema}.t:off")
    _run(source, f"DELETE FROM {schema}.t WHERE id = 43")
    assert destination.sync(off)["Deletes"] == 0
    assert destination.state["tables"][f"{schema}.t"]["deletes_digest"] is None


def test_delete_checks_is_validated() -> None:
    base = {"HOST": "h", "PORT": "5432", "DATABASE": "d", "USERNAME": "u", "PASSWORD": "p"}
    for wrong in ("s.t", "s.t:often", "t:4", "s.t:-1", ":4", "often", "off, 6"):
        with pytest.raises(ConfigurationError, match="DELETE_CHECKS"):
            parse_settings({**base, "DELETE_CHECKS": wrong})
    settings = parse_settings({**base, "DELETE_CHECKS": "s.big:off, s.*:6"})
    assert (settings.delete_check_hours("s", "big"), settings.delete_check_hours("s", "x")) == (None, 6)
    assert settings.delete_check_hours("other", "x") == 0
    for alone, hours in (("off", None), ("0", 0), ("24", 24), ("OFF", None)):  # a value alone: every table
        assert parse_settings({**base, "DELETE_CHECKS": alone}).delete_check_hours("any", "t") == hours
    settings = parse_settings({**base, "DELETE_CHECKS": "s.big:2, off"})
    assert (settings.delete_check_hours("s", "big"), settings.delete_check_hours("s", "x")) == (2, None)


def test_a_delete_checks_pattern_that_matches_no_incremental_table_is_an_error_on_a_first_sync(
    database: Database, schema: str, source, destination: Destination
) -> None:
    _create(source, schema)
    with pytest.raises(Exception, match=r"DELETE_CHECKS: 'nowhere\.t' matches no incremental table"):
        destination.sync(database.configuration(SCHEMAS=schema, DELETE_CHECKS="nowhere.t:1"))


def test_a_custom_querys_vanished_rows_are_deleted(
    database: Database, schema: str, source, destination: Destination
) -> None:
    _create(source, schema)
    query = {"table": "q", "query": f"SELECT * FROM {schema}.t", "primary_key": ["id"], "cursor": "updated_at"}
    configuration = database.configuration(SCHEMAS=schema, EXCLUDE_TABLES="*.*", QUERIES=json.dumps([query]))
    destination.sync(configuration)
    _run(source, f"DELETE FROM {schema}.t WHERE id <= 10")
    counts = destination.sync(configuration)
    assert counts["Deletes"] == 10
    assert _deleted(destination, '"tester"."q"') == list(range(1, 11))
    assert _live(destination, '"tester"."q"') == _run(source, f"SELECT id, note FROM {schema}.t")


def test_more_deletes_than_the_digest_holds_sync_the_table_again(
    database: Database, schema: str, source, destination: Destination, capfd
) -> None:
    """No deleted row stays live: where the digest cannot name the deletes, the table is synced again."""
    _create(source, schema)
    configuration = database.configuration(SCHEMAS=schema)
    destination.sync(configuration)
    _run(source, f"DELETE FROM {schema}.t WHERE id % 3 = 0")  # 1,000 rows: past a 3,000-row table's digest
    capfd.readouterr()
    counts = destination.sync(configuration)
    assert "more than its digest names" in capfd.readouterr().out
    assert counts["Truncates"] == 1 and counts["Upserts"] == 2000
    table = f'"tester_{schema}"."t"'
    assert _live(destination, table) == _run(source, f"SELECT id, note FROM {schema}.t")
    _run(source, f"DELETE FROM {schema}.t WHERE id IN (1, 2)")  # the next digest is sized for what was seen
    assert destination.sync(configuration)["Deletes"] == 2


@pytest.mark.parametrize(
    "change",
    [
        "DELETE FROM {s}.t WHERE id % 10 = 0",  # 10% of the rows deleted at once
        "DELETE FROM {s}.t WHERE id BETWEEN 1001 AND 1300",  # 10% deleted in a stretch of keys
        # 10% updated with their cursor moved back an hour (a correction job writing business time)
        "UPDATE {s}.t SET note = 'corrected', updated_at = updated_at - interval '1 hour' WHERE id % 10 = 5",
    ],
    ids=["deleted", "deleted_in_a_stretch", "moved_back"],
)
def test_past_the_digests_capacity_no_row_stays_stale(
    database: Database, schema: str, source, destination: Destination, change: str
) -> None:
    _create(source, schema)
    configuration = database.configuration(SCHEMAS=schema)
    destination.sync(configuration)
    _run(source, change.format(s=schema))
    destination.sync(configuration)
    table = f'"tester_{schema}"."t"'
    assert _live(destination, table) == _run(source, f"SELECT id, note FROM {schema}.t")
    assert destination.sync(configuration)["Upserts"] == 0, "and then nothing more"


@pytest.mark.parametrize("changed_in_the_pause", [False, True])
def test_a_first_sync_carries_no_digest_until_its_read_ends_and_a_killed_one_rebuilds_it(
    changed_in_the_pause: bool,
    database: Database,
    schema: str,
    source,
    destination: Destination,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path,
) -> None:
    """Intermediate checkpoints of a first read carry its position, not its digest; killed there, the next sync takes
    the digest of the rows sent from the source, so that it ends with the digest an uninterrupted sync saves. A row
    sent and deleted in the pause makes the rows taken again other than those sent: the table is synced again."""
    _create(source, schema, rows=5000)
    configuration = database.configuration(SCHEMAS=schema, BATCH_SIZE="500", CHECKPOINT_ROWS="1000")
    key = f"{schema}.t"
    saved = killed_after_checkpoint(monkeypatch, destination, configuration, key, lambda _, n: n == 3)
    assert saved["tables"][key]["position"] is not None and saved["tables"][key]["deletes_digest"] is None
    kept = {**saved, "tables": {key: {**saved["tables"][key], "landing": None}}}
    assert len(json.dumps(kept)) < 2000, "no digest in the checkpoints of a first read"
    assert len(json.dumps(saved["tables"][key]["landing"])) < 3000, "the journal of the keys it holds: a few cells"
    if changed_in_the_pause:
        _run(source, f"DELETE FROM {schema}.t WHERE id = 2")
    counts = destination.sync(configuration, state=saved)
    assert counts["Truncates"] == (1 if changed_in_the_pause else 0)
    assert _live(destination, f'"tester_{schema}"."t"') == _run(source, f"SELECT id, note FROM {schema}.t")
    uninterrupted = Destination(tmp_path / "uninterrupted")
    uninterrupted.sync(configuration)
    assert destination.state["tables"][key]["deletes_digest"] == uninterrupted.state["tables"][key]["deletes_digest"]
    _run(source, f"DELETE FROM {schema}.t WHERE id IN (3, 2500)")
    assert destination.sync(configuration)["Deletes"] == 2


def test_rows_landed_past_the_state_saved_and_deleted_since_are_deleted(
    database: Database, schema: str, source, destination: Destination, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    """A sync reads 100 new rows and dies once they landed, before the state saying so was saved (the SDK writes the
    rows, then saves the state); ten of them are deleted before the next sync. The digest of what the destination
    holds, in the state saved, never held them: the state's journal of the keys read past it names them."""
    _create(source, schema)
    configuration = database.configuration(SCHEMAS=schema)
    destination.sync(configuration)
    _run(
        source,
        f"INSERT INTO {schema}.t SELECT i, 'new ' || i, timestamp '2024-03-01' + i * interval '1 minute' "
        f"FROM generate_series({ROWS + 1}, {ROWS + 100}) i",
    )
    # The end's two checkpoints: the first saves the journal of what it holds, the second lands it.
    key = f"{schema}.t"
    saved = killed_after_checkpoint(monkeypatch, destination, configuration, key, lambda _, n: n == 2, landed=True)
    assert saved["tables"][key]["landing"]["reads"]
    table = f'"tester_{schema}"."t"'
    assert len(_live(destination, table)) == ROWS + 100, "the new rows landed"
    _run(source, f"DELETE FROM {schema}.t WHERE id > {ROWS} AND id % 10 = 0")
    capfd.readouterr()
    counts = destination.sync(configuration, state=saved)
    assert (counts["Deletes"], counts["Truncates"]) == (10, 0)
    assert "of the keys the last sync read past its state, 10 are gone" in capfd.readouterr().out
    assert _live(destination, table) == _run(source, f"SELECT id, note FROM {schema}.t")


def test_a_sync_killed_during_its_read_converges(
    database: Database, schema: str, source, destination: Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    _create(source, schema, rows=5000)
    configuration = database.configuration(SCHEMAS=schema, BATCH_SIZE="500", CHECKPOINT_ROWS="1000")
    saved = killed_after_checkpoint(monkeypatch, destination, configuration, f"{schema}.t")
    destination.sync(configuration, state=saved)
    _run(source, f"DELETE FROM {schema}.t WHERE id IN (1, 1500, 4999)")
    time.sleep(0.1)
    counts = destination.sync(configuration)
    table = f'"tester_{schema}"."t"'
    assert counts["Deletes"] == 3 and _deleted(destination, table) == [1, 1500, 4999]
    assert _live(destination, table) == _run(source, f"SELECT id, note FROM {schema}.t")


def test_a_custom_query_keyed_by_a_timestamp_drops_the_sessions_that_ended(
    database: Database, schema: str, source, destination: Destination
) -> None:
    """As Fivetran's original example, `pg_stat_activity` keyed by (pid, backend_start): a session that ended is
    marked deleted."""
    _run(
        source,
        f"""CREATE TABLE {schema}.sessions (pid int, backend_start timestamptz, query_start timestamptz, state text);
        INSERT INTO {schema}.sessions SELECT i, now() - i * interval '1 h', now() - i * interval '1 min', 'idle'
        FROM generate_series(1, 50) i""",
    )
    query = {
        "table": "sessions",
        "query": f"SELECT pid, backend_start, query_start, state FROM {schema}.sessions",
        "primary_key": ["pid", "backend_start"],
        "cursor": "query_start",
    }
    configuration = database.configuration(SCHEMAS=schema, EXCLUDE_TABLES="*.*", QUERIES=json.dumps([query]))
    destination.sync(configuration)
    _run(source, f"DELETE FROM {schema}.sessions WHERE pid IN (3, 30)")
    assert destination.sync(configuration)["Deletes"] == 2
    deleted = destination.query('SELECT pid FROM "tester"."sessions" WHERE _fivetran_deleted ORDER BY 1')
    assert deleted == [(3,), (30,)]
    live = destination.query('SELECT pid FROM "tester"."sessions" WHERE NOT _fivetran_deleted ORDER BY 1')
    assert live == [(pid,) for pid in range(1, 51) if pid not in (3, 30)]
