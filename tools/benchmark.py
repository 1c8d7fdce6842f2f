"""How fast the connector is next to what bounds it, measured in one run on a throwaway PostgreSQL.

`python -m tools.benchmark [--rows N] [--json out.json]` builds a table of N rows and times, on the same query:
1. a plain psycopg2 named cursor with default type casting (what reading costs at all);
2. the connector's extraction stage alone: its client, its SELECT, its typecasters and `TableSync.upsert_ready`;
3. the SDK's ceiling: rows stage 2 produced, pre-built in memory, passed to `op.upsert` through the SDK's own runner
   with the same declarations and checkpoint cadence;
4. the connector end to end through the SDK's runner, then an incremental sync that finds nothing new, with and
   without an index on the cursor column.
Stage 2 runs once more, and stages 3 and 4 run, each in a fresh process, so that the peak memory of each is its
own. Absolute numbers depend on the machine and its load; the ratios between stages of one run are what the targets
are about.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2

from tools import local_postgres

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from configuration import DEFAULT_BATCH_SIZE, DEFAULT_CHECKPOINT_ROWS  # noqa: E402
from tools.change_benchmark import format_changes, run_changes  # noqa: E402
from tools.incremental_benchmark import format_incremental, run_incremental  # noqa: E402
from tools.keyed_benchmark import format_keyed, run_incremental_check, run_keyed  # noqa: E402
from tools.scale_benchmark import format_scale, run_scale  # noqa: E402
from tools.sync_measures import PrintedBytes, prints_little  # noqa: E402
from tools.wide_benchmark import format_wide, run_wide  # noqa: E402

DATABASE = "benchmark"
SCHEMA, TABLE = "bench", "items"
CURSOR_INDEX = "items_updated_at_id"
TARGETS = {"extraction_vs_cursor": 1.0, "end_to_end_vs_ceiling": 1.0, "peak_memory_mb": 400}

CREATE_TABLE = f"""
CREATE SCHEMA {SCHEMA};
CREATE TABLE {SCHEMA}.{TABLE} (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    note text,
    amount numeric(18, 4),
    quantity integer,
    updated_at timestamptz NOT NULL,
    created_at timestamp,
    due_date date,
    active boolean,
    score double precision,
    attributes jsonb
);
"""
# updated_at grows with id, one second a row: the lookback window (300 s) re-reads about 300 rows.
FILL_TABLE = f"""
INSERT INTO {SCHEMA}.{TABLE}
SELECT g,
       'item ' || g,
       CASE WHEN g %% 10 <> 0 THEN md5(g::text) END,
       round((g %% 1000003) * 12.3457, 4),
       (g %% 100000)::integer,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',
       timestamp '2020-01-01 00:00:00' + g * interval '1 minute',
       date '2000-01-01' + (g %% 9000)::integer,
       g %% 3 = 0,
       g / 7.0::double precision,
       jsonb_build_object('n', g, 'tag', 'tag' || (g %% 17), 'ok', g %% 2 = 0)
