"""What a full-strategy sync costs when little or nothing changed, measured in one run (`python -m tools.benchmark
--changes`), through the SDK's runner:
- PostgreSQL (a throwaway local server, or `--dsn`): an unpartitioned keyless heap table of N rows and a keyed one
  without a cursor; rows sent and seconds of (a) the first sync, (b) nothing changed, (e) 100 adjacent rows updated
  and 100 deleted, (f) 0.1% of N inserted, (g) 100 rows updated at random, (h) on the keyed table 100 rows updated at
  random; the digest query's time next to a full read by the connector without the SDK; the state's size.
- Greenplum 6 (`--dsn`, by hand): a keyless table of N rows in 12 append-optimized column leaves; rows sent, seconds
  and the leaves each sync scanned (the coordinator's `seq_scan`) for (a) the first sync, (b) nothing changed, (c)
  0.1% of N appended to one leaf, (d) 0.1% of N inserted and 0.1% deleted across every leaf, as TPC-H's refresh
  functions change orders; and the state's size after (d).
With `--dsn` it creates the schema `bench_changes` and drops it afterwards.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions

from tools import local_postgres

SCHEMA = "bench_changes"
TARGETS = {"spread_sent_over_changed": 1.1, "slack": 100}

_COLUMNS = "id bigint, day date, store int, product int, quantity int, amount numeric(12, 2), note text"
_PARTITIONS_LEGACY = (
    "PARTITION BY RANGE (day) (START (date '2024-01-01') INCLUSIVE END (date '2025-01-01') EXCLUSIVE "
    "EVERY (interval '1 month'))"
)
# The rows of day d are spread over the year; g + offset keeps the inserted rows' ids apart from the first ones.
_FILL = f"""
INSERT INTO {SCHEMA}.facts
SELECT g, {{day}}, (g %% 50)::int, (g %% 1000)::int, (g %% 7)::int, round((g %% 100003) * 0.37, 2),
       CASE WHEN g %% 10 <> 0 THEN md5(g::text) END
