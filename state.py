"""The sync state: one JSON object, one entry per table, checkpointed as a whole.

State saved by an earlier sync is checked when it is read: a malformed entry raises `StateError` rather than being
silently reset, since a reset would re-read everything or, worse, skip rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import landing

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
    - `cursor_position`: the cursor and key of the last row the last completed incremental read sent: a sync that
      checks what came late below it reads from right after it.
    - `segment`: the segment an earlier version was reading (its keyless reads went one segment at a time).
    - `in_pass`: a keyed full pass has begun and its truncate is done, so resuming must not truncate again.
    - `cursor_column`: the cursor column's name and type ("updated_at UTC_DATETIME") that `cursor` and `position`
      were read from; when the column or its type changes, they no longer apply (None in states of older versions).
    - `leaves`: keyed full passes: per leaf partition (the table itself when it is not partitioned), the digests
      taken before its last completed read. None until a first full pass has begun (keyless tables of earlier
      versions held their ids' ranges here: such a table is read again once).
    - `pass_leaves`: a keyed full pass in progress: what it saves as `leaves` at its end (digests taken before it
      began, and of append-optimized leaves the catalog's facts then and the highest row number read per file).
    - `reading`: in states of earlier versions, a keyless read in progress (dropped: those tables are read again).
    - `range_blocks`: the blocks of a range, chosen when the table's first pass began (None: not chosen yet).
    - `columns`, `key`: the columns ([name, type], in order) and key the table was last synced with, to tell a schema
      change (None in states of older versions).
    - `backfill`, `backfill_position`: an incremental table's columns being backfilled (added or renamed since), and
      the key of the last row sent in that read.
    - `digest`, `digest_columns`, `digest_sizes`: a table's difference digest (`difference_digest.Cells.pack`: a keyed
      table's with its digest of keys; a keyless table's of (content, rows holding it)) of what the destination
      holds, the columns its row hashes cover, and the differences of its recent syncs (in pairs), which size the
      next one. `pass_digest`: the digest of the rows a full pass or a
      read of every row has read so far, saved as `digest` at its end. `digest_ao`: on Greenplum, when every leaf is
      append-optimized, the catalog's facts of them when the digest was taken: unchanged, nothing is scanned
      (`pass_digest_ao`: those taken before a full pass). `digest_prints`: a keyless table's leaves, what the
      digest's pairs of each come to (`leaf_prints.py`), so that leaves rewritten are scanned alone;
      `leaf_digests`: the digests of its own of each leaf that changed last (a few), so that what changes there next
      is found by a scan of that leaf.
      `pass_held`: a read of every row in progress (new columns, or a difference past capacity): the digest of the
      keys it read (of the rows, in the form the saved digest hashed, when that one has no digest of keys), which
      names the keys to delete at its end; `pass_ranges`: the key ranges it reads when it reads those that changed
      alone (`shift:range,range,...`).
      `digest_leaves`: per append-optimized leaf, as `LeafState.ao` (with `hidden`: the rows hidden per file), what
      the digest holds of it: where its rows end and which are hidden, so that what changed there is read alone
      (`ao_keyed.py`); `pass_digest_leaves`: those a full pass or a read of every row notes as it goes.
      `digest_unfit`: a key too long for a digest: block range digests instead.
      `pass_noted`: while a full pass or a read of every row is under way, what the pairs it read come to (its digest
      stays the one it started from in the state: one killed takes the rest again from the source, and starts again
      when that is not what it had read).
    - `landing`: what the table sent after this state, which may have landed (`landing.py`): the next sync makes
      those rows what the state says before anything else.
    - `deletes_digest`, `deletes_bound`, `deletes_checked`, `deletes_sizes`: an incremental table's difference digest
      of the (key, cursor) pairs the destination holds with a cursor at or below `deletes_bound` (None: every row),
      when its deletes were last looked for (seconds since the epoch), and the differences of its recent checks.
      `deletes_nulls`: the digest of the (key, row hash) pairs of the rows whose cursor is NULL that the destination
      holds (None: not taken yet, or the cursor cannot be NULL).
      `deletes_noted`: while a first read makes one of them, what the pairs it noted come to
      (`difference_digest.Cells.fingerprint`), which a read killed and taken again must find at the source.
      `deletes_hashed`: those digests hold a hash of each key (a key too long for it came, or its key's type has no
      text to decode): a delete it names syncs the table again.
    """

    strategy: str
    cursor: str | None = None
    phase: str = "values"
    position: list[str] | None = None
    segment: int | None = None
    in_pass: bool = False
    cursor_column: str | None = None
    leaves: dict[str, LeafState] | None = None
    pass_leaves: dict[str, LeafState] | None = None
    reading: dict[str, Any] | None = None
    range_blocks: int | None = None
    columns: list[list[str]] | None = None
    key: list[str] | None = None
    backfill: list[str] | None = None
    backfill_position: list[str] | None = None
    digest: str | None = None
    digest_columns: list[list[str]] | None = None
    digest_sizes: list[int] | None = None
    pass_digest: str | None = None
    digest_ao: str | None = None
    pass_digest_ao: str | None = None
    digest_prints: str | None = None
    leaf_digests: dict[str, str] | None = None
    pass_held: str | None = None
    pass_ranges: str | None = None
    digest_leaves: dict[str, LeafState] | None = None
    pass_digest_leaves: dict[str, LeafState] | None = None
    digest_unfit: bool = False
    deletes_digest: str | None = None
    deletes_bound: str | None = None
    deletes_checked: float | None = None
    deletes_sizes: list[int] | None = None
    deletes_hashed: bool = False
    deletes_nulls: str | None = None
    cursor_position: list[str] | None = None
    deletes_noted: str | None = None
    pass_noted: str | None = None
    landing: dict[str, Any] | None = None


