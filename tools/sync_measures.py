"""What the benchmarks count of a sync through the SDK's runner: the bytes it prints, and the rows that landed."""

from __future__ import annotations

import io
from pathlib import Path


class PrintedBytes(io.TextIOBase):
    """Counts what the runner prints (it prints the whole state at every checkpoint), keeping none of it."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, text: str) -> int:
        self.bytes += len(text.encode())
        return len(text)


def landed_rows(work: Path, schema: str, table: str) -> int:
    """The live rows of a table in the DuckDB file the runner wrote under `work`."""
    import duckdb

    connection = duckdb.connect(str(work / "files" / "warehouse.db"), read_only=True)
    try:
        query = f'SELECT count(*) FROM "tester_{schema}"."{table}" WHERE NOT _fivetran_deleted'
        return connection.execute(query).fetchone()[0]
    finally:
        connection.close()
