"""Digests of heap leaves per block range (per segment on Greenplum), computed by the server: which ranges changed
since they were read, which are gone, how a range is named, and what is saved of each.

A range is `range_blocks` consecutive blocks of a leaf (of one segment's part of it on Greenplum), named `r` (or
`segment.r`); a leaf without physical positions (a view, a custom query, a replicated table, whose system columns
Greenplum hides) is one range named "". A range's digest is its row count and the exact sum (`sum(bigint)` is
numeric) of a 64-bit hash of each row's selected columns: independent of row order, so a range rewritten with the
same rows is unchanged, and a change goes unseen only if the sums of the rows removed and added collide, about one
chance in 2^64 per changed range. The hash is the cheapest the server has: `hash_record_extended` (PostgreSQL 14+,
Cloudberry) on the values, with every column whose equality is not identity (numeric's scale, json, intervals,
arrays, time zones) hashed by its text, and text by its bytes; `hashtextextended` of the row's text (PostgreSQL 11
to 13, Greenplum 7); on Greenplum 6 two sums of `md5`'s halves (2^-128). Floats are hashed in binary everywhere:
Greenplum does not dispatch `extra_float_digits` to every segment.

A keyed table also gets, per leaf, a digest of its key columns alone: when it is unchanged, no key came or went (only
updates), and the changed ranges are upserted again without a truncate. (Keyed tables use them when their key is too
long for a difference digest; keyless tables are known by their content, `content_digest.py`.)
"""

from __future__ import annotations

import base64
import enum
import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from psycopg2 import sql

from greenplum_client import GreenplumClient, is_statement_cancelled, one_line
from leaves import Leaf
from planning import PlannedColumn, TablePlan
from quoting import Identifier
from state import LeafState
from type_mapping import ReadAs

# Ranges a table is cut into when its first pass begins (all leaves and segments together): enough that a change costs
# a small share of the table even where an update's new row versions scatter over free space in many blocks, few
# enough that the state stays small (about 20 bytes a range). The range size is kept afterwards.
TARGET_RANGES = 8192
# Types whose equality is identity of what lands, hashed by value by hash_record_extended; every other type by text.
_HASHED_BY_VALUE = {"int2", "int4", "int8", "oid", "bool", "float4", "float8", "date", "timestamp", "timestamptz"}
_HASHED_BY_VALUE |= {"bytea", "uuid"}
_TEXT_TYPES = {"text", "varchar", "bpchar"}
# A row's block number: the first 4 bytes of its ctid's binary form (a fifth cheaper than parsing its text).
_BLOCK = sql.SQL("('x' || encode(substring(tidsend(ctid) FROM 1 FOR 4), 'hex'))::bit(32)::bigint")


class Hashing(enum.Enum):
    RECORD_64 = "hash_record_extended"
    TEXT_64 = "hashtextextended"
    MD5_128 = "md5"


def hashing_for(server_version_num: int) -> Hashing:
    if server_version_num >= 140000:
        return Hashing.RECORD_64
    return Hashing.TEXT_64 if server_version_num >= 110000 else Hashing.MD5_128


class DigestCancelled(RuntimeError):
    """statement_timeout cancelled a digest's query (one statement over the whole table): a keyless table is skipped
    with this message, a keyed one read in full."""


@contextmanager
def cancelled_as_digest(what: str) -> Iterator[None]:
    """The server's cancel of a digest's statement (`what` it was) raised as DigestCancelled, saying what to raise."""
    try:
        yield
    except Exception as error:
        if not is_statement_cancelled(error):
            raise
        raise DigestCancelled(
            f"the server cancelled {what} ({one_line(error)}); raise statement_timeout for USERNAME"
        ) from None


def choose_range_blocks(total_blocks: int) -> int:
    """The smallest power of two that cuts the table into at most TARGET_RANGES ranges."""
    blocks = 1
    while total_blocks > blocks * TARGET_RANGES:
        blocks *= 2
    return blocks


