"""A keyed table whose leaves are all append-optimized (Greenplum): what changed since the last sync, from the
catalog, reading only the leaves that changed and in them only the rows that changed.

An AO row's number in its segment file only grows, and a delete or an update hides a row in the visibility map without
moving it. So the rows above the highest row number the digest holds of each file were appended since (inserted, or
the new version of an updated row), and the rows hidden now that were not then, at or below it, were deleted or
updated away: with `gp_select_invisible` (settable by any user) they are read back by their ctid, and their pairs
leave the digest. A key hidden and not appended again was deleted. The leaves that did not change are not scanned.

What the state keeps per leaf (`digest_leaves`): the highest row number of each segment file and its rows hidden
(the count, and their row numbers while the table has few enough), noted by a full pass or a read of every row
(`PassNotes`), by the digest's scan (`ScanNotes`) and by this path. The counts are taken again after the reads, so
that a row deleted or updated while they ran sends the table to the digest's scan (`reconciliation.py`), as does
anything the catalog cannot tell: a leaf gone, added, rewritten (TRUNCATE) or not noted, a file compacted (VACUUM),
or more rows hidden than are read back one by one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg2
from fivetran_connector_sdk import Logging as log
from psycopg2 import sql

import append_optimized as ao
import difference_digest as dd
import reads
from catalog import Flavour, RowLocator
from declared_keys import check_windows
from greenplum_client import GreenplumClient
from leaves import Leaf, greenplum_leaves, leaf_order
from state import LeafState

if TYPE_CHECKING:
    from planning import TablePlan
    from state import TableState
    from table_sink import TableSink

_SEGNO_SHIFT = 25  # an AO ctid's block number: segment file << 25 | row number >> 15; its offset: row number % 2^15 + 1
_ROW_BITS = 15
# Hidden rows of a table whose row numbers the state keeps (2 to 3 bytes each until VACUUM compacts their files).
MAX_HIDDEN_NOTED = 100_000
# Rows hidden since the last sync that one sync reads back by ctid; more go to the digest's scan.
MAX_HIDDEN_READ = 50_000

Files = dict[tuple[int, int], ao.SegmentFileRows]
Hidden = dict[tuple[int, int], set[int]]
Note = Callable[[list[tuple], list[dict[str, Any]]], list[dict[str, Any]]]


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
        saved = _saved_facts(saved_text)
        return sorted(
            (key for key, fact in self.facts.items() if saved.get(key) != f"{fact.relfilenode}/{fact.fingerprint}"),
            key=leaf_order,
        )

    def only_appended_since(self, saved_text: str | None, key: str) -> bool:
        """Whether the catalog shows no more than rows appended to the leaf since the facts saved: the same storage,
        and each segment file there then written no fewer rows (a compaction empties or drops the files it moves
        rows from). Rows deleted or updated since show only as rows hidden, which the caller checks."""
        written = self._rows_written_since(saved_text, key)
        return written is not None and all(written[1].get(segno, -1) >= rows for segno, rows in written[0].items())

    def only_hidden_since(self, saved_text: str | None, key: str) -> bool:
        """Whether the catalog shows no more than rows hidden in the leaf since the facts saved (deleted): the same
        storage, each segment file written the same rows (an update writes its row's new version)."""
        written = self._rows_written_since(saved_text, key)
        return written is not None and written[0] == written[1]

    def _rows_written_since(self, saved_text: str | None, key: str) -> tuple[dict[int, int], dict[int, int]] | None:
        """The rows written to each segment file of the leaf when the facts were saved and now, where its storage is
        the same (None: not saved, gone, or rewritten)."""
        saved = _saved_facts(saved_text)
        if key not in saved or key not in self.facts:
            return None
        relfilenode, fingerprint = saved[key].split("/", 1)
        if int(relfilenode) != self.facts[key].relfilenode:
            return None
        return ao.rows_written_per_file(fingerprint), ao.rows_written_per_file(self.facts[key].fingerprint)

    def gone_since(self, saved_text: str | None) -> list[str]:
        return sorted(set(_saved_facts(saved_text)) - set(self.facts))

    def hidden_counts(self, client: GreenplumClient, flavour: Flavour, keys: list[str]) -> dict[str, dict]:
        """Per given leaf, the rows hidden per segment file (the visibility map's counts; no row is read)."""
        return {key: ao.fetch_hidden_counts(client, flavour, self.leaves[key]) for key in keys}

    def hidden_rows(self, client: GreenplumClient, counts: dict[str, dict]) -> dict[str, Hidden] | None:
        """Per leaf counted, the row numbers hidden per segment file, when they are few enough to note (None) and
        agree with the counts (a row hidden between the two queries: None too)."""
        if sum(sum(files.values()) for files in counts.values()) > MAX_HIDDEN_NOTED:
            return None
        rows = {key: ao.fetch_hidden(client, self.leaves[key]) if files else {} for key, files in counts.items()}
        if any({file: len(numbers) for file, numbers in rows[key].items()} != counts[key] for key in counts):
            return None
        return rows


def _saved_facts(saved_text: str | None) -> dict[str, str]:
    """leaf -> "relfilenode/fingerprint", from the facts as the state keeps them (`AoNow.text`)."""
    return dict(part.split("=", 1) for part in (saved_text or "").split(";") if part)


def append_optimized_now(client: GreenplumClient, flavour: Flavour, plan: TablePlan) -> AoNow | None:
    """On Greenplum, when every leaf of the table is append-optimized: the leaves and the catalog's facts of them all
    (storage file numbers and fingerprints), which say without a scan that no row changed since they were saved, or
    which leaves changed. None elsewhere, or where the catalog functions are refused."""
    if not flavour.is_greenplum or plan.row_locator is not RowLocator.CTID:
        return None
    leaves = greenplum_leaves(client, flavour, plan)
    if not leaves or not all(leaf.append_optimized for leaf in leaves):
        return None
    try:
        facts = ao.fetch_facts(client, flavour, leaves)
    except psycopg2.Error:
        return None
    return AoNow({leaf.key: leaf for leaf in leaves}, facts)


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

    def files(self, leaf_key: str) -> Files:
        """The leaf's files with a row sent, as the state saves them (rows 1 to the highest)."""
        return {
            (segment, segno): ao.SegmentFileRows([(1, high)])
            for (oid, segment, segno), high in self._highs.items()
            if (str(oid) if self._partitioned else self._leaf_key) == leaf_key
        }


class ScanNotes:
    """What the digest's scan notes of the leaves that changed, for the next sync: where each file's rows end (from
    the rows the scan sends: `high_water`), and the rows hidden, counted and listed before the scan and counted again
    after it: a leaf whose count moved meanwhile gets no entry (the scan may or may not have seen that change). A
    leaf that had not changed keeps its entry only if the catalog still says so after the scan: one that changed
    since the facts were taken is in the digest as the scan saw it, which its old entry no longer describes."""

    def __init__(
        self, client: GreenplumClient, flavour: Flavour, now: AoNow, saved_text: str | None, plan: TablePlan
    ) -> None:
        self._client, self._flavour, self._now = client, flavour, now
        self._changed = now.changed_since(saved_text)
        self._counts = now.hidden_counts(client, flavour, self._changed)
        self._hidden = now.hidden_rows(client, self._counts)
        self._steady: list[str] = []
        self._moved: set[str] = set(now.facts)
        self.high_water = HighWater(plan.partitioned, plan.leaf_key)

    def after_scan(self) -> None:
        now = self._now
        after = now.hidden_counts(self._client, self._flavour, self._changed)
        self._steady = [key for key in self._changed if after[key] == self._counts[key]]
        facts = ao.fetch_facts(self._client, self._flavour, list(now.leaves.values()))
        self._moved = {key for key, fact in now.facts.items() if facts.get(key) != fact}

    def entries(self, kept: dict[str, LeafState]) -> dict[str, LeafState]:
        """The entries of the leaves that did not change (kept) and of those the scan noted."""
        now, hidden = self._now, self._hidden
        unchanged = set(now.facts) - set(self._changed) - self._moved
        entries = {key: kept[key] for key in unchanged if key in kept}
        return entries | {
            key: entry(now.facts[key], self.high_water.files(key), self._counts[key], (hidden or {}).get(key))
            for key in self._steady
        }


# Where each row is (its leaf, segment and ctid), selected by the reads that note where each file's rows end.
LOCATED = (sql.SQL("tableoid::oid"), sql.SQL("gp_segment_id"), sql.SQL("ctid::text"))


class PassNotes:
    """What a read of every row (a full pass, or every row sent again) notes for the digest it makes: per leaf, its
    facts and rows hidden when the read began (`start`), then where each file's rows end as the rows go by (the
    read selects `LOCATED` before the digest's columns), kept in `pass_digest_leaves` at each checkpoint. At its
    end, the leaves whose facts are still those get their entries: the rows the read saw are theirs."""

    def __init__(self, state: TableState, plan: TablePlan) -> None:
        self._state, self._partitioned, self._leaf_key = state, plan.partitioned, plan.leaf_key
        self._files = {key: ao.decode_files(saved.ao["files"]) for key, saved in state.pass_digest_leaves.items()}

    @staticmethod
    def start(client: GreenplumClient, flavour: Flavour, now: AoNow) -> dict[str, LeafState]:
        counts = now.hidden_counts(client, flavour, list(now.facts))
        hidden = now.hidden_rows(client, counts)
        return {
            key: entry(fact, {}, counts[key], hidden[key] if hidden is not None else None)
            for key, fact in now.facts.items()
        }

    def note(self, batch: list[tuple], width: int) -> None:
        """Notes the rows of a batch, whose `LOCATED` columns come before the last `width`."""
        for raw in batch:
            oid, segment, ctid = raw[-width - 3 : len(raw) - width]
            files = self._files.get(str(oid) if self._partitioned else self._leaf_key)
            if files is not None:
                segno, row_number = ao.parse_tid(ctid)
                files.setdefault((segment, segno), ao.SegmentFileRows()).raise_high(row_number)

    def save(self) -> None:
        for key, files in self._files.items():
            self._state.pass_digest_leaves[key].ao["files"] = ao.encode_files(files)

    def finish(self, now: AoNow | None) -> dict[str, LeafState] | None:
        """The entries of the leaves unchanged since the read began (`now`: the catalog's facts after it)."""
        self.save()
        if now is None:
            return None
        changed = set(now.changed_since(self._state.pass_digest_ao))
        kept = self._state.pass_digest_leaves
        return {key: kept[key] for key in now.facts if key in kept and key not in changed}


def entry(facts: ao.AoFacts, files: Files, counts: dict, hidden: Hidden | None) -> LeafState:
    """What `digest_leaves` keeps of a leaf: its facts, where its files' rows end, the rows hidden there (their row
    numbers as each file's `deleted`, when given)."""
    noted = {
        place: ao.SegmentFileRows(rows.runs, sorted((hidden or {}).get(place, ())))
        for place, rows in files.items()
        if rows.runs
    }
    for place, numbers in (hidden or {}).items():
        noted.setdefault(place, ao.SegmentFileRows([], sorted(numbers)))
    saved = {"rel": facts.relfilenode, "fp": facts.fingerprint, "files": ao.encode_files(noted)}
    return LeafState("", 0, saved | {"hidden": ao.encode_counts(counts)})


def noted_hidden(saved: LeafState) -> Hidden | None:
    """The row numbers hidden in each file when the entry was saved; None when they were not all noted."""
    hidden = {place: set(rows.deleted) for place, rows in ao.decode_files(saved.ao["files"]).items() if rows.deleted}
    counts = ao.decode_counts(saved.ao.get("hidden", ""))
    return hidden if {place: len(numbers) for place, numbers in hidden.items()} == counts else None


def newly_hidden(files: Files, before: Hidden, now: Hidden) -> dict[tuple[int, int], list[int]]:
    """Per file, the rows hidden now and not before, at or below the highest row number the digest holds: rows it
    holds that were deleted or updated away (those above were appended and hidden since, never sent)."""
    found = {}
    for place, numbers in now.items():
        high = files[place].high if place in files else 0
        rows = sorted(number for number in numbers - before.get(place, set()) if number <= high)
        if rows:
            found[place] = rows
    return found


def send_changes(
    sink: TableSink, now: AoNow, held: dd.Cells, extra: tuple[sql.Composable, ...], note: Note, delete: Callable
) -> dict[str, LeafState] | None:
    """Sends what changed in the changed leaves since `digest_leaves` was saved, when the catalog can tell: each row
    appended is read with `extra` last (the key as the digest encodes it, then the pair's hash) and handed to `note`
    (which upserts it and adds its pair to `held`); each row hidden since is read back, its pair taken out of
    `held`, and `delete(key)` called for its key unless the key came again. Returns the leaves' entries to save, or
    None, logged, when the table needs the digest's scan (what was sent is sent again then, which changes nothing)."""
    plan, state, client = sink.plan, sink.state, sink.source.client
    flavour = sink.source.flavour
    entries = state.digest_leaves or {}
    changed = now.changed_since(state.digest_ao)
    why = _why_not(now, state.digest_ao, entries, changed)
    counts: dict[str, dict] = {}
    files: dict[str, Files] = {}
    hidden_now: dict[str, Hidden] = {}
    gone: dict[str, dict[tuple[int, int], list[int]]] = {}
    if why is None:
        counts = now.hidden_counts(client, flavour, changed)
        files = {key: ao.decode_files(entries[key].ao["files"]) for key in changed}
        why, hidden_now, gone = _hidden_since(client, now, entries, counts, files)
    if why is not None:
        log.info(f"{plan.state_key}: {why}: its difference digest is taken again")
        return None
    if plan.declared_key:
        windows = [reads.ao_rows_window(now.leaves[key], ao.read_from(files[key], witness=False)) for key in changed]
        check_windows(client, plan, windows)
    went = _read_hidden(client, held.codec, now, gone, extra)
    if went is None:
        log.info(f"{plan.state_key}: rows hidden since cannot be read back: its difference digest is taken again")
        return None
    log.info(
        f"{plan.state_key}: {len(changed)} leaf(s) changed, {len(went):,} row(s) hidden since (deleted or updated "
        "away): the rows appended and those keys read alone"
    )
    sink.expect(0)  # how many rows were appended is not known before they are read
    width = len(extra)
    came_again: set[Any] = set()

    def noting(batch: list[tuple], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        came_again.update(raw[-width] for raw in batch if raw[-width] in went)
        return note(batch, rows)

    witnesses = {key: {file: rows.high for file, rows in files[key].items() if rows.high} for key in changed}
    appended = 0
    for key in changed:
        witnessed, sent = _read_appended(sink, now.leaves[key], files[key], witnesses[key], extra, noting)
        appended += sent
        if ao.rewritten(witnesses[key], witnessed, {file: set(rows) for file, rows in gone.get(key, {}).items()}):
            log.info(f"{plan.state_key}: leaf {key} was rewritten (VACUUM): its difference digest is taken again")
            return None
    if now.hidden_counts(client, flavour, changed) != counts:
        log.info(f"{plan.state_key}: rows were deleted or updated while the changes were read: digest taken again")
        return None
    for words, h in went.values():
        held.add_pair(-1, words, h)
    deleted = sorted(set(went) - came_again)
    for key in deleted:
        delete(key)
    log.info(
        f"{plan.state_key}: {appended - len(came_again):,} inserted, {len(came_again):,} updated, "
        f"{len(deleted):,} deleted"
    )
    saved_hidden = {key: hidden_now.get(key, noted_hidden(entries[key])) for key in changed}
    if sum(len(rows) for hidden in saved_hidden.values() for rows in (hidden or {}).values()) > MAX_HIDDEN_NOTED:
        saved_hidden = {}
    return entries | {key: entry(now.facts[key], files[key], counts[key], saved_hidden.get(key)) for key in changed}


def _hidden_since(
    client: GreenplumClient,
    now: AoNow,
    entries: dict[str, LeafState],
    counts: dict[str, dict],
    files: dict[str, Files],
) -> tuple[str | None, dict[str, Hidden], dict[str, dict[tuple[int, int], list[int]]]]:
    """Of the changed leaves (`counts`: their rows hidden per file now; `files`: their saved files): why the hidden
    rows cannot be told (or None), the row numbers hidden now where the counts moved, and per file the rows hidden
    since."""
    saved_counts = {key: ao.decode_counts(entries[key].ao["hidden"]) for key in counts}
    hiding = {key: files for key, files in counts.items() if files != saved_counts[key]}
    for key in hiding:
        if any(counts[key].get(place, 0) < count for place, count in saved_counts[key].items()):
            return f"leaf {key} was compacted (VACUUM)", {}, {}
    before = {key: noted_hidden(entries[key]) for key in hiding}
    hidden_now = now.hidden_rows(client, hiding) if hiding else {}
    if hidden_now is None or any(rows is None for rows in before.values()):
        return f"leaf {next(iter(hiding))} hides more rows than are noted", {}, {}
    gone = {key: newly_hidden(files[key], before[key], hidden_now[key]) for key in hiding}
    total = sum(len(rows) for found in gone.values() for rows in found.values())
    if total > MAX_HIDDEN_READ:
        return f"{total:,} rows were deleted or updated, more than are read back by ctid ({MAX_HIDDEN_READ:,})", {}, {}
    return None, hidden_now, gone


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


def _read_hidden(
    client: GreenplumClient,
    codec: dd.Codec,
    now: AoNow,
    gone: dict[str, dict[tuple[int, int], list[int]]],
    extra: tuple[sql.Composable, ...],
) -> dict[Any, tuple[tuple[int, ...], int]] | None:
    """Per key, the pair (words, h) of each row hidden since, read back by ctid with `gp_select_invisible` (a scan of
    its leaf that hashes those rows alone); None when a row is not there (its file compacted meanwhile), or its key
    is NULL or another's (rows sent under one key: the digest's scan tells)."""
    went: dict[Any, tuple[tuple[int, ...], int]] = {}
    for key in sorted(gone, key=leaf_order):
        leaf = now.leaves[key]
        conditions: list[sql.Composable] = [leaf.condition] if leaf.condition is not None else []
        params: list[Any] = list(leaf.params)
        terms = []
        for (segment, segno), rows in sorted(gone[key].items()):
            terms.append(sql.SQL("(gp_segment_id = %s AND ctid = ANY(%s::tid[]))"))
            params += [segment, [ao.tid(segno, row) for row in rows]]
        if not terms:
            continue
        conditions.append(sql.SQL("({})").format(sql.SQL(" OR ").join(terms)))
        statement = sql.SQL("SELECT {} FROM {} WHERE {}").format(
            sql.SQL(", ").join(extra), leaf.relation, sql.SQL(" AND ").join(conditions)
        )
        rows = client.query(statement, params, seeing_hidden=True)
        if len(rows) != sum(len(numbers) for numbers in gone[key].values()) or any(row[0] is None for row in rows):
            return None
        for row in rows:
            if row[0] in went:
                return None
            went[row[0]] = (codec.encode(row[0]), row[1])
    return went


def _read_appended(
    sink: TableSink,
    leaf: Leaf,
    files: Files,
    witnesses: dict[tuple[int, int], int],
    extra: tuple[sql.Composable, ...],
    note: Note,
) -> tuple[set[tuple[int, int]], int]:
    """Reads the leaf's rows from each file's highest row read on (that row again: the witness that the file was not
    rewritten), sends those above it and notes them in `files`; returns the files whose witness was read and how many
    rows were sent. A read that starts again after a lost connection goes on past the rows noted."""
    witnessed: set[tuple[int, int]] = set()
    sent = 0

    def appended(batch: list[tuple], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        nonlocal sent
        kept_raw, kept = [], []
        for raw, row in zip(batch, rows, strict=True):
            segment, (segno, row_number) = raw[-2], ao.parse_tid(raw[-1])
            place = (segment, segno)
            rows_of_file = files.setdefault(place, ao.SegmentFileRows())
            if witnesses.get(place) == row_number:
                witnessed.add(place)
            if rows_of_file.raise_high(row_number):
                kept_raw.append(raw[:-2])
                kept.append(row)
        sent += len(kept)
        return note(kept_raw, kept)

    def build() -> reads.Read:
        return reads.ao_rows(sink.plan, leaf, ao.read_from(files), extra)

    sink.read_all(build, appended)
    return witnessed, sent
