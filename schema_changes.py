"""What changed in a table's columns since its last sync, and what the destination needs for it.

Each table's state keeps the columns it was synced with (name and type, in order) and its key. A column added or
renamed holds no value on the destination's existing rows, and no digest or catalog fingerprint need change with it
(a rename changes no value; Greenplum adds a column to column-oriented storage without rewriting it), so such columns
are backfilled: named here, sent by the strategy (`TableSync`). A changed key re-syncs the table as new. The decisions
are plain functions of the saved and current column lists.
"""

from __future__ import annotations

from dataclasses import dataclass

import block_ranges
from planning import PlannedColumn, Strategy, TablePlan
from state import LeafState, TableState

# Retypes whose values land as before (the destination widens the column): no backfill. Any other retype of a column
# (text to integer, numeric to text, a scale changed) sends its values again.
_WIDENING = {("INT", "LONG"), ("FLOAT", "DOUBLE")}


@dataclass(frozen=True)
class ColumnChanges:
    """How a table's columns differ from those it was synced with."""

    added: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    renamed: tuple[tuple[str, str], ...] = ()  # (old name, new name): gone and new at the same position, same type
    retyped: tuple[tuple[str, str, str], ...] = ()  # (name, old type, new type)
    key_change: str = ""  # what changed of the key, when it did

    def __bool__(self) -> bool:
        return bool(self.added or self.dropped or self.renamed or self.retyped or self.key_change)

    @property
    def backfill(self) -> tuple[str, ...]:
        """The columns whose values the destination does not hold on its existing rows."""
        retyped = tuple(name for name, old, new in self.retyped if not _widens(old, new))
        return self.added + tuple(new for _, new in self.renamed) + retyped

    def describe(self) -> str:
        parts = []
        if self.added:
            parts.append("added " + ", ".join(self.added))
        if self.renamed:
            parts.append("renamed " + ", ".join(f"{old} to {new}" for old, new in self.renamed))
        if self.dropped:
            parts.append("dropped " + ", ".join(self.dropped))
        if self.retyped:
            parts.append("retyped " + ", ".join(f"{name} from {old} to {new}" for name, old, new in self.retyped))
        if self.key_change:
            parts.append(self.key_change)
        return "; ".join(parts)


def column_list(plan: TablePlan) -> list[list[str]]:
    """What a table's state keeps of its columns: [name, type] in order (excluded columns are not planned)."""
    return [[column.name, column_type(column)] for column in plan.columns]


def column_type(column: PlannedColumn) -> str:
    """The source type and the type it lands as: `int4 INT`, `numeric DECIMAL(10,2)`."""
    fivetran = column.fivetran
    landed = f"DECIMAL({fivetran.precision},{fivetran.scale})" if fivetran.name == "DECIMAL" else fivetran.name
    return f"{column.source_type} {landed}".strip()


def compare(saved: list[list[str]], saved_key: list[str], plan: TablePlan) -> ColumnChanges:
    """The changes from the saved columns and key to the plan's. A name gone and a new one at the same position with
    the same type is taken for a rename (the values are the same either way)."""
    old = {name: (index, kind) for index, (name, kind) in enumerate(saved)}
    new = {name: (index, kind) for index, (name, kind) in enumerate(column_list(plan))}
    gone = [name for name in old if name not in new]
    came = [name for name in new if name not in old]
    renamed = []
    for name in list(gone):
        match = [other for other in came if new[other] == old[name]]
        if match:
            renamed.append((name, match[0]))
            gone.remove(name)
            came.remove(match[0])
    retyped = tuple(
        (name, old[name][1], kind) for name, (_, kind) in new.items() if name in old and old[name][1] != kind
    )
    key_change = ""
    if list(plan.primary_key) != saved_key:
        before = "+".join(saved_key) or "none"
        key_change = f"the key was {before} and is now {'+'.join(plan.primary_key) or 'none'}"
    elif any(name in plan.primary_key and not _widens(before, after) for name, before, after in retyped):
        key_change = "a key column was retyped"
    return ColumnChanges(tuple(came), tuple(gone), tuple(renamed), retyped, key_change)


def needs_resync(changes: ColumnChanges, strategy: Strategy) -> bool:
    """A changed key makes every destination row's key another; an append-only table's row ids are a hash of the
    row's text, which any column change changes: both are synced again as new."""
    return bool(changes.key_change) or (strategy is Strategy.APPEND_ONLY and bool(changes))


def forget_baselines(state: TableState) -> None:
    """Makes a keyed full pass send every live row once: each block range reads as changed, each append-optimized
    leaf is read whole once more, and a read in progress starts again (the rows it sent lack the new columns)."""
    for leaves in (state.leaves, state.pass_leaves):
        for key, saved in (leaves or {}).items():
            if saved.ao is not None:
                saved.ao["resend"] = 1
            else:
                ranges = dict.fromkeys(block_ranges.saved_ranges(saved), "")
                leaves[key] = LeafState(saved.digest, 0, None, block_ranges.ranges_state(ranges).ranges)
    state.position = None


def _widens(old: str, new: str) -> bool:
    old_landed, new_landed = old.rpartition(" ")[2], new.rpartition(" ")[2]
    if old_landed == new_landed or (old_landed, new_landed) in _WIDENING:
        return True
    if old_landed.startswith("DECIMAL(") and new_landed.startswith("DECIMAL("):
        (old_precision, old_scale), (new_precision, new_scale) = _decimal(old_landed), _decimal(new_landed)
        return old_scale == new_scale and new_precision >= old_precision
    return False


def _decimal(landed: str) -> tuple[int, int]:
    precision, scale = landed[len("DECIMAL(") : -1].split(",")
    return int(precision), int(scale)
