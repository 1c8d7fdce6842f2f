"""Which leaves of a keyless append-optimized table (Greenplum) changed, and what scanning them alone tells: each
leaf's print (`leaf_prints.py`) says whether it still holds the contents it held, and the few leaves that changed
last keep a digest of contents of their own, which names what changed there. A leaf that only lost rows (deleted,
not yet compacted) holds what it held, hidden rows included, when no row was hidden there then: read back with
`gp_select_invisible`, its rows name what was deleted. A leaf that held nothing, and past
the table's digest a leaf that only gained rows, need no naming: it is sent whole. The keyless pass
(`keyless_pass.py`) sends what this finds and saves the prints and digests back; nothing here sends.

A leaf is tried alone only where the user may read it by its name (read through the table, filtered by tableoid, a
leaf costs a scan of every leaf), and not when more than half the leaves changed with only a print: scanned in vain
when their contents changed, they would cost more than the table's scan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fivetran_connector_sdk import Logging as log
from psycopg2 import sql

import difference_digest as dd
import leaf_prints
from ao_keyed import AoNow, append_optimized_now
from block_ranges import Hashing, cancelled_as_digest
from catalog import Flavour
from content_digest import ContentScan, scan_contents
from greenplum_client import GreenplumClient, HiddenRowsUnavailable
from leaves import Leaf, leaf_order
from planning import TablePlan
from state import TableState

_LEAVES_WITH_DIGESTS = 4  # leaves changed in one sync that get digests of their own, at most
_LEAF_DIGEST_BYTES = 512_000  # and their cells' packed size, at most (the table's own is up to 1 MB)
# The most a digest of a leaf that only lost rows may take while a sync names them (kept after it only as above): about
# 220,000 rows deleted, past the table's digest, the peel taking seconds, next to minutes of sending the deletes.
_READ_BACK_BYTES = 16_000_000


@dataclass(frozen=True)
class Found:
    """What a scan found (of the changed leaves alone, or of the table): the difference to send, the table's digest
    once it has landed, every leaf's print then (None: not known) and the leaves' own digests, the leaves where
    the rows of the contents gained lie (None: read the table), and the leaves that held nothing, whose every row is
    sent: the digest, prints and digests then take their contents as they are read."""

    pairs: list[dd.Pair]
    expected: dd.Cells
    prints: dict[str, leaf_prints.Print] | None
    digests: dict[str, dd.Cells]
    leaves: list[Leaf] | None
    filled: dict[str, int] = field(default_factory=dict)  # leaf -> its digest's size (0: none)
    grown: list[str] = field(default_factory=list)  # of those, the leaves that held rows (`appended_alone`)


def scan_alone(
    client: GreenplumClient,
    flavour: Flavour,
    plan: TablePlan,
    hashing: Hashing,
    state: TableState,
    held: dd.Cells,
    now: AoNow,
) -> Found | None:
    """What changed since `held` (the table's saved digest), from the leaves the catalog says changed: those with a
    digest of their own by its difference; those that only lost rows (deleted: none written), without a digest or
    past it, by the difference from their rows read with those hidden, which print as the leaf was printed when no
    row was hidden there then, however many rows they lost, past the table's digest too (the leaf then gets a digest
    of its own); the others (and the leaves gone) by their prints, which must show the
    contents they held (a compaction, a rewrite, an exchange of the same rows). A leaf that held nothing (a partition
    added, or one created ahead and loaded since) is not scanned: its rows are all gained, whatever their number, and
    no other leaf holds their contents. None when some content changed where only a print was kept, or more than a
    leaf's digest holds (its estimate joins the table's recent differences): the whole table is to be scanned."""
    changed, gone = now.changed_since(state.digest_ao), now.gone_since(state.digest_ao)
    if state.digest_prints is None or not _readable_alone(now, changed):
        return None
    digests = {key: dd.Cells.unpack(text) for key, text in (state.leaf_digests or {}).items()}
    saved = leaf_prints.decode(state.digest_prints)
    filled = held_nothing(saved, changed, gone)
    if 2 * len([key for key in changed if key not in digests and key not in filled]) > len(now.leaves):
        return None
    scanned, leaf_cells, pairs, sending, read_back = {}, {}, [], [], 0
    with cancelled_as_digest("the scan of its contents"):
        for key in changed:
            if key in filled:
                continue
            only_lost = key in saved and now.only_hidden_since(state.digest_ao, key)
            if key not in digests and not only_lost:
                scanned[key] = scan_contents(client, plan, hashing, 1, leaf=now.leaves[key]).print
                continue
            named = _by_own_digest(client, plan, hashing, state, now.leaves[key], digests.get(key))
            if named is None and only_lost:
                named = _by_rows_hidden(client, flavour, plan, hashing, state, now, key, saved[key])
                read_back += 1
            if named is None:
                return None
            leaf_pairs, scan = named
            pairs += leaf_pairs
            saved[key], leaf_cells[key] = scan.print, scan.cells
            sending += [now.leaves[key]] if leaf_pairs else []
    if not leaf_prints.contents_kept(saved, scanned, gone) or (gone and pairs):
        log.info(f"{plan.state_key}: rows changed in {len(changed):,} of its leaves: its contents are scanned")
        return None
    log.info(
        f"{plan.state_key}: {len(changed):,} leaves changed in the catalog and {len(gone):,} gone, each scanned "
        f"alone: {len(leaf_cells) - read_back:,} by its own digest, {read_back:,} that only lost rows by those rows "
        f"read back hidden, {len(filled):,} that held nothing read whole, the others hold the contents they held"
    )
    for key in gone:
        saved.pop(key, None)
        digests.pop(key, None)
    expected = held.copy()
    for pair in pairs:
        expected.add_pair(pair.sign, pair.words, pair.h)
    kept, fill_sizes = _digests_with_filled(now, digests | leaf_cells, filled, state.digest_sizes or [])
    return Found(pairs, expected, saved | scanned, kept, sending, fill_sizes)


Named = tuple[list[dd.Pair], ContentScan] | None  # a leaf's difference and its scan now


def _by_own_digest(
    client: GreenplumClient,
    plan: TablePlan,
    hashing: Hashing,
    state: TableState,
    leaf: Leaf,
    digest: dd.Cells | None,
) -> Named:
    """A leaf's difference by the digest of its own, when it has one that holds it (past it, the estimate joins the
    table's recent differences, for the digests to come)."""
    if digest is None:
        return None
    scan = scan_contents(client, plan, hashing, digest.sub_size, leaf=leaf)
    difference = scan.cells.subtract(digest)
    leaf_pairs = difference.peel()
    if leaf_pairs is not None:
        return leaf_pairs, scan
    log.info(f"{plan.state_key}: more contents changed in leaf {leaf.key} than its digest holds")
    state.digest_sizes = dd.with_difference(state.digest_sizes, difference.estimated_pairs())
    return None


