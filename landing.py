"""What a table sent after its saved state, which may have landed: the journal that makes a checkpoint exact.

The SDK's checkpoint writes the rows sent so far, then saves the state; a sync killed between the two leaves the
destination ahead of the state it saved. So the operations sent since a checkpoint are held (`checkpoints.py`) until
the next one has saved, with each table that sent some saved as it stood before them, with this journal of what
they may have changed. The sync that starts from it makes those rows what its state says first:

- `truncated`: a truncate may have landed, so the table is synced again from its first pass.
- `contents`: a keyless table's contents held by other counts, `[content, before, after]` in the order sent: the
  ids between the two counts are deleted, and the digest moves to the lower count (what the destination then
  holds).
- `keys`: a keyed table's keys sent or deleted, `[key, words, h]` with the pair its digest held then (words null:
  none): each is deleted, and its pair leaves the digest, so the next difference sends it again when the source
  holds it.
- `reads`: a full pass's rows read past its saved position, `[digest, last position]`: the digest of the
  (content, rows) pairs sent (a keyed pass's: of the keys), whose difference with the source's from the position to
  the last tells the contents that now have fewer rows (the keys gone).
- `fills`: a keyless Greenplum leaf's rows sent whole, `[digest, first content, last content, leaf]`: the same, of
  the leaf's contents between the two.
"""

from __future__ import annotations

from typing import Any

_PARTS = ("contents", "keys", "reads", "fills")
# The sub-table size of a `reads` digest: 48 cells (1 to 4 KB packed, by key width), which name the few rows that
# change in one checkpoint's range between a kill and the next sync; more, and the pass starts again.
READS_SUB_SIZE = 16


def note(journal: dict[str, Any] | None, part: str, entry: list[Any]) -> dict[str, Any]:
    """The journal with one more entry (or `truncated`, entry ignored)."""
    journal = journal if journal is not None else {}
    if part == "truncated":
        journal["truncated"] = True
    else:
        journal.setdefault(part, []).append(entry)
    return journal


def joined(earlier: dict[str, Any] | None, later: dict[str, Any] | None) -> dict[str, Any] | None:
    """Two journals, the earlier's entries first: a sync killed again before its repairs landed repairs both."""
    if not earlier or not later:
        return earlier or later or None
    journal: dict[str, Any] = {"truncated": True} if earlier.get("truncated") or later.get("truncated") else {}
    for part in _PARTS:
        entries = [*earlier.get(part, []), *later.get(part, [])]
        if entries:
            journal[part] = entries
    return journal


def is_valid(journal: Any) -> bool:
    """Whether a saved journal has the shape `note` gives it."""
    if journal is None:
        return True
    if not isinstance(journal, dict) or set(journal) - {"truncated", *_PARTS}:
        return False
    if journal.get("truncated", True) is not True:
        return False
    return all(isinstance(journal.get(part, []), list) for part in _PARTS) and all(
        isinstance(entry, list) for part in _PARTS for entry in journal.get(part, [])
    )