FROM generate_series(%s::bigint, %s::bigint) AS g
"""


def run_changes(
    rows: int, dsn: str | None, batch_size: int, checkpoint_rows: int, heap: bool = False
) -> dict[str, Any]:
    """Builds the tables, runs the syncs and the reads; returns what the JSON output holds. `heap`: the heap tables'
    stages on a Greenplum too (append-optimized ones otherwise)."""
    with tempfile.TemporaryDirectory(prefix="connector-change-benchmark-") as work:
        if dsn is not None:
            params = psycopg2.extensions.parse_dsn(dsn)
            return _measure(params, rows, Path(work), batch_size, checkpoint_rows, heap)
        with local_postgres.start_server(local_postgres.find_bin_dir()) as server:
            return _measure(server.create_database("benchmark"), rows, Path(work), batch_size, checkpoint_rows)


def _measure(
    params: dict[str, Any], rows: int, work: Path, batch_size: int, checkpoint_rows: int, heap: bool = False
) -> dict[str, Any]:
    source = psycopg2.connect(**params)
    source.autocommit = True
    try:
        version = _one(source, "SELECT version()")
        run = _Run(source, params, version, rows, work, _configuration(params, batch_size, checkpoint_rows))
        if ("Greenplum Database 6" in version or "Greenplum Database 5" in version) and not heap:
            return _measure_append_optimized(run)
        return _measure_heap(run)
    finally:
        with source.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        source.close()


@dataclass(frozen=True)
class _Run:
    """One benchmark run: the source (a connection of the benchmark's own), where syncs write, and how to sync."""

    source: psycopg2.extensions.connection
    params: dict[str, Any]
    version: str
    rows: int
    work: Path
    configuration: dict[str, str]


def _measure_heap(run: _Run) -> dict[str, Any]:
    """PostgreSQL (or a Greenplum heap): a keyless table and a keyed one without a cursor, N rows each."""
    source, version, rows, work, configuration = run.source, run.version, run.rows, run.work, run.configuration
    started = time.monotonic()
    with source.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}")
        for table, key in (("heap", ""), ("keyed", " PRIMARY KEY")):
            distributed = " DISTRIBUTED BY (id)" if "Greenplum" in version else ""
            cursor.execute(
                f"CREATE TABLE {SCHEMA}.{table} ({_COLUMNS.replace('id bigint', 'id bigint' + key)}){distributed}"
            )
            for first in range(1, rows + 1, 500_000):
                cursor.execute(
                    _FILL.replace("facts", table).format(day="date '2024-01-01' + (g %% 366)::int"),
                    (first, min(first + 499_999, rows)),
                )
            cursor.execute(f"VACUUM ANALYZE {SCHEMA}.{table}")
    print(f"built two tables of {rows:,} rows in {time.monotonic() - started:.0f}s", file=sys.stderr)
    results: dict[str, Any] = {"rows": rows, "server": version.split(" on ")[0], "python": sys.version.split()[0]}
    results["reads"] = _digest_and_full_read(configuration | {"TABLES": f"{SCHEMA}.heap"}, "Greenplum" in version)
    syncs = {"a_first": _sync(work, configuration, "first sync")}
    syncs["b_unchanged"] = _sync(work, configuration, "nothing changed")
    change = max(rows // 1000, 1)
    stages = {
        "e_adjacent": (
            f"UPDATE {SCHEMA}.heap SET note = 'updated' WHERE id BETWEEN {rows // 3} AND {rows // 3 + 99}; "
            f"DELETE FROM {SCHEMA}.heap WHERE id BETWEEN {rows // 2} AND {rows // 2 + 99}",
            "100 adjacent rows updated, 100 deleted",
        ),
        "f_inserted": (
            _FILL.replace("facts", "heap").format(day="date '2024-06-01'") % (rows + 1, rows + change),
            "0.1% of N inserted",
        ),
        "g_random": (
            f"UPDATE {SCHEMA}.heap SET quantity = quantity + 1 WHERE id IN "
            f"(SELECT (1 + (i * 7919) % {rows})::bigint FROM generate_series(1, 100) i)",
            "100 rows updated at random",
        ),
        "h_keyed_random": (
            f"UPDATE {SCHEMA}.keyed SET quantity = quantity + 1 WHERE id IN "
            f"(SELECT (1 + (i * 7919) % {rows})::bigint FROM generate_series(1, 100) i)",
            "keyed table: 100 rows updated at random",
        ),
    }
    for key, (statement, what) in stages.items():
        with source.cursor() as cursor:
            cursor.execute(statement)
        syncs[key] = _sync(work, configuration, what)
    for table in ("heap", "keyed"):
        landed, expected = _landed_rows(work, table), _one(source, f"SELECT count(*) FROM {SCHEMA}.{table}")
        if landed != expected:
            raise SystemExit(f"{table}: the destination holds {landed} live rows, the source {expected}")
    state = json.loads((work / "files" / "state.json").read_text())
    keyed = state["tables"][f"{SCHEMA}.keyed"]
    ranges = sum(len(list(filter(None, (leaf["ranges"] or "").split(";")))) for leaf in keyed["leaves"].values())
    # A full range's rows: its blocks' share of the table (the last range of each segment holds fewer).
    blocks = _one(source, f"SELECT pg_relation_size('{SCHEMA}.keyed') / current_setting('block_size')::bigint")
    range_rows = rows * keyed["range_blocks"] / blocks
    segments = (
        _one(source, "SELECT count(*) FROM gp_segment_configuration WHERE role = 'p' AND content >= 0")
        if ("Greenplum" in version)
        else 1
    )
    results |= {"syncs": syncs, "state_bytes": len(json.dumps(state)), "ranges_per_table": ranges}
    results["full_range_rows"] = range_rows
    sent = {key: sync["upserts"] + sync["deletes"] for key, sync in syncs.items()}
    reads = results["reads"]
    results["ratios"] = {"digest_share_of_full_read": reads["digest_seconds"] / reads["full_read_seconds"]}
    results["targets"] = {
        "b sends 0 rows": sent["b_unchanged"] == 0,
        "e sends at most 2% of N": sent["e_adjacent"] <= 0.02 * rows,
        "f sends at most the inserted rows plus 2% of N": sent["f_inserted"] <= change + 0.02 * rows,
        # The old versions' ranges, and the range each segment's new versions land in.
        "h sends at most 100 ranges' rows (and where the new versions land), no truncate": sent["h_keyed_random"]
        <= (100 + segments) * range_rows
        and syncs["h_keyed_random"]["truncates"] == 0,
    }
    if int(_one(source, "SHOW server_version_num")) >= 110000:  # a 64-bit hash; Greenplum 6 keeps md5
        results["targets"]["the digest costs at most half a full read"] = (
            results["ratios"]["digest_share_of_full_read"] <= 0.5
        )
    return results


def _measure_append_optimized(run: _Run) -> dict[str, Any]:
    """Greenplum 6: the four syncs of an append-optimized column table, with the leaves each scanned."""
    source, params, version, rows, work = run.source, run.params, run.version, run.rows, run.work
    started = time.monotonic()
    _build_append_optimized(source, rows)
    print(f"built {rows:,} rows in 12 leaves in {time.monotonic() - started:.0f}s", file=sys.stderr)
    configuration = run.configuration
    change = max(rows // 1000, 1)
    syncs = {"a_first": _scanned_sync(params, work, configuration, "first sync")}
    syncs["b_unchanged"] = _scanned_sync(params, work, configuration, "nothing changed")
    with source.cursor() as cursor:
        cursor.execute(_FILL.format(day="date '2024-03-15'"), (rows + 1, rows + change))
    syncs["c_appended"] = _scanned_sync(params, work, configuration, "0.1% appended to one leaf")
    with source.cursor() as cursor:  # new rows on every day of the year, and old rows of every leaf deleted
        cursor.execute(_FILL.format(day="date '2024-01-01' + (g %% 366)::int"), (rows + change + 1, rows + 2 * change))
        cursor.execute(f"DELETE FROM {SCHEMA}.facts WHERE id <= {rows} AND id % 1000 = 7")
        deleted = cursor.rowcount
    syncs["d_spread"] = _scanned_sync(params, work, configuration, "0.1% inserted, 0.1% deleted across leaves")
    landed, expected = _landed_rows(work), _one(source, f"SELECT count(*) FROM {SCHEMA}.facts")
    if landed != expected:
        raise SystemExit(f"the destination holds {landed} live rows, the source {expected}")
    state_bytes = len((work / "files" / "state.json").read_bytes())
    appended, spread = syncs["c_appended"], syncs["d_spread"]
    changed_in_d = change + deleted
    return {
        "rows": rows,
        "server": version.split(" on ")[0],
        "python": sys.version.split()[0],
        "append_optimized": True,
        "syncs": syncs,
        "changed_in_d": changed_in_d,
        "state_bytes_after_d": state_bytes,
        "targets": {
            "b sends 0 rows and scans 0 leaves": syncs["b_unchanged"]["upserts"] + syncs["b_unchanged"]["deletes"] == 0
            and not syncs["b_unchanged"]["scanned"],
            "c sends at most the appended rows plus 100": appended["upserts"] + appended["deletes"]
            <= change + TARGETS["slack"],
            "d sends at most 1.1 times the rows changed plus 100": spread["upserts"] + spread["deletes"]
            <= TARGETS["spread_sent_over_changed"] * changed_in_d + TARGETS["slack"],
        },
    }


def _configuration(params: dict[str, Any], batch_size: int, checkpoint_rows: int) -> dict[str, str]:
    return {
        "HOST": str(params.get("host", "localhost")),
        "PORT": str(params.get("port", 5432)),
        "DATABASE": params["dbname"],
        "USERNAME": params["user"],
        "PASSWORD": params.get("password", "") or "unused",
        "SCHEMAS": SCHEMA,
        "BATCH_SIZE": str(batch_size),
        "CHECKPOINT_ROWS": str(checkpoint_rows),
    }


def _scanned_sync(params: dict[str, Any], work: Path, configuration: dict[str, str], what: str) -> dict[str, Any]:
    """A sync, and the leaves the coordinator counts as scanned during it (its statistics lag: read a moment after,
    on connections of their own)."""
    before = _leaf_scans(params)
    result = _sync(work, configuration, what)
    after = _leaf_scans(params)
    result["scanned"] = sorted(leaf for leaf in after if after[leaf] != before.get(leaf, 0))
    return result


def _leaf_scans(params: dict[str, Any]) -> dict[str, int]:
    time.sleep(1.5)
    connection = psycopg2.connect(**params)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT relname, seq_scan FROM pg_stat_all_tables WHERE schemaname = %s AND relname LIKE 'facts_%%'",
                (SCHEMA,),
            )
            return dict(cursor.fetchall())
    finally:
        connection.close()


def format_changes(results: dict[str, Any]) -> str:
    """The results as a plain-text table."""
    met = {True: "met", False: "NOT MET"}
    if results.get("append_optimized"):
        return _format_append_optimized(results, met)
    lines = [
        f"{results['rows']:,} keyless rows in 12 leaves; Python {results['python']}, {results['server']}",
        f"{'sync':<58}{'seconds':>9}{'upserts':>10}{'deletes':>9}",
    ]
    lines = [
        f"{results['rows']:,} rows in each of a keyless heap table and a keyed one (no cursor); Python "
        f"{results['python']}, {results['server']}",
    ]
    labels = {
        "a_first": "(a) first sync, both tables",
        "b_unchanged": "(b) nothing changed",
        "e_adjacent": "(e) 100 adjacent rows updated, 100 deleted",
        "f_inserted": "(f) 0.1% of N inserted",
        "g_random": "(g) 100 rows updated at random",
        "h_keyed_random": "(h) keyed: 100 rows updated at random",
    }
    lines += _sync_lines(results["syncs"], labels, "truncates", lambda sync: f"{sync['truncates']:,}")
    reads = results["reads"]
    lines += [
        f"{results['ranges_per_table']:,} block ranges a table, {results['full_range_rows']:,.0f} rows in a full "
        f"one; state {results['state_bytes']:,} bytes",
        f"digest query {reads['digest_seconds']:.2f}s, full read without the SDK {reads['full_read_seconds']:.2f}s "
        f"({results['ratios']['digest_share_of_full_read']:.1%})",
    ]
    lines += [f"target {name}: {met[value]}" for name, value in results["targets"].items()]
    return "\n".join(lines)


def _format_append_optimized(results: dict[str, Any], met: dict[bool, str]) -> str:
    lines = [
        f"{results['rows']:,} keyless rows in 12 append-optimized column leaves; Python {results['python']}, "
        f"{results['server']}",
    ]
    labels = {
        "a_first": "(a) first sync",
        "b_unchanged": "(b) nothing changed",
        "c_appended": "(c) 0.1% of N appended to one leaf",
        "d_spread": "(d) 0.1% inserted, 0.1% deleted across every leaf",
    }
    lines += _sync_lines(results["syncs"], labels, "leaves scanned", lambda sync: str(len(sync["scanned"])))
    spread = results["syncs"]["d_spread"]
    lines += [
        f"(d) changed {results['changed_in_d']:,} rows and sent {spread['upserts'] + spread['deletes']:,} "
        f"({(spread['upserts'] + spread['deletes']) / results['changed_in_d']:.2f} times)",
        f"state after (d): {results['state_bytes_after_d']:,} bytes",
    ]
    lines += [f"target {name}: {met[value]}" for name, value in results["targets"].items()]
    return "\n".join(lines)


def _sync_lines(
    syncs: dict[str, dict[str, Any]], labels: dict[str, str], last: str, last_value: Callable[[dict[str, Any]], str]
) -> list[str]:
    """The table of syncs: a header, then per sync its seconds, upserts, deletes and a last column of its own."""
    width = max(len(last), 9) + 2
    lines = [f"{'sync':<52}{'seconds':>9}{'upserts':>10}{'deletes':>9}{last:>{width}}"]
    for key, label in labels.items():
        sync = syncs[key]
        lines.append(
            f"{label:<52}{sync['seconds']:>9.1f}{sync['upserts']:>10,}{sync['deletes']:>9,}{last_value(sync):>{width}}"
        )
    return lines


def _build_append_optimized(source: psycopg2.extensions.connection, rows: int) -> None:
    with source.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}")
        cursor.execute(
            f"CREATE TABLE {SCHEMA}.facts ({_COLUMNS}) WITH (appendonly=true, orientation=column) "
            f"DISTRIBUTED RANDOMLY {_PARTITIONS_LEGACY}"
        )
        step, fill = 500_000, _FILL.format(day="date '2024-01-01' + (g %% 366)::int")
        for first in range(1, rows + 1, step):
            cursor.execute(fill, (first, min(first + step - 1, rows)))
        cursor.execute(f"ANALYZE {SCHEMA}.facts")