def _by_rows_hidden(
    client: GreenplumClient,
    flavour: Flavour,
    plan: TablePlan,
    hashing: Hashing,
    state: TableState,
    now: AoNow,
    key: str,
    printed: leaf_prints.Print,
) -> Named:
    """A leaf that only lost rows: its difference from what it held, its rows read with those hidden, when no row
    was hidden there then (they print as it was printed), however many rows it lost, within `_READ_BACK_BYTES`.
    Read first: where rows were hidden then, the leaf's own scan would be spent."""
    size = _size_for_deletes(client, flavour, now, key, state)
    if size is None:
        log.info(f"{plan.state_key}: leaf {key} lost more rows than are told one by one")
        return None
    try:
        held_then = _held_with_hidden(client, plan, hashing, size, now.leaves[key], printed)
    except HiddenRowsUnavailable as error:
        log.info(f"{plan.state_key}: leaf {key} lost rows, but {error}")
        return None
    if held_then is None:
        log.info(
            f"{plan.state_key}: leaf {key} held rows deleted before the last sync and not yet compacted: the rows "
            "deleted since cannot be told from them"
        )
        return None
    scan = scan_contents(client, plan, hashing, size, leaf=now.leaves[key])
    difference = scan.cells.subtract(held_then)
    leaf_pairs = difference.peel()
    if leaf_pairs is None:  # sized for every row hidden: rows deleted while the scans ran
        log.info(f"{plan.state_key}: more contents changed in leaf {key} than its rows hidden tell")
        return None
    return leaf_pairs, scan


