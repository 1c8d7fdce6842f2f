"""How a keyed table's key goes into a difference digest and comes back out as the values its rows landed with.

A key is its integer (one smallint, integer or bigint column) or its text: the text of what the read selects, made
by the type's output function as the typecasters see it, and for types whose text is not exact on every server
(floats, whose digits depend on a setting Greenplum does not send to its segments) or not what lands (bytea), their
bytes in hex. A composite key is the text of a record of its columns. A key whose text the digest cannot carry
(longer than 64 bytes, or of a type no text brings back: JSON, arrays) may still go in by a 64-bit hash of it
(`hashed_encoding`): a digest of hashes tells which keys changed and reads them by hash, but cannot name a deleted
key, so what holds one then syncs the table again.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from psycopg2 import sql

import difference_digest as dd
import reads
from block_ranges import Hashing, digested
from planning import PlannedColumn, TablePlan
from quoting import Identifier
from type_mapping import ReadAs

# How a decoded key column's text (DateStyle ISO, TimeZone UTC) becomes the value its rows were sent with, as the
# typecasters and the column checks make it; key columns of other types (JSON, arrays) are keyed by hash.
_KEY_VALUES: dict[str, Callable[[str], Any]] = {
    "INT": int,
    "LONG": int,
    "STRING": str,
    "DECIMAL": str,  # a constrained numeric's text: its scale is fixed
    "NAIVE_DATE": date.fromisoformat,
    "NAIVE_DATETIME": datetime.fromisoformat,
    "UTC_DATETIME": datetime.fromisoformat,
    "BOOLEAN": lambda text: text in ("t", "true"),
    "BINARY": bytes.fromhex,
    "DOUBLE": lambda text: struct.unpack(">d", bytes.fromhex(text))[0],
    "FLOAT": lambda text: struct.unpack(">f", bytes.fromhex(text))[0],
}
# Key columns whose text in a key is not what the read selects: their exact bytes, in hex.
_KEY_TEXTS: dict[str, str] = {
    "BINARY": "encode({}, 'hex')",
    "DOUBLE": "encode(float8send({}), 'hex')",
    "FLOAT": "encode(float4send({}), 'hex')",
}
_READ_AS_TEXT = (ReadAs.PLAIN, ReadAs.TEXT, ReadAs.NUMERIC_TEXT)
# Types whose cast to text is not their output text, which the typecasters return.
_CAST_UNLIKE_OUTPUT = ("bpchar", "inet", "cidr")


@dataclass(frozen=True)
class KeyEncoding:
    codec: dd.Codec
    expression: sql.Composable  # the key as the server encodes it: a bigint, the key's text, or a hash of the key
    columns: tuple[PlannedColumn, ...]
    hashed: bool = False  # the digest holds a hash of each key: keys come back as hashes, which name no row

    def condition(self, keys: list[int | str]) -> tuple[sql.Composable, list[Any]]:
        """The rows of the given keys (hashes, when hashed), as a condition and its parameters."""
        if self.hashed:
            return sql.SQL("{} = ANY(%s::bigint[])").format(self.expression), [list(keys)]
        names = tuple(column.name for column in self.columns)
        return reads.key_condition(names, [key_values(self, key) for key in keys])


def key_encoding(plan: TablePlan) -> KeyEncoding | None:
    """How the plan's key goes into a digest by its own value, or None when no text of it comes back as the value
    that landed (JSON, arrays): `hashed_encoding` then."""
    columns = key_columns(plan)
    if not columns or any(
        c.fivetran.name not in _KEY_VALUES or c.fivetran.read_as not in _READ_AS_TEXT for c in columns
    ):
        return None
    if len(columns) == 1 and columns[0].source_type in ("int2", "int4", "int8"):
        return KeyEncoding(dd.Codec.INTEGER, Identifier(columns[0].name), columns)
    if len(columns) == 1:
        return KeyEncoding(dd.Codec.TEXT, _key_text(columns[0]), columns)
    # A record's text is made by each field's output function: what the typecasters return, padding and all.
    fields = sql.SQL(", ").join(map(_field, columns))
    return KeyEncoding(dd.Codec.TEXT, sql.SQL("ROW({})::text").format(fields), columns)


def hashed_encoding(plan: TablePlan, hashing: Hashing) -> KeyEncoding:
    """The plan's key as a 64-bit hash of it, for keys no digest carries (too long, or of a type no text brings
    back)."""
    columns = key_columns(plan)
    text = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(map(digested, columns)))
    if hashing is Hashing.MD5_128:
        expression = dd.hash_of_md5(sql.SQL("md5({})").format(text))
    else:
        expression = sql.SQL("hashtextextended({}, 0)").format(text)
    return KeyEncoding(dd.Codec.INTEGER, expression, columns, hashed=True)


def key_columns(plan: TablePlan) -> tuple[PlannedColumn, ...]:
    return tuple(column for name in plan.primary_key for column in plan.columns if column.name == name)


def _key_text(column: PlannedColumn) -> sql.Composable:
    """A key column's text as its rows land: the text of what the read selects (money as its number), by the type's
    output function where a cast to text says otherwise (char(n) loses its padding, inet gains a netmask)."""
    if column.fivetran.name in _KEY_TEXTS:
        return _field(column)
    if column.source_type in _CAST_UNLIKE_OUTPUT:
        return sql.SQL("(CASE WHEN {0} IS NOT NULL THEN concat({0}) END)").format(Identifier(column.name))
    return sql.SQL("{}::text").format(column.select_expression())


def _field(column: PlannedColumn) -> sql.Composable:
    """A key column as a field of a composite key's record."""
    if column.fivetran.name in _KEY_TEXTS:
        return sql.SQL(_KEY_TEXTS[column.fivetran.name]).format(Identifier(column.name))
    return column.select_expression()


def key_values(encoding: KeyEncoding, key: int | str) -> dict[str, Any]:
    """A decoded key as the destination holds it."""
    if encoding.hashed:
        raise ValueError("a hashed key names no row")
    columns = encoding.columns
    texts = parse_record(key) if len(columns) > 1 else [key]
    return {
        column.name: _KEY_VALUES[column.fivetran.name](str(text)) for column, text in zip(columns, texts, strict=True)
    }


def parse_record(text: str) -> list[str]:
    """The fields of a record's text (`(1,"a b",x)`): quoted fields double their quotes and backslashes."""
    fields, field, quoted, index = [], [], False, 1
    while index < len(text) - 1:
        char = text[index]
        if quoted and char == "\\":
            index += 1
            field.append(text[index])
        elif quoted and char == '"' and text[index + 1] == '"':
            field.append('"')
            index += 1
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            fields.append("".join(field))
            field = []
        else:
            field.append(char)
        index += 1
    fields.append("".join(field))
    return fields
