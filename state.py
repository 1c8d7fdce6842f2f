"""The sync state: one JSON object, one entry per table, checkpointed as a whole.

State saved by an earlier sync is checked when it is read: a malformed entry raises `StateError` rather than being
silently reset, since a reset would re-read everything or, worse, skip rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

STATE_VERSION = 1


class StateError(ValueError):
    """The saved state cannot be understood; the message says which table and field."""


@dataclass
class TableState:
    """Where one table's reading stands.

    - `cursor`: the highest cursor value of the last completed incremental pass (text the server parses back).
    - `phase`: incremental reads go through rows with a cursor value ("values"), then rows whose cursor is NULL
      ("nulls"), which have no cursor to compare and are re-read by key on every sync.
    - `position`: the key (and cursor) of the last row sent in the read in progress; None when no read is in progress.
    - `segment`: Greenplum keyless reads go one segment at a time; the segment being read.
    - `in_pass`: a full pass has begun and its truncate is done, so resuming must not truncate again.
    - `cursor_column`: the cursor column's name and type ("updated_at UTC_DATETIME") that `cursor` and `position`
      were read from; when the column or its type changes, they no longer apply (None in states of older versions).
    """

    strategy: str
    cursor: str | None = None
    phase: str = "values"
    position: list[str] | None = None
    segment: int | None = None
    in_pass: bool = False
    cursor_column: str | None = None


@dataclass
class SyncState:
    tables: dict[str, TableState] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "tables": {key: asdict(value) for key, value in self.tables.items()}}

    def table(self, key: str, strategy: str) -> tuple[TableState, bool]:
        """The table's state, and whether an earlier one was dropped because the table's strategy changed."""
        existing = self.tables.get(key)
        if existing is not None and existing.strategy == strategy:
            return existing, False
        self.tables[key] = TableState(strategy=strategy)
        return self.tables[key], existing is not None


def load_state(raw: dict[str, Any] | None) -> SyncState:
    """Parses the state the SDK hands to update(); `{}` or None means a first sync."""
    if not raw:
        return SyncState()
    if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION or not isinstance(raw.get("tables"), dict):
        raise StateError(
            f"The saved state is not this connector's (expected {{'version': {STATE_VERSION}, 'tables': {{...}}}}); "
            "reset the connection's state to start over."
        )
    tables = {}
    for key, entry in raw["tables"].items():
        tables[key] = _table_state(key, entry)
    return SyncState(tables)


def _table_state(key: str, entry: Any) -> TableState:
    if not isinstance(entry, dict):
        raise StateError(f"State of table '{key}' is not an object.")
    try:
        state = TableState(**entry)
    except TypeError as error:
        raise StateError(f"State of table '{key}' has unexpected fields: {error}.") from None
    checks = (
        ("strategy", isinstance(state.strategy, str)),
        ("cursor", state.cursor is None or isinstance(state.cursor, str)),
        ("phase", state.phase in ("values", "nulls")),
        (
            "position",
            state.position is None
            or (isinstance(state.position, list) and all(isinstance(item, str) for item in state.position)),
        ),
        ("segment", state.segment is None or (isinstance(state.segment, int) and not isinstance(state.segment, bool))),
        ("in_pass", isinstance(state.in_pass, bool)),
        ("cursor_column", state.cursor_column is None or isinstance(state.cursor_column, str)),
    )
    for name, valid in checks:
        if not valid:
            raise StateError(f"State of table '{key}' has an invalid '{name}': {entry.get(name)!r}.")
    return state
