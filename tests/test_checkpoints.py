"""Checkpoints are taken when progress is worth saving (CHECKPOINT_ROWS rows or deletes, CHECKPOINT_SECONDS, the end of
the sync), never per table or per leaf: the SDK's runner pays for every declared table at each checkpoint."""

from __future__ import annotations

import pytest
from conftest import Database, Destination

import sync

TABLES = 30  # a third each: keyed with updated_at (incremental), keyed (full with key), keyless (full without key)
ROWS = 10


def _create_tables(source, schema: str) -> None:
    statements = []
    for number in range(TABLES):
        kind = number % 3
        columns = (
            "id int PRIMARY KEY, note text, updated_at timestamp NOT NULL",
            "id int PRIMARY KEY, note text",
            "id int, note text",
        )[kind]
        values = ("i, 'n' || i, timestamp '2024-01-01' + i * interval '1 day'", "i, 'n' || i", "i % 3, 'same'")[kind]
        statements.append(
            f"CREATE TABLE {schema}.t_{number:02d} ({columns}); "
            f"INSERT INTO {schema}.t_{number:02d} SELECT {values} FROM generate_series(1, {ROWS}) i"
        )
    with source.cursor() as cursor:
        cursor.execute("; ".join(statements))


def _landed_everywhere(source, destination: Destination, schema: str) -> bool:
    for number in range(TABLES):
        with source.cursor() as cursor:
            cursor.execute(f"SELECT id, note FROM {schema}.t_{number:02d}")
            expected = sorted(cursor.fetchall())
        if destination.rows(schema, f"t_{number:02d}", "id, note") != expected:
            return False
    return True


def test_a_sync_of_many_small_tables_checkpoints_by_rows_sent_not_per_table(
    database: Database, schema: str, source, destination: Destination
) -> None:
    _create_tables(source, schema)
    configuration = database.configuration(SCHEMAS=schema)
    counts = destination.sync(configuration)
    assert counts["Upserts"] == TABLES * ROWS
    # The end's two: one saving what the rows held until then may change, then the one saving them landed.
    assert counts["Checkpoints"] == 2, "fewer rows than CHECKPOINT_ROWS: checkpoints at the end only"
    assert _landed_everywhere(source, destination, schema)
    assert destination.sync(configuration)["Checkpoints"] == 1, "nothing changed: the end's checkpoint only"

    destination.state = {}
    counts = destination.sync(database.configuration(SCHEMAS=schema, CHECKPOINT_ROWS="100"))
    # 300 rows, 10 a table: a checkpoint after each 100 rows sent, across tables, and one at the end.
    assert counts["Checkpoints"] == 300 // 100 + 1


def test_a_checkpoint_is_taken_when_checkpoint_seconds_passed(
    database: Database, schema: str, source, destination: Destination
) -> None:
    """A slow table after quick ones: its rows, sent after CHECKPOINT_SECONDS, are checkpointed before the end."""
    _create_tables(source, schema)
    with source.cursor() as cursor:  # 3 rows, each 0.5 s late
        cursor.execute(
            f"CREATE VIEW {schema}.zz_slow AS SELECT i FROM generate_series(1, 3) i WHERE pg_sleep(0.5) IS NOT NULL"
        )
    configuration = database.configuration(SCHEMAS=schema, TABLES=f"{schema}.*,{schema}.zz_slow")
    # Without the time limit this sync would checkpoint once; how many more depends on this machine's pace.
    assert destination.sync({**configuration, "CHECKPOINT_SECONDS": "1"})["Checkpoints"] >= 2
    destination.state = {}
    assert destination.sync(configuration)["Checkpoints"] == 2, "default CHECKPOINT_SECONDS (60): at the end only"


def test_a_sync_killed_between_checkpoints_goes_on_from_the_last_one_across_tables(
    database: Database, schema: str, source, destination: Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    _create_tables(source, schema)
    configuration = database.configuration(SCHEMAS=schema, CHECKPOINT_ROWS="100", LOOKBACK_SECONDS="0")
    real_checkpoint, taken = sync.op.checkpoint, []

    def checkpoint_then_die(state: dict) -> None:
        real_checkpoint(state)
        taken.append(state)
        if len(taken) == 2:
            raise RuntimeError("killed after the second checkpoint")

    monkeypatch.setattr(sync.op, "checkpoint", checkpoint_then_die)
    with pytest.raises(Exception, match="killed after the second checkpoint"):
        destination.sync(configuration)
    monkeypatch.setattr(sync.op, "checkpoint", real_checkpoint)
    saved = destination.saved_state()
    # Rows sent are held until the next checkpoint has saved: the second landed the first ten tables' rows.
    assert len(saved["tables"]) == 10, "the state holds the 10 tables whose rows the second checkpoint landed"

    counts = destination.sync(configuration, state=saved)
    # The twenty tables whose rows had not landed with their state are sent whole; the others send nothing again.
    assert counts["Upserts"] == 20 * ROWS
    assert _landed_everywhere(source, destination, schema)