def _digest_and_full_read(configuration: dict[str, str], greenplum: bool) -> dict[str, float]:
    """Seconds of the table's digest query, as a first pass makes it, and of reading every row as the connector does,
    without the SDK."""
    import reads
    from block_ranges import choose_range_blocks, digests, hashing_for
    from catalog import discover, server_info
    from catalog_sql import TABLE_BLOCKS, TABLE_BLOCKS_GREENPLUM6
    from configuration import parse_settings
    from greenplum_client import GreenplumClient
    from planning import plan_tables

    settings = parse_settings(configuration)
    with GreenplumClient(settings) as client:
        info = server_info(client)
        (plan,) = plan_tables(settings, discover(client, info, settings.schemas), client, strict=True).plans
        legacy = greenplum and info.server_version_num < 100000
        ((blocks,),) = client.query(TABLE_BLOCKS_GREENPLUM6 if legacy else TABLE_BLOCKS, {"root": int(plan.leaf_key)})
        started = time.perf_counter()
        digests(client, plan, hashing_for(info.server_version_num), choose_range_blocks(blocks), greenplum)
        digest_seconds = time.perf_counter() - started
        started = time.perf_counter()
        for _batch in client.stream(reads.select(plan)):
            pass
        return {"digest_seconds": digest_seconds, "full_read_seconds": time.perf_counter() - started}


