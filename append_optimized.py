"""Change capture for append-optimized (AO) leaves, from Greenplum's own catalogs: which leaves changed, which rows
were appended, which were hidden (deleted, or the old version of an updated row), and which segment files were
rewritten, without scanning an unchanged leaf. The decisions are plain functions of catalog facts and saved state.

An AO row's `ctid` names its segment file and its row number there, which only grows: Greenplum reserves row numbers
100 at a time per insert and never reuses one until the leaf's storage is replaced (TRUNCATE, a rewriting ALTER). So
appended rows are those above the highest row number read, and the visibility map lists the rows hidden since. VACUUM
compaction moves a segment file's live rows into another one (new row numbers there). Keyed tables read what changed
from these facts (`ao_keyed.py`); keyless tables skip their scan when the facts are those saved with their digest.

What is saved per leaf: the catalog's fingerprint, the storage's file number, and per segment and segment file the
runs of row numbers read and the row numbers hidden since they were read.
"""

from __future__ import annotations

import base64
import enum
from dataclasses import dataclass, field
from typing import Any

from psycopg2 import sql

import catalog_sql
from catalog import Flavour
from greenplum_client import GreenplumClient
from leaves import APPEND_OPTIMIZED, Leaf

# A segment file's rows are numbered in the ctid's block number: segment file << 25 | row number >> 15, and its
# offset: (row number & 0x7FFF) + 1 (never 0).
_ROWS_PER_BLOCK = 1 << 15
_BLOCKS_PER_SEGMENT_FILE = 1 << 25
# Runs of row numbers kept per segment file: beyond it the closest runs merge, and the row numbers between them are
# deleted in vain if the file is ever rewritten (a few small inserts leave gaps of reserved numbers between runs).
MAX_RUNS = 8


class LeafChange(enum.Enum):
    NEW = "new"  # no saved state: every row is read
    UNCHANGED = "unchanged"  # the catalog says nothing happened: nothing is read
    CHANGED = "changed"  # rows appended, hidden or compacted: the visibility map and the appended rows are read
    REWRITTEN = "rewritten"  # new storage (TRUNCATE, a rewriting ALTER TABLE): every id is deleted, every row read


@dataclass(frozen=True)
class AoFacts:
    """What the catalog says of a leaf now: its storage's file number and a fingerprint of its segment files (per
    file: tuples written, and what grows with every insert, update and delete)."""

    relfilenode: int
    fingerprint: str
    rows: int = 0  # rows its segment files were written, the deleted among them: what a digest of it is sized for


@dataclass
class SegmentFileRows:
    """The rows of one segment file on one segment that the destination may hold: runs of row numbers read, minus the
    row numbers deleted since."""

    runs: list[tuple[int, int]] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)  # sorted

    @property
    def high(self) -> int:
        """The highest row number read: rows above it were appended since."""
        return self.runs[-1][1] if self.runs else 0

    def add(self, row_number: int) -> None:
        """Notes a row read (row numbers arrive in increasing order)."""
        if self.runs and self.runs[-1][1] + 1 == row_number:
            self.runs[-1] = (self.runs[-1][0], row_number)
        else:
            self.runs.append((row_number, row_number))
            if len(self.runs) > MAX_RUNS:
                self.runs = merge_closest(self.runs)

    def raise_high(self, row_number: int) -> bool:
        """Notes a row read where only the highest matters (rows 1 to it: a read of every row, in any order);
        returns whether it is above those noted before."""
        if row_number <= self.high:
            return False
        self.runs = [(1, row_number)]
        return True


def leaf_change(saved: dict[str, Any] | None, facts: AoFacts) -> LeafChange:
    """What happened to a leaf, from what was saved of it (`LeafState.ao`: its storage's file number and the
    catalog's fingerprint) and the catalog's facts now."""
    if saved is None:
        return LeafChange.NEW
    if saved["rel"] != facts.relfilenode:
        return LeafChange.REWRITTEN
    return LeafChange.UNCHANGED if saved["fp"] == facts.fingerprint else LeafChange.CHANGED


