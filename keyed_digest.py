"""A keyed table's difference digest as its state keeps it (`TableState.digest` and its companions), and what the
ways of sending its changes start from: a new digest sized for the table, the digest's scan of the table now, a full
pass begun, and a key no digest can carry.

`reconciliation.py` sends a difference that the digest names; `past_capacity.py` and `every_row.py` what it cannot.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from fivetran_connector_sdk import Logging as log

import difference_digest as dd
from ao_keyed import AoNow, HighWater, PassNotes, append_optimized_now
from block_ranges import cancelled_as_digest
from digest_pairs import scan_cells
from key_encoding import KeyEncoding
from key_ranges import KeyRanges
from planning import PlannedColumn

if TYPE_CHECKING:
    from table_sink import TableSink


class Outcome(enum.Enum):
    SENT = "sent"  # what changed was sent; the table is done
    FULL_PASS = "full pass"  # the digest cannot tell: a truncate and a full read, whose rows make the next digest
    NOT_APPLICABLE = "not applicable"  # keys the digest cannot carry: the table's other path


class KeyedDigest:
    """One keyed table's digest, and the sink its changes go through."""

    def __init__(self, sink: TableSink, encoding: KeyEncoding) -> None:
        self.sink, self.plan, self.state = sink, sink.plan, sink.state
        self.client, self.hashing = sink.source.client, sink.source.hashing
        self.encoding = encoding
        self.rows = max(self.plan.estimated_rows, 0)  # the table's rows, as the last digest's scan counted them

    def new_cells(self) -> dd.Cells:
        """An empty digest sized for the table, with its digest of keys and key ranges."""
        sub_size = dd.choose_sub_size(self.rows, self.state.digest_sizes or [], self.encoding.codec.words)
        return dd.Cells(sub_size, self.encoding.codec, dd.keys_sub_size(sub_size), KeyRanges())

    def remember(self, pairs: int) -> None:
        """A difference seen, which sizes the next digest."""
        self.state.digest_sizes = dd.with_difference(self.state.digest_sizes, pairs)

    def scan(self, saved: dd.Cells, columns: list[PlannedColumn], located: HighWater | None) -> dd.Cells:
        """The cells of the table's rows now, hashing the given columns, of the saved digest's sizes (`located` takes
        where the rows are); DigestCancelled when statement_timeout cancels the scan."""
        keys_sub_size = saved.keys.sub_size if saved.keys is not None else None
        with cancelled_as_digest("the difference digest's scan"):
            cells, self.rows = scan_cells(
                self.client,
                self.plan,
                self.hashing,
                self.encoding,
                columns,
                saved.sub_size,
                keys_sub_size,
                located=located,
                ranges=KeyRanges(saved.ranges.shift if saved.ranges is not None else 0),
            )
        return cells

    def start_pass(self, now: AoNow | None) -> Outcome:
        """A full pass begins: its digest is made of the rows it reads (`pass_digest`), with the catalog's facts
        taken before it and what it notes of append-optimized leaves."""
        state = self.state
        state.pass_digest, state.pass_held, state.pass_ranges = self.new_cells().pack(), None, None
        state.digest_ao, state.digest_leaves = None, None
        self.start_noting(now)
        return Outcome.FULL_PASS

    def start_noting(self, now: AoNow | None) -> None:
        """A read of every row begins: the catalog's facts before it, and what it notes of append-optimized leaves."""
        state = self.state
        state.pass_digest_ao = now.text if now is not None else None
        flavour = self.sink.source.flavour
        state.pass_digest_leaves = PassNotes.start(self.client, flavour, now) if now is not None else None

    def unfit(self, error: dd.KeyTooLong) -> Outcome:
        """A key no digest carries: the table's block range digests from now on."""
        log.info(f"{self.plan.state_key}: {error}: its digest cannot carry it; block range digests instead")
        state = self.state
        state.digest_unfit, state.digest, state.pass_digest, state.pass_held = True, None, None, None
        state.pass_ranges = None
        state.digest_leaves = state.pass_digest_leaves = None
        return Outcome.NOT_APPLICABLE

    def append_optimized_now(self) -> AoNow | None:
        """The catalog's facts of the table's leaves, when they are all append-optimized (Greenplum)."""
        return append_optimized_now(self.client, self.sink.source.flavour, self.plan)
