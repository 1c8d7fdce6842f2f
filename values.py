"""Per-value conversion on the hot path, done inside psycopg2's typecasters so no row needs a second Python pass.

The SDK refuses `Decimal` and `memoryview`, fails a whole sync on a DECIMAL `NaN`, cannot store dates outside years
1 to 9999, silently stores a float `NaN` as NULL and a subnormal float as 0.0, and writes JSON numbers as 64-bit
floats. So numeric arrives as its exact text, bytea as bytes, JSON decoded with its numbers checked, and the few
values no destination type can hold arrive as `OutOfRange` (a short text saying what they were), which the sync turns
into NULL with one warning per column.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import psycopg2.extensions as extensions

FLOAT4_OID = 700
FLOAT8_OID = 701
FLOAT4_ARRAY_OID = 1021
FLOAT8_ARRAY_OID = 1022
JSON_OID = 114
JSONB_OID = 3802
NUMERIC_OID = 1700
DATE_OID = 1082
TIMESTAMP_OID = 1114
TIMESTAMPTZ_OID = 1184
BYTEA_OID = 17
# The text of non-finite numeric and float values (PostgreSQL 14+ numeric has infinities too).
_NON_FINITE = frozenset(("NaN", "Infinity", "-Infinity"))
# Halfway between the largest subnormal and the smallest normal float32: servers before PostgreSQL 12 write a real
# with 9 digits, and 1.17549435e-38, the smallest normal, reads as a double just below the float32 itself.
_SMALLEST_NORMAL_FLOAT4 = 1.17549428e-38
_SMALLEST_NORMAL_FLOAT8 = 2.2250738585072014e-308
# JSON nested deeper than this is not decoded: Python's json recursion (the SDK encodes it again) must stay far from
# the interpreter's recursion limit, or the sync would fail on RecursionError.
MAX_JSON_DEPTH = 500
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")


class OutOfRange(str):
    """A value the destination type cannot hold (infinity, BC, year > 9999, NaN...): its server text or a short note.

    `made` counts them, so that the sync looks for them only in a batch during which some were made.
    """

    __slots__ = ()
    made = 0

    def __new__(cls, value: str) -> OutOfRange:
        OutOfRange.made += 1
        return super().__new__(cls, value)


def _cast_numeric(value: str | None, cursor: Any) -> str | None:
    if value is None or value not in _NON_FINITE:
        return value
    return OutOfRange(value)


def _date_caster(parse: Any) -> Any:
    """ISO text (DateStyle ISO, TimeZone UTC) parsed by Python's C `fromisoformat`, cheaper than psycopg2's caster."""

    def cast(value: str | None, cursor: Any) -> Any:
        if value is None:
            return None
        # `infinity`, `-infinity`, years past 9999 (no dash at index 4) and BC dates (trailing `BC`).
        if value[4] != "-" or value[-1] == "C":
            return OutOfRange(value)
        return parse(value)

    return cast


def _float_caster(smallest_normal: float) -> Any:
    """NaN and subnormal floats become OutOfRange: the destination would store NULL or 0.0 without a word."""

    def cast(value: str | None, cursor: Any) -> Any:
        if value is None:
            return None
        number = float(value)
        if number != number or 0 < abs(number) < smallest_normal:
            return OutOfRange(value)
        return number

    return cast


def _cast_float_element(value: str | None, cursor: Any) -> float | str | None:
    """An element of a float array: JSON has no NaN or Infinity, so those stay text, as to_json would write them."""
    if value is None:
        return None
    return value if value in _NON_FINITE else float(value)


class _InexactNumber(ValueError):
    """A JSON number that a 64-bit float, and so the SDK's JSON, cannot carry exactly."""


def _exact_float(text: str) -> float:
    number = float(text)
    if repr(number) == text or (number - number == 0 and Decimal(repr(number)) == Decimal(text)):
        return number
    raise _InexactNumber(text)


