"""What a sync costs as tables and leaves grow in number, measured in one run (`python -m tools.benchmark --tables N
[N ...]`).

For each N, on a throwaway local PostgreSQL and through the SDK's runner: N tables of 10 rows (a third keyed with an
`updated_at` cursor, a third keyed without, a third keyless), then one keyless table of N leaves of 20 rows; the
first sync and a sync with nothing changed, their seconds (the runner's whole sync, the connector's start-up
included), the seconds spent inside the SDK's checkpoints (where its runner writes to DuckDB), and checkpoints.

The SDK alone, for comparison: for the N tables, a connector that declares the same tables and upserts the same rows
(all of them; then the newest row of each incremental table, as the lookback re-reads), with one checkpoint; for the
leaves, the same number of pre-built rows passed to `op.upsert`, checkpointing every CHECKPOINT_ROWS rows.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2
from fivetran_connector_sdk import Operations

from tools import local_postgres

TABLE_ROWS, LEAF_ROWS = 10, 20
TARGETS = {"tables_1000_first_seconds": 60, "tables_1000_unchanged_seconds": 30, "growth_100_to_1000": 11}
LEAVES_OVER_CEILING = 3


def run_scale(counts: list[int]) -> dict[str, Any]:
    """Every case for every N on one server; returns what the JSON output holds."""
    with (
        tempfile.TemporaryDirectory(prefix="connector-scale-benchmark-") as work,
        local_postgres.start_server(local_postgres.find_bin_dir()) as server,
    ):
        params = server.create_database("benchmark")
        source = psycopg2.connect(**params)
        source.autocommit = True
        results: dict[str, Any] = {"python": sys.version.split()[0], "server": server.version.split(",")[0]}
        cases = results["cases"] = {}
        for count in counts:
            _build_tables(source, count)
            tables = _two_syncs(Path(work) / f"tables_{count}", params, f"scale_tables_{count}")
            cases[f"tables_{count}"] = tables
            tables |= _tables_alone(Path(work) / f"sdk_tables_{count}", count)
            _build_leaves(source, count)
            leaves = cases[f"leaves_{count}"] = _two_syncs(
                Path(work) / f"leaves_{count}", params, f"scale_leaves_{count}"
            )
            leaves["ceiling_seconds"] = _ceiling(Path(work) / f"ceiling_{count}", count * LEAF_ROWS)
        source.close()
    _judge(results, counts)
    return results


def format_scale(results: dict[str, Any]) -> str:
    """The results as a plain-text table."""
    lines = [
        f"Python {results['python']}, {results['server']}; seconds of the runner's whole sync (of which inside the "
        "SDK's checkpoints), checkpoints taken, and the SDK alone with the same tables and rows",
        f"{'case':<34}{'first':>16}{'ckpts':>6}{'unchanged':>16}{'ckpts':>6}{'SDK alone':>18}",
    ]
    for key, case in results["cases"].items():
        kind, count = key.split("_")
        label = (
            f"{int(count):,} tables of {TABLE_ROWS} rows"
            if kind == "tables"
            else f"1 table of {int(count):,} leaves x {LEAF_ROWS} rows"
        )
        if "ceiling_seconds" in case:
            alone = f"{case['ceiling_seconds']:.1f}"
        else:
            alone = f"{case['sdk_first_seconds']:.1f} / {case['sdk_unchanged_seconds']:.1f}"
        first, unchanged = case["first"], case["unchanged"]
        lines.append(
            f"{label:<34}{_seconds(first):>16}{first['checkpoints']:>6}"
            f"{_seconds(unchanged):>16}{unchanged['checkpoints']:>6}{alone:>18}"
        )
    lines += [f"{name}: {value:.2f}" for name, value in results.get("ratios", {}).items()]
    met = {True: "met", False: "NOT MET"}
    lines += [f"target {name}: {met[value]}" for name, value in results.get("targets", {}).items()]
    return "\n".join(lines)


def _seconds(sync: dict[str, Any]) -> str:
    return f"{sync['seconds']:.1f} ({sync['in_checkpoints']:.1f})"


def _judge(results: dict[str, Any], counts: list[int]) -> None:
    cases, ratios, targets = results["cases"], {}, {}
    for count in counts:
        leaves = cases[f"leaves_{count}"]
        ratios[f"{count} leaves: first sync / SDK ceiling"] = leaves["first"]["seconds"] / leaves["ceiling_seconds"]
    if 100 in counts and 1000 in counts:
        small, large = cases["tables_100"], cases["tables_1000"]
        for sync in ("first", "unchanged"):
            ratios[f"1,000 / 100 tables, {sync} sync"] = large[sync]["seconds"] / small[sync]["seconds"]
            ratios[f"1,000 / 100 tables, {sync} sync outside the SDK's checkpoints"] = _outside(large[sync]) / _outside(
                small[sync]
            )
            ratios[f"1,000 tables, {sync} sync / the SDK alone"] = large[sync]["seconds"] / large[f"sdk_{sync}_seconds"]
        targets |= {
            "1,000 tables first sync under 60 s": large["first"]["seconds"] < TARGETS["tables_1000_first_seconds"],
            "1,000 tables unchanged sync under 30 s": large["unchanged"]["seconds"]
            < TARGETS["tables_1000_unchanged_seconds"],
            "100 to 1,000 tables at most 11 times the time": all(
                large[sync]["seconds"] <= TARGETS["growth_100_to_1000"] * small[sync]["seconds"]
                for sync in ("first", "unchanged")
            ),
        }
    if 1000 in counts:
        targets["1,000 leaves first sync within 3 times the SDK ceiling"] = (
            ratios["1000 leaves: first sync / SDK ceiling"] <= LEAVES_OVER_CEILING
        )
    results["ratios"], results["targets"] = ratios, targets


def _outside(sync: dict[str, Any]) -> float:
    """Seconds of a sync outside the SDK's checkpoints: the connector's own work, with op.upsert's."""
    return sync["seconds"] - sync["in_checkpoints"]