FROM generate_series(%s::bigint, %s::bigint) AS g
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the table (default 1,000,000)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="BATCH_SIZE (and itersize)")
    parser.add_argument("--checkpoint-rows", type=int, default=DEFAULT_CHECKPOINT_ROWS, help="CHECKPOINT_ROWS")
    parser.add_argument("--slice", type=int, default=50_000, help="distinct pre-built rows stage 3 cycles through")
    parser.add_argument("--repeat", type=int, default=2, help="runs of stages 1 and 2, interleaved; best kept")
    parser.add_argument("--extraction-only", action="store_true", help="stages 1 and 2 only (a minute, not an hour)")
    parser.add_argument("--changes", action="store_true", help="instead: what full syncs cost when little changed")
    parser.add_argument("--dsn", help="with --changes: an existing database (e.g. a Greenplum) instead of our own")
    parser.add_argument("--heap", action="store_true", help="with --changes --dsn on Greenplum: the heap stages")
    parser.add_argument(
        "--keyed", action="store_true", help="instead: keyed tables' changes on pgbench's tables (or --dsn)"
    )
    parser.add_argument("--scale", type=int, default=10, help="with --keyed: 100,000 accounts each (default 10)")
    parser.add_argument(
        "--incremental-deletes", action="store_true", help="instead: an incremental table's check of its deletes"
    )
    parser.add_argument(
        "--tables",
        type=int,
        nargs="+",
        metavar="N",
        help="instead: N small tables and a table of N leaves, first and unchanged syncs (e.g. --tables 100 1000)",
    )
    parser.add_argument(
        "--incremental", action="store_true", help="instead: an incremental table's syncs, what each sends (--rows)"
    )
    parser.add_argument(
        "--wide", action="store_true", help="instead: peak memory of first syncs of 4,000 rows of 1 MB and 1M of 1 KB"
    )
    parser.add_argument(
        "--ssh", action="store_true", help="stage 2 also through an SSH tunnel (a throwaway local sshd), alternated"
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # a stage-3 or stage-4 job file
    args = parser.parse_args(argv)
    if args.child is not None:
        _run_child(args.child)
        return
    if args.keyed:
        results = run_keyed(args.scale, args.dsn)
        print(format_keyed(results))
    elif args.incremental_deletes:
        results = run_incremental_check(args.rows)
        print("\n".join(f"{name}: {seconds:.2f}s" for name, seconds in results.items() if name != "rows"))
    elif args.changes:
        results = run_changes(args.rows, args.dsn, args.batch_size, args.checkpoint_rows, args.heap)
        print(format_changes(results))
    elif args.tables:
        results = run_scale(args.tables)
        print(format_scale(results))
    elif args.wide:
        results = run_wide()
        print(format_wide(results))
    elif args.incremental:
        results = run_incremental(args.rows)
        print(format_incremental(results))
    else:
        results = run(args)
        print(format_table(results))
    print(json.dumps(results, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every stage on one server and one table; returns the numbers as the JSON output holds them."""
    with (
        local_postgres.start_server(local_postgres.find_bin_dir()) as server,
        tempfile.TemporaryDirectory(prefix="connector-benchmark-") as work_dir,
    ):
        work = Path(work_dir)
        started = time.monotonic()
        _build_table(server, args.rows)
        print(f"built {args.rows:,} rows in {time.monotonic() - started:.0f}s", file=sys.stderr)
        configuration = {
            **{key.upper(): str(value) for key, value in server.connect_kwargs().items()},
            "DATABASE": DATABASE,
            "USERNAME": server.user,
            "TABLES": f"{SCHEMA}.{TABLE}",
            "BATCH_SIZE": str(args.batch_size),
            "CHECKPOINT_ROWS": str(args.checkpoint_rows),
        }
        del configuration["DBNAME"], configuration["USER"]
        rows_file = work / "prebuilt.pickle"
        cursor_runs, extraction_runs, tunnel_runs = [], [], []
        with contextlib.ExitStack() as stack:
            tunnelled = _through_ssh(stack, work, configuration) if args.ssh else None
            for attempt in range(args.repeat):
                cursor_runs.append(_plain_cursor(server, configuration, args.batch_size))
                extraction_runs.append(_extraction(configuration, rows_file if attempt == 0 else None, args.slice))
                if tunnelled is not None:
                    tunnel_runs.append(_extraction(tunnelled, None, 0))
        cursor_seconds, extraction_seconds = min(cursor_runs), min(extraction_runs)
        results: dict[str, Any] = {
            "rows": args.rows,
            "batch_size": args.batch_size,
            "checkpoint_rows": args.checkpoint_rows,
            "python": sys.version.split()[0],
            "server": server.version.split(",")[0],
            "seconds": {"1_psycopg2_named_cursor": cursor_seconds, "2_connector_extraction": extraction_seconds},
        }
        if tunnel_runs:
            results["seconds"]["2_connector_extraction_through_ssh"] = min(tunnel_runs)
        if not args.extraction_only:
            extraction = _child(work, "extraction", configuration, args.rows, None)
            ceiling = _child(work, "ceiling", configuration, args.rows, rows_file)
            end_to_end = _child(work, "end_to_end", configuration, args.rows, None)
            keyed_configuration, keyed_rows_file = _keyed_copy(server, configuration, rows_file)
            ceiling_keyed = _child(work, "ceiling_keyed", keyed_configuration, args.rows, keyed_rows_file)
            end_to_end_keyed = _child(work, "end_to_end_keyed", keyed_configuration, args.rows, None)
            key_checks = _declared_key_checks(server, configuration, end_to_end["state"])
            _drop_cursor_index(server)
            unindexed = _child(work, "incremental", configuration, args.rows, None, state=end_to_end["state"])
            results["seconds"] |= {
                "3_sdk_ceiling": ceiling["seconds"],
                "4_connector_end_to_end": end_to_end["seconds"],
                "3k_sdk_ceiling_keyed": ceiling_keyed["seconds"],
                "4k_connector_end_to_end_keyed": end_to_end_keyed["seconds"],
            }
            results["first_sync_output"] = {
                name: {"printed_bytes": stage["printed_bytes"], "state_bytes": stage["state_bytes"]}
                for name, stage in (("incremental", end_to_end), ("keyed", end_to_end_keyed))
            }
    seconds = results["seconds"]
    rates = results["rows_per_second"] = {stage: args.rows / value for stage, value in seconds.items()}
    ratio = rates["2_connector_extraction"] / rates["1_psycopg2_named_cursor"]
    results["ratios"] = {"extraction_vs_cursor": ratio}
    results["targets"] = {"extraction_vs_cursor >= 1.0": ratio >= TARGETS["extraction_vs_cursor"]}
    if tunnel_runs:
        results["ratios"]["through_ssh_vs_direct"] = (
            rates["2_connector_extraction_through_ssh"] / rates["2_connector_extraction"]
        )
    if args.extraction_only:
        return results
    ratio = rates["4_connector_end_to_end"] / rates["3_sdk_ceiling"]
    results["ratios"]["end_to_end_vs_ceiling"] = ratio
    keyed_ratio = rates["4k_connector_end_to_end_keyed"] / rates["3k_sdk_ceiling_keyed"]
    results["ratios"]["keyed_end_to_end_vs_ceiling"] = keyed_ratio
    # The local runner keeps every upserted key's hash for the whole sync and DuckDB indexes the table, so both peaks
    # grow with the table; what the connector adds is 4 minus 3 (3 also holds its pre-built slice).
    results["peak_memory_mb"] = {
        "2_connector_extraction": extraction["peak_mb"],
        "3_sdk_ceiling": ceiling["peak_mb"],
        "4_connector_end_to_end": end_to_end["peak_mb"],
        "4_minus_3": end_to_end["peak_mb"] - ceiling["peak_mb"],
    }
    results["incremental_nothing_new"] = {
        "full_sync_seconds": end_to_end["seconds"],
        "indexed_cursor_seconds": end_to_end["incremental_seconds"],
        "indexed_cursor_rows_reread": end_to_end["incremental_upserts"],
        "indexed_share_of_full_sync": end_to_end["incremental_seconds"] / end_to_end["seconds"],
        "unindexed_cursor_seconds": unindexed["incremental_seconds"],
        "unindexed_cursor_logged": unindexed["logged_no_index"],
        "declared_key_check_seconds": key_checks,
    }
    results["targets"] |= {
        "end_to_end_vs_ceiling >= 1.0": ratio >= TARGETS["end_to_end_vs_ceiling"],
        "peak_memory_mb < 400": end_to_end["peak_mb"] < TARGETS["peak_memory_mb"],
        "keyed end_to_end_vs_ceiling >= 1.0": keyed_ratio >= TARGETS["end_to_end_vs_ceiling"],
    }
    for name, output in results["first_sync_output"].items():
        target = f"{name} first sync prints under 2 MB besides its final state"
        results["targets"][target] = prints_little(output["printed_bytes"], output["state_bytes"])
    return results


def format_table(results: dict[str, Any]) -> str:
    """The results as a plain-text table."""
    labels = {
        "1_psycopg2_named_cursor": "1 psycopg2 named cursor (default casts)",
        "2_connector_extraction": "2 connector extraction, no SDK",
        "3_sdk_ceiling": "3 SDK ceiling (pre-built rows)",
        "4_connector_end_to_end": "4 connector end to end",
        "3k_sdk_ceiling_keyed": "3k SDK ceiling, keyed copy (no cursor)",
        "4k_connector_end_to_end_keyed": "4k connector end to end, keyed copy",
        "2_connector_extraction_through_ssh": "2 through an SSH tunnel",
    }
    lines = [
        f"{results['rows']:,} rows, BATCH_SIZE {results['batch_size']:,}, CHECKPOINT_ROWS "
        f"{results['checkpoint_rows']:,}; Python {results['python']}, {results['server']}",
        f"{'stage':<42}{'seconds':>10}{'rows/s':>12}",
    ]
    for key, seconds in results["seconds"].items():
        lines.append(f"{labels[key]:<42}{seconds:>10.1f}{results['rows_per_second'][key]:>12,.0f}")
    ratios, met = results["ratios"], {True: "met", False: "NOT MET"}
    targets = list(results["targets"].values())
    lines.append(f"ratio 2/1 {ratios['extraction_vs_cursor']:.2f} (target >= 1.0: {met[targets[0]]})")
    if "through_ssh_vs_direct" in ratios:
        lines.append(f"ratio 2 through SSH / 2 direct {ratios['through_ssh_vs_direct']:.2f}")
    if "end_to_end_vs_ceiling" not in ratios:
        return "\n".join(lines)
    memory, incremental = results["peak_memory_mb"], results["incremental_nothing_new"]
    lines += [
        f"ratio 4/3 {ratios['end_to_end_vs_ceiling']:.2f} (target >= 1.0: {met[targets[1]]}); "
        f"4k/3k {ratios['keyed_end_to_end_vs_ceiling']:.2f} (target >= 1.0: {met[targets[3]]})",
        *(
            f"first sync, {name}: {output['printed_bytes']:,} bytes printed by the runner, its final state "
            f"{output['state_bytes']:,} bytes (printed once at the end)"
            for name, output in results["first_sync_output"].items()
        ),
        f"peak memory of 4: {memory['4_connector_end_to_end']:.0f} MB (target < 400: {met[targets[2]]}); "
        f"of 3: {memory['3_sdk_ceiling']:.0f} MB; 4 minus 3: {memory['4_minus_3']:+.0f} MB; "
        f"of 2 alone: {memory['2_connector_extraction']:.0f} MB",
        f"incremental sync finding nothing new: {incremental['indexed_cursor_seconds']:.1f}s with an indexed cursor "
        f"({incremental['indexed_share_of_full_sync']:.1%} of the full sync's {incremental['full_sync_seconds']:.0f}s,"
        f" {incremental['indexed_cursor_rows_reread']} rows sent); "
        f"{incremental['unindexed_cursor_seconds']:.1f}s without the index (logged: "
        f"{incremental['unindexed_cursor_logged']})",
        "declared key (PRIMARY_KEYS) checked on that window: "
        + ", ".join(f"{seconds:.2f}s {how}" for how, seconds in incremental["declared_key_check_seconds"].items()),
    ]
    return "\n".join(lines)


def _build_table(server: local_postgres.LocalServer, rows: int) -> None:
    server.create_database(DATABASE)
    connection = _connect(server)
    with connection.cursor() as cursor:
        cursor.execute(CREATE_TABLE)
        step = 500_000
        for first in range(1, rows + 1, step):
            cursor.execute(FILL_TABLE, (first, min(first + step - 1, rows)))
        cursor.execute(f"CREATE INDEX {CURSOR_INDEX} ON {SCHEMA}.{TABLE} (updated_at, id)")
        cursor.execute(f"VACUUM ANALYZE {SCHEMA}.{TABLE}")
    connection.close()


def _through_ssh(stack: contextlib.ExitStack, work: Path, configuration: dict[str, str]) -> dict[str, str]:
    """The configuration through a throwaway sshd on 127.0.0.1 (the bastion), started for this run."""
    from tools.ssh_server import SshServer, generate_key

    key = generate_key(work, "benchmark_key", "ed25519")
    bastion = stack.enter_context(SshServer([key.public_line]))
    return configuration | {
        "SSH_HOST": "127.0.0.1",
        "SSH_PORT": str(bastion.port),
        "SSH_USER": bastion.user,
        "SSH_PRIVATE_KEY": key.private_text,
        "SSH_HOST_KEY": bastion.host_key_line,
    }


def _declared_key_checks(
    server: local_postgres.LocalServer, configuration: dict[str, str], state: dict[str, Any]
) -> dict[str, float]:
    """Seconds of the check an incremental sync of a table with a declared key makes on the window it reads (the
    lookback after the end-to-end sync), on a copy of the table without its primary key (its cursor indexed as the
    original's), with and without an index on the key column."""
    import reads
    from declared_keys import check_window
    from state import load_state

    copy = f"{TABLE}_declared"
    connection = _connect(server)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {SCHEMA}.{copy} AS SELECT * FROM {SCHEMA}.{TABLE}; "
            f"CREATE INDEX ON {SCHEMA}.{copy} (updated_at, id); ANALYZE {SCHEMA}.{copy}"
        )
    configuration = configuration | {"TABLES": f"{SCHEMA}.{copy}", "PRIMARY_KEYS": f"{SCHEMA}.{copy}:id"}
    client, plan, _ = _table_sync(configuration)
    table_state = load_state(state).tables[f"{SCHEMA}.{TABLE}"]
    start = reads.IncrementalStart(int(configuration.get("LOOKBACK_SECONDS", "300")))
    window = reads.incremental_window(plan, table_state, start)
    seconds = {}
    for how in ("without an index on the key", "with one"):
        if how == "with one":
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE INDEX ON {SCHEMA}.{copy} (id); ANALYZE {SCHEMA}.{copy}")
        started = time.perf_counter()
        check_window(client, plan, *window)
        seconds[how] = time.perf_counter() - started
    client.close()
    connection.close()
    return seconds


def _drop_cursor_index(server: local_postgres.LocalServer) -> None:
    connection = _connect(server)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX {SCHEMA}.{CURSOR_INDEX}")
        cursor.execute(f"ANALYZE {SCHEMA}.{TABLE}")
    connection.close()


def _connect(server: local_postgres.LocalServer) -> psycopg2.extensions.connection:
    connection = psycopg2.connect(**{**server.connect_kwargs(), "dbname": DATABASE})
    connection.autocommit = True
    return connection


def _table_sync(configuration: dict[str, str]) -> tuple[Any, Any, Any]:
    """The connector's own client, plan and TableSync for the benchmark table, as update() builds them."""
    from block_ranges import hashing_for
    from catalog import discover, server_info
    from checkpoints import Checkpoints
    from configuration import parse_settings
    from greenplum_client import GreenplumClient
    from planning import plan_tables
    from state import SyncState
    from sync import SyncContext, TableSync
    from table_sink import Source

    settings = parse_settings(configuration)
    client = GreenplumClient(settings)
    (plan,) = plan_tables(settings, discover(client, server_info(client), settings.schemas), client, strict=True).plans
    sync_state = SyncState()
    checkpoints = Checkpoints(sync_state, settings.checkpoint_rows, settings.checkpoint_seconds)
    info = server_info(client)
    source = Source(client, info.flavour, hashing_for(info.server_version_num), [])
    context = SyncContext(source, settings, sync_state, checkpoints)
    return client, plan, TableSync(context, plan)


def _first_read(configuration: dict[str, str]) -> tuple[Any, Any, Any]:
    """The client, TableSync and the first read of a first sync: what stages 1 and 2 both run."""
    client, plan, table_sync = _table_sync(configuration)
    assert plan.cursor is not None, "the benchmark table is synced incrementally"
    import reads
    from state import TableState

    return (
        client,
        table_sync,
        reads.incremental_values(plan, TableState(plan.strategy.value), reads.IncrementalStart(0)),
    )


def _plain_cursor(server: local_postgres.LocalServer, configuration: dict[str, str], batch_size: int) -> float:
    """Stage 1: the same query through a default psycopg2 connection, iterated row by row; seconds."""
    client, _, read = _first_read(configuration)
    statement = read.statement.as_string(client.connection)
    client.close()
    connection = psycopg2.connect(**{**server.connect_kwargs(), "dbname": DATABASE})
    started = time.perf_counter()
    with connection.cursor(name="benchmark_plain") as cursor:
        cursor.itersize = batch_size
        cursor.execute(statement, read.params)
        for _row in cursor:
            pass
    seconds = time.perf_counter() - started
    connection.close()
    return seconds


def _extraction(configuration: dict[str, str], rows_file: Path | None, keep: int) -> float:
    """Stage 2: batches from GreenplumClient.stream turned into upsert-ready dicts; seconds.

    With `rows_file`, the first `keep` dicts are saved there for stage 3.
    """
    client, table_sync, read = _first_read(configuration)
    kept: list[dict[str, Any]] = []
    started = time.perf_counter()
    for batch in client.stream(read.statement, read.params):
        rows = table_sync.upsert_ready(batch)
        if rows_file is not None and len(kept) < keep:
            kept.extend(rows[: keep - len(kept)])
    seconds = time.perf_counter() - started
    client.close()
    if rows_file is not None:
        rows_file.write_bytes(pickle.dumps(kept, protocol=pickle.HIGHEST_PROTOCOL))
    return seconds


def _child(
    work: Path,
    stage: str,
    configuration: dict[str, str],
    rows: int,
    rows_file: Path | None,
    state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Runs one SDK stage in a fresh interpreter and returns what it measured."""
    job = {
        "stage": stage,
        "configuration": configuration,
        "rows": rows,
        "rows_file": str(rows_file) if rows_file else None,
        "state": state,
        "project": str(work / stage),
        "result": str(work / f"{stage}.json"),
    }
    job_file = work / f"{stage}-job.json"
    job_file.write_text(json.dumps(job))
    log_file = work / f"{stage}.log"
    print(f"running stage {stage} ...", file=sys.stderr)
    with log_file.open("w") as log:
        completed = subprocess.run(
            [sys.executable, "-m", "tools.benchmark", "--child", str(job_file)],
            cwd=ROOT,
            env={**os.environ, "DO_NOT_TRACK": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    output = log_file.read_text()
    if completed.returncode != 0:
        raise SystemExit(f"stage {stage} failed:\n{output[-5000:]}")
    result = json.loads(Path(job["result"]).read_text())
    result["logged_no_index"] = "leads no index" in output
    return result


def _run_child(job_file: Path) -> None:
    """In the fresh interpreter: stage 2 alone, stage 3, or stage 4 and its incremental follow-up."""
    job = json.loads(job_file.read_text())
    if job["stage"] == "extraction":
        _extraction(job["configuration"], None, 0)
        result = {"peak_mb": _peak_rss_mb()}
    else:
        result = _sdk_stage(job)
    Path(job["result"]).write_text(json.dumps(result))


def _sdk_stage(job: dict[str, Any]) -> dict[str, Any]:
    """Stage 3, or stage 4 and its incremental follow-up, through the SDK's runner."""
    import fivetran_connector_sdk_core.runner as sdk_runner
    from fivetran_connector_sdk import Logging
    from fivetran_connector_sdk_cli import core_adapter

    Logging.LOG_LEVEL = Logging.Level.INFO  # the SDK's log.info raises TypeError while the level is unset
    sdk_runner.check_newer_version = lambda *args, **kwargs: None  # no network wait
    project, configuration = Path(job["project"]), job["configuration"]
    project.mkdir(exist_ok=True)
    result: dict[str, Any] = {}
    stage = job["stage"].removesuffix("_keyed")
    if stage == "ceiling":
        connector = _ceiling_connector(configuration, job["rows"], Path(job["rows_file"]))
    else:
        import connector as module

        connector = module.connector
    if stage in ("ceiling", "end_to_end"):
        printed = PrintedBytes()
        started = time.perf_counter()
        with contextlib.redirect_stdout(printed):
            counts = core_adapter.run(connector, str(project), configuration, {})
        result["seconds"] = time.perf_counter() - started
        result["peak_mb"] = _peak_rss_mb()
        result["printed_bytes"] = printed.bytes
        result["state_bytes"] = len((project / "files" / "state.json").read_bytes())
        if counts.get("Upserts") != job["rows"]:
            raise SystemExit(f"expected {job['rows']} upserts, the runner counted {counts}")
    if stage != "ceiling":
        state = job["state"] or json.loads((project / "files" / "state.json").read_text())
        result["state"] = state
        started = time.perf_counter()
        counts = core_adapter.run(connector, str(project), configuration, state)
        result["incremental_seconds"] = time.perf_counter() - started
        result["incremental_upserts"] = counts.get("Upserts", 0)
    return result


def _keyed_copy(
    server: local_postgres.LocalServer, configuration: dict[str, str], rows_file: Path
) -> tuple[dict[str, str], Path]:
    """The benchmark table keyed and without a cursor (its updated_at renamed, so that no column is taken for one), and
    the pre-built rows with that column renamed, for stage 3 of that table."""
    keyed = f"{TABLE}_keyed"
    connection = _connect(server)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {SCHEMA}.{keyed} AS SELECT * FROM {SCHEMA}.{TABLE}; "
            f"ALTER TABLE {SCHEMA}.{keyed} RENAME COLUMN updated_at TO changed_at; "
            f"ALTER TABLE {SCHEMA}.{keyed} ADD PRIMARY KEY (id)"
        )
        cursor.execute(f"VACUUM ANALYZE {SCHEMA}.{keyed}")
    connection.close()
    prebuilt = pickle.loads(rows_file.read_bytes())
    for row in prebuilt:
        row["changed_at"] = row.pop("updated_at")
    keyed_file = rows_file.with_name("prebuilt_keyed.pickle")
    keyed_file.write_bytes(pickle.dumps(prebuilt, protocol=pickle.HIGHEST_PROTOCOL))
    return configuration | {"TABLES": f"{SCHEMA}.{keyed}"}, keyed_file


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). Not ru_maxrss: Linux carries that across exec from the parent, whose
    peak (stage 2's pre-built slice) would then be the floor of every child's."""
    status = Path("/proc/self/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(line.split()[1]) / 1024


def _ceiling_connector(configuration: dict[str, str], rows: int, rows_file: Path) -> Any:
    """A connector that upserts pre-built rows with the benchmark table's declaration and checkpoint cadence.

    The slice is cycled through with a fresh key each time, so the destination receives `rows` distinct rows.
    """
    from fivetran_connector_sdk import Connector
    from fivetran_connector_sdk import Operations as op

    client, plan, _ = _table_sync(configuration)
    declaration = plan.declaration()
    (key,) = plan.primary_key
    client.close()
    checkpoint_rows = int(configuration["CHECKPOINT_ROWS"])
    prebuilt = pickle.loads(rows_file.read_bytes())
    gc.freeze()  # the slice lives all run: the SDK's own garbage collections should not walk it every time

    def schema(configuration: dict[str, Any]) -> list[dict[str, object]]:
        return [declaration]

    def update(configuration: dict[str, Any], state: dict[str, Any]) -> None:
        table, schema_name, upsert = plan.destination_table, plan.destination_schema, op.upsert
        size = len(prebuilt)
        for number in range(1, rows + 1):
            row = prebuilt[number % size]
            row[key] = number  # op.upsert encodes the row at once: changing the dict afterwards is safe
            upsert(table, row, schema=schema_name)
            if number % checkpoint_rows == 0:
                op.checkpoint({"version": 1, "tables": {plan.state_key: {"position": [str(number)]}}})
        op.checkpoint({"version": 1, "tables": {plan.state_key: {"position": [str(rows)]}}})

    return Connector(update=update, schema=schema)


if __name__ == "__main__":
    main()
