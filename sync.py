"""The read, upsert and checkpoint loop for each strategy, and the SQL of each read.

Every read is a keyset read ordered so that the last row sent says where to continue: after a checkpoint when a
sync is run again, and after a lost connection within the same sync. Rows sharing a cursor value are ordered by key,
so none is lost between two reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import repeat
from typing import Any

import psycopg2
import psycopg2.errors
from fivetran_connector_sdk import Logging as log
from fivetran_connector_sdk import Operations as op
from psycopg2 import sql

from catalog import RowLocator
from configuration import Settings
from greenplum_client import GreenplumClient, is_connection_lost, is_statement_cancelled, one_line
from planning import ROW_ID_COLUMN, Strategy, TablePlan
from state import SyncState
from values import position_text


class ReadCancelled(RuntimeError):
    """The server cancelled a read (statement_timeout, pg_cancel_backend) before it returned another row."""


# Errors that concern one table only: it is skipped with a warning and the others are still synced.
TABLE_ERRORS = (
    psycopg2.errors.InsufficientPrivilege,
    psycopg2.errors.UndefinedTable,
    psycopg2.errors.UndefinedColumn,
    ReadCancelled,
)
# Lost connections in a row, with no row read in between, after which the table's read gives up.
_MAX_RECONNECTS_WITHOUT_PROGRESS = 5
# Integer cursors of any width hold the same values; other types are only comparable to themselves.
_SAME_CURSOR_VALUES = {"SHORT": "integer", "INT": "integer", "LONG": "integer"}


@dataclass(frozen=True)
class Read:
    """One SELECT of a table's pass, and which of its columns say where the read stands."""

    statement: sql.Composed
    params: list[Any]
    position_columns: tuple[int, ...]  # indexes in the selected row


@dataclass
class TableReport:
    rows: int = 0
    out_of_range: dict[str, list[str]] = field(default_factory=dict)  # column -> a few examples, and the count below
    out_of_range_counts: dict[str, int] = field(default_factory=dict)


