"""The connector end to end on an embedded default: a throwaway PostgreSQL with sample data, `fivetran debug`, and a
summary of what landed next to what the source holds.

It runs the README's own command, `tools/debug.sh --configuration configuration.json`, in the folder demo/, so its
output (demo/files/warehouse.db, demo/files/state.json) never mixes with the files/ of your own runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import psycopg2

from tools import local_postgres
from tools.fivetran_cli import ROOT

SAMPLE_SQL = Path(__file__).with_name("sample_data.sql")
DEMO_DATABASE = "demo"
DEMO_DIR = ROOT / "demo"


def _load_sample(server: local_postgres.LocalServer) -> None:
    connection = psycopg2.connect(**server.create_database(DEMO_DATABASE))
    with connection, connection.cursor() as cursor:
        cursor.execute("CREATE SCHEMA shop")
        cursor.execute(SAMPLE_SQL.read_text())
    connection.close()


def _source_counts(server: local_postgres.LocalServer, tables: list[str]) -> dict[str, int]:
    connection = psycopg2.connect(**{**server.connect_kwargs(), "dbname": DEMO_DATABASE})
    counts = {}
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"SELECT count(*) FROM shop.{table}")
            counts[table] = cursor.fetchone()[0]
    connection.close()
    return counts


def _summary(warehouse: Path, server: local_postgres.LocalServer) -> list[str]:
    connection = duckdb.connect(str(warehouse), read_only=True)
    try:
        tables = connection.execute(
            "SELECT table_name, count(*) FROM information_schema.columns WHERE table_schema = 'tester_shop' "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
        source = _source_counts(server, [name for name, _ in tables])
        lines = [f"{'table':<22}{'columns':>8}{'landed':>10}{'source':>10}", "-" * 50]
        for name, columns in tables:
            (landed,) = connection.execute(
                f'SELECT count(*) FROM tester_shop."{name}" WHERE NOT _fivetran_deleted'
            ).fetchone()
            lines.append(f"shop.{name:<17}{columns:>8}{landed:>10}{source[name]:>10}")
        (custom,) = connection.execute("SELECT count(*) FROM tester.sample_table").fetchone()
        lines.append(f"{'sample_table (query)':<22}{'':>8}{custom:>10}")
        return lines
    finally:
        connection.close()


def main() -> int:
    print("Starting a throwaway PostgreSQL with the sample schema shop ...", flush=True)
    with local_postgres.start_server(local_postgres.find_bin_dir()) as server:
        _load_sample(server)
        example = json.loads((ROOT / "configuration.json.example").read_text())
        configuration = {
            **example,
            "HOST": server.host,
            "PORT": str(server.port),
            "DATABASE": DEMO_DATABASE,
            "USERNAME": server.user,
            "PASSWORD": server.password,
            "SSLMODE": "disable",
        }
        shutil.rmtree(DEMO_DIR, ignore_errors=True)  # each demo starts from an empty destination
        DEMO_DIR.mkdir()
        (DEMO_DIR / "configuration.json").write_text(json.dumps(configuration))
        command = [str(ROOT / "tools" / "debug.sh"), "--configuration", "configuration.json"]
        print(f"Running, in demo/: tools/debug.sh --configuration configuration.json ({server.version})", flush=True)
        result = subprocess.run(command, cwd=DEMO_DIR, stdin=subprocess.DEVNULL, check=False)
        if result.returncode != 0:
            print("fivetran debug failed: see its output above.", file=sys.stderr)
            return result.returncode
        warehouse = DEMO_DIR / "files" / "warehouse.db"
        print("\nWhat landed in demo/files/warehouse.db (live rows), next to the source:")
        print("\n".join(_summary(warehouse, server)))
    print(
        "\nThe demo's output is in demo/files/ (your own runs of tools/debug.sh land in files/ instead). Explore it "
        "with: .venv/bin/python -c \"import duckdb; print(duckdb.connect('demo/files/warehouse.db').sql('SHOW ALL "
        "TABLES'))\""
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
