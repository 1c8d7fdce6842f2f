"""Per-value conversion on the hot path, done inside psycopg2's typecasters so no row needs a second Python pass.

The SDK refuses `Decimal` and `memoryview`, fails a whole sync on a DECIMAL `NaN`, and cannot store dates outside
years 1 to 9999. So numeric arrives as its exact text, bytea as bytes, and the few values no destination type can
hold arrive as `OutOfRange` (their server text), which the sync turns into NULL with one warning per column.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any

import psycopg2.extensions as extensions

NUMERIC_OID = 1700
DATE_OID = 1082
TIMESTAMP_OID = 1114
TIMESTAMPTZ_OID = 1184
BYTEA_OID = 17
_NON_FINITE_NUMERIC = frozenset(("NaN", "Infinity", "-Infinity"))


class OutOfRange(str):
    """A value the destination type cannot hold (infinity, BC, year > 9999, NaN), as the server's text.

    `made` counts them, so that the sync looks for them only in a batch during which some were made.
    """

    __slots__ = ()
    made = 0

    def __new__(cls, value: str) -> OutOfRange:
        OutOfRange.made += 1
        return super().__new__(cls, value)


def _cast_numeric(value: str | None, cursor: Any) -> str | None:
    if value is None or value not in _NON_FINITE_NUMERIC:
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


def _cast_bytea(value: str | None, cursor: Any) -> bytes | None:
    # With bytea_output = hex the server sends \x followed by hex digits; fromhex is far cheaper than a memoryview copy.
    return None if value is None else bytes.fromhex(value[2:])


_TYPECASTERS = (
    extensions.new_type((NUMERIC_OID,), "GP_NUMERIC_TEXT", _cast_numeric),
    extensions.new_type((DATE_OID,), "GP_DATE", _date_caster(date.fromisoformat)),
    extensions.new_type((TIMESTAMP_OID,), "GP_TIMESTAMP", _date_caster(datetime.fromisoformat)),
    extensions.new_type((TIMESTAMPTZ_OID,), "GP_TIMESTAMPTZ", _date_caster(datetime.fromisoformat)),
    extensions.new_type((BYTEA_OID,), "GP_BYTEA", _cast_bytea),
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
