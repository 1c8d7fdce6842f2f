"""The connector end to end on an embedded default: a throwaway PostgreSQL with sample data, `fivetran debug`, and a
summary of what landed in files/warehouse.db next to what the source holds.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import duckdb
import psycopg2

from tools import local_postgres
from tools.fivetran_cli import ROOT, fivetran, stage_project

SAMPLE_SQL = Path(__file__).with_name("sample_data.sql")
DEMO_DATABASE = "demo"


def _load_sample(server: local_postgres.LocalServer) -> None:
    admin = psycopg2.connect(**server.connect_kwargs())
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {DEMO_DATABASE}")
    admin.close()
    connection = psycopg2.connect(**{**server.connect_kwargs(), "dbname": DEMO_DATABASE})
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
    with tempfile.TemporaryDirectory(prefix="connector-demo-") as work:
        work_dir = Path(work)
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
            configuration_path = work_dir / "configuration.json"
            configuration_path.write_text(json.dumps(configuration))
            project = stage_project(work_dir / "greenplum_connector")
            print(f"Running: fivetran debug --configuration configuration.json ({server.version})", flush=True)
            result = fivetran(
                "debug", "--configuration", str(configuration_path), project=project, home=work_dir / "home"
            )
            if result.returncode != 0:
                print("fivetran debug failed: see its output above.", file=sys.stderr)
                return result.returncode
            files = ROOT / "files"
            files.mkdir(exist_ok=True)
            for name in ("warehouse.db", "state.json"):
                shutil.copy2(project / "files" / name, files / name)
            print("\nWhat landed in files/warehouse.db (live rows), next to the source:")
            print("\n".join(_summary(files / "warehouse.db", server)))
            print("\nExplore it with: .venv/bin/python -c \"import duckdb; duckdb.connect('files/warehouse.db')\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