def _size_for_deletes(client: GreenplumClient, flavour: Flavour, now: AoNow, key: str, state: TableState) -> int | None:
    """A digest's size for a leaf that only lost rows: room for every row hidden there now (the catalog's count) to
    change its content's pair, however many the table's digest holds, and what the leaf's own digest would get;
    None past `_READ_BACK_BYTES`."""
    words = dd.Codec.CONTENT.words
    hidden = sum(sum(files.values()) for files in now.hidden_counts(client, flavour, [key]).values())
    cells = dd.cells_needed(2 * hidden)
    if cells * dd.cell_bytes(words) > _READ_BACK_BYTES:
        return None
    own = dd.choose_sub_size(now.facts[key].rows, state.digest_sizes or [], words, _LEAF_DIGEST_BYTES)
    return max(own, -(-cells // dd.K))


def _held_with_hidden(
    client: GreenplumClient, plan: TablePlan, hashing: Hashing, sub_size: int, leaf: Leaf, printed: leaf_prints.Print
) -> dd.Cells | None:
    """The digest of what a leaf that only lost rows held when its print was saved: its rows read with those hidden
    since (deleted, not yet compacted), which hold what it held when they print as it was printed (None when they
    do not: rows hidden before then are among them)."""
    scan = scan_contents(client, plan, hashing, sub_size, leaf=leaf, seeing_hidden=True)
    return scan.cells if scan.print == printed else None


def held_nothing(saved: dict[str, leaf_prints.Print], changed: list[str], gone: list[str]) -> list[str]:
    """The changed leaves that held no row when the prints were saved (none printed, or printed empty): when no
    leaf is gone, for a leaf exchanged in for one gone may hold the contents that one held."""
    return [] if gone else [key for key in changed if saved.get(key, (0, 0))[0] == 0]


def _digests_with_filled(
    now: AoNow, digests: dict[str, dd.Cells], filled: list[str], recent: list[int]
) -> tuple[dict[str, dd.Cells], dict[str, int]]:
    """The leaves' own digests kept, and the sizes of those the leaves that held nothing get as they are read: the
    newest leaves' (the likeliest to change next), at most `_LEAVES_WITH_DIGESTS` within `_LEAF_DIGEST_BYTES`."""
    words = dd.Codec.CONTENT.words
    sizes = {key: cells.sub_size for key, cells in digests.items()}
    sizes |= {key: dd.choose_sub_size(now.facts[key].rows, recent, words, _LEAF_DIGEST_BYTES) for key in filled}
    chosen, cells, most = set(), 0, _LEAF_DIGEST_BYTES // dd.cell_bytes(words)
    for key in sorted(sizes, key=leaf_order, reverse=True):
        if len(chosen) < _LEAVES_WITH_DIGESTS and cells + sizes[key] * dd.K <= most:
            chosen.add(key)
            cells += sizes[key] * dd.K
    kept = {key: cells for key, cells in digests.items() if key in chosen and key not in filled}
    return kept, {key: sizes[key] if key in chosen else 0 for key in filled}


def digests_after_scan(state: TableState, now: AoNow | None, scan: ContentScan) -> dict[str, dd.Cells]:
    """The leaves' own digests once the table's scan has landed: those it built, of the leaves it found changed, and
    those saved of leaves it found holding what their prints say (their digests still hold), the newest within
    `_LEAVES_WITH_DIGESTS` and `_LEAF_DIGEST_BYTES`."""
    if now is None or scan.leaf_prints is None:
        return dict(scan.leaf_cells)
    saved = leaf_prints.decode(state.digest_prints)
    still = {
        key: dd.Cells.unpack(text)
        for key, text in (state.leaf_digests or {}).items()
        if key not in scan.leaf_cells and key in saved and scan.leaf_prints.get(key) == saved[key]
    }
    kept, _ = _digests_with_filled(now, scan.leaf_cells | still, [], state.digest_sizes or [])
    return kept


def newest_leaf_digest_size(now: AoNow, recent: list[int]) -> dict[str, int]:
    """The leaf that gets a digest of its own from a first sync's scan, sized for its rows: the newest holding rows
    (partitions are created in order: the one taking loads, likeliest), when its digest fits `_LEAF_DIGEST_BYTES`."""
    holding = sorted((key for key, facts in now.facts.items() if facts.rows), key=leaf_order)
    if not holding:
        return {}
    key, words = holding[-1], dd.Codec.CONTENT.words
    size = dd.choose_sub_size(now.facts[key].rows, recent, words, _LEAF_DIGEST_BYTES)
    return {key: size}


def appended_alone(
    client: GreenplumClient,
    flavour: Flavour,
    plan: TablePlan,
    hashing: Hashing,
    state: TableState,
    now: AoNow,
    sub_size: int,
) -> Found | None:
    """Past the digest's capacity, when the leaves the catalog says changed only had rows appended (or held
    nothing): no row left them, so nothing need be deleted, and sending their every row again (under ordinals from
    1, as a leaf that held nothing is sent) lands them whole, without a truncate or a read of the other leaves. The
    digest expected is the other leaves', scanned now and printed as they were saved (else None: a leaf changed
    since the catalog was read), to which the leaves sent add theirs as they are read."""
    changed, gone = now.changed_since(state.digest_ao), now.gone_since(state.digest_ao)
    if state.digest_prints is None or gone or not changed or not _readable_alone(now, changed):
        return None
    saved = leaf_prints.decode(state.digest_prints)
    filled = held_nothing(saved, changed, gone)
    grown = [key for key in changed if key not in filled]
    if not _only_appended(client, flavour, now, state.digest_ao, grown):
        return None
    listed = sql.SQL(", ").join(sql.Literal(int(key)) for key in changed)
    with cancelled_as_digest("the scan of its contents"):
        others = scan_contents(
            client, plan, hashing, sub_size, sql.SQL("tableoid NOT IN ({})").format(listed), by_leaf=True
        )
    unchanged = (set(saved) | set(others.leaf_prints or {})) - set(changed)
    printed = others.leaf_prints
    if printed is None or any(printed.get(key, (0, 0)) != saved.get(key, (0, 0)) for key in unchanged):
        return None
    log.info(
        f"{plan.state_key}: the {len(changed):,} leaves that changed only gained rows (the catalog says so): "
        "their rows are sent again whole, without a truncate"
    )
    digests = {key: dd.Cells.unpack(text) for key, text in (state.leaf_digests or {}).items() if key not in changed}
    kept, fill_sizes = _digests_with_filled(now, digests, changed, state.digest_sizes or [])
    return Found([], others.cells, dict(printed), kept, None, fill_sizes, grown)


def still_only_appended(
    client: GreenplumClient, flavour: Flavour, plan: TablePlan, saved_ao: str | None, grown: list[str]
) -> bool:
    """Whether the leaves `appended_alone` sent again still show only rows appended since `saved_ao`, once they were
    read: a row deleted there before the read began and after the catalog was first read would stay live."""
    if not grown:
        return True
    now = append_optimized_now(client, flavour, plan)
    return now is not None and _only_appended(client, flavour, now, saved_ao, grown)


def _only_appended(
    client: GreenplumClient, flavour: Flavour, now: AoNow, saved_ao: str | None, keys: list[str]
) -> bool:
    """Whether the catalog shows only rows appended to these leaves since `saved_ao`: their files grew, and no row
    is hidden in them (deleted or updated away since, or before)."""
    if not all(now.only_appended_since(saved_ao, key) for key in keys):
        return False
    return not any(now.hidden_counts(client, flavour, keys).values())


def where_gained(plan: TablePlan, state: TableState, now: AoNow | None) -> list[Leaf] | None:
    """The leaves the catalog says changed, where the rows of the contents gained lie (None: read the table)."""
    if now is None or not plan.partitioned:
        return None
    changed = now.changed_since(state.digest_ao)
    return [now.leaves[key] for key in changed] if _readable_alone(now, changed) else None


def leaf_digest_sizes(plan: TablePlan, state: TableState, now: AoNow | None) -> dict[str, int]:
    """The leaves that get a digest of their own from the table's scan: those the catalog says changed, when they
    are few (a load into this month's partition, say), sized for their rows; none when they are many."""
    changed = now.changed_since(state.digest_ao) if now is not None else []
    if not changed or len(changed) > _LEAVES_WITH_DIGESTS or len(changed) >= len(now.leaves):
        return {}
    prints = leaf_prints.decode(state.digest_prints)
    spread = max(plan.estimated_rows // len(now.leaves), 0)
    contents = {key: prints[key][0] if key in prints else spread for key in changed}
    recent, words = state.digest_sizes or [], dd.Codec.CONTENT.words
    sizes = {key: dd.choose_sub_size(count, recent, words) for key, count in contents.items()}
    cells = sum(size * dd.K for size in sizes.values())
    return sizes if cells * dd.cell_bytes(words) <= _LEAF_DIGEST_BYTES else {}


def _readable_alone(now: AoNow, keys: list[str]) -> bool:
    return all(now.leaves[key].condition is None for key in keys)
