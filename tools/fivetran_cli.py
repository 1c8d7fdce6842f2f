"""Runs the `fivetran` command hermetically on a staged copy of what the connector ships.

Two traps of the SDK's CLI are avoided here: offline, every run waits about 7 seconds for a version check (a HOME of
our own says it was just done), and its dependency check scans every .py file of the project, tests included, and
proposes test packages for requirements.txt (the staged copy holds only the top-level files that are deployed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOYED_FILES = ("requirements.txt", "README.md", "configuration.json.example")


def stage_project(destination: Path) -> Path:
    """Copies the deployable top level (connector modules and requirements.txt) into `destination`."""
    destination.mkdir(parents=True, exist_ok=True)
    for path in ROOT.iterdir():
        if path.is_file() and (path.suffix == ".py" or path.name in DEPLOYED_FILES):
            shutil.copy2(path, destination / path.name)
    return destination


def hermetic_environment(home: Path) -> dict[str, str]:
    """Environment for the CLI: no telemetry, and version checks recorded as just done."""
    sdk = home / ".fivetran" / "connector_sdk"
    core = home / ".fivetran" / "connector_sdk_core"
    sdk.mkdir(parents=True, exist_ok=True)
    core.mkdir(parents=True, exist_ok=True)
    (sdk / "_last_version_check").write_text("9999999999")
    (core / "_config.json").write_text(json.dumps({"lastVersionCheck": 9999999999, "licenseNoticeShown": True}))
    # The CLI runs pipreqs by name: this virtualenv's bin comes first on PATH.
    path = os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", "")))
    return {**os.environ, "HOME": str(home), "DO_NOT_TRACK": "1", "PATH": path}


def fivetran(*arguments: str, project: Path, home: Path, capture: bool = False) -> subprocess.CompletedProcess:
    """Runs `fivetran <arguments> <project>` from this virtualenv, with no standard input."""
    command = [str(Path(sys.executable).parent / "fivetran"), *arguments]
    return subprocess.run(
        command,
        cwd=project,
        env=hermetic_environment(home),
        stdin=subprocess.DEVNULL,
        capture_output=capture,
        text=True,
        check=False,
    )


def staged(command: str, arguments: list[str], workdir: Path) -> int:
    """`fivetran debug` or `fivetran deploy` of the deployable files only, so the SDK's dependency check sees only the
    connector. Its output is in `workdir`: files/ (warehouse.db, state.json) and crash-reports/ are those of
    `workdir`, so each debug run continues from the state the last one saved there."""
    with tempfile.TemporaryDirectory(prefix=f"connector-{command}-") as work:
        project = stage_project(Path(work) / "greenplum_connector")
        for name in ("files", "crash-reports"):
            (workdir / name).mkdir(exist_ok=True)
            (project / name).symlink_to(workdir / name, target_is_directory=True)
        arguments = [str((workdir / a).resolve()) if a.endswith(".json") else a for a in arguments]
        home = ROOT / ".venv" / "fivetran-home"  # the SDK's version check, recorded as done, kept across runs
        return fivetran(command, *arguments, project=project, home=home).returncode


def main() -> None:
    """`python -m tools.fivetran_cli package`: the deploy zip, built from the staged copy, listed and kept in files/.
    `python -m tools.fivetran_cli debug|deploy --configuration F [...]`: see staged()."""
    if sys.argv[1:2] in (["debug"], ["deploy"]):
        raise SystemExit(staged(sys.argv[1], sys.argv[2:], Path.cwd()))
    if sys.argv[1:] != ["package"]:
        raise SystemExit("usage: python -m tools.fivetran_cli package | debug | deploy --configuration FILE [...]")
    with tempfile.TemporaryDirectory(prefix="connector-package-") as work:
        project = stage_project(Path(work) / "greenplum_connector")
        result = fivetran("package", ".", project=project, home=Path(work) / "home")
        if result.returncode != 0:
            raise SystemExit(result.returncode)
        (zip_path,) = (project / "files").glob("*.zip")
        target = ROOT / "files" / zip_path.name
        target.parent.mkdir(exist_ok=True)
        shutil.copy2(zip_path, target)
    subprocess.run(["unzip", "-l", str(target)], check=False)
    print(f"deploy package: {target}")


if __name__ == "__main__":
    main()
