"""PRIMARY_KEYS are never trusted blindly: before rows are sent under a declared key, the server checks that no two
source rows share a key value and that none is NULL, since the destination would silently keep one row of two.

The whole table is checked on an incremental table's first sync and before every full pass; an incremental sync
checks the keys of the rows it is about to read (its window) against the whole table. Each check is one statement
whose answer is at most one row; on Greenplum the segments do the work.
"""

from __future__ import annotations

from typing import Any

from psycopg2 import sql

from greenplum_client import GreenplumClient
from planning import TablePlan
from quoting import Identifier


class DeclaredKeyNotUnique(RuntimeError):
    """A PRIMARY_KEYS key has duplicates or NULLs at the source: syncing would collapse rows, so the table is
    skipped."""


def check_whole_table(client: GreenplumClient, plan: TablePlan) -> None:
    """Raises DeclaredKeyNotUnique naming one duplicated (or NULL) key value of the whole table."""
    key = _key(plan)
    statement = sql.SQL("SELECT {}, count(*) FROM {} GROUP BY {} HAVING count(*) > 1 OR {} LIMIT 1").format(
        _as_text(key), plan.relation, sql.SQL(", ").join(key), _any_null(key)
    )
    _raise_for(plan, client.query(statement))


def check_window(client: GreenplumClient, plan: TablePlan, window: sql.Composable, params: list[Any]) -> None:
    """Raises DeclaredKeyNotUnique naming one key value that a row of the window (`WHERE window`) shares with another
    row of the table, or that is NULL in the window."""
    check_windows(client, plan, [(plan.relation, window, params)])


def check_keys(client: GreenplumClient, plan: TablePlan, keys: sql.Composable, params: list[Any]) -> None:
    """Raises DeclaredKeyNotUnique naming one of the given key values (`keys`: a condition such as `(k) IN (...)`)
    that two rows of the table hold: one statement however many keys, so one scan of a table without an index on
    its key (check_window joins the table with itself, two scans for each)."""
    key = _key(plan)
    statement = sql.SQL("SELECT {}, count(*) FROM {} WHERE {} GROUP BY {} HAVING count(*) > 1 LIMIT 1").format(
        _as_text(key), plan.relation, keys, sql.SQL(", ").join(key)
    )
    _raise_for(plan, client.query(statement, params))


def check_windows(
    client: GreenplumClient, plan: TablePlan, windows: list[tuple[sql.Composable, sql.Composable, list[Any]]]
) -> None:
    """As check_window, for the rows of several (relation, condition, parameters) windows at once: the server joins
    their keys with the table, with an index on the key one index lookup per window row, without one scan of the
    table."""
    key = _key(plan)
    keys, text = sql.SQL(", ").join(key), _as_text(key)
    select = sql.SQL("SELECT {} FROM {} WHERE {}")
    selects = [select.format(keys, relation, condition) for relation, condition, _ in windows]
    nulls = [
        sql.SQL("SELECT {}, 1::bigint FROM {} WHERE ({}) AND ({})").format(text, relation, condition, _any_null(key))
        for relation, condition, _ in windows
    ]
    shared = sql.SQL("SELECT {}, count(*) FROM {} WHERE ({}) IN ({}) GROUP BY {} HAVING count(*) > 1").format(
        text, plan.relation, keys, sql.SQL(" UNION ALL ").join(selects), keys
    )
    statement = sql.SQL("SELECT * FROM (({}) UNION ALL {}) AS problems LIMIT 1").format(
        shared, sql.SQL(" UNION ALL ").join(sql.SQL("({})").format(null) for null in nulls)
    )
    params = [param for _, _, window_params in windows for param in window_params]
    _raise_for(plan, client.query(statement, params + params))  # the windows appear twice


def _raise_for(plan: TablePlan, rows: list[tuple]) -> None:
    if not rows:
        return
    *values, count = rows[0]
    shown = ", ".join("NULL" if value is None else repr(value) for value in values)
    columns = "+".join(plan.primary_key)
    problem = "is NULL in" if None in values else "is shared by"
    raise DeclaredKeyNotUnique(
        f"PRIMARY_KEYS: the declared key {columns} of {plan.state_key} is not unique at the source: ({shown}) "
        f"{problem} {count} row(s); the table is not synced until the key is unique"
    )


def _key(plan: TablePlan) -> list[sql.Identifier]:
    return [Identifier(name) for name in plan.primary_key]


def _as_text(key: list[sql.Identifier]) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL("{}::text").format(column) for column in key)


def _any_null(key: list[sql.Identifier]) -> sql.Composable:
    return sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(column) for column in key)
