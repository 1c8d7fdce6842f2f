"""When progress is worth saving: `op.checkpoint` after CHECKPOINT_ROWS rows or deletes, CHECKPOINT_MEGABYTES of
values or CHECKPOINT_SECONDS since the last checkpoint, counted across every table of the sync, and once at its end.
The SDK holds every row sent until the next checkpoint, so bytes bound its memory where rows are wide.

Never per table or per leaf: each checkpoint of the SDK's runner brings every declared table up to its declaration, so
its cost grows with the table count, and a checkpoint per table would make a sync of many small tables cost the square
of their number.

The SDK writes the rows sent, then saves the state: a sync killed between the two has landed rows its saved state
does not know of. So what is sent between two checkpoints is held, and given to the SDK just after the second, whose
state saves each table that sent some as it stood at the first, with a journal of what it sent (`landing.py`): the
state saved never lags the destination by more than the journal names. A sync killed anywhere repeats what it sent
since the state it saved: up to two checkpoints' rows, after undoing the journal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from fivetran_connector_sdk import Operations as op

import landing
from state import SyncState

# An operation of the SDK's (`op.upsert`, `op.delete`, ...), the table and schema it goes to, and its rows or keys.
Held = tuple[Callable[..., None], str, str | None, list[dict[str, Any]]]


class CheckpointFailed(RuntimeError):
    """The SDK could not save what was sent and the state: the sync stops, whatever table was being synced."""


class Checkpoints:
    """Counts what a sync sends and saves its state when enough was sent or enough time passed since the last save."""

    def __init__(
        self,
        sync_state: SyncState,
        rows_between: int,
        seconds_between: int,
        clock: Callable[[], float] = time.monotonic,
        bytes_between: int = 2**62,
    ) -> None:
        self._sync_state = sync_state
        self._rows_between = rows_between
        self._bytes_between = bytes_between
        self._bytes_since = 0
        self._seconds_between = seconds_between
        self._clock = clock
        self._sent_since = 0
        self._progress_since = False
        self._last = clock()
        self._deferred = False
        self.taken = 0
        self._held: list[Held] = []  # sent since the last checkpoint, given to the SDK after the next one
        self._sending: set[str] = set()  # the tables that sent them
        # Each table's state as the last checkpoint saved it (at first, as the sync found it): what a table that
        # sends rows now is saved as until they land.
        self._saved = {key: asdict(table) for key, table in sync_state.tables.items()}

    @contextmanager
    def deferred(self, before: Callable[[], None] | None = None) -> Iterator[None]:
        """No checkpoint inside: what is sent there lands with the state saved after it, or not at all (operations
        whose effect the state must record together). A checkpoint that fell due is taken on leaving."""
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = False
        if self._enough_sent():
            self.now(before)
        else:
            self._if_due(before)

    def hold(
        self, state_key: str, operation: Callable[..., None], table: str, schema: str | None, rows: list[dict[str, Any]]
    ) -> None:
        """Holds rows (or keys, or one truncate: `[{}]`) for `operation` until the next checkpoint has saved."""
        self._held.append((operation, table, schema, rows))
        self._sending.add(state_key)

    def sent(self, count: int, before: Callable[[], None] | None = None, size: int = 0) -> bool:
        """Counts `count` rows or deletes sent, holding about `size` bytes; checkpoints when they make CHECKPOINT_ROWS
        or CHECKPOINT_MEGABYTES, or when CHECKPOINT_SECONDS passed with progress unsaved, calling `before` first.
        Returns whether it checkpointed."""
        self._sent_since += count
        self._bytes_since += size
        self._progress_since = True
        if self._deferred:
            return False
        if self._enough_sent():
            self.now(before)
            return True
        return self._if_due(before)

    def _enough_sent(self) -> bool:
        return self._sent_since >= self._rows_between or self._bytes_since >= self._bytes_between

    def progressed(self, before: Callable[[], None] | None = None) -> bool:
        """Notes progress that sent nothing (a leaf found unchanged, a table done); checkpoints only when
        CHECKPOINT_SECONDS passed since the last checkpoint."""
        self._progress_since = True
        return self._if_due(before)

    def _if_due(self, before: Callable[[], None] | None) -> bool:
        if self._deferred:
            return False
        if self._progress_since and self._clock() - self._last >= self._seconds_between:
            self.now(before)
            return True
        return False

    def now(self, before: Callable[[], None] | None = None) -> None:
        """Saves the state whatever was sent: at the end of the sync. `before` brings the state up to date first."""
        if before is not None:
            before()
        now = self._sync_state.as_json()
        saved = {}
        for key, entry in now["tables"].items():
            if key not in self._sending:
                saved[key] = entry
            elif key in self._saved:  # else a table first synced since: its next sync is a first one again
                earlier = self._saved[key]
                saved[key] = {**earlier, "landing": landing.joined(earlier.get("landing"), entry.get("landing"))}
        try:
            op.checkpoint({**now, "tables": saved})
        except Exception as error:
            raise CheckpointFailed(f"saving the sync's state failed: {error}") from error
        for key in self._sending & now["tables"].keys():
            now["tables"][key]["landing"] = self._sync_state.tables[key].landing = None
        self._saved = now["tables"]
        held, self._held, self._sending = self._held, [], set()
        for operation, table, schema, rows in held:
            for row in rows:
                operation(table, row, schema=schema)
        self._sent_since, self._bytes_since, self._progress_since, self._last = 0, 0, False, self._clock()
        self.taken += 1

    def finish(self) -> None:
        """The sync's last checkpoints: the one that gives the SDK what is held, and the one that saves it landed."""
        held = bool(self._held)
        self.now()
        if held:
            self.now()
