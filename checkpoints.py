"""When progress is worth saving: `op.checkpoint` after CHECKPOINT_ROWS rows or deletes, CHECKPOINT_MEGABYTES of
values or CHECKPOINT_SECONDS since the last checkpoint, counted across every table of the sync, and once at its end.
The SDK holds every row sent until the next checkpoint, so bytes bound its memory where rows are wide.

Never per table or per leaf: each checkpoint of the SDK's runner brings every declared table up to its declaration, so
its cost grows with the table count, and a checkpoint per table would make a sync of many small tables cost the square
of their number. A sync killed between two checkpoints repeats what it sent since the last one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fivetran_connector_sdk import Operations as op

from state import SyncState


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
        try:
            op.checkpoint(self._sync_state.as_json())
        except Exception as error:
            raise CheckpointFailed(f"saving the sync's state failed: {error}") from error
        self._sent_since, self._bytes_since, self._progress_since, self._last = 0, 0, False, self._clock()
        self.taken += 1