class TableSync:
    """Syncs one table per its plan, saving progress in its `TableState` and checkpointing the whole `SyncState`."""

    def __init__(
        self,
        client: GreenplumClient,
        settings: Settings,
        plan: TablePlan,
        sync_state: SyncState,
        segments: list[int],
    ) -> None:
        self._client = client
        self._settings = settings
        self._plan = plan
        self._sync_state = sync_state
        self._state, self._strategy_changed = sync_state.table(plan.state_key, plan.strategy.value)
        self._segments = segments
        self._report = TableReport()
        self._started = time.monotonic()
        self._rows_at_checkpoint = 0
        self._names = [c.name for c in plan.columns]
        if plan.strategy is Strategy.FULL_WITHOUT_KEY:
            self._names.append(ROW_ID_COLUMN)
        self._checks = plan.column_checks

    def run(self) -> TableReport:
        plan = self._plan
        if self._strategy_changed:
            log.info(f"{plan.state_key}: strategy is now {plan.strategy.value}; its earlier state is not used")
        if plan.strategy is Strategy.INCREMENTAL:
            self._check_cursor_column()
        log.info(f"{plan.state_key}: {plan.strategy.value} sync ({plan.description}); {self._start_note()}")
        if plan.cursor is not None and not plan.cursor.indexed:
            log.info(
                f"{plan.state_key}: cursor column {plan.cursor.name} leads no index, so each incremental read scans "
                "the whole table; an index on it makes syncs that find little new much faster"
            )
        if plan.strategy is Strategy.INCREMENTAL:
            self._run_incremental()
        else:
            self._run_full()
        self._finish()
        return self._report

    def _start_note(self) -> str:
        state = self._state
        if state.position is not None:
            return f"resuming after {state.position}"
        if self._plan.strategy is Strategy.INCREMENTAL and state.cursor is not None:
            return f"from {self._plan.cursor.name} >= {state.cursor} minus {self._settings.lookback_seconds}s lookback"
        return "reading from the start"

    def _run_incremental(self) -> None:
        plan, state = self._plan, self._state
        cursor = plan.cursor
        if state.phase == "values":
            last = self._read_all(lambda: self._incremental_values_read())
            if last is not None:
                state.cursor = last[0]
            state.phase, state.position = "nulls", None
            self._checkpoint()
        if cursor.nullable:
            self._read_all(lambda: self._keyed_read(sql.SQL("{} IS NULL").format(sql.Identifier(cursor.name))))
        state.phase, state.position = "values", None

    def _check_cursor_column(self) -> None:
        """Forgets the saved cursor and position when the cursor column or its type changed since they were read.

        Saved text may not parse as the new type (integer to timestamp), and even when it does it may not mean the
        same instant (timestamp to timestamptz depends on the zone the naive values were in), so the table is read
        again from the start rather than risk skipping rows. Widening an integer keeps the values: no re-read.
        """
        plan, state = self._plan, self._state
        (fivetran,) = [c.fivetran.name for c in plan.columns if c.name == plan.cursor.name]
        current = f"{plan.cursor.name} {fivetran}"
        saved = state.cursor_column
        if saved is not None and saved != current and (state.cursor is not None or state.position is not None):
            saved_name, _, saved_type = saved.rpartition(" ")
            same_values = saved_name == plan.cursor.name and _SAME_CURSOR_VALUES.get(
                saved_type, saved_type
            ) == _SAME_CURSOR_VALUES.get(fivetran, fivetran)
            if not same_values:
                log.info(
                    f"{plan.state_key}: the cursor column was {saved} and is now {current}; the saved cursor "
                    f"{state.cursor} no longer applies, so the table is read again from the start"
                )
                state.cursor, state.position, state.phase = None, None, "values"
        state.cursor_column = current

    def _run_full(self) -> None:
        plan, state = self._plan, self._state
        restart = plan.strategy is Strategy.FULL_WITHOUT_KEY and plan.row_locator is RowLocator.NONE
        if not state.in_pass or restart:
            # A table that cannot be read (grant revoked, dropped) fails here, before its rows are marked deleted.
            self._client.query(sql.SQL("SELECT 1 FROM {} LIMIT 0").format(plan.relation))
            # Rows upserted after the truncate stay live; those the source no longer has end up deleted.
            op.truncate(plan.destination_table, schema=plan.destination_schema)
            state.in_pass, state.position, state.segment = True, None, None
        if plan.strategy is Strategy.FULL_WITH_KEY:
            self._read_all(lambda: self._keyed_read(None))
        elif plan.row_locator is RowLocator.NONE:
            self._read_all(self._unordered_read, resumable=False)
        else:
            segments = self._segments if plan.split_by_segment else [None]
            start = segments.index(state.segment) if state.segment in segments else 0
            for segment in segments[start:]:
                if state.segment != segment:
                    state.segment, state.position = segment, None
                self._read_all(lambda segment=segment: self._physical_read(segment))
        state.in_pass, state.position, state.segment = False, None, None

    def _read_all(self, build: Callable[[], Read], resumable: bool = True) -> list[str] | None:
        """Streams a read to the end, reconnecting and continuing from the last row sent when the connection drops.

        Returns the position of the last row read, or None when the read returned nothing.
        """
        last_position = None
        failures_without_progress = 0
        while True:
            read = build()
            rows_before = self._report.rows
            try:
                for batch in self._client.stream(read.statement, read.params):
                    self._send(batch)
                    if read.position_columns:
                        last_row = batch[-1]
                        last_position = [position_text(last_row[i]) for i in read.position_columns]
                        self._state.position = last_position
                    self._maybe_checkpoint()
                return last_position
            except TABLE_ERRORS:
                raise
            except psycopg2.Error as error:
                # A read that restarts from the beginning makes no progress that a retry keeps.
                progressed = resumable and self._report.rows > rows_before
                failures_without_progress = 0 if progressed else failures_without_progress + 1
                reason, cancelled = one_line(error), is_statement_cancelled(error)
                if cancelled:
                    if not progressed:  # cancelled again before a single row: retrying would loop
                        raise ReadCancelled(
                            f"the server cancelled the read before it returned a row ({reason}); raise "
                            "statement_timeout for USERNAME or lower BATCH_SIZE"
                        ) from None
                elif not is_connection_lost(error) or failures_without_progress > _MAX_RECONNECTS_WITHOUT_PROGRESS:
                    raise
                self._client.discard_connection()
                what = "read cancelled" if cancelled else "connection lost"
                log.warning(
                    f"{self._plan.state_key}: {what} ({reason}); reconnecting and continuing "
                    f"{'after ' + str(self._state.position) if resumable else 'from the start'}"
                )
                if not resumable:
                    op.truncate(self._plan.destination_table, schema=self._plan.destination_schema)

    def _send(self, batch: list[tuple]) -> None:
        plan = self._plan
        table, schema, upsert = plan.destination_table, plan.destination_schema, op.upsert
        for row in self.upsert_ready(batch):
            upsert(table, row, schema=schema)
        self._report.rows += len(batch)

    def upsert_ready(self, batch: list[tuple]) -> list[dict[str, Any]]:
        """The batch's rows as op.upsert takes them: the extraction stage, callable alone by the benchmark.

        The typecasters did most conversions; the rest, and the checks, run on whole columns of the batch at C
        speed. A row then costs one dict(zip()), run by map() without a bytecode loop (a trailing ctid is not sent).
        Values no destination type can hold become NULL and are counted for the warning.
        """
        if self._checks:
            columns = list(zip(*batch, strict=True))
            for index, name, check in self._checks:
                unfit: list[str] = []
                columns[index] = check(columns[index], unfit)
                if unfit:
                    self._note_out_of_range(name, unfit)
            batch = zip(*columns, strict=True)  # a check that lost a value would fail here
        return list(map(dict, map(zip, repeat(self._names), batch)))

    def _note_out_of_range(self, column: str, unfit: list[str]) -> None:
        counts = self._report.out_of_range_counts
        counts[column] = counts.get(column, 0) + len(unfit)
        examples = self._report.out_of_range.setdefault(column, [])
        for value in unfit:
            if len(examples) == 3:
                break
            if value not in examples:
                examples.append(value)

    def _maybe_checkpoint(self) -> None:
        if self._report.rows - self._rows_at_checkpoint >= self._settings.checkpoint_rows:
            self._checkpoint()
            self._log_progress()

    def _checkpoint(self) -> None:
        op.checkpoint(self._sync_state.as_json())
        self._rows_at_checkpoint = self._report.rows

    def _log_progress(self, final: bool = False) -> None:
        rows = self._report.rows
        elapsed = max(time.monotonic() - self._started, 1e-6)
        estimate = self._plan.estimated_rows
        share = f", {min(100.0, 100.0 * rows / estimate):.0f}% of ~{estimate:,} estimated" if estimate else ""
        verb = "done" if final else "progress"
        log.info(f"{self._plan.state_key}: {verb}, {rows:,} rows, {rows / elapsed:,.0f} rows/s{share}")

    def _finish(self) -> None:
        self._checkpoint()
        self._log_progress(final=True)
        for column, count in self._report.out_of_range_counts.items():
            examples = ", ".join(self._report.out_of_range[column])
            op.warning(
                f"{self._plan.state_key}.{column}: {count} value(s) the destination type cannot hold "
                f"(e.g. {examples}) were stored as NULL"
            )

    # The reads. Positions are compared as untyped literals, which the server parses as the column's own type.

    def _select(self, *extra: sql.Composable) -> sql.Composed:
        plan = self._plan
        expressions = [column.select_expression() for column in plan.columns]
        if plan.strategy is Strategy.FULL_WITHOUT_KEY:
            row_id = _row_id_expression(plan.row_locator, plan.split_by_segment)
            expressions.append(sql.SQL("{} AS {}").format(row_id, sql.Identifier(ROW_ID_COLUMN)))
        expressions.extend(extra)
        return sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(expressions), plan.relation)

    def _index_of(self, name: str) -> int:
        return self._names.index(name)

    def _incremental_values_read(self) -> Read:
        plan, state = self._plan, self._state
        cursor = sql.Identifier(plan.cursor.name)
        order = [plan.cursor.name, *plan.primary_key]
        if state.position is not None:
            condition, params = _after(order, state.position)
        elif state.cursor is not None:
            condition = sql.SQL("{} >= %s").format(cursor)
            params = [_minus_lookback(state.cursor, plan.cursor.kind, self._settings.lookback_seconds)]
        else:
            condition, params = sql.SQL("{} IS NOT NULL").format(cursor), []
        statement = sql.SQL("{} WHERE {} ORDER BY {}").format(self._select(), condition, _identifiers(order))
        return Read(statement, params, tuple(self._index_of(name) for name in order))

    def _keyed_read(self, extra_condition: sql.Composable | None) -> Read:
        plan, state = self._plan, self._state
        conditions, params = [], []
        if extra_condition is not None:
            conditions.append(extra_condition)
        if state.position is not None:
            condition, params = _after(plan.primary_key, state.position)
            conditions.append(condition)
        statement = self._select()
        if conditions:
            statement = sql.SQL("{} WHERE {}").format(statement, sql.SQL(" AND ").join(conditions))
        statement = sql.SQL("{} ORDER BY {}").format(statement, _identifiers(plan.primary_key))
        return Read(statement, params, tuple(self._index_of(name) for name in plan.primary_key))

    def _physical_read(self, segment: int | None) -> Read:
        """A keyless relation in physical order; on Greenplum one segment at a time, as ctid is unique per segment."""
        locator = self._plan.row_locator.columns
        conditions, params = [], []
        if segment is not None:
            conditions.append(sql.SQL("gp_segment_id = %s"))
            params.append(segment)
        if self._state.position is not None:
            condition, position = _after(locator, self._state.position)
            conditions.append(condition)
            params.extend(position)
        # The position columns come last, after the columns sent: zip() with the column names leaves them out of the
        # row. Their aliases must differ from the system columns', or ORDER BY ctid would sort by this text.
        positions = [sql.SQL("{}::text AS {}").format(sql.Identifier(c), sql.Identifier(f"read_{c}")) for c in locator]
        statement = self._select(*positions)
        if conditions:
            statement = sql.SQL("{} WHERE {}").format(statement, sql.SQL(" AND ").join(conditions))
        statement = sql.SQL("{} ORDER BY {}").format(statement, _identifiers(locator))
        first = len(self._names)
        return Read(statement, params, tuple(range(first, first + len(locator))))

    def _unordered_read(self) -> Read:
        return Read(self._select(), [], ())