@dataclass
class LeafState:
    """What was saved of one leaf when its last read began: its block ranges' digests and ids held (`ranges`, as
    `block_ranges.ranges_state` writes them) and the digest of its keys (`digest`, keyed tables); or, for an
    append-optimized leaf whose changes the catalog tells (`ao`), its storage's file number (`rel`), the catalog's
    fingerprint when its last pass began (`fp`) and its rows per segment file (`files`, as
    `append_optimized.encode_files` writes them). States of earlier versions hold one digest per leaf and its highest
    id ordinal (`rows`)."""

    digest: str
    rows: int = 0
    ao: dict[str, Any] | None = None
    ranges: str | None = None


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
        if isinstance(state.leaves, dict):
            state.leaves = {leaf: _leaf_state(value) for leaf, value in state.leaves.items()}
        if isinstance(state.pass_leaves, dict):  # digests alone in states of older versions
            state.pass_leaves = {
                leaf: LeafState(value) if isinstance(value, str) else _leaf_state(value)
                for leaf, value in state.pass_leaves.items()
            }
        if isinstance(state.digest_leaves, dict):
            state.digest_leaves = {leaf: _leaf_state(value) for leaf, value in state.digest_leaves.items()}
        if isinstance(state.pass_digest_leaves, dict):
            state.pass_digest_leaves = {leaf: _leaf_state(value) for leaf, value in state.pass_digest_leaves.items()}
    except TypeError as error:
        raise StateError(f"State of table '{key}' has unexpected fields: {error}.") from None
    checks = (
        ("strategy", isinstance(state.strategy, str)),
        ("cursor", state.cursor is None or isinstance(state.cursor, str)),
        ("phase", state.phase in ("values", "nulls")),
        ("position", _texts_or_none(state.position)),
        ("segment", state.segment is None or (isinstance(state.segment, int) and not isinstance(state.segment, bool))),
        ("in_pass", isinstance(state.in_pass, bool)),
        ("cursor_column", state.cursor_column is None or isinstance(state.cursor_column, str)),
        ("leaves", _leaves_valid(state.leaves)),
        ("pass_leaves", _leaves_valid(state.pass_leaves)),
        ("reading", state.reading is None or isinstance(state.reading, dict)),
        ("range_blocks", state.range_blocks is None or (_count(state.range_blocks) and state.range_blocks > 0)),
        ("columns", state.columns is None or (isinstance(state.columns, list) and all(map(_pair, state.columns)))),
        ("key", _texts_or_none(state.key)),
        ("backfill", _texts_or_none(state.backfill)),
        ("backfill_position", _texts_or_none(state.backfill_position)),
        ("digest", state.digest is None or isinstance(state.digest, str)),
        ("pass_digest", state.pass_digest is None or isinstance(state.pass_digest, str)),
        ("digest_ao", state.digest_ao is None or isinstance(state.digest_ao, str)),
        ("pass_digest_ao", state.pass_digest_ao is None or isinstance(state.pass_digest_ao, str)),
        ("digest_prints", state.digest_prints is None or isinstance(state.digest_prints, str)),
        ("leaf_digests", state.leaf_digests is None or _texts_by_text(state.leaf_digests)),
        ("pass_held", state.pass_held is None or isinstance(state.pass_held, str)),
        ("pass_ranges", state.pass_ranges is None or isinstance(state.pass_ranges, str)),
        ("digest_leaves", _leaves_valid(state.digest_leaves)),
        ("pass_digest_leaves", _leaves_valid(state.pass_digest_leaves)),
        ("digest_unfit", isinstance(state.digest_unfit, bool)),
        ("deletes_hashed", isinstance(state.deletes_hashed, bool)),
        ("deletes_nulls", state.deletes_nulls is None or isinstance(state.deletes_nulls, str)),
        ("cursor_position", _texts_or_none(state.cursor_position)),
        ("deletes_noted", state.deletes_noted is None or isinstance(state.deletes_noted, str)),
        ("pass_noted", state.pass_noted is None or isinstance(state.pass_noted, str)),
        ("landing", landing.is_valid(state.landing)),
        ("deletes_digest", state.deletes_digest is None or isinstance(state.deletes_digest, str)),
        ("deletes_bound", state.deletes_bound is None or isinstance(state.deletes_bound, str)),
        (
            "deletes_checked",
            state.deletes_checked is None
            or (isinstance(state.deletes_checked, (int, float)) and not isinstance(state.deletes_checked, bool)),
        ),
        (
            "deletes_sizes",
            state.deletes_sizes is None
            or (isinstance(state.deletes_sizes, list) and all(map(_count, state.deletes_sizes))),
        ),
        (
            "digest_columns",
            state.digest_columns is None
            or (isinstance(state.digest_columns, list) and all(map(_pair, state.digest_columns))),
        ),
        (
            "digest_sizes",
            state.digest_sizes is None
            or (isinstance(state.digest_sizes, list) and all(map(_count, state.digest_sizes))),
        ),
    )
    for name, valid in checks:
        if not valid:
            raise StateError(f"State of table '{key}' has an invalid '{name}': {entry.get(name)!r}.")
    return state


def _leaf_state(value: Any) -> Any:
    return LeafState(**value) if isinstance(value, dict) else value


def _valid_leaf(value: Any) -> bool:
    return (
        isinstance(value, LeafState)
        and isinstance(value.digest, str)
        and _count(value.rows)
        and (value.ao is None or _valid_ao(value.ao))
        and (value.ranges is None or isinstance(value.ranges, str))
    )


def _valid_ao(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and {"rel", "fp", "files"} <= set(value) <= {"rel", "fp", "files", "hidden", "resend"}
        and _count(value["rel"])
        and isinstance(value["fp"], str)
        and isinstance(value["files"], str)
    )


def _texts_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, list) and all(isinstance(item, str) for item in value))


def _texts_by_text(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(item, str) for item in value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _leaves_valid(leaves: Any) -> bool:
    return leaves is None or (isinstance(leaves, dict) and all(map(_valid_leaf, leaves.values())))