def _sync(work: Path, configuration: dict[str, str], what: str) -> dict[str, Any]:
    """One sync through the SDK's runner into `work`, from the state the previous one saved."""
    import fivetran_connector_sdk_core.runner as sdk_runner
    from fivetran_connector_sdk import Logging
    from fivetran_connector_sdk_cli import core_adapter

    import connector

    Logging.LOG_LEVEL = Logging.Level.WARNING  # the SDK's log.info raises TypeError while the level is unset
    sdk_runner.check_newer_version = lambda *args, **kwargs: None  # no network wait
    state_file = work / "files" / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    print(f"sync: {what} ...", file=sys.stderr)
    started = time.perf_counter()
    counts = core_adapter.run(connector.connector, str(work), configuration, state)
    return {
        "seconds": time.perf_counter() - started,
        "upserts": counts.get("Upserts", 0),
        "deletes": counts.get("Deletes", 0),
        "truncates": counts.get("Truncates", 0),
    }


def _landed_rows(work: Path, table: str = "facts") -> int:
    import duckdb

    connection = duckdb.connect(str(work / "files" / "warehouse.db"), read_only=True)
    try:
        query = f'SELECT count(*) FROM "tester_{SCHEMA}".{table} WHERE NOT _fivetran_deleted'
        return connection.execute(query).fetchone()[0]
    finally:
        connection.close()


def _one(connection: psycopg2.extensions.connection, statement: str) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(statement)
        return cursor.fetchone()[0]