def _row_id_expression(locator: RowLocator, split_by_segment: bool) -> sql.Composable:
    """Text unique to each row of a keyless relation (segment, partition, ctid), or its ordinal in a view's read."""
    if locator is RowLocator.NONE:
        return sql.SQL("(row_number() OVER ())::text")
    columns = ("gp_segment_id", *locator.columns) if split_by_segment else locator.columns
    parts = [sql.SQL("{}::text").format(sql.Identifier(column)) for column in columns]
    return sql.SQL(" || ':' || ").join(parts)


def _identifiers(names: tuple[str, ...] | list[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(name) for name in names)


def _after(names: tuple[str, ...] | list[str], position: list[str]) -> tuple[sql.Composable, list[str]]:
    """`(a, b) > (%s, %s)`: the rows after the given position, in the read's order."""
    placeholders = sql.SQL(", ").join(sql.Placeholder() for _ in names)
    return sql.SQL("({}) > ({})").format(_identifiers(names), placeholders), list(position)


def _minus_lookback(cursor: str, kind: str, lookback_seconds: int) -> str:
    """The saved cursor moved back by the lookback window, so late commits below it are read again."""
    if lookback_seconds == 0 or kind == "integer":
        return cursor
    try:
        if kind == "date":
            days = -(-lookback_seconds // 86400)
            return (date.fromisoformat(cursor) - timedelta(days=days)).isoformat()
        return (datetime.fromisoformat(cursor) - timedelta(seconds=lookback_seconds)).isoformat()
    except (ValueError, OverflowError):
        return cursor  # infinity or a year the library cannot hold: compare as saved
