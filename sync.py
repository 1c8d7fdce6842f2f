"""Each strategy's pass over a table, and the read, upsert, delete and checkpoint loop they share.

The SQL of each read is in `reads.py`; a keyless table's full pass, leaf by leaf, is in `keyless_pass.py`. Progress is
saved in the table's `TableState` and checkpointed with the whole `SyncState`, so a sync that dies anywhere resumes.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import psycopg2
from fivetran_connector_sdk import Logging as log
from fivetran_connector_sdk import Operations as op
from psycopg2 import sql

import landing
import reads
import schema_changes
from block_ranges import DigestCancelled
from checkpoints import CheckpointFailed, Checkpoints
from configuration import Settings
from declared_keys import DeclaredKeyNotUnique, check_whole_table, check_window
from greenplum_client import (
    SourceConnectionError,
    is_connection_lost,
    is_statement_cancelled,
    one_line,
)
from incremental_deletes import Checked, DeleteCheck, SyncAgain
from keyed_pass import KeyedPass
from keyless_pass import KeylessPass
from planning import ROW_ID_COLUMN, Strategy, TablePlan
from quoting import Identifier
from reads import Read
from state import SyncState, TableState
from table_sink import Prepare, Source
from values import position_text


class ReadCancelled(RuntimeError):
    """The server cancelled a read (statement_timeout, pg_cancel_backend) before it returned another row."""


# Errors that say what is wrong with the table in their own words (the others are named by their class too).
_EXPLAINED = (ReadCancelled, DigestCancelled, DeclaredKeyNotUnique)
# Lost connections in a row, with no row read in between, after which the table's read gives up.
_MAX_RECONNECTS_WITHOUT_PROGRESS = 5
# Integer cursors of any width hold the same values; other types are only comparable to themselves.
_SAME_CURSOR_VALUES = {"SHORT": "integer", "INT": "integer", "LONG": "integer"}


@dataclass(frozen=True)
class SyncContext:
    """What every table of one sync shares: the server, the settings, the state and when to checkpoint it."""

    source: Source
    settings: Settings
    sync_state: SyncState
    checkpoints: Checkpoints


@dataclass
class TableReport:
    rows: int = 0
    deleted: int = 0
    out_of_range: dict[str, list[str]] = field(default_factory=dict)  # column -> a few examples, and the count below
    out_of_range_counts: dict[str, int] = field(default_factory=dict)


def _truncate(table: str, _row: dict[str, Any], schema: str | None) -> None:
    op.truncate(table, schema=schema)


def sync_table(context: SyncContext, plan: TablePlan) -> str | None:
    """Syncs one table; returns why it was skipped, or None. Whatever goes wrong with a table (a server error, a
    statement composed wrongly, a value refused) is that table's: its state stays where it was saved and the other
    tables sync. Only what stops every table stops the sync: the source unreachable, the state not saved."""
    try:
        TableSync(context, plan).run()
    except Exception as error:
        if isinstance(error, (SourceConnectionError, CheckpointFailed)) or is_connection_lost(error):
            raise
        if isinstance(error, psycopg2.Error):
            diagnostics = getattr(error, "diag", None)  # the server's message, without the statement
            return one_line((diagnostics and diagnostics.message_primary) or error)
        if isinstance(error, _EXPLAINED):
            return one_line(error)
        log.error(f"{plan.state_key}: {''.join(traceback.format_exception(error))}")
        return one_line(f"{type(error).__name__}: {error}")
    return None


class TableSync:
    """Syncs one table per its plan, saving progress in its `TableState` and checkpointing the whole `SyncState`: the
    `TableSink` its passes send through."""

    def __init__(
        self, context: SyncContext, plan: TablePlan, state: TableState | None = None, send: Callable = op.upsert
    ) -> None:
        """`state` and `send` serve a read of some columns only (a backfill): its own position, and `op.update`."""
        self.context = context
        self.plan = plan
        self.source = context.source
        if state is None:
            self.state, self._strategy_changed = context.sync_state.table(plan.state_key, plan.strategy.value)
        else:
            self.state, self._strategy_changed = state, False
        self._operation = send
        # Run before each checkpoint, innermost last, so that state kept in another form (a leaf's segment files, a
        # digest being built) is saved too (`saving`).
        self._saves: list[Callable[[], None]] = []
        self._client = context.source.client
        self._settings = context.settings
        self._report = TableReport()
        self._row_bytes: int | None = None  # how wide the rows read last were: the next read's first fetch
        # Where this sync's incremental reads start (a check of what came late below the cursor needs no lookback).
        self._start = reads.IncrementalStart(context.settings.lookback_seconds)
        self._started = time.monotonic()
        self._checkpoints = context.checkpoints
        self._names = [c.destination_name for c in plan.columns]
        if plan.strategy is Strategy.APPEND_ONLY:
            self._names.append(ROW_ID_COLUMN)  # the read computes it
        self._checks = plan.column_checks
        # What this table's reads are expected to send, for the progress lines: the table, or the rows a digest named.
        self._expected_rows = plan.estimated_rows

    def run(self) -> TableReport:
        plan = self.plan
        if self._strategy_changed:
            log.info(f"{plan.state_key}: strategy is now {plan.strategy.value}; its earlier state is not used")
        if self.state.landing is not None and self.state.landing.get("truncated"):
            self._synced_again_after_truncate()
        self._check_columns()
        if plan.cursor is not None:
            self._check_cursor_column()
        log.info(f"{plan.state_key}: {plan.strategy.value} sync ({plan.description}); {self._start_note()}")
        if plan.cursor is not None and not plan.cursor.indexed:
            log.info(
                f"{plan.state_key}: cursor column {plan.cursor.name} leads no index, so each incremental read scans "
                "the whole table; an index on it makes syncs that find little new much faster"
            )
        if plan.strategy is Strategy.INCREMENTAL:
            self._run_incremental()
        elif plan.strategy is Strategy.APPEND_ONLY:
            self._run_append_only()
        elif plan.strategy is Strategy.FULL_WITH_KEY:
            KeyedPass(self).run()
        else:
            KeylessPass(self).run()
        self._finish()
        return self._report

    def _start_note(self) -> str:
        state = self.state
        if state.position is not None:
            return f"resuming after {state.position}"
        if self.plan.cursor is not None and state.cursor is not None:
            return f"from {self.plan.cursor.name} >= {state.cursor} minus {self._settings.lookback_seconds}s lookback"
        if self.plan.strategy.is_full and state.leaves is not None:
            return "reading what changed since the last pass"
        return "reading from the start"

    # Schema changes: columns added, renamed, dropped or retyped since the last sync.

    def _check_columns(self) -> None:
        """Says what changed in the table's columns since its last sync, and sees that the destination gets the values
        it lacks: a changed key (or any change to an append-only table) syncs the table again as new; added and
        renamed columns are backfilled, by the full strategies' next pass or, on an incremental table, by one read
        below its window sent with `op.update` of the key and those columns."""
        plan, state = self.plan, self.state
        if state.columns is not None:
            changes = schema_changes.compare(state.columns, state.key or [], plan)
            if changes:
                self._apply(changes)
        self.state.columns, self.state.key = schema_changes.column_list(plan), list(plan.primary_key)

    def _apply(self, changes: schema_changes.ColumnChanges) -> None:
        plan, state = self.plan, self.state
        what = f"{plan.state_key}: columns changed since the last sync: {changes.describe()}"
        if schema_changes.needs_resync(changes, plan.strategy):
            op.warning(f"{what}; the table is synced again as new (a truncate, then every row)")
            self.state = TableState(strategy=plan.strategy.value)
            self.context.sync_state.tables[plan.state_key] = self.state
            if plan.strategy is Strategy.INCREMENTAL:  # the other strategies truncate on their first pass
                self.probe(reads.keyed(plan, self.state))
                self.truncate()
            return
        backfill = changes.backfill
        if not backfill:
            log.info(f"{what}; no values to send for it")
            return
        log.info(f"{what}; {', '.join(backfill)} sent for every live row")
        if plan.strategy.is_full:
            schema_changes.forget_baselines(state)
        else:
            earlier = state.backfill or []
            state.backfill = [*earlier, *(name for name in backfill if name not in earlier)]
            state.backfill_position = None

    def _backfill(self) -> None:
        """Sends the backfilled columns of every row this sync's incremental read will not send (those below its
        window), in key order from where an earlier sync stopped: `op.update` of the key and those columns, or the
        whole row where one of them is an empty string (an update lands it as NULL on a row not upserted this sync,
        as Fivetran's core does)."""
        plan, state = self.plan, self.state
        backfilled = [name for name in state.backfill if name in {column.name for column in plan.columns}]
        names = [plan.sent_as.get(name, name) for name in backfilled]  # as the rows read hold them
        sent = [plan.sent_as.get(name, name) for name in plan.primary_key] + names

        def send(table: str, row: dict[str, Any], schema: str | None) -> None:
            if any(row[name] == "" for name in names):
                op.upsert(table, row, schema=schema)
            else:
                op.update(table, {name: row[name] for name in sent}, schema=schema)

        progress = TableState(state.strategy, position=state.backfill_position)
        sender = TableSync(self.context, plan, progress, send=send)

        def save() -> None:
            state.backfill_position = progress.position

        window, params = reads.incremental_window(plan, state, self._start)
        below = sql.SQL("NOT ({})").format(window)
        if names:  # else dropped since
            with sender.saving(save):
                sender.read_all(lambda: reads.keyed(plan, progress, below, params=params))
            self._report.rows += sender._report.rows
        state.backfill, state.backfill_position = None, None

    # Incremental and append-only: rows from the saved cursor minus the lookback, then rows whose cursor is NULL.

    def _run_incremental(self) -> None:
        try:
            self._read_incremental()
        except SyncAgain as error:
            plan = self.plan
            op.warning(f"{plan.state_key}: {error}: the table is synced again (a truncate, then every row)")
            self._start_over()
            self.probe(reads.keyed(plan, self.state))
            self.truncate()
            self._read_incremental()

    def _synced_again_after_truncate(self) -> None:
        """The last sync stopped after a truncate it may have landed (`landing.py`): the table's first pass again."""
        plan = self.plan
        log.info(f"{plan.state_key}: the last sync stopped after truncating the table: it is synced again")
        self._start_over()
        if plan.strategy is Strategy.INCREMENTAL:  # the other strategies truncate on their first pass
            self.probe(reads.keyed(plan, self.state))
            self.truncate()

    def _start_over(self) -> None:
        """Forgets where the table's reads stand, keeping what describes it (its columns, key and cursor column, and
        how its digests hold keys)."""
        old, plan = self.state, self.plan
        self.state = TableState(strategy=plan.strategy.value, columns=old.columns, key=old.key)
        self.state.cursor_column, self.state.deletes_hashed = old.cursor_column, old.deletes_hashed
        self.state.deletes_sizes, self.state.digest_sizes = old.deletes_sizes, old.digest_sizes
        self.context.sync_state.tables[plan.state_key] = self.state

    def _read_incremental(self) -> None:
        plan, state = self.plan, self.state
        landed, state.landing = state.landing or {}, None
        deletes = DeleteCheck(self, self._settings.lookback_seconds) if plan.delete_check_hours is not None else None
        if deletes is not None and landed.get("reads"):
            deletes.undo_reads(landed["reads"])
        if deletes is None:
            state.deletes_digest = state.deletes_bound = state.deletes_checked = state.deletes_sizes = None
            state.deletes_nulls = None
        checked = deletes.due() if deletes is not None else Checked(False, False)
        self._start = reads.IncrementalStart(self._settings.lookback_seconds)
        if state.backfill:  # the NULL-cursor rows are read again for it, and the window is the one it was sized for
            checked = Checked(checked.values, False)
        elif checked.values or checked.nulls:
            after = state.cursor_position if checked.values else None
            lookback = 0 if checked.values else self._settings.lookback_seconds
            self._start = reads.IncrementalStart(lookback, after, nulls=not checked.nulls)
        if plan.declared_key:  # a key that is not unique would collapse rows: nothing is sent then
            if state.cursor is None and state.position is None and state.phase == "values":
                check_whole_table(self._client, plan)  # the first sync reads every row
            else:
                check_window(self._client, plan, *reads.incremental_window(plan, state, self._start))
        if deletes is not None:
            deletes.before_read(checked)
        if state.backfill:  # sent for every row the read does not send
            self._backfill()
        nulls = sql.SQL("{} IS NULL").format(Identifier(plan.cursor.name))

        def values() -> Read:
            extra, params = deletes.extra_columns() if deletes is not None else ((), [])
            return reads.incremental_values(plan, state, self._start, extra, params)

        def null_rows() -> Read:
            return reads.keyed(plan, state, nulls, extra=deletes.nulls_extra() if deletes is not None else ())

        with self.saving(deletes.save) if deletes is not None else contextlib.nullcontext():
            self._run_cursor_phases(
                values,
                null_rows if self._start.nulls else None,
                deletes.note if deletes is not None else None,
                deletes.after_read if deletes is not None else None,
                deletes.note_nulls if deletes is not None else None,
                deletes.after_nulls if deletes is not None else None,
            )

    def _run_append_only(self) -> None:
        """Inserts only: the ids of re-read rows are stable, so the lookback window never duplicates a row."""
        plan, state = self.plan, self.state
        if state.cursor is None and state.position is None and state.phase == "values":
            # A first sync: rows another strategy left in the destination have other ids.
            self.probe(reads.append_only(plan, state, self._settings.lookback_seconds))
            self.truncate()
        lookback = self._settings.lookback_seconds
        self._run_cursor_phases(
            lambda: reads.append_only(plan, state, lookback), lambda: reads.append_only(plan, state, 0, nulls=True)
        )

    def _run_cursor_phases(
        self,
        values: Callable[[], Read],
        nulls: Callable[[], Read] | None,
        prepare: Prepare | None = None,
        after_values: Callable[[], None] | None = None,
        prepare_nulls: Prepare | None = None,
        after_nulls: Callable[[], None] | None = None,
    ) -> None:
        """The rows with a cursor value, then (`nulls`: unless a check covered them) those whose cursor is NULL."""
        state = self.state
        if state.phase == "values":
            last = self.read_all(values, prepare)
            if last is not None:
                state.cursor, state.cursor_position = last[0], last
            state.phase, state.position = "nulls", None
            if after_values is not None:
                after_values()
            self.progressed()
        if self.plan.cursor.nullable and nulls is not None:
            self.read_all(nulls, prepare_nulls)
            if after_nulls is not None:
                after_nulls()
        state.phase, state.position = "values", None

    def _check_cursor_column(self) -> None:
        """Forgets the saved cursor and position when the cursor column or its type changed since they were read.

        Saved text may not parse as the new type (integer to timestamp), and even when it does it may not mean the
        same instant (timestamp to timestamptz depends on the zone the naive values were in), so the table is read
        again from the start rather than risk skipping rows. Widening an integer keeps the values: no re-read.
        """
        plan, state = self.plan, self.state
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
                state.deletes_digest = state.deletes_bound = None  # its pairs hold the old cursor's values
        state.cursor_column = current

    def probe(self, read: Read) -> None:
        """Runs a read for no row: what would fail it (a privilege, a hidden system column, a dropped column) fails
        here, before anything in the destination is truncated."""
        self._client.query(sql.SQL("{} LIMIT 0").format(read.statement), read.params)

    def truncate(self) -> None:
        """Marks every row sent before as deleted; rows upserted after stay live."""
        self.state.landing = landing.note(self.state.landing, "truncated", [])
        self._hold(_truncate, [{}])

    def delete(self, keys: dict[str, str]) -> None:
        """Deletes one row of the destination by its key, counted towards the next checkpoint."""
        if self.plan.sent_as and self.plan.primary_key:  # else the key is the row id, never renamed
            keys = {self.plan.sent_as.get(name, name): value for name, value in keys.items()}
        self._hold(op.delete, [keys])
        self._report.deleted += 1
        self._sent(1)

    def progressed(self) -> None:
        """Progress that sent nothing (a leaf done, a phase over): a checkpoint if CHECKPOINT_SECONDS passed."""
        self._checkpoints.progressed(self._before_checkpoint)

    def read_all(
        self,
        build: Callable[[], Read],
        prepare: Callable[[list[tuple], list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
        on_restart: Callable[[], None] | None = None,
    ) -> list[str] | None:
        """Streams a read to the end, reconnecting and continuing from the last row sent when the connection drops.

        `prepare` gives the rows of a batch their ids (and may leave some out) from the batch as read. A read without
        positions (`on_restart` given) starts again from its beginning instead; one built anew from what was sent
        (no position columns, no `on_restart`) goes on from there.
        Returns the position of the last row read, or None when the read returned nothing.
        """
        resumable = on_restart is None
        last_position = None
        failures_without_progress = 0
        while True:
            read = build()
            rows_before = self._report.rows
            try:
                for batch in self._client.stream(read.statement, read.params, self._row_bytes):
                    self._row_bytes = batch.size // len(batch)
                    self._send(batch, prepare)
                    if read.position_columns:
                        last_row = batch[-1]
                        last_position = [position_text(last_row[i]) for i in read.position_columns]
                        self.state.position = last_position
                    self._sent(len(batch), batch.size)
                return last_position
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
                    f"{self.plan.state_key}: {what} ({reason}); reconnecting and continuing "
                    f"{'after ' + str(self.state.position) if resumable else 'from the start'}"
                )
                if on_restart is not None:
                    on_restart()

    def _send(
        self, batch: list[tuple], prepare: Callable[[list[tuple], list[dict[str, Any]]], list[dict[str, Any]]] | None
    ) -> None:
        rows = self.upsert_ready(batch)
        if prepare is not None:
            rows = prepare(batch, rows)
        self._hold(self._operation, rows)
        self._report.rows += len(rows)

    def _hold(self, operation: Callable[..., None], rows: list[dict[str, Any]]) -> None:
        """Rows for the SDK once the next checkpoint saved the state they may change (`checkpoints.py`)."""
        plan = self.plan
        self._checkpoints.hold(plan.state_key, operation, plan.destination_table, plan.destination_schema, rows)

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

    def _sent(self, count: int, size: int = 0) -> None:
        """Counts rows or deletes sent (holding about `size` bytes) towards the next checkpoint, and logs the table's
        progress at each."""
        if self._checkpoints.sent(count, self._before_checkpoint, size):
            self._log_progress()

    def _before_checkpoint(self) -> None:
        for save in self._saves:
            save()

    @contextlib.contextmanager
    def saving(self, save: Callable[[], None], checked: bool = False) -> Iterator[None]:
        self._saves.append(save)
        try:
            yield
        except BaseException:
            if checked:
                save()
            raise
        finally:
            self._saves.remove(save)

    def together(self, save: Callable[[], None]) -> AbstractContextManager[None]:
        return self._checkpoints.deferred(save)

    def expect(self, rows: int) -> None:
        self._expected_rows = rows

    def _log_progress(self, final: bool = False) -> None:
        rows = self._report.rows
        elapsed = max(time.monotonic() - self._started, 1e-6)
        estimate = self._expected_rows
        share = f", {min(100.0, 100.0 * rows / estimate):.0f}% of ~{estimate:,} estimated" if estimate else ""
        verb = "done" if final else "progress"
        deleted = f", {self._report.deleted:,} row ids deleted" if self._report.deleted else ""
        log.info(f"{self.plan.state_key}: {verb}, {rows:,} rows, {rows / elapsed:,.0f} rows/s{share}{deleted}")

    def _finish(self) -> None:
        self.progressed()
        self._log_progress(final=True)
        for column, count in self._report.out_of_range_counts.items():
            examples = ", ".join(self._report.out_of_range[column])
            op.warning(
                f"{self.plan.state_key}.{column}: {count} value(s) the destination type cannot hold "
                f"(e.g. {examples}) were stored as NULL"
            )
