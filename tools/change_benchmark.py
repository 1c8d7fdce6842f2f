"""What a keyless table's sync costs when little changed, measured in one run (`python -m tools.benchmark
--changes`), through the SDK's runner:
- PostgreSQL (a throwaway local server, or `--dsn`): a keyless heap table of N rows; rows changed, rows sent and
  seconds of (a) the first sync, (b) nothing changed, (c) 100 rows updated at random, (d) 100 deleted at random,
  (e) 1,000 inserted, 10 of them copies of rows held, (f) VACUUM FULL, (g) CLUSTER, (h) nothing; the scan of the
  table's contents (its digest) next to a plain read by the connector without the SDK; the state's size.
- Greenplum 6 (`--dsn`, by hand): a keyless table of N rows in 12 append-optimized column leaves; rows sent, seconds
  and the leaves each sync scanned (the coordinator's `seq_scan`) for (a) the first sync, (b) nothing changed, (c)
  0.1% of N appended to one leaf, (c2) and again, (d) 0.1% of N inserted and 0.1% deleted across every leaf, as
  TPC-H's refresh functions change orders, (e) 10% of one leaf deleted, (f) that leaf compacted by VACUUM, (g)
  VACUUM FULL of the table, (g2) 1% of an old leaf deleted, (h) a leaf exchanged for a table holding its rows; and
  the state's size.
With `--dsn` it creates the schema `bench_changes` and drops it afterwards.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions

from tools import local_postgres
from tools.sync_measures import landed_rows

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
    """PostgreSQL (or a Greenplum heap): a keyless table of N rows and the syncs of its changes."""
    source, version, rows, work, configuration = run.source, run.version, run.rows, run.work, run.configuration
    started = time.monotonic()
    greenplum = "Greenplum" in version
    with source.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}")
        cursor.execute(f"CREATE TABLE {SCHEMA}.heap ({_COLUMNS}){' DISTRIBUTED RANDOMLY' if greenplum else ''}")
        for first in range(1, rows + 1, 500_000):
            cursor.execute(
                _FILL.replace("facts", "heap").format(day="date '2024-01-01' + (g %% 366)::int"),
                (first, min(first + 499_999, rows)),
            )
        cursor.execute(f"CREATE INDEX heap_day ON {SCHEMA}.heap (day, id)")
        cursor.execute(f"VACUUM ANALYZE {SCHEMA}.heap")
    print(f"built a table of {rows:,} rows in {time.monotonic() - started:.0f}s", file=sys.stderr)
    results: dict[str, Any] = {"rows": rows, "server": version.split(" on ")[0], "python": sys.version.split()[0]}
    results["reads"] = _digest_and_full_read(configuration | {"TABLES": f"{SCHEMA}.heap"})
    at_random = f"(SELECT (1 + (i * 7919) % {rows})::bigint FROM generate_series(1, 100) i)"
    new_rows = _FILL.replace("facts", "heap").format(day="date '2024-06-01'") % (rows + 1, rows + 990)
    stages = {
        "a_first": ((), "first sync"),
        "b_unchanged": ((), "nothing changed"),
        "c_updated": ((f"UPDATE {SCHEMA}.heap SET quantity = quantity + 1 WHERE id IN {at_random}",), "100 updated"),
        "d_deleted": ((f"DELETE FROM {SCHEMA}.heap WHERE id - 1 IN {at_random}",), "100 deleted"),
        "e_inserted": (
            (new_rows, f"INSERT INTO {SCHEMA}.heap SELECT * FROM {SCHEMA}.heap WHERE id IN {at_random} LIMIT 10"),
            "1,000 inserted, 10 copies of rows held",
        ),
        "f_vacuum_full": ((f"VACUUM FULL {SCHEMA}.heap",), "VACUUM FULL"),
        "g_cluster": (() if greenplum else (f"CLUSTER {SCHEMA}.heap USING heap_day",), "CLUSTER"),
        "h_unchanged": ((), "nothing changed"),
    }
    syncs, held = {}, Counter()
    for key, (statements, what) in stages.items():
        changed = _apply(source, statements) if key != "a_first" else rows
        now = _rows_held(source)
        syncs[key] = _sync(work, configuration, what) | _difference(held, now) | {"changed": changed}
        held = now
    landed, expected = landed_rows(work, SCHEMA, "heap"), _one(source, f"SELECT count(*) FROM {SCHEMA}.heap")
    if landed != expected:
        raise SystemExit(f"the destination holds {landed} live rows, the source {expected}")
    state = json.loads((work / "files" / "state.json").read_text())
    results |= {"syncs": syncs, "state_bytes": len(json.dumps(state))}
    reads = results["reads"]
    results["ratios"] = {"digest_share_of_full_read": reads["digest_seconds"] / reads["full_read_seconds"]}
    results["targets"] = {
        "changes send at most 2 x the rows changed + 100": all(
            sync["upserts"] + sync["deletes"] <= 2 * sync["changed"] + TARGETS["slack"]
            for key, sync in syncs.items()
            if key != "a_first"
        ),
        "upserts and deletes are the rows that came and went": all(
            (sync["upserts"], sync["deletes"]) == (sync["came"], sync["went"])
            for key, sync in syncs.items()
            if key != "a_first"
        ),
        "rewrites and nothing changed send 0": all(
            syncs[key]["upserts"] + syncs[key]["deletes"] == 0
            for key in ("b_unchanged", "f_vacuum_full", "g_cluster", "h_unchanged")
        ),
        "no truncate after the first sync": all(
            sync["truncates"] == 0 for key, sync in syncs.items() if key != "a_first"
        ),
    }
    return results


def _apply(source: psycopg2.extensions.connection, statements: tuple[str, ...]) -> int:
    """Runs a stage's statements; returns the rows they inserted, updated or deleted."""
    changed = 0
    with source.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
            changed += max(cursor.rowcount, 0)
    return changed


