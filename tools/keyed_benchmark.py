"""What a keyed table without a cursor costs per kind of change, with its difference digest, measured in one run
(`python -m tools.benchmark --keyed`), through the SDK's runner:
- PostgreSQL (a throwaway local server): pgbench's tables (`pgbench -i -s SCALE`: SCALE x 100,000 accounts with a
  primary key and no cursor column, tellers, branches); (a) the first sync, (b) nothing changed, (c) `pgbench -c 2
  -t 1000`, (d) 0.05% inserted, (e) 0.1% of the accounts deleted and 0.05% inserted, (f) VACUUM FULL, (g) 5%
  inserted above the keys held and 0.005% updated (past the digest's capacity, named with its key ranges' help), (h)
  5% of the accounts updated, a stretch of consecutive keys (past capacity: the key ranges changed are sent again),
  (i) 5% deleted, a stretch of consecutive keys (past capacity: ranges emptied name their keys), (j) a quarter of the
  accounts updated (past the digest's capacity), (k) 1% updated (within the digest sized after (j)).
- Greenplum (`--dsn`, by hand): the same stages on an accounts table built by SQL (pgbench's transactions replaced by
  updates of random accounts), a heap table with a primary key and an append-optimized column table partitioned in
  10 leaves with `PRIMARY_KEYS`; the schema `bench_keyed` is dropped afterwards.
Each stage reports the rows changed, upserts, deletes, truncates, the digest's scans of the whole table (none where
Greenplum's catalog told what changed) and seconds; then the digest query's time against a plain read of the same
rows (medians of three, alternating), for the accounts and, on the heap tables, for a copy of them keyed by 14-byte
texts; and the state's size. `--incremental-deletes`: an incremental table's check of its
deletes on `--rows` rows, with its primary key alone and with an index on (cursor, key), next to a plain read.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from tools import local_postgres
from tools.change_benchmark import _sync

SCHEMA = "bench_keyed"
_TIMED_RUNS = 3
TARGET_RATIO, TARGET_SLACK = 1.1, 100


def run_keyed(scale: int, dsn: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="connector-keyed-benchmark-") as work:
        if dsn is not None:
            return _greenplum(psycopg2.extensions.parse_dsn(dsn), scale, Path(work))
        with local_postgres.start_server(local_postgres.find_bin_dir()) as server:
            params = server.create_database("benchmark")
            env = {"PGPASSWORD": params["password"], "PATH": "/usr/bin:/bin"}
            base = ["pgbench", "-h", params["host"], "-p", str(params["port"]), "-U", params["user"]]
            subprocess.run([*base, "-i", "-q", "-s", str(scale), params["dbname"]], env=env, check=True)
            tables = "public.pgbench_accounts,public.pgbench_tellers,public.pgbench_branches"

            def transactions() -> int:
                source = _connect(params)
                started = _one(source, "SELECT now()")
                subprocess.run([*base, "-n", "-c", "2", "-t", "1000", params["dbname"]], env=env, check=True,
                               capture_output=True)  # fmt: skip
                changed = "SELECT count(DISTINCT {}) FROM pgbench_history WHERE mtime >= %s"
                return sum(_one(source, changed.format(column), [started]) for column in ("aid", "tid", "bid"))

            return _stages(params, Path(work), tables, "pgbench_accounts", "aid", scale * 100_000, transactions)


def _greenplum(params: dict[str, Any], scale: int, work: Path) -> dict[str, Any]:
    source = _connect(params)
    results = {}
    try:
        for name, storage, keys in (
            ("accounts", "DISTRIBUTED BY (aid)", ""),
            (
                "ao_accounts",
                "WITH (appendonly=true, orientation=column) DISTRIBUTED BY (aid) "
                f"PARTITION BY RANGE (aid) (START (1) END ({scale * 100_000 + 1}) EVERY ({scale * 10_000}), "
                "DEFAULT PARTITION rest)",
                f"{SCHEMA}.ao_accounts:aid",
            ),
        ):
            _execute(source, f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}")
            key = "" if keys else ", PRIMARY KEY (aid)"
            _execute(
                source,
                f"""CREATE TABLE {SCHEMA}.{name} (aid int NOT NULL, bid int, abalance int, filler char(84){key})
                {storage};
                INSERT INTO {SCHEMA}.{name} SELECT i, (i - 1) / 100000 + 1, 0, ''
                FROM generate_series(1, {scale * 100_000}) i;
                ANALYZE {SCHEMA}.{name}""",
            )

            def transactions(name: str = name) -> int:
                _execute(source, f"UPDATE {SCHEMA}.{name} SET abalance = abalance + 1 WHERE aid %% 997 = 3")
                return _one(source, f"SELECT count(*) FROM {SCHEMA}.{name} WHERE aid %% 997 = 3")

            extra = {"PRIMARY_KEYS": keys} if keys else {}
            results[name] = _stages(
                params, work / name, f"{SCHEMA}.{name}", f"{SCHEMA}.{name}", "aid", scale * 100_000, transactions, extra
            )
    finally:
        _execute(source, f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        source.close()
    return results


def _stages(
    params: dict[str, Any],
    work: Path,
    tables: str,
    accounts: str,
    key: str,
    rows: int,
    transactions: Any,
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    import keyed_digest

    configuration = _configuration(params, tables, extra or {})
    source = _connect(params)
    stages, scans, real_scan = [], [0], keyed_digest.scan_cells

    def counted_scan(*args: Any, **kwargs: Any) -> Any:
        scans[0] += 1
        return real_scan(*args, **kwargs)

    def stage(what: str, changed: int) -> None:
        scans[0] = 0
        keyed_digest.scan_cells = counted_scan
        try:
            stages.append({"stage": what, "changed": changed, **_sync(work, configuration, what), "scans": scans[0]})
        finally:
            keyed_digest.scan_cells = real_scan

    stage("first sync", _one(source, f"SELECT count(*) FROM {accounts}"))
    stage("nothing changed", 0)
    stage("transactions", transactions())
    inserted = rows // 2000
    new_rows = "INSERT INTO {} SELECT {} + i, 1, 0, '' FROM generate_series(1, {}) i"
    _execute(source, new_rows.format(accounts, rows, inserted))
    stage("0.05% inserted", inserted)
    deleted = _one(source, f"SELECT count(*) FROM {accounts} WHERE {key} %% 1000 = 7")
    _execute(source, f"DELETE FROM {accounts} WHERE {key} %% 1000 = 7")
    _execute(source, new_rows.format(accounts, rows + inserted, inserted))
    stage("0.1% deleted, 0.05% inserted", deleted + inserted)
    _execute(source, f"VACUUM FULL {accounts}")
    stage("VACUUM FULL", 0)
    bulk = rows // 20
    _execute(source, new_rows.format(accounts, rows + 2 * inserted, bulk))
    updated = _one(source, f"SELECT count(*) FROM {accounts} WHERE {key} %% 20000 = 5")
    _execute(source, f"UPDATE {accounts} SET abalance = abalance + 1 WHERE {key} %% 20000 = 5")
    stage("5% inserted (past capacity)", bulk + updated)
    stretch = f"{key} BETWEEN {rows // 4 + 1} AND {rows // 4 + bulk}"
    _execute(source, f"UPDATE {accounts} SET abalance = abalance + 1 WHERE {stretch}")
    stage("5% of keys in a row updated", _one(source, f"SELECT count(*) FROM {accounts} WHERE {stretch}"))
    purged = f"{key} BETWEEN {rows // 2 + 1} AND {rows // 2 + bulk}"
    deleted = _one(source, f"SELECT count(*) FROM {accounts} WHERE {purged}")
    _execute(source, f"DELETE FROM {accounts} WHERE {purged}")
    stage("5% of keys in a row deleted", deleted)
    _execute(source, f"UPDATE {accounts} SET abalance = abalance + 1 WHERE {key} %% 4 = 0")
    stage("25% updated (past capacity)", _one(source, f"SELECT count(*) FROM {accounts} WHERE {key} %% 4 = 0"))
    _execute(source, f"UPDATE {accounts} SET abalance = abalance + 1 WHERE {key} %% 100 = 1")
    stage("1% updated (resized digest)", _one(source, f"SELECT count(*) FROM {accounts} WHERE {key} %% 100 = 1"))
    state = (work / "files" / "state.json").read_text()
    tables = json.loads(state)["tables"]
    (saved,) = [entry["digest"] for key, entry in tables.items() if key.endswith(accounts.rpartition(".")[2])]
    timings = {"integer keys": _digest_and_read(configuration, accounts, saved)}
    if "PRIMARY_KEYS" not in configuration:  # the heap tables: the same rows again, keyed by texts
        timings["text keys"] = _text_keyed(params, accounts, key, saved)
    return {"stages": stages, "state_bytes": len(state), "timings": timings}


def _text_keyed(params: dict[str, Any], accounts: str, key: str, saved: str) -> dict[str, float]:
    """`_digest_and_read` of a copy of the accounts keyed by 14-byte texts ('acct-000000001'), as text keys go
    through their digest's scan (each key's UTF-8 bytes, as long as it is) and the first sync would size it."""
    import difference_digest as dd

    schema = accounts.rpartition(".")[0] or "public"
    twin = f"{schema}.text_accounts"
    source = _connect(params)
    _execute(
        source,
        f"""CREATE TABLE {twin} (tid text PRIMARY KEY, bid int, abalance int, filler char(84));
        INSERT INTO {twin} SELECT 'acct-' || lpad({key}::text, 9, '0'), bid, abalance, filler FROM {accounts};
        ANALYZE {twin}""",
    )
    try:
        cells = dd.Cells.unpack(saved)
        text_cells = dd.Cells(cells.sub_size, dd.Codec.TEXT)
        text_cells.keys = dd.Cells(cells.keys.sub_size, dd.Codec.TEXT)
        return _digest_and_read(_configuration(params, twin, {}), twin, text_cells.pack())
    finally:
        _execute(source, f"DROP TABLE {twin}")
        source.close()


def _digest_and_read(configuration: dict[str, str], accounts: str, saved: str) -> dict[str, float]:
    """Seconds of the accounts' difference digest scan (as the next sync would run it, from its saved digest, with its
    key ranges) and of a plain read of its rows by the connector, without the SDK: the medians of `_TIMED_RUNS`."""
    import difference_digest as dd
    import reads
    from block_ranges import hashing_for
    from catalog import discover, server_info
    from configuration import parse_settings
    from digest_pairs import scan_cells
    from greenplum_client import GreenplumClient
    from key_encoding import key_encoding
    from key_ranges import KeyRanges
    from planning import plan_tables

    settings = parse_settings(configuration)
    with GreenplumClient(settings) as client:
        info = server_info(client)
        plans = plan_tables(settings, discover(client, info, settings.schemas), client, strict=True).plans
        (plan,) = [plan for plan in plans if plan.state_key.endswith(accounts.rpartition(".")[2])]
        encoding, hashing, cells = key_encoding(plan), hashing_for(info.server_version_num), dd.Cells.unpack(saved)
        shift, columns = cells.ranges.shift if cells.ranges is not None else 0, list(plan.columns)
        digest, read = [], []
        for _ in range(_TIMED_RUNS):  # alternately, so that both meet the machine's moods alike
            started = time.perf_counter()
            scan_cells(
                client, plan, hashing, encoding, columns, cells.sub_size, cells.keys.sub_size, ranges=KeyRanges(shift)
            )
            digest.append(time.perf_counter() - started)
            started = time.perf_counter()
            for _batch in client.stream(reads.select(plan)):
                pass
            read.append(time.perf_counter() - started)
        return {"digest_seconds": statistics.median(digest), "plain_read_seconds": statistics.median(read)}


def run_incremental_check(rows: int) -> dict[str, float]:
    """Seconds of an incremental table's check of its deletes (the digest of its key and cursor at or below the saved
    cursor) on `rows` rows, with its primary key alone and with an index on (cursor, key) that allows an index-only
    scan, next to a plain read of the table by the connector."""
    with local_postgres.start_server(local_postgres.find_bin_dir()) as server:
        params = server.create_database("benchmark")
        source = _connect(params)
        _execute(
            source,
            f"""CREATE TABLE public.events (id bigint PRIMARY KEY, kind int, amount numeric(12, 2), note text,
            updated_at timestamptz NOT NULL);
            INSERT INTO public.events SELECT i, i %% 7, i * 0.01, md5(i::text),
                timestamptz '2024-01-01' + i * interval '1 second' FROM generate_series(1, {rows}) i""",
        )
        _execute(source, "VACUUM ANALYZE public.events")
        configuration = _configuration(params, "public.events", {})
        results = {"rows": rows, **_deletes_check_seconds(configuration, "key only")}
        _execute(source, "CREATE INDEX events_cursor_key ON public.events (updated_at, id)")
        _execute(source, "VACUUM ANALYZE public.events")
        results |= _deletes_check_seconds(configuration, "with an index on (cursor, key)")
        return results


def _deletes_check_seconds(configuration: dict[str, str], label: str) -> dict[str, float]:
    """Seconds of the check's digest scan (as `incremental_deletes` makes it, at or below the highest cursor) and of
    a plain read of the same table by the connector, without the SDK."""
    import difference_digest as dd
    import reads
    from block_ranges import hashing_for
    from catalog import discover, server_info
    from configuration import parse_settings
    from digest_pairs import scan_cells
    from greenplum_client import GreenplumClient
    from key_encoding import key_encoding
    from planning import plan_tables

    settings = parse_settings(configuration)
    with GreenplumClient(settings) as client:
        info = server_info(client)
        (plan,) = plan_tables(settings, discover(client, info, settings.schemas), client, strict=True).plans
        encoding, hashing = key_encoding(plan), hashing_for(info.server_version_num)
        cursor = sql.Identifier(plan.cursor.name)
        hashed = [c for c in plan.columns if c.name in (*plan.primary_key, plan.cursor.name)]
        ((bound,),) = client.query(sql.SQL("SELECT max({})::text FROM {}").format(cursor, plan.relation))
        condition = sql.SQL("{} <= {}").format(cursor, sql.Literal(bound))
        sub_size = dd.choose_sub_size(plan.estimated_rows, [], encoding.codec.words)
        started = time.perf_counter()
        scan_cells(client, plan, hashing, encoding, hashed, sub_size, condition=condition)
        check_seconds = time.perf_counter() - started
        started = time.perf_counter()
        for _batch in client.stream(reads.select(plan)):
            pass
        return {f"check, {label}": check_seconds, f"plain read, {label}": time.perf_counter() - started}


def format_keyed(results: dict[str, Any]) -> str:
    runs = results if "stages" not in results else {"pgbench_accounts, tellers, branches": results}
    lines = []
    for name, run in runs.items():
        lines.append(f"{name}:")
        lines.append(
            f"{'stage':32} {'changed':>9} {'upserts':>9} {'deletes':>8} {'truncates':>9} {'scans':>5} {'seconds':>8}"
            "  target"
        )
        for stage in run["stages"]:
            sent = stage["upserts"] + stage["deletes"]
            met = sent <= TARGET_RATIO * stage["changed"] + TARGET_SLACK and not stage["truncates"]
            target = (
                "" if stage["stage"] in ("first sync", "25% updated (past capacity)") else ("met" if met else "MISSED")
            )
            lines.append(
                f"{stage['stage']:32} {stage['changed']:>9,} {stage['upserts']:>9,} {stage['deletes']:>8,} "
                f"{stage['truncates']:>9} {stage['scans']:>5} {stage['seconds']:>8.1f}  {target}"
            )
        for keys, timing in run["timings"].items():
            ratio = timing["digest_seconds"] / timing["plain_read_seconds"]
            lines.append(
                f"{keys}: digest {timing['digest_seconds']:.2f}s / plain read {timing['plain_read_seconds']:.2f}s = "
                f"{ratio:.2f} (target <= 1; medians of {_TIMED_RUNS})"
            )
        lines.append(f"state {run['state_bytes'] / 1024:,.0f} KB")
    return "\n".join(lines)


def _configuration(params: dict[str, Any], tables: str, extra: dict[str, str]) -> dict[str, str]:
    return {
        "HOST": params.get("host", "localhost"),
        "PORT": str(params.get("port", 5432)),
        "DATABASE": params["dbname"],
        "USERNAME": params["user"],
        "PASSWORD": params.get("password", ""),
        "TABLES": tables,
        "BATCH_SIZE": "5000",
        "CHECKPOINT_ROWS": "10000",
        **extra,
    }


def _connect(params: dict[str, Any]) -> psycopg2.extensions.connection:
    connection = psycopg2.connect(**params)
    connection.autocommit = True
    return connection


def _execute(connection: psycopg2.extensions.connection, statement: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, [])


def _one(connection: psycopg2.extensions.connection, statement: str, params: list[Any] | None = None) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])
        return cursor.fetchone()[0]
