"""Source column types to Fivetran types, as data: pure functions of catalog facts, no connection.

A column is resolved by its base type (domains unwrapped) and the type's category, so enums, arrays, ranges and
extension types land somewhere sensible without being listed. The mapping also says how the column is read: most
values come as psycopg2 gives them (with the typecasters of `values.py`; a type psycopg2 does not know comes as the
server's output text), a few are cast on the server, where it is cheapest, into a form the SDK stores exactly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MAX_DECIMAL_PRECISION = 38


class ReadAs(enum.Enum):
    """How a column appears in the SELECT list."""

    PLAIN = "plain"  # "col"
    TEXT = "text"  # "col"::text: the server's text form, for types psycopg2 would turn into Python objects
    JSON = "json"  # to_json("col"): arrays, hstore and other structured values as JSON
    NUMERIC_TEXT = "numeric_text"  # "col"::numeric::text: money without its locale's currency format
    # Arrays of numeric and money as JSON arrays of exact decimal text: JSON numbers would pass through 64-bit floats.
    JSON_OF_TEXT = "json_of_text"  # to_json("col"::text[])
    JSON_OF_NUMERIC_TEXT = "json_of_numeric_text"  # to_json("col"::numeric[]::text[])
    # Float arrays as they are, parsed by values.py into lists: Greenplum 6 segments would format them with 15 digits.
    FLOAT_ARRAY = "float_array"  # "col"


@dataclass(frozen=True)
class SourceType:
    """What the catalog says of a column's type, domains already resolved to their base type."""

    name: str  # base type's pg_type.typname, e.g. int4, numeric, _text
    category: str  # pg_type.typcategory of the base type: A array, E enum, R range, U user-defined...
    precision: int | None = None  # numeric(p,s) only
    scale: int | None = None


@dataclass(frozen=True)
class FivetranType:
    """A column's declaration in schema() and how it is read."""

    name: str
    read_as: ReadAs = ReadAs.PLAIN
    precision: int | None = None
    scale: int | None = None

    def declaration(self) -> str | dict[str, object]:
        """The value of the column in the SDK's `columns` mapping."""
        if self.name == "DECIMAL":
            return {"type": "DECIMAL", "precision": self.precision, "scale": self.scale}
        return self.name


_PLAIN_TYPES = {
    "bool": "BOOLEAN",
    "int2": "INT",
    "int4": "INT",
    "int8": "LONG",
    "float4": "FLOAT",
    "float8": "DOUBLE",
    "date": "NAIVE_DATE",
    "timestamp": "NAIVE_DATETIME",
    "timestamptz": "UTC_DATETIME",
    "json": "JSON",
    "jsonb": "JSON",
    "bytea": "BINARY",
    "xml": "XML",
    "oid": "LONG",
    # Text the driver already returns as str, unchanged (a ::text cast would strip char(n)'s padding).
    "text": "STRING",
    "varchar": "STRING",
    "bpchar": "STRING",
    "char": "STRING",
    "name": "STRING",
    "citext": "STRING",
}

_JSON_TYPES = {"hstore"}  # structured extension types with a cast to json
# Types psycopg2 turns into Python objects (time, timedelta, Range) that the SDK would not store as their text.
_TEXT_CAST_TYPES = {"time", "timetz", "interval", "tinterval"}
_READ_AS_BY_ARRAY = {
    "_numeric": ReadAs.JSON_OF_TEXT,
    "_money": ReadAs.JSON_OF_NUMERIC_TEXT,
    "_float4": ReadAs.FLOAT_ARRAY,
    "_float8": ReadAs.FLOAT_ARRAY,
}


def fivetran_type(source: SourceType) -> FivetranType:
    """The Fivetran type of a source type; anything unknown is its server text form as STRING."""
    if source.name == "numeric":
        precision, scale = source.precision, source.scale
        if precision is not None and scale is not None and 0 <= scale <= precision <= MAX_DECIMAL_PRECISION:
            return FivetranType("DECIMAL", precision=precision, scale=scale)
        return FivetranType("STRING")  # exact decimal text from the numeric typecaster
    if source.name == "money":
        return FivetranType("STRING", ReadAs.NUMERIC_TEXT)
    if source.name in _PLAIN_TYPES:
        return FivetranType(_PLAIN_TYPES[source.name])
    if source.category == "A" or source.name in _JSON_TYPES:
        return FivetranType("JSON", _READ_AS_BY_ARRAY.get(source.name, ReadAs.JSON))
    if source.name in _TEXT_CAST_TYPES or source.category == "R":
        return FivetranType("STRING", ReadAs.TEXT)
    # uuid, inet, enums, bit strings, tsvector, composites, extension types...: psycopg2 returns their output text.
    return FivetranType("STRING")


def numeric_precision_scale(typmod: int) -> tuple[int | None, int | None]:
    """numeric's (precision, scale) from atttypmod; (None, None) when unconstrained."""
    if typmod < 4:
        return None, None
    packed = typmod - 4
    # PostgreSQL 15+ allows a negative scale, stored as 11-bit two's complement; older scales are never that large.
    scale = ((packed & 0x7FF) ^ 1024) - 1024
    return (packed >> 16) & 0xFFFF, scale


def cursor_kind(source: SourceType) -> str | None:
    """Whether a column can be an incremental cursor, and how its lookback is computed."""
    if source.name in ("timestamp", "timestamptz"):
        return "timestamp"
    if source.name == "date":
        return "date"
    if source.name in ("int2", "int4", "int8"):
        return "integer"
    return None
