"""What a table's pass may do, and nothing more: read rows and send them, delete rows by key, truncate, note progress
and the rows it expects to send, and save its own state when a checkpoint comes.

`sync.TableSync` implements `TableSink`; every pass (`keyed_pass`, `keyless_pass`, `incremental_deletes`) and what
they share (`reconciliation`, `ao_keyed`, `leaf_survey`) receives one, so what a pass can do to the destination is
read here, without `sync.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from block_ranges import Hashing
from catalog import Flavour
from greenplum_client import GreenplumClient
from planning import TablePlan
from reads import Read
from state import TableState

# Gives the rows of a batch as read (`raw`, with any extra columns last) their ids, or leaves some out: what is
# returned is sent.
Prepare = Callable[[list[tuple], list[dict[str, Any]]], list[dict[str, Any]]]


@dataclass(frozen=True)
class Source:
    """The server a pass reads: its connection, its flavour, the cheapest 64-bit hash it has for digests, and its
    primary segments (content ids; none on PostgreSQL)."""

    client: GreenplumClient
    flavour: Flavour
    hashing: Hashing
    segments: list[int]


class TableSink(Protocol):
    """One table's way to the destination and to its saved state."""

    @property
    def plan(self) -> TablePlan: ...

    @property
    def state(self) -> TableState:
        """The table's state: changed in place by the pass, saved whole at each checkpoint."""
        ...

    @property
    def source(self) -> Source: ...

    def read_all(
        self, build: Callable[[], Read], prepare: Prepare | None = None, on_restart: Callable[[], None] | None = None
    ) -> list[str] | None:
        """Sends every row of a read (`prepare` may give them ids or leave some out), continuing after the last row
        sent when the connection drops (or, with `on_restart`, which is called then, from the read's beginning);
        returns the position of the last row read, or None when it returned nothing."""
        ...

    def probe(self, read: Read) -> None:
        """Runs a read for no row: what would fail it fails here, before anything is truncated."""
        ...

    def truncate(self) -> None:
        """Marks every row sent before as deleted; rows upserted after stay live."""
        ...

    def delete(self, keys: dict[str, Any]) -> None:
        """Deletes one destination row by its key."""
        ...

    def progressed(self) -> None:
        """Progress that sent nothing (a leaf done, a phase over): a checkpoint if enough time passed."""
        ...

    def expect(self, rows: int) -> None:
        """The rows the table's reads are now expected to send, for the progress lines (0: not known)."""
        ...

    def saving(self, save: Callable[[], None], checked: bool = False) -> AbstractContextManager[None]:
        """Within it, `save` runs before each checkpoint: state the pass keeps in another form (a digest being
        built, a leaf's segment files) is written into `state` then. `checked`: it runs when an error leaves it too,
        for what it saves is checked before it is used (what a read noted, and the position it reached)."""
        ...

    def together(self, save: Callable[[], None]) -> AbstractContextManager[None]:
        """Within it no checkpoint is taken: what is sent there lands with the state saved after it (`save` run
        first), or not at all."""
        ...
