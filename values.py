"""Per-value conversion on the hot path: psycopg2's C typecasters where they suffice, whole columns where not.

The SDK refuses `Decimal` and `memoryview`, fails a whole sync on a DECIMAL `NaN`, cannot store dates outside years
1 to 9999, silently stores a float `NaN` as NULL and a subnormal float as 0.0, and writes JSON numbers as 64-bit
floats. So numeric arrives as its exact text and JSON as its text (both through psycopg2's C text caster), bytea as
bytes, dates through Python's C `fromisoformat`. The checks then run once per column of a batch, at C speed, and
only a column holding a value no destination type can hold is walked value by value: such a value becomes NULL and
its text goes into the `unfit` list the sync turns into one warning per column.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
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

# A column of one batch, and the list that collects the texts of its values no destination type can hold.
ColumnCheck = Callable[[Sequence[Any], list[str]], Sequence[Any]]


class OutOfRange(str):
    """A date the destination cannot hold (infinity, BC, year > 9999), as its server text: the date typecaster's
    answer, which `dates_in_range` turns into NULL."""

    __slots__ = ()


def _date_caster(parse: Callable[[str], Any]) -> Callable[[str | None, Any], Any]:
    """ISO text (DateStyle ISO, TimeZone UTC) parsed by Python's C `fromisoformat`, cheaper than psycopg2's caster."""

    def cast(value: str | None, cursor: Any) -> Any:
        if value is None:
            return None
        # `infinity`, `-infinity`, years past 9999 (no dash at index 4) and BC dates (trailing `BC`).
        if value[4] != "-" or value[-1] == "C":
            return OutOfRange(value)
        return parse(value)

    return cast


def _cast_float_element(value: str | None, cursor: Any) -> float | str | None:
    """An element of a float array: JSON has no NaN or Infinity, so those stay text, as to_json would write them."""
    if value is None:
        return None
    return value if value in _NON_FINITE else float(value)


def _cast_bytea(value: str | None, cursor: Any) -> bytes | None:
    # With bytea_output = hex the server sends \x followed by hex digits; fromhex is far cheaper than a memoryview copy.
    return None if value is None else bytes.fromhex(value[2:])


# Float arrays are parsed here rather than by to_json on the server: inside a cursor, Greenplum 6 segments format
# floats with 15 digits whatever extra_float_digits says, and the coordinator's output keeps every digit.
_FLOAT_ELEMENT = extensions.new_type((FLOAT4_OID, FLOAT8_OID), "GP_FLOAT_ELEMENT", _cast_float_element)

# Floats keep psycopg2's own C caster; numeric and JSON come as text through its C text caster.
_TYPECASTERS = (
    extensions.new_type((NUMERIC_OID,), "GP_NUMERIC_TEXT", extensions.UNICODE),
    extensions.new_type((JSON_OID, JSONB_OID), "GP_JSON_TEXT", extensions.UNICODE),
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


# Column checks, each on one column of a batch: they return the values to send, None for those no destination type
# can hold (whose texts go into `unfit`), and the column itself when it needs no change.


def _replaced(column: Sequence[Any], unfit: list[str], misfit: Callable[[Any], str | None]) -> list[Any]:
    """The column with None where `misfit` names a reason (collected in `unfit`): the rare, value-by-value path."""
    values = list(column)
    for index, value in enumerate(values):
        if value is not None:
            reason = misfit(value)
            if reason is not None:
                unfit.append(reason)
                values[index] = None
    return values


def decimals_finite(column: Sequence[Any], unfit: list[str]) -> Sequence[Any]:
    """A DECIMAL column's text without NaN or infinities, which would fail the whole sync at the next checkpoint."""
    if _NON_FINITE.isdisjoint(column):
        return column
    return _replaced(column, unfit, lambda text: text if text in _NON_FINITE else None)


def dates_in_range(column: Sequence[Any], unfit: list[str]) -> Sequence[Any]:
    """A date or timestamp column without the `OutOfRange` values its typecaster made."""
    if OutOfRange not in map(type, column):
        return column
    return _replaced(column, unfit, lambda value: str(value) if value.__class__ is OutOfRange else None)