def read_from(files: dict[tuple[int, int], SegmentFileRows], witness: bool = True) -> list[tuple[int, str, str]]:
    """What a read of a leaf skips: per (segment, segment file) read before, the rows below the highest read so far
    (segment, first ctid, end ctid excluded). With `witness`, that row is read again: the witness that the file was
    not rewritten since. Files not listed are read from their first row."""
    return [
        (segment, tid(segno, 0), tid(segno, rows.high if witness else rows.high + 1))
        for (segment, segno), rows in sorted(files.items())
        if rows.high
    ]


def rewritten(
    witnesses: dict[tuple[int, int], int], witnessed: set[tuple[int, int]], hidden: dict[tuple[int, int], set[int]]
) -> list[tuple[int, int]]:
    """The files rewritten since they were read: the row last read there (the witness) was neither read again nor
    hidden. VACUUM moves every live row of a file it compacts, and row numbers are never reused, so one row missing
    says it all."""
    return sorted(
        key for key, row_number in witnesses.items() if key not in witnessed and row_number not in hidden.get(key, ())
    )


def tid(segno: int, row_number: int) -> str:
    """The ctid of a row of an AO segment file."""
    block = segno * _BLOCKS_PER_SEGMENT_FILE + row_number // _ROWS_PER_BLOCK
    return f"({block},{row_number % _ROWS_PER_BLOCK + 1})"


def parse_tid(text: str) -> tuple[int, int]:
    """(segment file, row number) of an AO row's ctid text."""
    block, offset = (int(part) for part in text.strip("()").split(","))
    return block // _BLOCKS_PER_SEGMENT_FILE, (block % _BLOCKS_PER_SEGMENT_FILE) * _ROWS_PER_BLOCK + offset - 1


def fetch_facts(client: GreenplumClient, flavour: Flavour, leaves: list[Leaf]) -> dict[str, AoFacts]:
    """The catalog's facts of each AO leaf, without reading a row: on Greenplum 6 one query on the coordinator for
    every leaf; on Greenplum 7 and Cloudberry two calls a leaf, answered by every segment. Raises psycopg2.Error
    where the functions are missing or refused."""
    files: dict[str, list[tuple[int, ...]]] = {leaf.key: [] for leaf in leaves}
    if flavour in (Flavour.GREENPLUM5, Flavour.GREENPLUM6):
        oids = {storage: [int(leaf.key) for leaf in leaves if leaf.storage == storage] for storage in APPEND_OPTIMIZED}
        rows = client.query(
            catalog_sql.AO_SEGMENT_FILES_GREENPLUM6,
            {"row_oriented": oids["ao_row"], "column_oriented": oids["ao_column"]},
        )
        for oid, *numbers in rows:
            files[str(oid)].append(tuple(numbers))
    else:
        for leaf in leaves:
            statement = (
                catalog_sql.AO_SEGMENT_FILES_GREENPLUM7_ROW
                if leaf.storage == "ao_row"
                else catalog_sql.AO_SEGMENT_FILES_GREENPLUM7_COLUMN
            )
            hidden = dict(client.query(catalog_sql.AO_HIDDEN_TOTALS_GREENPLUM7, {"leaf": int(leaf.key)}))
            for segno, tuples, modifications in client.query(statement, {"leaf": int(leaf.key)}):
                files[leaf.key].append((segno, tuples, modifications, hidden.get(segno, 0)))
    # The visibility map is read later, leaf by leaf: where its function is refused, the table falls back now.
    client.query(
        sql.SQL("SELECT count(*) FROM ({}) AS hidden").format(sql.SQL(catalog_sql.AO_HIDDEN_ROWS)),
        {"leaf": int(leaves[0].key)},
    )
    written = {key: sum(numbers[1] for numbers in leaf_files) for key, leaf_files in files.items()}
    return {leaf.key: AoFacts(leaf.relfilenode, _fingerprint(files[leaf.key]), written[leaf.key]) for leaf in leaves}


def _fingerprint(files: list[tuple[int, ...]]) -> str:
    return ",".join(":".join(map(str, numbers)) for numbers in sorted(files))


def rows_written_per_file(fingerprint: str) -> dict[int, int]:
    """segment file -> rows written there, from a fingerprint (`_fingerprint`: segno, rows written, then counts)."""
    files = (part.split(":") for part in fingerprint.split(",") if part)
    return {int(numbers[0]): int(numbers[1]) for numbers in files}


