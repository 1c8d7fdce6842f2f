"""A keyed table whose leaves are all append-optimized (Greenplum): where the catalog says that rows were only
appended since the last sync (no leaf gone or rewritten, no row hidden by a delete or an update), the rows above the
highest row number of each segment file are read alone, upserted, and join the difference digest; the leaves that
did not change are not scanned. Anything else leaves the table to the digest's scan (`reconciliation.py`), which
notes the highest row numbers again.

Appended rows are new keys: a key sent before can only come back once its row was deleted or updated, which hides it
and sends the table to the scan. The rows hidden are counted before and after the read, so that one updated while
it runs (its new version read, its old one still in the digest) is seen too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from fivetran_connector_sdk import Logging as log
from psycopg2 import sql

import append_optimized as ao
import reads
from catalog import Flavour
from declared_keys import check_windows
from greenplum_client import GreenplumClient
from leaves import Leaf, leaf_order
from state import LeafState

if TYPE_CHECKING:
    from sync import TableSync

_SEGNO_SHIFT = 25  # an AO ctid's block number: segment file << 25 | row number >> 15; its offset: row number % 2^15 + 1
_ROW_BITS = 15


@dataclass(frozen=True)
class AoNow:
    """A table's append-optimized leaves and the catalog's facts of each, taken before its rows are read."""

    leaves: dict[str, Leaf]
    facts: dict[str, ao.AoFacts]

    @property
    def text(self) -> str:
        """The facts as the state keeps them (`digest_ao`): equal, no row changed."""
        return ";".join(f"{key}={fact.relfilenode}/{fact.fingerprint}" for key, fact in sorted(self.facts.items()))

    def changed_since(self, saved_text: str | None) -> list[str]:
        """The leaves whose facts differ from those saved (every leaf when none were), oldest first."""
        saved = dict(part.split("=", 1) for part in (saved_text or "").split(";") if part)
        return sorted(
            (key for key, fact in self.facts.items() if saved.get(key) != f"{fact.relfilenode}/{fact.fingerprint}"),
            key=leaf_order,
        )

    def gone_since(self, saved_text: str | None) -> list[str]:
        return sorted({part.split("=", 1)[0] for part in (saved_text or "").split(";") if part} - set(self.facts))

    def hidden_counts(self, client: GreenplumClient, flavour: Flavour, keys: list[str]) -> dict[str, dict]:
        """Per given leaf, the rows hidden per segment file (the visibility map's counts; no row is read)."""
        return {key: ao.fetch_hidden_counts(client, flavour, self.leaves[key]) for key in keys}


class HighWater:
    """The highest row number of each segment file, per leaf and segment, among the rows a digest's scan sends (a
    `difference_digest.Located`)."""

    def __init__(self, partitioned: bool, leaf_key: str) -> None:
        self._partitioned, self._leaf_key = partitioned, leaf_key
        self.reset()

    def reset(self) -> None:
        self._highs: dict[tuple[int, int, int], int] = {}

    def add(self, records: np.ndarray) -> None:
        blocks, offsets = records["block"].astype(np.int64), records["offset"].astype(np.int64)
        row_numbers = ((blocks & ((1 << _SEGNO_SHIFT) - 1)) << _ROW_BITS) + offsets - 1
        # leaf oid, segment (below 2^16) and segment file (below 128) in one int64, to group by
        places = (records["leaf"].astype(np.int64) << 24) | (records["segment"].astype(np.int64) << 8)
        places |= blocks >> _SEGNO_SHIFT
        unique, inverse = np.unique(places, return_inverse=True)
        highest = np.zeros(len(unique), np.int64)
        np.maximum.at(highest, inverse, row_numbers)
        for place, high in zip(unique.tolist(), highest.tolist(), strict=True):
            file = (place >> 24, (place >> 8) & 0xFFFF, place & 0xFF)
            self._highs[file] = max(high, self._highs.get(file, 0))

    def files(self, leaf_key: str) -> dict[tuple[int, int], ao.SegmentFileRows]:
        """The leaf's files with a row sent, as the state saves them (rows 1 to the highest)."""
        return {
            (segment, segno): ao.SegmentFileRows([(1, high)])
            for (oid, segment, segno), high in self._highs.items()
            if (str(oid) if self._partitioned else self._leaf_key) == leaf_key
        }


def entry(facts: ao.AoFacts, files: dict[tuple[int, int], ao.SegmentFileRows], hidden: dict) -> LeafState:
    """What `digest_leaves` keeps of a leaf."""
    saved = {"rel": facts.relfilenode, "fp": facts.fingerprint, "files": ao.encode_files(files)}
    return LeafState("", 0, saved | {"hidden": ao.encode_counts(hidden)})


def send_appended(
    table: TableSync,
    now: AoNow,
    extra: tuple[sql.Composable, ...],
    note: Callable[[list[tuple], list[dict[str, Any]]], list[dict[str, Any]]],
) -> dict[str, LeafState] | None:
    """Upserts the rows appended to the changed leaves since `digest_leaves` was saved when nothing else changed there,
    each row selected with `extra` last and handed to `note` (which adds its pair to the digest); returns the leaves'
    entries to save, or None, logged, when the table needs the digest's scan (rows already sent are sent again
    then, which changes nothing)."""
    plan, state, client = table.plan, table.state, table.context.client
    flavour = table.context.flavour
    entries = state.digest_leaves or {}
    changed = now.changed_since(state.digest_ao)
    why = _why_not(now, state.digest_ao, entries, changed)
    if why is None:
        hidden = now.hidden_counts(client, flavour, changed)
        deleted = [key for key in changed if hidden[key] != ao.decode_counts(entries[key].ao.get("hidden", ""))]
        why = f"rows were deleted or updated in leaf {deleted[0]}" if deleted else None
    if why is not None:
        log.info(f"{plan.state_key}: {why}: its difference digest is taken again")
        return None
    files = {key: ao.decode_files(entries[key].ao["files"]) for key in changed}
    if plan.declared_key:
        windows = [reads.ao_rows_window(now.leaves[key], ao.read_from(files[key], witness=False)) for key in changed]
        check_windows(client, plan, windows)
    log.info(f"{plan.state_key}: rows appended to {len(changed)} leaf(s), nothing else changed: those rows read alone")
    table.expected_rows = 0  # how many is not known before they are read
    witnesses = {key: {file: rows.high for file, rows in files[key].items() if rows.high} for key in changed}
    appended = 0
    for key in changed:
        witnessed, rows = _read_appended(table, now.leaves[key], files[key], witnesses[key], extra, note)
        appended += rows
        if ao.rewritten(witnesses[key], witnessed, {}):
            log.info(f"{plan.state_key}: leaf {key} was rewritten (VACUUM): its difference digest is taken again")
            return None
    if now.hidden_counts(client, flavour, changed) != hidden:
        log.info(f"{plan.state_key}: rows were deleted or updated while appended rows were read: digest taken again")
        return None
    log.info(f"{plan.state_key}: {appended:,} rows appended, sent")
    return {**entries, **{key: entry(now.facts[key], files[key], hidden[key]) for key in changed}}


def _why_not(now: AoNow, saved_text: str | None, entries: dict[str, LeafState], changed: list[str]) -> str | None:
    gone = now.gone_since(saved_text)
    if gone:
        return f"leaf {gone[0]} is gone"
    for key in changed:
        if key not in entries:
            return f"leaf {key} changed, and where its rows end was not noted"
        if entries[key].ao["rel"] != now.facts[key].relfilenode:
            return f"leaf {key} was truncated or rewritten"
    return None


def _read_appended(
    table: TableSync,
    leaf: Leaf,
    files: dict[tuple[int, int], ao.SegmentFileRows],
    witnesses: dict[tuple[int, int], int],
    extra: tuple[sql.Composable, ...],
    note: Callable[[list[tuple], list[dict[str, Any]]], list[dict[str, Any]]],
) -> tuple[set[tuple[int, int]], int]:
    """Reads the leaf's rows from each file's highest row read on (that row again: the witness that the file was not
    rewritten), sends those above it and notes them in `files`; returns the files whose witness was read and how many
    rows were sent. A read that starts again after a lost connection goes on past the rows noted."""
    witnessed: set[tuple[int, int]] = set()
    sent = 0

    def appended(batch: list[tuple], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept_raw, kept = [], []
        for raw, row in zip(batch, rows, strict=True):
            segment, (segno, row_number) = raw[-2], ao.parse_tid(raw[-1])
            place = (segment, segno)
            rows_of_file = files.setdefault(place, ao.SegmentFileRows())
            if witnesses.get(place) == row_number:
                witnessed.add(place)
            if row_number > rows_of_file.high:
                rows_of_file.runs = [(1, row_number)]
                kept_raw.append(raw[:-2])
                kept.append(row)
        nonlocal sent
        sent += len(kept)
        return note(kept_raw, kept)

    def build() -> reads.Read:
        return reads.ao_rows(table.plan, leaf, ao.read_from(files), extra)

    table.read_all(build, appended)
    return witnessed, sent