_JSON_DECODER = json.JSONDecoder(parse_float=_exact_float)
_JSON_SCAN = _JSON_DECODER.scan_once
_JSON_WHITESPACE = frozenset(" \t\n\r")


def _nested_deeper_than(text: str, depth: int) -> bool:
    """Whether the JSON text nests arrays and objects deeper than `depth`, found with C-speed string operations."""
    brackets = _NOT_A_BRACKET.sub("", _JSON_STRING.sub("", text))
    for _ in range(depth):
        if not brackets:
            return False
        brackets = brackets.replace("[]", "").replace("{}", "")
    return bool(brackets)


def _cast_json(value: str | None, cursor: Any) -> Any:
    """Decoded JSON whose numbers are exact; a JSON null, an inexact number or deep nesting become OutOfRange.

    The SDK writes JSON floats with float's repr, so a number keeps its value only if a 64-bit float holds it; it has
    no way to write a JSON null other than as a NULL column.
    """
    if value is None:
        return None
    # A bracket count below the limit bounds the nesting depth; only larger documents pay for the exact depth, and
    # only documents long enough to hold that many bracket pairs pay for the count.
    if (
        len(value) > 2 * MAX_JSON_DEPTH
        and value.count("[") + value.count("{") > MAX_JSON_DEPTH
        and _nested_deeper_than(value, MAX_JSON_DEPTH)
    ):
        return OutOfRange(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        # The C scanner alone: jsonb text has no surrounding whitespace; json text may start with some.
        decoded = _JSON_SCAN(value, 0)[0] if value[:1] not in _JSON_WHITESPACE else _JSON_DECODER.decode(value)
    except _InexactNumber as error:
        return OutOfRange(f"JSON number {error} (beyond a 64-bit float)")
    return OutOfRange("JSON null") if decoded is None else decoded


def _cast_bytea(value: str | None, cursor: Any) -> bytes | None:
    # With bytea_output = hex the server sends \x followed by hex digits; fromhex is far cheaper than a memoryview copy.
    return None if value is None else bytes.fromhex(value[2:])


# Float arrays are parsed here rather than by to_json on the server: inside a cursor, Greenplum 6 segments format
# floats with 15 digits whatever extra_float_digits says, and the coordinator's output keeps every digit.
_FLOAT_ELEMENT = extensions.new_type((FLOAT4_OID, FLOAT8_OID), "GP_FLOAT_ELEMENT", _cast_float_element)

_TYPECASTERS = (
    extensions.new_type((NUMERIC_OID,), "GP_NUMERIC_TEXT", _cast_numeric),
    extensions.new_type((FLOAT4_OID,), "GP_FLOAT4", _float_caster(_SMALLEST_NORMAL_FLOAT4)),
    extensions.new_type((FLOAT8_OID,), "GP_FLOAT8", _float_caster(_SMALLEST_NORMAL_FLOAT8)),
    extensions.new_type((JSON_OID, JSONB_OID), "GP_JSON", _cast_json),
    extensions.new_type((DATE_OID,), "GP_DATE", _date_caster(date.fromisoformat)),
    extensions.new_type((TIMESTAMP_OID,), "GP_TIMESTAMP", _date_caster(datetime.fromisoformat)),
    extensions.new_type((TIMESTAMPTZ_OID,), "GP_TIMESTAMPTZ", _date_caster(datetime.fromisoformat)),
    extensions.new_type((BYTEA_OID,), "GP_BYTEA", _cast_bytea),
    extensions.new_array_type((FLOAT4_ARRAY_OID, FLOAT8_ARRAY_OID), "GP_FLOAT_ARRAY", _FLOAT_ELEMENT),
)


def register_typecasters(connection: extensions.connection) -> None:
    """Installs the conversions on one connection only, leaving psycopg2's globals alone."""
    for typecaster in _TYPECASTERS:
        extensions.register_type(typecaster, connection)


def position_text(value: Any) -> str:
    """A key or cursor value as text the server parses back to the same value (it is sent as an untyped literal)."""
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    return str(value)
