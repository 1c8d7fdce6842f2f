"""The names schemas, tables and columns land under, kept apart where Fivetran's naming would merge them.

Fivetran renames what a connector sends (lower case, words split by underscores, other characters replaced: `t1`
lands as `t_1`, `Order Date` as `order_date`) and does not resolve collisions: two source names that rename alike
would land as one table, or one column holding only one of their values. So before tables are declared, every name
is renamed here as the destination will rename it. Of names that land alike, one keeps its name (the one that lands
unchanged, else the first in the source's order: so a name added later never takes a name from one synced before)
and each other is sent with a suffix, `_2`, `_3`..., that renaming keeps, with a warning naming both. A column that
would land as one of Fivetran's own (`_fivetran_deleted`, a keyless table's `_source_row_id`) is suffixed too.

The rules are those of the SDK's local runner (`fivetran debug`), which follows Fivetran's naming. With source naming
(`--naming SOURCE`) no two names collide, and the suffixed names land as sent: still apart, and the same either way.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import replace

from planning import ROW_ID_COLUMN, TablePlan

FIVETRAN_COLUMNS = ("_fivetran_synced", "_fivetran_deleted", "_fivetran_id")
_NOT_A_WORD_CHARACTER = re.compile(r"\W", re.ASCII)
_ASCII_NAME = re.compile(r"[\w\-.]*", re.ASCII)
_LEADING_UNDERSCORES = re.compile(r"_+([a-zA-Z]\w*)", re.ASCII)


def column_name(name: str) -> str:
    """The name a column lands as: accents dropped, every other character that is not an ASCII letter, digit or
    underscore made an underscore, an underscore where a capital follows a lower-case letter and between digits and
    what is not, lower case, runs of underscores made one."""
    if not _ASCII_NAME.fullmatch(name):
        decomposed = unicodedata.normalize("NFD", name)
        name = unicodedata.normalize("NFC", "".join(c for c in decomposed if unicodedata.category(c) != "Mn"))
    words, previous = [], "\0"
    for character in _NOT_A_WORD_CHARACTER.sub("_", name):
        if (previous.islower() and character.isupper()) or previous.isdigit() != character.isdigit():
            words.append("_")
        words.append(character.lower())
        previous = character
    return re.sub("_+", "_", "".join(words))


def table_name(name: str) -> str:
    """The name a table lands as: a column's, without the leading underscores of a name that starts with a letter
    after them."""
    landed = column_name(name)
    bare = _LEADING_UNDERSCORES.fullmatch(landed)
    return bare.group(1) if bare else landed


def schema_name(name: str) -> str:
    """What tells a declared schema apart once it lands (as `<default schema>_<name>` locally): its lower case, with
    every character that is not an ASCII letter, digit or underscore made an underscore (not split into words)."""
    return _NOT_A_WORD_CHARACTER.sub("_", name).lower()


def keep_apart(plans: list[TablePlan]) -> tuple[list[TablePlan], list[str]]:
    """The plans with the schema, table and column names they are sent under, and a warning for each name changed."""
    warnings: list[str] = []
    schemas = sorted({plan.destination_schema for plan in plans if plan.destination_schema is not None})
    schema_names = _apart(schemas, schema_name, set())
    for schema, sent in schema_names.items():
        first = _first_landing_as(schemas, schema_name, schema, schema_names)
        warnings.append(
            f"Schemas '{first}' and '{schema}' land alike under Fivetran's naming ('{schema_name(schema)}'): the "
            f"tables of '{schema}' land in schema '{sent}'."
        )
    plans = [
        replace(plan, destination_schema=schema_names.get(plan.destination_schema, plan.destination_schema))
        for plan in plans
    ]
    by_schema: dict[str | None, list[TablePlan]] = {}
    for plan in plans:
        landed_schema = None if plan.destination_schema is None else schema_name(plan.destination_schema)
        by_schema.setdefault(landed_schema, []).append(plan)
    renamed = []
    for group in by_schema.values():
        tables = sorted(plan.destination_table for plan in group)
        table_names = _apart(tables, table_name, set())
        for plan in group:
            sent = table_names.get(plan.destination_table)
            if sent is not None:
                first = _first_landing_as(tables, table_name, plan.destination_table, table_names)
                warnings.append(
                    f"{_what(plan, first)} and {_what(plan, plan.destination_table)} land alike under Fivetran's "
                    f"naming ('{table_name(first)}'): {_what(plan, plan.destination_table)} lands as "
                    f"'{table_name(sent)}'."
                )
                plan = replace(plan, destination_table=sent)
            renamed.append(_columns_apart(plan, warnings))
    order = {plan.state_key: index for index, plan in enumerate(plans)}
    return sorted(renamed, key=lambda plan: order[plan.state_key]), warnings


def _columns_apart(plan: TablePlan, warnings: list[str]) -> TablePlan:
    names = [column.name for column in plan.columns]
    reserved = {*FIVETRAN_COLUMNS, *([ROW_ID_COLUMN] if plan.strategy.has_row_ids else [])}
    sent = _apart(names, column_name, reserved)
    if not sent:
        return plan
    for name, new in sent.items():
        landed = column_name(name)
        if landed in reserved:
            beside = f"would land as the column '{landed}' that Fivetran adds"
        else:
            beside = f"and '{_first_landing_as(names, column_name, name, sent)}' land alike under Fivetran's naming"
        warnings.append(f"{plan.state_key}: column '{name}' {beside} ('{landed}'): it lands as '{column_name(new)}'.")
    columns = tuple(replace(column, landed=sent.get(column.name, "")) for column in plan.columns)
    return replace(plan, columns=columns)


def _apart(names: list[str], landed: Callable[[str], str], reserved: set[str]) -> dict[str, str]:
    """name -> the name to send it under, for the names (distinct, in the source's order) that would land as an
    earlier one, or as a reserved name."""
    keeper: dict[str, str] = {}
    for name in sorted(names, key=lambda name: landed(name) != name):  # a stable sort: the source's order after
        keeper.setdefault(landed(name), name)
    taken = set(keeper) | reserved
    suffixed = {}
    for name in names:
        if keeper[landed(name)] == name and landed(name) not in reserved:
            continue
        number = 2
        while landed(f"{name}_{number}") in taken:
            number += 1
        suffixed[name] = f"{name}_{number}"
        taken.add(landed(suffixed[name]))
    return suffixed


def _first_landing_as(names: list[str], landed: Callable[[str], str], name: str, suffixed: dict[str, str]) -> str:
    """The name that keeps what `name` would land as."""
    return next(other for other in names if other not in suffixed and landed(other) == landed(name))


def _what(plan: TablePlan, table: str) -> str:
    if plan.destination_schema is None:
        return f"QUERIES table '{table}'"
    return f"table '{plan.destination_schema}.{table}'"