def _difference(held: Counter, now: Counter) -> dict[str, int]:
    """The rows that came (held more often now) and went (less often), as a multiset."""
    return {"came": sum((now - held).values()), "went": sum((held - now).values())}


def _rows_held(source: psycopg2.extensions.connection, table: str = "heap") -> Counter:
    """The table's rows as a multiset of their text, to count the rows a stage changed."""
    with source.cursor() as cursor:
        cursor.execute(f"SELECT md5(t::text) FROM {SCHEMA}.{table} AS t")
        return Counter(row[0] for row in cursor)


def _measure_append_optimized(run: _Run) -> dict[str, Any]:
    """Greenplum 6: the syncs of a keyless append-optimized column table partitioned by month, with the leaves each
    scanned."""
    source, params, version, rows, work = run.source, run.params, run.version, run.rows, run.work
    started = time.monotonic()
    _build_append_optimized(source, rows)
    print(f"built {rows:,} rows in 12 leaves in {time.monotonic() - started:.0f}s", file=sys.stderr)
    change = max(rows // 1000, 1)
    february, may, july = f"{SCHEMA}.facts_1_prt_2", f"{SCHEMA}.facts_1_prt_5", f"{SCHEMA}.facts_1_prt_7"
    stages = {
        "a_first": (),
        "b_unchanged": (),
        "c_appended": (_FILL.format(day="date '2024-03-15'") % (rows + 1, rows + change),),
        "c2_appended_again": (_FILL.format(day="date '2024-03-16'") % (rows + 2 * change + 1, rows + 3 * change),),
        "d_spread": (  # new rows on every day of the year, and old rows of every leaf deleted
            _FILL.format(day="date '2024-01-01' + (g %% 366)::int") % (rows + change + 1, rows + 2 * change),
            f"DELETE FROM {SCHEMA}.facts WHERE id <= {rows} AND id % 1000 = 7",
        ),
        "e_leaf_deletes": (f"DELETE FROM {may} WHERE id % 10 = 3",),
        # A row inserted straight into the leaf and deleted makes the coordinator's count of its file non-zero, so
        # that VACUUM compacts it (a COPY or INSERT through the root leaves it 0): its live rows get new row numbers.
        "f_compaction": (
            f"INSERT INTO {may} SELECT -1, day, store, product, quantity, amount, note FROM {may} LIMIT 1",
            f"DELETE FROM {may} WHERE id = -1",
            f"VACUUM {may}",
        ),
        "g_vacuum_full": (f"VACUUM FULL {SCHEMA}.facts",),
        # Rows deleted from a leaf with no row hidden since it was printed (the VACUUM FULL): that leaf's scans alone.
        "g2_old_leaf_deletes": (f"DELETE FROM {february} WHERE id % 100 = 11",),
        "h_exchange": (
            f"CREATE TABLE {SCHEMA}.stage ({_COLUMNS}) WITH (appendonly=true, orientation=column) DISTRIBUTED RANDOMLY",
            f"INSERT INTO {SCHEMA}.stage SELECT * FROM {july}",
            f"ALTER TABLE {SCHEMA}.facts EXCHANGE PARTITION FOR (date '2024-07-01') WITH TABLE {SCHEMA}.stage",
            f"DROP TABLE {SCHEMA}.stage",
        ),
        "h2_partition_added": (
            f"ALTER TABLE {SCHEMA}.facts ADD PARTITION START (date '2025-01-01') END (date '2025-02-01') "
            "WITH (appendonly=true, orientation=column)",
            _FILL.format(day="date '2025-01-15'") % (rows + 3 * change + 1, rows + 3 * change + rows // 10),
        ),
        "h3_appended_past_capacity": (
            _FILL.format(day="date '2024-03-20'") % (rows + 3 * change + rows // 10 + 1, rows + 3 * change + rows // 5),
        ),
        "i_unchanged": (),
    }
    syncs: dict[str, dict[str, Any]] = {}
    held: Counter = Counter()
    files_before = _segment_files(source, may)
    for key, statements in stages.items():
        changed = _apply(source, statements) if key != "a_first" else rows
        if key in ("f_compaction", "h_exchange"):
            changed = 0  # rows that moved (and one inserted and deleted again, or those of the table exchanged)
        if key == "f_compaction" and _segment_files(source, may) == files_before:
            raise SystemExit(f"VACUUM did not compact {may}: its segment files are as they were")
        if key == "e_leaf_deletes":
            files_before = _segment_files(source, may)
        now = _rows_held(source, "facts")
        syncs[key] = _scanned_sync(params, work, run.configuration, key) | _difference(held, now) | {"changed": changed}
        held = now
    landed, expected = landed_rows(work, SCHEMA, "facts"), _one(source, f"SELECT count(*) FROM {SCHEMA}.facts")
    if landed != expected:
        raise SystemExit(f"the destination holds {landed} live rows, the source {expected}")
    later = {key: sync for key, sync in syncs.items() if key != "a_first"}
    march = _one(source, f"SELECT count(*) FROM {SCHEMA}.facts_1_prt_3")
    return {
        "rows": rows,
        "server": version.split(" on ")[0],
        "python": sys.version.split()[0],
        "append_optimized": True,
        "syncs": syncs,
        "state_bytes": len((work / "files" / "state.json").read_bytes()),
        "targets": {
            "nothing changed: 0 rows sent, 0 leaves scanned": all(
                syncs[key]["upserts"] + syncs[key]["deletes"] == 0 and not syncs[key]["scanned"]
                for key in ("b_unchanged", "i_unchanged")
            ),
            "changes send at most 2 x the rows changed + 100": all(
                sync["upserts"] + sync["deletes"] <= 2 * sync["changed"] + TARGETS["slack"] for sync in later.values()
            ),
            "upserts and deletes are the rows that came and went (h3 aside)": all(
                (sync["upserts"], sync["deletes"]) == (sync["came"], sync["went"])
                for key, sync in later.items()
                if key != "h3_appended_past_capacity"
            ),
            "h3 sends that leaf's rows again, no other's": syncs["h3_appended_past_capacity"]["upserts"] == march,
            "rewrites send 0": all(
                syncs[key]["upserts"] + syncs[key]["deletes"] == 0
                for key in ("f_compaction", "g_vacuum_full", "h_exchange")
            ),
            "no truncate after the first sync": all(sync["truncates"] == 0 for sync in later.values()),
            "a leaf changed again, compacted, only losing rows, exchanged or added is scanned alone": all(
                len(syncs[key]["scanned"]) == 1
                for key in (
                    "c2_appended_again",
                    "f_compaction",
                    "g2_old_leaf_deletes",
                    "h_exchange",
                    "h2_partition_added",
                )
            ),
        },
    }


def _segment_files(source: psycopg2.extensions.connection, leaf: str) -> list[tuple]:
    """A column-oriented leaf's segment files with their row counts, as the coordinator counts them (`__gp_aocsseg`)."""
    with source.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT segno, tupcount, state FROM gp_toolkit.__gp_aocsseg(%s::regclass) ORDER BY 1, 2",
            (leaf,),
        )
        return cursor.fetchall()


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
    lines = [f"{results['rows']:,} rows in a keyless heap table; Python {results['python']}, {results['server']}"]
    labels = {
        "a_first": "(a) first sync",
        "b_unchanged": "(b) nothing changed",
        "c_updated": "(c) 100 rows updated at random",
        "d_deleted": "(d) 100 rows deleted at random",
        "e_inserted": "(e) 1,000 inserted, 10 of them copies",
        "f_vacuum_full": "(f) VACUUM FULL",
        "g_cluster": "(g) CLUSTER",
        "h_unchanged": "(h) nothing changed",
    }
    lines += _sync_lines(
        results["syncs"],
        labels,
        {"changed": lambda sync: f"{sync['changed']:,}", "truncates": lambda sync: f"{sync['truncates']:,}"},
    )
    reads = results["reads"]
    lines += [
        f"state {results['state_bytes']:,} bytes",
        f"scan of its contents {reads['digest_seconds']:.2f}s, plain read without the SDK "
        f"{reads['full_read_seconds']:.2f}s ({results['ratios']['digest_share_of_full_read']:.1%})",
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
        "c2_appended_again": "(c2) the same again, to that leaf",
        "d_spread": "(d) 0.1% inserted, 0.1% deleted across every leaf",
        "e_leaf_deletes": "(e) 10% of one leaf deleted",
        "f_compaction": "(f) that leaf compacted (VACUUM)",
        "g_vacuum_full": "(g) VACUUM FULL of the table",
        "g2_old_leaf_deletes": "(g2) then 1% of an old leaf deleted",
        "h_exchange": "(h) a leaf exchanged for a table of its rows",
        "h2_partition_added": "(h2) a partition added, 10% of N loaded into it",
        "h3_appended_past_capacity": "(h3) 10% of N appended to one leaf, past the digest",
        "i_unchanged": "(i) nothing changed",
    }
    lines += _sync_lines(
        results["syncs"],
        labels,
        {
            "changed": lambda sync: f"{sync['changed']:,}",
            "truncates": lambda sync: f"{sync['truncates']:,}",
            "leaves scanned": lambda sync: str(len(sync["scanned"])),
        },
    )
    lines.append(f"state: {results['state_bytes']:,} bytes")
    lines += [f"target {name}: {met[value]}" for name, value in results["targets"].items()]
    return "\n".join(lines)


def _sync_lines(
    syncs: dict[str, dict[str, Any]], labels: dict[str, str], more: dict[str, Callable[[dict[str, Any]], str]]
) -> list[str]:
    """The table of syncs: a header, then per sync its seconds, upserts, deletes and the columns of `more`."""
    widths = {name: max(len(name), 9) + 2 for name in more}
    header = "".join(f"{name:>{widths[name]}}" for name in more)
    lines = [f"{'sync':<52}{'seconds':>9}{'upserts':>10}{'deletes':>9}{header}"]
    for key, label in labels.items():
        sync = syncs[key]
        values = "".join(f"{value(sync):>{widths[name]}}" for name, value in more.items())
        lines.append(f"{label:<52}{sync['seconds']:>9.1f}{sync['upserts']:>10,}{sync['deletes']:>9,}{values}")
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


def _digest_and_full_read(configuration: dict[str, str]) -> dict[str, float]:
    """Seconds of the scan of the table's contents (its digest, as every sync that finds a change takes it) and of a
    plain read of every row as the connector reads, without the SDK."""
    import difference_digest as dd
    import reads
    from block_ranges import hashing_for
    from catalog import discover, server_info
    from configuration import parse_settings
    from content_digest import scan_contents
    from greenplum_client import GreenplumClient
    from planning import plan_tables

    settings = parse_settings(configuration)
    with GreenplumClient(settings) as client:
        info = server_info(client)
        (plan,) = plan_tables(settings, discover(client, info, settings.schemas), client, strict=True).plans
        started = time.perf_counter()
        sub_size = dd.choose_sub_size(plan.estimated_rows, [], dd.Codec.CONTENT.words)
        scan_contents(client, plan, hashing_for(info.server_version_num), sub_size)
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


def _one(connection: psycopg2.extensions.connection, statement: str) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(statement)
        return cursor.fetchone()[0]
