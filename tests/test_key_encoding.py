"""Key encodings: how a key's text comes back as the values its rows landed with."""

from __future__ import annotations

import pytest

import key_encoding


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("(1,abc)", ["1", "abc"]),
        ('(2,"a, \\"b\\"")', ["2", 'a, "b"']),
        ('(3,"x""y")', ["3", 'x"y']),
        ("(4,)", ["4", ""]),
    ],
)
def test_a_record_text_parses_into_its_fields(text: str, fields: list[str]) -> None:
    assert key_encoding.parse_record(text) == fields
