"""Peak memory of a first sync of wide rows: 4,000 rows of 1 MB and 1,000,000 rows of 1 KB, each table synced alone
through the SDK's runner in a fresh process (`python -m tools.benchmark --wide`).

The SDK holds every row sent until the next checkpoint, so the connector checkpoints after CHECKPOINT_MEGABYTES of
values as well as after CHECKPOINT_ROWS rows, and fetches fewer rows a round trip where they are wide: the peak
should stay flat whatever the rows' width, far under Fivetran's 1 GB. Fivetran's runtime streams what the connector
sends to a destination elsewhere, so each sync runs twice: with the SDK's runner writing nothing (its destination's
writes discarded: the connector and the SDK's record path, what that runtime holds), and as `fivetran debug` runs
it, into DuckDB, whose process grows with the data written whatever the connector does.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2

from tools import local_postgres

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "wide"
# table -> (rows, bytes of text a row)
TABLES = {"docs": (4_000, 2**20), "lines": (1_000_000, 1024)}


def run_wide(sizes: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:
    """Builds the tables on a throwaway PostgreSQL and syncs each alone; returns what each child measured."""
    sizes = sizes or TABLES
    results: dict[str, Any] = {}
    with (
        local_postgres.start_server(local_postgres.find_bin_dir()) as server,
        tempfile.TemporaryDirectory(prefix="wide-benchmark-") as work_dir,
    ):
        server.create_database(DATABASE)
        connection = psycopg2.connect(**{**server.connect_kwargs(), "dbname": DATABASE})
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE SCHEMA wide")
            for table, (rows, width) in sizes.items():
                started = time.monotonic()
                cursor.execute(f"CREATE TABLE wide.{table} (id int PRIMARY KEY, body text NOT NULL)")
                cursor.execute(
                    f"INSERT INTO wide.{table} SELECT g, repeat(md5(g::text), %s) FROM generate_series(1, %s) g",
                    (width // 32, rows),
                )
                print(f"built {table}: {rows:,} rows in {time.monotonic() - started:.0f}s", file=sys.stderr)
        connection.close()
        for (table, (rows, width)), writes in itertools.product(sizes.items(), ("discarded", "duckdb")):
            configuration = {
                "HOST": server.host,
                "PORT": str(server.port),
                "DATABASE": DATABASE,
                "USERNAME": server.user,
                "PASSWORD": server.password,
                "TABLES": f"wide.{table}",
            }
            measured = _child(Path(work_dir) / f"{table}-{writes}", configuration, writes)
            results[f"{table}, {writes}"] = {"rows": rows, "row_bytes": width, **measured}
    return results


def format_wide(results: dict[str, Any]) -> str:
    lines = [f"{'table, writes':<18}{'rows':>11}{'bytes a row':>13}{'seconds':>9}{'checkpoints':>13}{'peak MB':>9}"]
    for table, result in results.items():
        if "killed" in result:
            lines.append(f"{table:<18}{result['rows']:>11,}{result['row_bytes']:>13,}  {result['killed']}")
            continue
        lines.append(
            f"{table:<18}{result['rows']:>11,}{result['row_bytes']:>13,}{result['seconds']:>9.0f}"
            f"{result['checkpoints']:>13,}{result['peak_mb']:>9.0f}"
        )
    return "\n".join(lines)


def _child(project: Path, configuration: dict[str, str], writes: str) -> dict[str, Any]:
    """One first sync in a fresh interpreter, so that its peak memory is its own."""
    project.mkdir(parents=True)
    job = project / "job.json"
    job.write_text(json.dumps({"project": str(project), "configuration": configuration, "writes": writes}))
    log = project / "sync.log"
    with log.open("w") as output:
        completed = subprocess.run(
            [sys.executable, "-m", "tools.wide_benchmark", str(job)],
            cwd=ROOT,
            env={**os.environ, "DO_NOT_TRACK": "1"},
            stdout=output,
            stderr=subprocess.STDOUT,
            check=False,
        )
    killed = "exceeded the allowed limit" in log.read_text()
    if completed.returncode != 0 and killed:  # the local runner's own limit, 4 GB
        return {"killed": "stopped by the SDK's runner at its 4 GB limit"}
    if completed.returncode != 0:
        raise SystemExit(f"the sync of {configuration['TABLES']} failed:\n{log.read_text()[-5000:]}")
    return json.loads((project / "result.json").read_text())


def _sync(job_file: Path) -> None:
    """In the fresh interpreter: the first sync through the SDK's runner, its seconds, checkpoints and peak RSS."""
    import fivetran_connector_sdk_core.runner as sdk_runner
    from fivetran_connector_sdk import Logging
    from fivetran_connector_sdk_cli import core_adapter

    sys.path.insert(0, str(ROOT))
    import connector

    Logging.LOG_LEVEL = Logging.Level.INFO  # the SDK's log.info raises TypeError while the level is unset
    sdk_runner.check_newer_version = lambda *args, **kwargs: None  # no network wait
    job = json.loads(job_file.read_text())
    if job["writes"] == "discarded":
        from fivetran_connector_sdk_core.destination.duckdb_destination import DuckDbDestination

        DuckDbDestination.upsert = DuckDbDestination.update = lambda self, table, types, key, rows: None
    started = time.perf_counter()
    counts = core_adapter.run(connector.connector, job["project"], job["configuration"], {})
    result = {"seconds": time.perf_counter() - started, "checkpoints": counts["Checkpoints"], "peak_mb": _peak_mb()}
    (Path(job["project"]) / "result.json").write_text(json.dumps(result))


def _peak_mb() -> float:
    """This process's own peak RSS (VmHWM)."""
    status = Path("/proc/self/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(line.split()[1]) / 1024


if __name__ == "__main__":
    _sync(Path(sys.argv[1]))
