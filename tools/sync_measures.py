"""What the benchmarks count of a sync through the SDK's runner: the bytes it prints, and the rows that landed."""

from __future__ import annotations

import io
from pathlib import Path

FIRST_SYNC_PRINTED_BYTES = 2_000_000  # target: what a first sync prints, besides its final state


def prints_little(printed_bytes: int, final_state_bytes: int) -> bool:
    """Whether a first sync printed under the target besides its final state (printed once, at its last checkpoint):
    its checkpoints carried positions, not the digests they build."""
    return printed_bytes - final_state_bytes < FIRST_SYNC_PRINTED_BYTES


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
