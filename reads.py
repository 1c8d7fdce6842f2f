"""The SELECT of every read a strategy makes, and which of its columns say where the read stands.

Every read is a keyset read ordered so that the last row sent says where to continue: after a checkpoint when a
sync is run again, and after a lost connection within the same sync. Rows sharing a cursor value are ordered by key
(or row id), so none is lost between two reads. Positions are compared as untyped literals, which the server parses
as the column's own type; no value is ever spliced into the SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from psycopg2 import sql

from block_ranges import row_md5
from leaves import Leaf
from planning import ROW_ID_COLUMN, SOURCE_ALIAS, TablePlan
from quoting import Identifier, Literal
from state import TableState
from values import position_text

_ROW_HASH = "_fivetran_row_hash"  # the append-only read's inner alias for md5 of the row's text


@dataclass(frozen=True)
class Read:
    """One SELECT of a table's pass, and which of its columns say where the read stands."""

    statement: sql.Composed
    params: list[Any]
    position_columns: tuple[int, ...]  # indexes in the selected row


def select(
    plan: TablePlan, relation: sql.Composable | None = None, *extra: sql.Composable, where: sql.Composable | None = None
) -> sql.Composed:
    """The plan's columns as they are sent (casts that keep values exact), then any extra columns, each named
    `_fivetran_extra_<n>`: no name of the connector's can be taken for a source column's (rows are read by position)."""
    expressions = [column.select_expression() for column in plan.columns]
    expressions.extend(
        sql.SQL("{} AS {}").format(expression, _extra(number)) for number, expression in enumerate(extra, 1)
    )
    statement = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(expressions), relation or plan.relation)
    return _where(statement, [where] if where is not None else [])


def _extra(number: int) -> Identifier:
    """The name of `select`'s extra column `number` (from 1)."""
    return Identifier(f"_fivetran_extra_{number}")


def key_condition(names: tuple[str, ...], keys: list[dict[str, Any]]) -> tuple[sql.Composable, list[str]]:
    """`(k1, k2) IN ((%s, %s), ...)` of the given keys, each value an untyped literal that the server parses as its
    column's type."""
    one = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() for _ in names))
    condition = sql.SQL("({}) IN ({})").format(_identifiers(names), sql.SQL(", ").join(one for _ in keys))
    return condition, [position_text(key[name]) for key in keys for name in names]


@dataclass(frozen=True)
class IncrementalStart:
    """Where an incremental sync's reads start: `lookback_seconds` before the saved cursor (late commits), or right
    after `after`, the last row the last read sent (when a check finds what came late below it); and whether the rows
    whose cursor is NULL are read again (`nulls`: not when a check found what changed among them)."""

    lookback_seconds: int
    after: list[str] | None = None
    nulls: bool = True


def incremental_values(
    plan: TablePlan,
    state: TableState,
    start: IncrementalStart,
    extra: tuple[sql.Composable, ...] = (),
    extra_params: list[Any] | None = None,
) -> Read:
    """Rows with a cursor value, from where `start` says (or after the saved position of a read in progress);
    `extra` columns (with their `extra_params`) follow the plan's."""
    order = [plan.cursor.name, *plan.primary_key]
    condition, params = _cursor_condition(plan, state, order, start)
    statement = sql.SQL("{} WHERE {} ORDER BY {}").format(select(plan, None, *extra), condition, _sort_keys(order))
    return Read(statement, [*(extra_params or []), *params], tuple(_index(plan, name) for name in order))


def incremental_window(plan: TablePlan, state: TableState, start: IncrementalStart) -> tuple[sql.Composable, list[Any]]:
    """The rows an incremental sync is about to read, as a condition: those from where its read starts (nothing more
    in the phase of NULL cursors), and those whose cursor is NULL when it reads them again."""
    cursor = Identifier(plan.cursor.name)
    conditions: list[sql.Composable] = []
    params: list[Any] = []
    if state.phase == "values":
        order = [plan.cursor.name, *plan.primary_key]
        condition, params = _cursor_condition(plan, state, order, start)
        conditions.append(condition)
    if plan.cursor.nullable and start.nulls:
        conditions.append(sql.SQL("{} IS NULL").format(cursor))
    return sql.SQL(" OR ").join(conditions) if conditions else sql.SQL("false"), params


