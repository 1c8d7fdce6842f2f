"""The README stays what a user needs: at most 20,000 bytes, and every link from it (and from the docs it links to)
resolves to a file or a heading in the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _anchor(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)  # a '#' in a code block is no heading
    return {_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def test_the_readme_is_at_most_20000_bytes() -> None:
    assert len((ROOT / "README.md").read_bytes()) <= 20_000


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_link_resolves_to_a_file_or_heading(document: Path) -> None:
    links = LINK.findall(re.sub(r"```.*?```", "", document.read_text(), flags=re.DOTALL))
    assert document.name != "README.md" or links, "the README links to its docs"
    for link in links:
        assert not link.startswith(("http://", "https://")), f"{link}: links stay in the repository"
        target, _, anchor = link.partition("#")
        path = (document.parent / target).resolve() if target else document
        assert path.is_file() and path.is_relative_to(ROOT), f"{document.name}: {link} names no file"
        if anchor:
            assert anchor in _anchors(path), f"{document.name}: {link} names no heading of {path.name}"


def test_anchors_are_made_as_github_makes_them() -> None:
    assert _anchor(" Append-optimized change capture on Greenplum 6 (`--changes --dsn`)") == (
        "append-optimized-change-capture-on-greenplum-6---changes---dsn"
    )
    assert _anchor("Development and tests") == "development-and-tests"