def _build_tables(source: psycopg2.extensions.connection, count: int) -> None:
    schema = f"scale_tables_{count}"
    shapes = (
        # an hour apart: the lookback window re-reads the newest row only
        ("id int PRIMARY KEY, note text, updated_at timestamp NOT NULL", "i, 'n' || i, now() - i * interval '1 hour'"),
        ("id int PRIMARY KEY, note text", "i, 'n' || i"),
        ("id int, note text", "i % 4, 'same'"),
    )
    with source.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")
        for number in range(count):
            columns, values = shapes[number % 3]
            cursor.execute(
                f"CREATE TABLE {schema}.t_{number:04d} ({columns}); "
                f"INSERT INTO {schema}.t_{number:04d} SELECT {values} FROM generate_series(1, {TABLE_ROWS}) i"
            )


def _build_leaves(source: psycopg2.extensions.connection, count: int) -> None:
    schema = f"scale_leaves_{count}"
    with source.cursor() as cursor:
        cursor.execute(
            f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; "
            f"CREATE TABLE {schema}.facts (day int, amount int, note text) PARTITION BY RANGE (day)"
        )
        for leaf in range(count):
            cursor.execute(
                f"CREATE TABLE {schema}.facts_{leaf:04d} PARTITION OF {schema}.facts "
                f"FOR VALUES FROM ({leaf}) TO ({leaf + 1})"
            )
        cursor.execute(
            f"INSERT INTO {schema}.facts SELECT d, i, 'note ' || i FROM generate_series(0, {count - 1}) d, "
            f"generate_series(1, {LEAF_ROWS}) i; ANALYZE {schema}.facts"
        )


def _two_syncs(project: Path, params: dict[str, Any], schema: str) -> dict[str, Any]:
    configuration = {
        "HOST": str(params["host"]),
        "PORT": str(params["port"]),
        "DATABASE": params["dbname"],
        "USERNAME": params["user"],
        "PASSWORD": params.get("password") or "unused",
        "SCHEMAS": schema,
    }
    import connector

    first = _sync(project, connector.connector, configuration, {}, f"{schema}: first sync")
    state = json.loads((project / "files" / "state.json").read_text())
    unchanged = _sync(project, connector.connector, configuration, state, f"{schema}: nothing changed")
    if unchanged["upserts"] > len(state["tables"]):  # an incremental table re-reads its lookback window only
        raise SystemExit(f"{schema}: the unchanged sync sent {unchanged['upserts']} rows")
    return {"first": first, "unchanged": unchanged, "state_bytes": len(json.dumps(state))}