def keyed(
    plan: TablePlan,
    state: TableState,
    extra_condition: sql.Composable | None = None,
    extra: tuple[sql.Composable, ...] = (),
    params: list[Any] | None = None,
) -> Read:
    """The table in key order, after the saved position; `extra` columns follow the plan's (zip() with the column
    names leaves them out of the row); `params` are those of `extra_condition`."""
    conditions, params = [], list(params or [])
    if extra_condition is not None:
        conditions.append(extra_condition)
    if state.position is not None:
        condition, position = _after(plan.primary_key, state.position)
        conditions.append(condition)
        params += position
    statement = _where(select(plan, None, *extra), conditions)
    statement = sql.SQL("{} ORDER BY {}").format(statement, _sort_keys(plan.primary_key))
    return Read(statement, params, tuple(_index(plan, name) for name in plan.primary_key))


def ao_rows(
    plan: TablePlan, leaf: Leaf, skipped: list[tuple[int, str, str]], extra: tuple[sql.Composable, ...] = ()
) -> Read:
    """An append-optimized leaf's rows in (segment, ctid) order, but for the given ranges (segment, from ctid, to
    ctid, the end excluded), with any extra columns, then the segment and the ctid's text last (zip() with the
    column names leaves them out of the row). The ctid comparisons filter a scan: Greenplum has no TID range scan
    on AO storage."""
    _, condition, params = ao_rows_window(leaf, skipped)
    extra = (*extra, sql.SQL("gp_segment_id"), sql.SQL("ctid::text"))
    statement = sql.SQL("{} WHERE {}").format(select(plan, leaf.relation, *extra), condition)
    return Read(sql.SQL("{} ORDER BY gp_segment_id, ctid").format(statement), params, ())


def ao_rows_window(leaf: Leaf, skipped: list[tuple[int, str, str]]) -> tuple[sql.Composable, sql.Composable, list]:
    """(relation, condition, parameters) of an append-optimized leaf's rows but for the given ranges."""
    conditions: list[sql.Composable] = [leaf.condition] if leaf.condition is not None else []
    params: list[Any] = list(leaf.params)
    if skipped:
        below = sql.SQL("(gp_segment_id = %s AND ctid >= %s::tid AND ctid < %s::tid)")
        conditions.append(sql.SQL("NOT ({})").format(sql.SQL(" OR ").join(below for _ in skipped)))
        for segment, first, end in skipped:
            params += [segment, first, end]
    return leaf.relation, sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true"), params


def range_rows(
    plan: TablePlan,
    leaf: Leaf,
    spans: list[tuple[int | None, int, int]] | None,
    per_segment: bool,
    position: list[str] | None,
) -> Read:
    """A leaf's rows in the given block spans (segment or None, first block, end block excluded; all rows when None),
    in (segment,) ctid order, after the saved position, with the segment and the ctid's text last."""
    conditions: list[sql.Composable] = [leaf.condition] if leaf.condition is not None else []
    params: list[Any] = list(leaf.params)
    if spans is not None:
        terms = []
        for segment, first, end in spans:
            terms.append(
                sql.SQL("(ctid >= %s::tid AND ctid < %s::tid{})").format(
                    sql.SQL(" AND gp_segment_id = %s") if segment is not None else sql.SQL("")
                )
            )
            params += [f"({first},0)", f"({end},0)", *([segment] if segment is not None else [])]
        conditions.append(sql.SQL("({})").format(sql.SQL(" OR ").join(terms)) if terms else sql.SQL("false"))
    if position is not None:
        if per_segment:
            conditions.append(sql.SQL("(gp_segment_id > %s OR (gp_segment_id = %s AND ctid > %s::tid))"))
            params += [position[0], position[0], position[1]]
        else:
            conditions.append(sql.SQL("ctid > %s::tid"))
            params.append(position[-1])
    segment = sql.SQL("gp_segment_id") if per_segment else sql.SQL("NULL::int")
    statement = _where(select(plan, leaf.relation, segment, sql.SQL("ctid::text")), conditions)
    order = sql.SQL("gp_segment_id, ctid") if per_segment else sql.SQL("ctid")
    first = len(plan.columns)
    positions = (first, first + 1) if per_segment else (first + 1,)
    return Read(sql.SQL("{} ORDER BY {}").format(statement, order), params, positions)


