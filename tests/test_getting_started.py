"""The README's Getting started, exactly as written, in a fresh copy of the project where the demo has just run:
the commands are read from the README itself, and only the user's tables land in the user's files/."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import duckdb
from conftest import ROOT, Database


def _getting_started_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Getting started") :]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL).group(1)
    return [line for line in block.splitlines() if line.strip()]


def _fresh_copy(destination: Path) -> Path:
    """What a clone holds (the tracked files, as they are now), with the development environment already built."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
    ).stdout.split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).exists():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    (destination / ".venv").symlink_to(ROOT / ".venv")  # bootstrap.sh finds it up to date: no reinstall
    return destination


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={key: value for key, value in os.environ.items() if not key.startswith("GREENPLUM_TEST")},
        check=False,
        timeout=600,
    )


def test_getting_started_as_written_lands_only_the_users_tables(
    database: Database, schema: str, source, tmp_path: Path
) -> None:
    with source.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {schema}.mine (id int PRIMARY KEY, note text); INSERT INTO {schema}.mine VALUES (1, 'a')"
        )
    project = _fresh_copy(tmp_path / "clone")
    demo = _run("tools/demo.sh", project)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert (project / "demo" / "files" / "warehouse.db").exists() and not (project / "files").exists()

    copy, debug = _getting_started_commands()
    assert copy == "cp configuration.json.example configuration.json"
    assert _run(copy, project).returncode == 0
    configuration = json.loads((project / "configuration.json").read_text())
    configuration |= database.configuration(SCHEMAS=schema)  # "fill in HOST, PORT, DATABASE, USERNAME, PASSWORD"
    (project / "configuration.json").write_text(json.dumps(configuration))
    result = _run(debug, project)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    state = json.loads((project / "files" / "state.json").read_text())
    assert set(state["tables"]) == {f"{schema}.mine", "query:sample_table"}, "none of the demo's shop.* tables"
    warehouse = duckdb.connect(str(project / "files" / "warehouse.db"), read_only=True)
    try:
        schemas = {row[0] for row in warehouse.execute("SELECT table_schema FROM information_schema.tables").fetchall()}
        rows = warehouse.execute(f'SELECT id, note FROM "tester_{schema}".mine').fetchall()
    finally:
        warehouse.close()
    assert schemas - {"main"} == {"tester", f"tester_{schema}"}
    assert rows == [(1, "a")]
    assert database.password not in result.stdout + result.stderr
