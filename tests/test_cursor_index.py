"""The log says, once per table, when an incremental table's cursor column leads no index (every sync scans it all)."""

from __future__ import annotations

import pytest
from conftest import Database, Destination

NOTE = "leads no index"


@pytest.mark.parametrize("indexed", [True, False])
def test_unindexed_cursor_is_logged_once_per_table(
    database: Database, schema: str, source, destination: Destination, capsys: pytest.CaptureFixture, indexed: bool
) -> None:
    with source.cursor() as cursor:
        for table in ("orders", "refunds"):
            cursor.execute(
                f"CREATE TABLE {schema}.{table} (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL);"
                f"INSERT INTO {schema}.{table} SELECT i, now() FROM generate_series(1, 20) AS i"
            )
            if indexed:
                cursor.execute(f"CREATE INDEX ON {schema}.{table} (updated_at)")
    capsys.readouterr()
    destination.sync(database.configuration(SCHEMAS=schema))
    output = capsys.readouterr().out
    notes = [line for line in output.splitlines() if NOTE in line]
    if indexed:
        assert notes == []
    else:
        assert len(notes) == 2
        assert any(f"{schema}.orders: cursor column updated_at" in line for line in notes)