def leaf_whole(plan: TablePlan, leaf: Leaf) -> Read:
    """A leaf without physical positions (a view, a custom query): read whole, in no order."""
    return Read(_where(select(plan, leaf.relation), [leaf.condition] if leaf.condition else []), list(leaf.params), ())


def append_only(plan: TablePlan, state: TableState, lookback_seconds: int, nulls: bool = False) -> Read:
    """Rows of an insert-only table from the saved cursor minus the lookback, each with a row id that a re-read
    gives again: md5 of the row's text and its ordinal among identical rows. Identical rows share their cursor value,
    so the window holds all of them or none, and their ordinals are the same in every read."""
    cursor = Identifier(plan.cursor.name)
    order = [ROW_ID_COLUMN] if nulls else [plan.cursor.name, ROW_ID_COLUMN]
    if nulls:
        window, params = sql.SQL("{} IS NULL").format(cursor), []
    else:
        window, params = _cursor_condition(plan, state, order, IncrementalStart(lookback_seconds), inner=True)
    columns = _identifiers([c.name for c in plan.columns])  # excluded columns are never read
    numbered = sql.SQL(
        "SELECT *, {hash} || ':' || (row_number() OVER (PARTITION BY {hash}))::text AS {row_id} "
        "FROM (SELECT {columns}, {row_md5} AS {hash} FROM {relation} WHERE {window}) AS hashed"
    ).format(
        hash=Identifier(_ROW_HASH),
        row_id=Identifier(ROW_ID_COLUMN),
        columns=columns,
        row_md5=row_md5(plan),
        relation=plan.relation,
        window=window,
    )
    statement = select(plan, sql.SQL("({}) AS numbered").format(numbered), Identifier(ROW_ID_COLUMN))
    conditions = []
    if state.position is not None:
        condition, position = _after(order, state.position)
        conditions.append(condition)
        params = [*params, *position]
    statement = sql.SQL("{} ORDER BY {}").format(_where(statement, conditions), _identifiers(order))
    first = len(plan.columns)
    return Read(statement, params, tuple(first if name == ROW_ID_COLUMN else _index(plan, name) for name in order))


def _cursor_condition(
    plan: TablePlan, state: TableState, order: list[str], start: IncrementalStart, inner: bool = False
) -> tuple[sql.Composable, list[Any]]:
    """Where an incremental read starts: after the saved position, else where `start` says.

    `inner`: the condition goes inside a query that numbers identical rows, so a saved position only bounds the
    cursor (`>=`) there, and the exact position is applied outside.
    """
    cursor = Identifier(plan.cursor.name)
    if state.position is not None and inner:
        return sql.SQL("{} >= %s").format(cursor), [state.position[0]]
    if state.position is not None:
        return _after(order, state.position)
    if start.after is not None and len(start.after) == len(order):
        return _after(order, start.after)
    if state.cursor is not None:
        since = _minus_lookback(state.cursor, plan.cursor.kind, start.lookback_seconds)
        return sql.SQL("{} >= %s").format(cursor), [since]
    return sql.SQL("{} IS NOT NULL").format(cursor), []


def _index(plan: TablePlan, name: str) -> int:
    return [c.name for c in plan.columns].index(name)


def _where(statement: sql.Composable, conditions: list[sql.Composable]) -> sql.Composed:
    if not conditions:
        return sql.Composed([statement])
    return sql.SQL("{} WHERE {}").format(statement, sql.SQL(" AND ").join(conditions))


def _literal(leaf: Leaf) -> list[sql.Composable]:
    return [leaf.literal_condition] if leaf.literal_condition is not None else []


def _identifiers(names: tuple[str, ...] | list[str]) -> sql.Composable:
    return sql.SQL(", ").join(Identifier(name) for name in names)