def digests(
    client: GreenplumClient,
    plan: TablePlan,
    hashing: Hashing,
    range_blocks: int | None,
    per_segment: bool,
    leaves: list[Leaf] | None = None,
) -> dict[str, dict[str, str]]:
    """leaf -> range -> digest, of every range holding rows: of the given leaves one query each, else of the whole
    table in one aggregate query. `range_blocks` None: each leaf is one range (no physical positions). A keyed plan's
    digests end with the sums of its key's hash, which tell whether its set of keys changed."""
    sums = _sums(hashing, key=bool(plan.primary_key))
    inner = [sql.SQL("{} AS h").format(row_hash(plan, hashing))]
    if plan.primary_key:
        inner.append(sql.SQL("{} AS k").format(_key_hash(plan, hashing)))
    groups = []
    if range_blocks is not None:
        if per_segment:
            inner.append(sql.SQL("gp_segment_id AS segment"))
            groups.append(sql.SQL("segment"))
        inner.append(sql.SQL("{} / {} AS r").format(_BLOCK, sql.Literal(range_blocks)))
        groups.append(sql.SQL("r"))
    rows: list[tuple] = []
    sources = [(leaf.key, leaf.relation, leaf.condition, leaf.params) for leaf in leaves or ()]
    if leaves is None:
        sources = [(None if plan.partitioned else plan.leaf_key, plan.relation, None, ())]
    for key, relation, condition, params in sources:
        columns = [*inner, sql.SQL("tableoid AS leaf")] if key is None else inner
        grouped = [sql.SQL("leaf"), *groups] if key is None else groups
        statement = sql.SQL("SELECT {}, count(*), {} FROM (SELECT {} FROM {}{}) AS digested{}").format(
            sql.SQL(", ").join(grouped) if grouped else sql.SQL("NULL"),
            sums,
            sql.SQL(", ").join(columns),
            relation,
            sql.SQL(" WHERE {}").format(condition) if condition is not None else sql.SQL(""),
            sql.SQL(" GROUP BY {}").format(sql.SQL(", ").join(grouped)) if grouped else sql.SQL(""),
        )
        for row in client.query(statement, list(params)):
            leaf = str(row[0]) if key is None else key
            names = row[1 : 1 + len(groups)] if key is None else row[: len(groups)]
            count, *totals = row[len(grouped) if grouped else 1 :]
            if count:
                rows.append((leaf, ".".join(str(name) for name in names), ":".join(map(str, [count, *totals]))))
    found: dict[str, dict[str, str]] = {}
    for leaf, name, digest in rows:
        found.setdefault(leaf, {})[name] = digest
    return found


def row_hash(plan: TablePlan, hashing: Hashing) -> sql.Composable:
    """A row's hash as the digest sums it; on Greenplum 6, md5 of the row's text (summed by halves)."""
    if hashing is Hashing.RECORD_64:
        return sql.SQL("hash_record_extended(ROW({}), 0)").format(sql.SQL(", ").join(map(_by_value, plan.columns)))
    if hashing is Hashing.TEXT_64:
        return sql.SQL("hashtextextended(ROW({})::text, 0)").format(sql.SQL(", ").join(map(digested, plan.columns)))
    return row_md5(plan)


def row_md5(plan: TablePlan) -> sql.Composable:
    """md5 of the row's selected columns, the same text for the same values whatever the session's settings: what
    Greenplum 6's digests sum, and what the row ids of append-only tables are made of."""
    return sql.SQL("md5(ROW({})::text)").format(sql.SQL(", ").join(map(digested, plan.columns)))


def _key_hash(plan: TablePlan, hashing: Hashing) -> sql.Composable:
    key = [column for name in plan.primary_key for column in plan.columns if column.name == name]
    if hashing is Hashing.MD5_128:
        return sql.SQL("md5(ROW({})::text)").format(sql.SQL(", ").join(map(digested, key)))
    return sql.SQL("hashtextextended(ROW({})::text, 0)").format(sql.SQL(", ").join(map(digested, key)))


def _sums(hashing: Hashing, key: bool) -> sql.Composable:
    if hashing is Hashing.MD5_128:
        halves = ["sum(('x' || substr({0}, {1}, 16))::bit(64)::bigint)".replace("{1}", start) for start in ("1", "17")]
        columns = [half.format(name) for name in (("h", "k") if key else ("h",)) for half in halves]
    else:
        columns = ["sum(h)", *(["sum(k)"] if key else [])]
    return sql.SQL(", ").join(sql.SQL(f"{column}::text") for column in columns)


def digested(column: PlannedColumn) -> sql.Composable:
    """The column as a text digest sees it. Floats in their binary form: their text depends on extra_float_digits,
    which Greenplum does not dispatch to every segment (Greenplum 6 segments inside a cursor, Greenplum 7 and
    Cloudberry never), so the same value could digest differently from one sync to the next, or a change hide in the
    17th digit."""
    identifier = Identifier(column.name)
    if column.fivetran.read_as is ReadAs.FLOAT_ARRAY:
        return sql.SQL("array_send({})").format(identifier)
    if column.fivetran.name in ("FLOAT", "DOUBLE"):
        return sql.SQL("{}({})").format(
            sql.SQL("float4send" if column.fivetran.name == "FLOAT" else "float8send"), identifier
        )
    return identifier


