"""What each leaf of a partitioned append-optimized keyless table (Greenplum) holds, in a few bytes: its contents'
pairs (`content_digest`) counted and their hashes summed, a "print". A row's leaf follows from its values, so
identical rows lie in one leaf and the table's pairs are the union of its leaves'.

When the catalog says some leaves changed (a VACUUM compacted one, VACUUM FULL or a redistribution rewrote one, an
exchanged partition replaced one), a scan of those leaves alone tells whether they still hold, between them, the
contents their saved prints say: then the table's digest stands, nothing is sent and no other leaf is read. A print
is a sum, so an exchange shows as a leaf gone and one come with the same print. Rows inserted or deleted there are
told by the leaf's own digest when it has one (`changed_leaves`), else by the scan of the whole table, which takes the
prints again.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from append_optimized import base36

Print = tuple[int, int]  # (pairs, the sum of their hashes mod 2^64)

_MASK = 2**64 - 1


def add_prints(print_: Print, hashes: np.ndarray) -> Print:
    """The print with these pairs' hashes (int64) added."""
    total = int(hashes.view(np.uint64).sum(dtype=np.uint64)) if len(hashes) else 0
    return print_[0] + len(hashes), (print_[1] + total) & _MASK


def summed(prints: Iterable[Print]) -> Print:
    pairs, total = 0, 0
    for count, hashes in prints:
        pairs, total = pairs + count, (total + hashes) & _MASK
    return pairs, total


def contents_kept(saved: dict[str, Print], scanned: dict[str, Print], gone: Iterable[str]) -> bool:
    """Whether the leaves scanned (those the catalog says changed, new ones among them) hold the contents that they
    and the leaves gone held when the prints were saved: a leaf never saved held nothing."""
    before = [saved.get(key, (0, 0)) for key in [*scanned, *gone]]
    return summed(scanned.values()) == summed(before)


def encode(prints: dict[str, Print]) -> str:
    """`leaf=pairs.sum;...` in base 36, leaves sorted."""
    return ";".join(f"{key}={base36(count)}.{base36(total)}" for key, (count, total) in sorted(prints.items()))


def decode(text: str | None) -> dict[str, Print]:
    prints = {}
    for part in filter(None, (text or "").split(";")):
        key, numbers = part.split("=", 1)
        count, total = numbers.split(".")
        prints[key] = (int(count, 36), int(total, 36))
    return prints
