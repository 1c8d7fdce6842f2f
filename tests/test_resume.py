"""A sync that dies partway resumes from its last checkpoint instead of starting over, and converges."""

from __future__ import annotations

import pytest
from conftest import Database

import sync
from catalog import Flavour, detect_flavour

ROWS = 20_000
TABLES = {
    "incremental": "CREATE TABLE {s}.big (id bigint PRIMARY KEY, payload text, updated_at timestamp NOT NULL)",
    "full with key": "CREATE TABLE {s}.big (id bigint PRIMARY KEY, payload text)",
    "full without key": "CREATE TABLE {s}.big (id bigint, payload text)",
    # Keyless and partitioned: ctid repeats across partitions, so the read resumes on (tableoid, ctid).
    "partitioned without key": """
        CREATE TABLE {s}.big (id bigint, payload text) PARTITION BY RANGE (id);
        CREATE TABLE {s}.big_low PARTITION OF {s}.big FOR VALUES FROM (0) TO (300);
        CREATE TABLE {s}.big_high PARTITION OF {s}.big FOR VALUES FROM (300) TO (700);
        CREATE TABLE {s}.big_rest PARTITION OF {s}.big DEFAULT""",
}
LEGACY_GREENPLUM_TABLES = {
    "partitioned without key": """
        CREATE TABLE {s}.big (id bigint, payload text) DISTRIBUTED RANDOMLY
        PARTITION BY RANGE (id) (START (0) END (700) EVERY (300), DEFAULT PARTITION rest)""",
}
INSERTS = {
    "incremental": "SELECT i, md5(i::text), timestamp '2024-01-01' + (i / 7) * interval '1 second'",
    "full with key": "SELECT i, md5(i::text)",
    "full without key": "SELECT i % 1000, md5((i % 3)::text)",  # many identical rows
    "partitioned without key": "SELECT i % 1000, md5((i % 3)::text)",
}


class InjectedCrash(RuntimeError):
    """Stands for the process dying right after a checkpoint was saved."""


@pytest.mark.parametrize("case", list(TABLES))
def test_crash_after_first_checkpoint_resumes(
    case: str, database: Database, schema: str, source, destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    with source.cursor() as cursor:
        legacy = detect_flavour(database.version) in (Flavour.GREENPLUM5, Flavour.GREENPLUM6)
        ddl = LEGACY_GREENPLUM_TABLES.get(case, TABLES[case]) if legacy else TABLES[case]
        cursor.execute(ddl.format(s=schema))
        cursor.execute(f"INSERT INTO {schema}.big {INSERTS[case]} FROM generate_series(1, {ROWS}) AS i")
        cursor.execute(f"ANALYZE {schema}.big")
    configuration = database.configuration(SCHEMAS=schema, BATCH_SIZE="1000", CHECKPOINT_ROWS="5000")

    real_checkpoint = sync.op.checkpoint

    def checkpoint_then_crash(state: dict) -> None:
        real_checkpoint(state)
        # The table enters the state as it stood before the rows held since (`checkpoints.py`): from the second.
        if state["tables"].get(f"{schema}.big", {}).get("position") is not None:
            raise InjectedCrash("killed after the first checkpoint inside the table")

    monkeypatch.setattr(sync.op, "checkpoint", checkpoint_then_crash)
    with pytest.raises(Exception) as raised:  # the SDK's runner re-raises it wrapped, with the traceback as text
        destination.sync(configuration)
    assert "InjectedCrash" in str(raised.value)
    saved = destination.saved_state()["tables"][f"{schema}.big"]
    assert saved["strategy"] == case.replace("partitioned ", "full ") and saved["position"] is not None
    monkeypatch.setattr(sync.op, "checkpoint", real_checkpoint)
    # At least CHECKPOINT_ROWS landed; more when a leaf or segment ended with a partial batch before it.
    checkpointed = len(destination.rows(schema, "big", "id"))
    assert 5000 <= checkpointed < 5000 + 1000

    counts = destination.sync(configuration, state=destination.saved_state())
    assert counts["Upserts"] == ROWS - checkpointed, "the second sync reads only what the first did not checkpoint"
    with source.cursor() as cursor:
        cursor.execute(f"SELECT id, payload FROM {schema}.big")
        expected = sorted(cursor.fetchall())
    assert destination.rows(schema, "big", "id, payload") == expected
    assert destination.state["tables"][f"{schema}.big"]["position"] is None