def _sort_keys(names: tuple[str, ...] | list[str]) -> sql.Composable:
    """The source's columns to order by, qualified: a bare name in ORDER BY means the output column of that name
    first, which may be the column cast to text (money, an interval), ordered unlike the comparisons that resume
    the read."""
    return sql.SQL(", ").join(Identifier(SOURCE_ALIAS, name) for name in names)


def _after(names: tuple[str, ...] | list[str], position: list[str]) -> tuple[sql.Composable, list[str]]:
    """`(a, b) > (%s, %s)`: the rows after the given position, in the read's order."""
    placeholders = sql.SQL(", ").join(sql.Placeholder() for _ in names)
    return sql.SQL("({}) > ({})").format(_identifiers(names), placeholders), list(position)


def up_to(names: tuple[str, ...] | list[str], position: list[str]) -> sql.Composable:
    """`(a, b) <= ('x', 'y')`: the rows up to a read's position, in its order, the position as quoted literals (a
    COPY takes no parameter)."""
    return sql.SQL("({}) <= ({})").format(_identifiers(names), sql.SQL(", ").join(map(Literal, position)))


def _minus_lookback(cursor: str, kind: str, lookback_seconds: int) -> str:
    """The saved cursor moved back by the lookback window, so late commits below it are read again."""
    if lookback_seconds == 0 or kind == "integer":
        return cursor
    try:
        if kind == "date":
            days = -(-lookback_seconds // 86400)
            return (date.fromisoformat(cursor) - timedelta(days=days)).isoformat()
        return (datetime.fromisoformat(cursor) - timedelta(seconds=lookback_seconds)).isoformat()
    except (ValueError, OverflowError):
        return cursor  # infinity or a year the library cannot hold: compare as saved


def in_content_order(
    plan: TablePlan, content: sql.Composable, after: list[str] | None, leaf: Leaf | None = None
) -> Read:
    """A keyless table's rows (or one leaf's) with their content hash and their ordinal among the
    rows identical to them last, in (hash, ordinal) order, after a position: the order of a full pass by content,
    which a read started again gives again (identical rows are interchangeable)."""
    relation = None
    if leaf is not None:
        rows = _where(sql.SQL("SELECT * FROM {}").format(leaf.relation), _literal(leaf))
        relation = sql.SQL("({}) AS {}").format(rows, Identifier(SOURCE_ALIAS))
    hashed = select(plan, relation, content)
    columns = len(plan.columns)
    numbered = sql.SQL(
        "SELECT hashed.*, row_number() OVER (PARTITION BY {hash}) AS {ordinal} FROM ({}) AS hashed"
    ).format(hashed, hash=_extra(1), ordinal=Identifier("_fivetran_ordinal"))
    order = sql.SQL("{}, {}").format(_extra(1), Identifier("_fivetran_ordinal"))
    statement = sql.SQL("SELECT * FROM ({}) AS numbered").format(numbered)
    params: list[Any] = []
    if after is not None:
        statement = sql.SQL("{} WHERE ({}) > (%s::bigint, %s::bigint)").format(statement, order)
        params = list(after)
    return Read(sql.SQL("{} ORDER BY {}").format(statement, order), params, (columns, columns + 1))


def of_contents(
    plan: TablePlan, content: sql.Composable, contents: list[int], leaves: list[Leaf] | None = None
) -> Read:
    """One row of each of the given contents (a row of a content is any other's), its content hash last; of the
    given leaves alone, where the rows of those contents lie (a row's leaf follows from its values)."""
    relation = None
    if leaves:
        parts = [_where(sql.SQL("SELECT * FROM {}").format(leaf.relation), _literal(leaf)) for leaf in leaves]
        relation = sql.SQL("({}) AS {}").format(sql.SQL(" UNION ALL ").join(parts), Identifier(SOURCE_ALIAS))
    hashed = select(plan, relation, content)
    statement = sql.SQL(
        "SELECT DISTINCT ON ({hash}) * FROM ({}) AS hashed WHERE {hash} IN (SELECT unnest(%s::bigint[]))"
    ).format(hashed, hash=_extra(1))
    return Read(statement, [contents], ())