def fetch_hidden_counts(client: GreenplumClient, flavour: Flavour, leaf: Leaf) -> dict[tuple[int, int], int]:
    """(segment, segment file) -> how many rows are hidden there (files with none left out)."""
    legacy = flavour in (Flavour.GREENPLUM5, Flavour.GREENPLUM6)
    statement = catalog_sql.AO_HIDDEN_COUNTS_GREENPLUM6 if legacy else catalog_sql.AO_HIDDEN_COUNTS_GREENPLUM7
    rows = client.query(statement, {"leaf": int(leaf.key)})
    return {(segment, segno): count for segment, segno, count in rows if count}


def encode_counts(counts: dict[tuple[int, int], int]) -> str:
    parts = (f"{base36(segment)}.{base36(segno)}.{base36(count)}" for (segment, segno), count in sorted(counts.items()))
    return ";".join(parts)


def decode_counts(text: str) -> dict[tuple[int, int], int]:
    counts = {}
    for part in filter(None, text.split(";")):
        segment, segno, count = (int(field, 36) for field in part.split("."))
        counts[(segment, segno)] = count
    return counts


def fetch_hidden(client: GreenplumClient, leaf: Leaf) -> dict[tuple[int, int], set[int]]:
    """(segment, segment file) -> the row numbers hidden there, from the visibility map (no row is read)."""
    hidden: dict[tuple[int, int], set[int]] = {}
    for segment, segno, row_number in client.query(catalog_sql.AO_HIDDEN_ROWS, {"leaf": int(leaf.key)}):
        hidden.setdefault((segment, segno), set()).add(row_number)
    return hidden


def merge_closest(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The runs with the two closest merged into one."""
    gaps = [runs[index + 1][0] - runs[index][1] for index in range(len(runs) - 1)]
    at = gaps.index(min(gaps))
    return [*runs[:at], (runs[at][0], runs[at + 1][1]), *runs[at + 2 :]]


# The state's text form, compact because a leaf has a file per segment (and more where loads ran concurrently): per
# file "segment.segno.runs[.deleted]", ';'-separated; runs "first-last" in base 36, '+'-separated; deleted row numbers
# as base64 of their varint-encoded increasing gaps (states of earlier versions add a fifth field, ignored).


def encode_files(files: dict[tuple[int, int], SegmentFileRows]) -> str:
    parts = []
    for (segment, segno), rows in sorted(files.items()):
        runs = "+".join(f"{base36(first)}-{base36(last)}" for first, last in rows.runs)
        text = f"{base36(segment)}.{base36(segno)}.{runs}"
        if rows.deleted:
            text += "." + _encode_increasing(rows.deleted)
        parts.append(text)
    return ";".join(parts)


def decode_files(text: str) -> dict[tuple[int, int], SegmentFileRows]:
    """Raises ValueError when the text is not what encode_files writes."""
    files = {}
    for part in filter(None, text.split(";")):
        fields = part.split(".")
        if len(fields) not in (3, 4, 5):
            raise ValueError(f"segment file entry {part!r}")
        segment, segno = int(fields[0], 36), int(fields[1], 36)
        runs = []
        for run in filter(None, fields[2].split("+")):
            first, _, last = run.partition("-")
            runs.append((int(first, 36), int(last, 36)))
        deleted = _decode_increasing(fields[3]) if len(fields) >= 4 else []
        files[(segment, segno)] = SegmentFileRows(runs, deleted)
    return files


def base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = digits[digit] + text
        if not number:
            return text


def _encode_increasing(numbers: list[int]) -> str:
    out, previous = bytearray(), 0
    for number in numbers:
        gap = number - previous
        previous = number
        while gap >= 0x80:
            out.append(gap & 0x7F | 0x80)
            gap >>= 7
        out.append(gap)
    return base64.urlsafe_b64encode(bytes(out)).decode().rstrip("=")


def _decode_increasing(text: str) -> list[int]:
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    numbers, current, gap, shift = [], 0, 0, 0
    for byte in data:
        gap |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            continue
        current += gap
        numbers.append(current)
        gap, shift = 0, 0
    return numbers