def _float_check(smallest_normal: float) -> ColumnCheck:
    def misfit(number: float) -> str | None:
        if number != number:
            return "NaN"
        return repr(number) if 0 < abs(number) < smallest_normal else None

    def floats_storable(column: Sequence[Any], unfit: list[str]) -> Sequence[Any]:
        """A float column without NaN or subnormals: the destination would store NULL or 0.0 without a word."""
        nonzero = list(filter(None, column))  # NULL and zero are fine; NaN is truthy
        if not any(map(math.isnan, nonzero)) and min(map(abs, nonzero), default=math.inf) >= smallest_normal:
            return column
        return _replaced(column, unfit, misfit)

    return floats_storable


floats4_storable = _float_check(_SMALLEST_NORMAL_FLOAT4)
floats8_storable = _float_check(_SMALLEST_NORMAL_FLOAT8)


class _InexactNumber(ValueError):
    """A JSON number that a 64-bit float, and so the SDK's JSON, cannot carry exactly."""


def _exact_float(text: str) -> float:
    number = float(text)
    if repr(number) == text or (number - number == 0 and Decimal(repr(number)) == Decimal(text)):
        return number
    raise _InexactNumber(text)


_JSON_DECODER = json.JSONDecoder(parse_float=_exact_float)
_JSON_SCAN = _JSON_DECODER.scan_once


def _nested_deeper_than(text: str, depth: int) -> bool:
    """Whether the JSON text nests arrays and objects deeper than `depth`, found with C-speed string operations."""
    brackets = _NOT_A_BRACKET.sub("", _JSON_STRING.sub("", text))
    for _ in range(depth):
        if not brackets:
            return False
        brackets = brackets.replace("[]", "").replace("{}", "")
    return bool(brackets)


def _decode_json_or_reason(text: str) -> tuple[Any, str | None]:
    """One JSON text decoded, or why it cannot land: a JSON null, an inexact number or deep nesting."""
    # A bracket count below the limit bounds the nesting depth; only documents long enough to hold that many bracket
    # pairs pay for the count, and only those with that many brackets for the exact depth.
    if (
        len(text) > 2 * MAX_JSON_DEPTH
        and text.count("[") + text.count("{") > MAX_JSON_DEPTH
        and _nested_deeper_than(text, MAX_JSON_DEPTH)
    ):
        return None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    try:
        decoded = _JSON_DECODER.decode(text)
    except _InexactNumber as error:
        return None, f"JSON number {error} (beyond a 64-bit float)"
    return decoded, ("JSON null" if decoded is None else None)


def json_decoded(column: Sequence[Any], unfit: list[str]) -> Sequence[Any]:
    """A JSON column's texts decoded, their numbers exact; a JSON null, an inexact number or deep nesting as None.

    The SDK writes JSON floats with float's repr, so a number keeps its value only if a 64-bit float holds it; it has
    no way to write a JSON null other than as a NULL column. The usual batch, short documents that all decode, is
    decoded as one JSON array by the C scanner: one call instead of one per value.
    """
    texts = list(filter(None, column)) if None in column else column
    if texts and max(map(len, texts)) <= 2 * MAX_JSON_DEPTH:  # too short to nest deeper than the limit
        try:
            decoded = _JSON_SCAN(f"[{','.join(texts)}]", 0)[0]
        except _InexactNumber:
            decoded = None
        if decoded is not None and len(decoded) == len(texts) and None not in decoded:
            if texts is column:
                return decoded
            remaining = iter(decoded)
            return [None if text is None else next(remaining) for text in column]
    values = []
    for text in column:
        value, reason = (None, None) if text is None else _decode_json_or_reason(text)
        if reason is not None:
            unfit.append(reason)
        values.append(value)
    return values


def position_text(value: Any) -> str:
    """A key or cursor value as text the server parses back to the same value (it is sent as an untyped literal)."""
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    return str(value)
