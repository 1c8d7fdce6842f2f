"""A keyed table's sync by set reconciliation: the difference digest (`difference_digest.py`) of its (key, row hash)
pairs, computed by the server in one grouped scan, less the one saved at the last sync, names the keys inserted,
updated and deleted; those rows are read by key and upserted, those keys deleted, and nothing else is sent. Rows
moved without a change (VACUUM FULL, CLUSTER, a redistribution) keep their pairs and send nothing.

Keys are encoded as themselves (one integer column) or as their text (64 bytes at most), so that a deleted key comes
back from the cells; keys of other types, longer keys, or a difference too large to decode leave the table to the
full pass, with a log line, and the next digest is sized for the difference seen.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import psycopg2
from fivetran_connector_sdk import Logging as log
from psycopg2 import sql

import append_optimized as ao
import difference_digest as dd
import reads
import schema_changes
from block_ranges import Hashing, row_hash
from catalog import RowLocator
from declared_keys import check_window
from greenplum_client import is_statement_cancelled, one_line
from leaf_survey import DigestCancelled
from leaves import greenplum_leaves
from planning import PlannedColumn, TablePlan
from type_mapping import ReadAs

if TYPE_CHECKING:
    from sync import TableSync

# How a decoded key column's text (DateStyle ISO, TimeZone UTC) becomes the value its rows were sent with, as the
# typecasters parse it: key columns of other types (a float, a boolean) leave the table to the block range digests.
_KEY_VALUES: dict[str, Callable[[str], Any]] = {
    "INT": int,
    "LONG": int,
    "STRING": str,
    "DECIMAL": str,  # a constrained numeric's text: its scale is fixed
    "NAIVE_DATE": date.fromisoformat,
    "NAIVE_DATETIME": datetime.fromisoformat,
    "UTC_DATETIME": datetime.fromisoformat,
}
_READ_AS_TEXT = (ReadAs.PLAIN, ReadAs.TEXT, ReadAs.NUMERIC_TEXT)
# Differences kept to size the next digest.
_RECENT = 5
# Keys read back in one statement.
_KEYS_PER_READ = 1000


class Outcome(enum.Enum):
    SENT = "sent"  # what changed was sent; the table is done
    FULL_PASS = "full pass"  # the digest cannot tell: a truncate and a full read, from the baseline taken here
    NOT_APPLICABLE = "not applicable"  # keys the digest cannot carry: the table's other path


@dataclass(frozen=True)
class KeyEncoding:
    codec: dd.Codec
    expression: sql.Composable  # the key as the server encodes it: a bigint, or the key's text
    columns: tuple[PlannedColumn, ...]


def key_encoding(plan: TablePlan) -> KeyEncoding | None:
    """How the plan's key goes into a digest, or None when a decoded key could not be sent as the destination holds it
    (a float's text is not the value sent)."""
    columns = tuple(column for name in plan.primary_key for column in plan.columns if column.name == name)
    if not columns or any(
        c.fivetran.name not in _KEY_VALUES or c.fivetran.read_as not in _READ_AS_TEXT for c in columns
    ):
        return None
    identifiers = [sql.Identifier(column.name) for column in columns]
    if len(columns) == 1 and columns[0].source_type in ("int2", "int4", "int8"):
        return KeyEncoding(dd.Codec.INTEGER, identifiers[0], columns)
    if len(columns) == 1:
        return KeyEncoding(dd.Codec.TEXT, sql.SQL("{}::text").format(identifiers[0]), columns)
    return KeyEncoding(dd.Codec.TEXT, sql.SQL("ROW({})::text").format(sql.SQL(", ").join(identifiers)), columns)


def parse_record(text: str) -> list[str]:
    """The fields of a record's text (`(1,"a b",x)`): quoted fields double their quotes and backslashes."""
    fields, field, quoted, index = [], [], False, 1
    while index < len(text) - 1:
        char = text[index]
        if quoted and char == "\\":
            index += 1
            field.append(text[index])
        elif quoted and char == '"' and text[index + 1] == '"':
            field.append('"')
            index += 1
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            fields.append("".join(field))
            field = []
        else:
            field.append(char)
        index += 1
    fields.append("".join(field))
    return fields


class Reconciliation:
    """One keyed table's reconciliation, sending through its `TableSync`."""

    def __init__(self, table: TableSync, encoding: KeyEncoding) -> None:
        self._table, self._plan, self._state = table, table.plan, table.state
        self._client = table.context.client
        self._hashing = table.context.hashing
        self._encoding = encoding
        self._rows = max(self._plan.estimated_rows, 0)  # the table's rows, as the last digest's scan counted them

    def run(self) -> Outcome:
        plan, state = self._plan, self._state
        current_columns = schema_changes.column_list(plan)
        saved = dd.Cells.unpack(state.digest) if state.digest else None
        catalog = self._append_optimized_facts()  # before any scan: what changes after it is seen next time
        if saved is None or saved.codec is not self._encoding.codec:
            self._baseline(self._sub_size(), catalog)
            return Outcome.FULL_PASS
        if catalog is not None and catalog == state.digest_ao and state.digest_columns == current_columns:
            log.info(f"{plan.state_key}: its append-optimized leaves are unchanged (the catalog says so); nothing read")
            return Outcome.SENT
        changes = schema_changes.compare(state.digest_columns or current_columns, list(plan.primary_key), plan)
        hashed = self._hashed_columns(state.digest_columns or current_columns, changes)
        if hashed is None:
            log.info(
                f"{plan.state_key}: a column its digest hashed is gone or holds other values ({changes.describe()}): "
                "the table is read again"
            )
            self._baseline(self._sub_size(), catalog)
            return Outcome.FULL_PASS
        backfill = bool(changes.backfill)
        try:
            # A digest for the next sync in another form (new columns, or a larger size for a table that grew) is
            # taken before the one compared now: what changes between the two scans is then seen again next time,
            # never hidden in a digest of rows this sync did not send.
            resized = self._sub_size() > 2 * saved.sub_size
            baseline = self._cells(self._sub_size(), list(plan.columns)) if backfill or resized else None
            current = self._cells(saved.sub_size, hashed)
            baseline = baseline or current
        except dd.KeyTooLong as error:
            log.info(f"{plan.state_key}: {error}: its digest cannot carry it, the table is read again")
            state.digest = None
            return Outcome.NOT_APPLICABLE
        difference = current.subtract(saved)
        pairs = difference.peel()
        if pairs is None:
            capacity = dd.capacity(saved.sub_size)
            log.info(
                f"{plan.state_key}: more than {capacity:,} rows' worth of changes, too many for its difference digest "
                "to name: the table is read again, and its next digest is larger"
            )
            self._remember(max(difference.estimated_pairs(), 2 * capacity))
            self._baseline(self._sub_size(), catalog, baseline if baseline is not current else None)
            return Outcome.FULL_PASS
        came, went = dd.changes(pairs, self._encoding.codec)
        self._remember(len(pairs))
        updated = len(pairs) - len(came) - len(went)  # an updated key has two pairs, and is only in `came`
        log.info(
            f"{plan.state_key}: difference digest: {len(came) - updated:,} inserted, {updated:,} updated, "
            f"{len(went):,} deleted{'; every row sent again for its new columns' if backfill else ''}"
        )
        if backfill:
            if state.position is not None:  # an earlier sync's read of every row, killed: its rows may have changed
                read_keys(self._table, self._encoding, sorted(came))
            self._table.read_all(lambda: reads.keyed(plan, state))
        else:
            self._table.expected_rows = len(came)  # the progress lines count against the rows named
            read_keys(self._table, self._encoding, sorted(came))
        for key in sorted(went):
            self._table.delete(key_values(self._encoding, key))
        state.digest, state.digest_columns, state.position = baseline.pack(), current_columns, None
        state.digest_ao = catalog
        self._table.progressed()
        return Outcome.SENT

    def _append_optimized_facts(self) -> str | None:
        """On Greenplum, when every leaf of the table is append-optimized: the catalog's facts of them all (storage
        file numbers and fingerprints, taken before the digest's scan), which say without a scan that no row changed
        since they were saved. None elsewhere, or where the catalog functions are refused."""
        context, plan = self._table.context, self._plan
        if not context.flavour.is_greenplum or plan.row_locator is not RowLocator.CTID:
            return None
        leaves = greenplum_leaves(self._client, context.flavour, plan)
        if not leaves or not all(leaf.append_optimized for leaf in leaves):
            return None
        try:
            facts = ao.fetch_facts(self._client, context.flavour, leaves)
        except psycopg2.Error:
            return None
        return ";".join(f"{key}={fact.relfilenode}/{fact.fingerprint}" for key, fact in sorted(facts.items()))

    def _hashed_columns(
        self, saved_columns: list[list[str]], changes: schema_changes.ColumnChanges
    ) -> list[PlannedColumn] | None:
        """The plan's columns that the saved digest hashed, in its order (renamed ones under their new names); None
        when one of them is gone or holds other values now."""
        if (
            changes.dropped
            or changes.key_change
            or set(changes.backfill) - set(changes.added) - set(new for _, new in changes.renamed)
        ):
            return None
        names = dict(changes.renamed)
        by_name = {column.name: column for column in self._plan.columns}
        return [by_name[names.get(name, name)] for name, _ in saved_columns]

    def _sub_size(self) -> int:
        return dd.choose_sub_size(self._rows, self._state.digest_sizes or [], self._encoding.codec.words)

    def _remember(self, pairs: int) -> None:
        self._state.digest_sizes = [*(self._state.digest_sizes or []), pairs][-_RECENT:]

    def _baseline(self, sub_size: int, catalog: str | None, cells: dd.Cells | None = None) -> None:
        """Digests the table before a full pass reads it, so that what changes during the pass is seen next time;
        saved as the table's digest, with the catalog's facts taken before it, when the pass ends."""
        self._state.digest_ao, self._state.pass_digest_ao = None, catalog
        try:
            cells = cells or self._cells(sub_size, list(self._plan.columns))
            if self._sub_size() > 2 * sub_size:  # the catalog's estimate was low: sized from the rows counted
                cells = self._cells(self._sub_size(), list(self._plan.columns))
        except dd.KeyTooLong as error:
            log.info(f"{self._plan.state_key}: {error}: its keys are not reconciled")
            self._state.pass_digest = None
            return
        self._state.pass_digest = cells.pack()

    def _cells(self, sub_size: int, columns: list[PlannedColumn]) -> dd.Cells:
        """The cells of the table's rows now, hashing the given columns; DigestCancelled when statement_timeout
        cancels the scan."""
        hashed = row_hash(_with_columns(self._plan, columns), self._hashing)
        if self._hashing is Hashing.MD5_128:
            hashed = dd.hash_of_md5(hashed)
        codec = self._encoding.codec
        statement = dd.cells_query(self._plan.relation, self._encoding.expression, hashed, sub_size, codec)
        try:
            rows = self._client.query(statement)
        except psycopg2.Error as error:
            if not is_statement_cancelled(error):
                raise
            raise DigestCancelled(
                f"the server cancelled the difference digest's scan ({one_line(error)}); raise statement_timeout for "
                "USERNAME"
            ) from None
        self._rows = sum(row[1] for row in rows) // dd.K
        return dd.Cells.from_rows(rows, sub_size, codec)


def key_values(encoding: KeyEncoding, key: int | str) -> dict[str, Any]:
    """A decoded key as the destination holds it."""
    columns = encoding.columns
    texts = parse_record(key) if len(columns) > 1 else [key]
    return {
        column.name: _KEY_VALUES[column.fivetran.name](str(text)) for column, text in zip(columns, texts, strict=True)
    }


def read_keys(
    table: TableSync,
    encoding: KeyEncoding,
    keys: list[int | str],
    only: tuple[sql.Composable, list[Any]] | None = None,
) -> None:
    """Reads the rows of the given keys (those meeting `only`, a condition and its params) and upserts them, declared
    keys checked unique among them first; a key whose row is gone since its digest was taken is seen next time."""
    plan, client = table.plan, table.context.client
    for start in range(0, len(keys), _KEYS_PER_READ):
        values = [key_values(encoding, key) for key in keys[start : start + _KEYS_PER_READ]]
        condition, params = reads.key_condition(plan, values)
        if plan.declared_key:
            check_window(client, plan, condition, params)
        if only is not None:
            condition, params = sql.SQL("{} AND {}").format(condition, only[0]), [*params, *only[1]]
        read = reads.Read(reads.select(plan, None, where=condition), params, ())
        table.read_all(lambda read=read: read, on_restart=lambda: None)


def _with_columns(plan: TablePlan, columns: list[PlannedColumn]) -> TablePlan:
    return replace(plan, columns=tuple(columns))
