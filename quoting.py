"""What the user wrote (names, custom queries, saved values) as statement text that psycopg2 never reads as a
placeholder.

psycopg2 reads every `%` of a statement executed with parameters as the start of one, quotes or not: a table named
`a%b`, a column `v%s` or a custom query's `LIKE 'n1%'` would fail the statement or take a parameter's place. So these
composables double each `%` of the user's text, and `GreenplumClient` executes every statement with parameters (an
empty list when it has none), which turns `%%` back into `%`: the server receives exactly what the user wrote.
"""

from __future__ import annotations

import re
from typing import Any

from psycopg2 import sql

# Where a custom query may end: spaces, comments and one semicolon, which a subquery cannot hold.
_TRAILING_SEMICOLON = re.compile(r";\s*\Z")


class Identifier(sql.Identifier):
    """A quoted name (`"schema"."table"`), its `%` doubled."""

    def as_string(self, context: Any) -> str:
        return super().as_string(context).replace("%", "%%")


class Literal(sql.Literal):
    """A quoted value, its `%` doubled."""

    def as_string(self, context: Any) -> str:
        return super().as_string(context).replace("%", "%%")


class UserSQL(sql.Composable):
    """SQL text exactly as the user wrote it (a custom query), its `%` doubled."""

    def __init__(self, text: str) -> None:
        super().__init__(text)

    def as_string(self, context: Any) -> str:
        return self._wrapped.replace("%", "%%")


def subquery(text: str, alias: str) -> sql.Composable:
    """A custom query as a subquery named `alias`: on lines of its own, so that a trailing `-- comment` ends before the
    closing parenthesis, and without a trailing semicolon, which a subquery cannot hold."""
    return sql.SQL("(\n{}\n) AS {}").format(UserSQL(without_trailing_semicolon(text)), Identifier(alias))


def without_trailing_semicolon(text: str) -> str:
    """The query without the one semicolon (and spaces) that may end it; anything else is the server's to judge."""
    return _TRAILING_SEMICOLON.sub("", text.rstrip())