def _by_value(column: PlannedColumn) -> sql.Composable:
    """The column as hash_record_extended sees it: by value where equal values land alike, text by its bytes (a
    case-insensitive collation would hash 'A' and 'a' alike), anything else by its text (an unconstrained numeric's
    1.0 and 1.00 are equal but land as different text)."""
    identifier = Identifier(column.name)
    if column.fivetran.read_as is ReadAs.FLOAT_ARRAY:
        return sql.SQL("array_send({})").format(identifier)
    if column.source_type in _HASHED_BY_VALUE or column.source_type == "jsonb":
        return identifier  # jsonb: equal values decode to the same JSON, which is what lands
    if column.source_type == "numeric" and column.fivetran.name == "DECIMAL":
        return identifier  # a constrained numeric's scale is fixed: equal values have the same text
    if column.source_type in _TEXT_TYPES:
        return sql.SQL('{} COLLATE "C"').format(identifier)
    return sql.SQL("{}::text").format(identifier)


# Which ranges to read, and what is saved of each.


def compare(saved: dict[str, str], current: dict[str, str]) -> tuple[list[str], list[str]]:
    """(ranges changed or new, ranges gone) of a leaf, in read order. Saved digests are fingerprints (see
    `fingerprint`); current ones may be either."""
    changed = [
        name for name in sorted(current, key=_order) if name not in saved or saved[name] != fingerprint(current[name])
    ]
    gone = [name for name in sorted(saved, key=_order) if name not in current]
    return changed, gone


def spans(names: Iterable[str], range_blocks: int) -> list[tuple[int | None, int, int]]:
    """The ranges as (segment or None, first block, end block excluded), adjacent ones joined, in read order."""
    joined: list[tuple[int | None, int, int]] = []
    for name in sorted(names, key=_order):
        segment, number = _parts(name)
        first, end = number * range_blocks, (number + 1) * range_blocks
        if joined and joined[-1][0] == segment and joined[-1][2] == first:
            joined[-1] = (segment, joined[-1][1], end)
        else:
            joined.append((segment, first, end))
    return joined


def range_of(segment: int | None, ctid: str, range_blocks: int) -> str:
    """The name of the range a row read at `ctid` (on `segment`) belongs to."""
    number = int(ctid.strip("()").split(",")[0]) // range_blocks
    return f"{segment}.{number}" if segment is not None else str(number)


def saved_ranges(saved: LeafState | None) -> dict[str, str]:
    """range -> digest saved for a leaf; a leaf saved whole (by an earlier version) is range "". (Earlier versions
    followed a range's digest with "/" and the keyless ids it held.)"""
    if saved is None or saved.ao is not None:
        return {}
    if saved.ranges is None:
        return {"": saved.digest}
    ranges = {}
    for part in filter(None, saved.ranges.split(";")):
        name, _, rest = part.partition("=")
        ranges[name] = rest.partition("/")[0]
    return ranges


def ranges_state(ranges: dict[str, str], key_digest: str = "") -> LeafState:
    """What is saved of a leaf: its ranges' digest fingerprints, and the digest of its keys."""
    parts = (f"{name}={fingerprint(digest)}" for name, digest in sorted(ranges.items(), key=_order_item))
    return LeafState(key_digest, 0, None, ";".join(parts))


def fingerprint(digest: str) -> str:
    """A range's digest as saved: 64 bits of BLAKE2b of its text (the digests themselves run to 60 digits). Saved
    fingerprints pass through unchanged."""
    if len(digest) == 11 and ":" not in digest:
        return digest
    return base64.urlsafe_b64encode(hashlib.blake2b(digest.encode(), digest_size=8).digest()).decode().rstrip("=")


def key_digest(current: dict[str, str]) -> str:
    """A leaf's count and key sums over its ranges (each range's digest ends with its key sums)."""
    count, totals = 0, None
    for digest in current.values():
        numbers = [int(part) for part in digest.split(":")]
        width = (len(numbers) - 1) // 2
        count += numbers[0]
        keys = numbers[1 + width :]
        totals = keys if totals is None else [a + b for a, b in zip(totals, keys, strict=True)]
    return ":".join(map(str, [count, *(totals or [])]))


def _parts(name: str) -> tuple[int | None, int]:
    segment, dot, number = name.rpartition(".")
    return (int(segment) if dot else None), int(number)


def _order(name: str) -> tuple[int, int]:
    if not name:
        return (-1, -1)
    segment, number = _parts(name)
    return (-1 if segment is None else segment, number)


def _order_item(item: tuple[str, object]) -> tuple[int, int]:
    return _order(item[0])