def _sync(project: Path, connector: Any, configuration: dict[str, str], state: dict, what: str) -> dict[str, Any]:
    import fivetran_connector_sdk_core.runner as sdk_runner
    from fivetran_connector_sdk import Logging
    from fivetran_connector_sdk_cli import core_adapter

    Logging.LOG_LEVEL = Logging.Level.WARNING  # the SDK's log.info raises TypeError while the level is unset
    sdk_runner.check_newer_version = lambda *args, **kwargs: None  # no network wait
    project.mkdir(parents=True, exist_ok=True)
    print(f"{what} ...", file=sys.stderr)
    real_checkpoint, in_checkpoints = Operations.checkpoint, [0.0]

    def timed_checkpoint(state: dict) -> None:
        started = time.perf_counter()
        try:
            real_checkpoint(state)
        finally:
            in_checkpoints[0] += time.perf_counter() - started

    Operations.checkpoint = staticmethod(timed_checkpoint)
    try:
        started = time.perf_counter()
        counts = core_adapter.run(connector, str(project), configuration, state)
        seconds = time.perf_counter() - started
    finally:
        Operations.checkpoint = staticmethod(real_checkpoint)
    return {
        "seconds": seconds,
        "in_checkpoints": in_checkpoints[0],
        "checkpoints": counts.get("Checkpoints", 0),
        "upserts": counts.get("Upserts", 0),
    }


def _tables_alone(project: Path, count: int) -> dict[str, float]:
    """Seconds for the SDK alone to take the N tables' rows (first sync) and then their incremental tables' newest
    rows (as the connector's unchanged sync re-reads its lookback window), with one checkpoint each."""
    from fivetran_connector_sdk import Connector
    from fivetran_connector_sdk import Operations as op

    schema_name = f"scale_tables_{count}"
    columns = (
        {"id": "INT", "note": "STRING", "updated_at": "NAIVE_DATETIME"},
        {"id": "INT", "note": "STRING"},
        {"id": "INT", "note": "STRING", "_source_row_id": "STRING"},
    )
    declarations = [
        {
            "table": f"t_{number:04d}",
            "schema": schema_name,
            "primary_key": ["_source_row_id" if number % 3 == 2 else "id"],
            "columns": columns[number % 3],
        }
        for number in range(count)
    ]
    newest_only = [False]

    def schema(configuration: dict[str, Any]) -> list[dict[str, object]]:
        return declarations

    def update(configuration: dict[str, Any], state: dict[str, Any]) -> None:
        for number, declaration in enumerate(declarations):
            if newest_only[0] and number % 3:
                continue
            for row_number in range(1, 2 if newest_only[0] else TABLE_ROWS + 1):
                row = {"id": row_number, "note": f"n{row_number}"}
                if number % 3 == 0:
                    row["updated_at"] = f"2024-01-01T{row_number:02d}:00:00"
                elif number % 3 == 2:
                    row |= {"id": row_number % 4, "_source_row_id": f"{number}:{row_number}"}
                op.upsert(declaration["table"], row, schema=schema_name)
        op.checkpoint({"done": True})

    connector = Connector(update=update, schema=schema)
    first = _sync(project, connector, {}, {}, f"the SDK alone: {count:,} tables")
    newest_only[0] = True
    unchanged = _sync(project, connector, {}, {"done": True}, f"the SDK alone: {count:,} tables, newest rows")
    return {"sdk_first_seconds": first["seconds"], "sdk_unchanged_seconds": unchanged["seconds"]}


def _ceiling(project: Path, rows: int) -> float:
    """Seconds for the SDK alone to take `rows` pre-built rows of the leaves table's shape, checkpointing as the
    connector does by default."""
    from fivetran_connector_sdk import Connector
    from fivetran_connector_sdk import Operations as op

    from configuration import DEFAULT_CHECKPOINT_ROWS

    declaration = {
        "table": "facts",
        "schema": "scale_ceiling",
        "primary_key": ["_source_row_id"],
        "columns": {"day": "INT", "amount": "INT", "note": "STRING", "_source_row_id": "STRING"},
    }
    prebuilt = [
        {"day": number // LEAF_ROWS, "amount": number, "note": f"note {number}", "_source_row_id": f"1:{number}"}
        for number in range(rows)
    ]

    def schema(configuration: dict[str, Any]) -> list[dict[str, object]]:
        return [declaration]

    def update(configuration: dict[str, Any], state: dict[str, Any]) -> None:
        for number, row in enumerate(prebuilt, start=1):
            op.upsert("facts", row, schema="scale_ceiling")
            if number % DEFAULT_CHECKPOINT_ROWS == 0:
                op.checkpoint({"rows": number})
        op.checkpoint({"rows": rows})

    result = _sync(project, Connector(update=update, schema=schema), {}, {}, f"SDK ceiling, {rows:,} rows")
    return result["seconds"]
