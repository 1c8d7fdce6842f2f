"""What an incremental table's syncs send, measured in one run (`python -m tools.benchmark --incremental`) through the
SDK's runner on a throwaway PostgreSQL: an `orders`-like table of N rows (a primary key, an indexed `updated_at`
cursor, its newest rows within the lookback window) synced first, then after nothing changed, 1,000 rows updated, 500
deleted, a late commit (a transaction that wrote a cursor value ten minutes old and committed after a sync had read
past it), and rounds of inserts and updates at `now()` between syncs. Per sync: rows changed, upserts, deletes, seconds
and the state's size; for the first sync, the bytes the runner printed (it prints the state at every checkpoint).
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2

from tools import local_postgres
from tools.sync_measures import PrintedBytes, landed_rows, prints_little

SCHEMA = "bench_incremental"
TARGETS = {"sent_over_changed": 1.1, "slack": 100}


def run_incremental(rows: int) -> dict[str, Any]:
    with (
        local_postgres.start_server(local_postgres.find_bin_dir()) as server,
        tempfile.TemporaryDirectory(prefix="incremental-benchmark-") as work_dir,
    ):
        params = server.create_database("benchmark")
        source = psycopg2.connect(**params)
        source.autocommit = True
        started = time.monotonic()
        _build(source, rows)
        print(f"built {rows:,} rows in {time.monotonic() - started:.0f}s", file=sys.stderr)
        configuration = {
            "HOST": server.host,
            "PORT": str(server.port),
            "DATABASE": params["dbname"],
            "USERNAME": server.user,
            "PASSWORD": server.password,
            "SCHEMAS": SCHEMA,
        }
        work = Path(work_dir)
        syncs: dict[str, dict[str, Any]] = {"a_first": _sync(work, configuration, rows, count_output=True)}
        syncs["b_unchanged"] = _sync(work, configuration, 0)
        _execute(source, f"UPDATE {SCHEMA}.orders SET status = 'shipped', updated_at = now() WHERE id % 1000 = 17")
        syncs["c_updated"] = _sync(work, configuration, rows // 1000)
        _execute(source, f"DELETE FROM {SCHEMA}.orders WHERE id % 2000 = 3")
        syncs["d_deleted"] = _sync(work, configuration, rows // 2000)
        late = psycopg2.connect(**params)
        with late.cursor() as cursor:  # open while the next sync reads past its cursor value
            cursor.execute(
                f"INSERT INTO {SCHEMA}.orders VALUES ({rows + 1}, 1, 'late', 1, 'late', now() - interval '10 min')"
            )
        syncs["e_late_open"] = _sync(work, configuration, 0)
        late.commit()
        late.close()
        syncs["f_late_committed"] = _sync(work, configuration, 1)
        next_id = rows + 2
        for number in range(3):
            changed = 0
            for _ in range(5):  # inserts and updates at now(), a few seconds apart
                _execute(
                    source,
                    f"""INSERT INTO {SCHEMA}.orders SELECT g, g % 1000, 'new', 1, 'new', now()
                    FROM generate_series({next_id}, {next_id + 19}) g;
                    UPDATE {SCHEMA}.orders SET amount = amount + 1, updated_at = now()
                    WHERE id IN (SELECT (1 + (random() * {rows - 1}))::bigint FROM generate_series(1, 20))""",
                )
                next_id += 20
                changed += 40
                time.sleep(2)
            syncs[f"g_busy_{number + 1}"] = _sync(work, configuration, changed)
        landed, expected = landed_rows(work, SCHEMA, "orders"), _one(source, f"SELECT count(*) FROM {SCHEMA}.orders")
        if landed != expected:
            raise SystemExit(f"the destination holds {landed} live rows, the source {expected}")
        source.close()
    results: dict[str, Any] = {"rows": rows, "server": server.version.split(" on ")[0], "syncs": syncs}
    first = syncs["a_first"]
    results["targets"] = {
        "nothing changed sends nothing": syncs["b_unchanged"]["sent"] == 0,
        "rows sent at most 1.1 times the rows changed plus 100": all(
            sync["sent"] <= TARGETS["sent_over_changed"] * sync["changed"] + TARGETS["slack"]
            for key, sync in syncs.items()
            if key != "a_first"
        ),
        "the late commit lands": syncs["f_late_committed"]["upserts"] >= 1,
        "the first sync prints under 2 MB besides its final state": prints_little(
            first["printed_bytes"], first["state_bytes"]
        ),
    }
    return results


def format_incremental(results: dict[str, Any]) -> str:
    labels = {
        "a_first": "(a) first sync",
        "b_unchanged": "(b) nothing changed",
        "c_updated": "(c) 0.1% of rows updated (cursor now)",
        "d_deleted": "(d) 0.05% of rows deleted",
        "e_late_open": "(e) a late transaction still open",
        "f_late_committed": "(f) it committed, 10 minutes behind",
        "g_busy_1": "(g) 100 inserted, 100 updated at now()",
        "g_busy_2": "(g) again",
        "g_busy_3": "(g) again",
    }
    lines = [
        f"{results['rows']:,} rows, primary key and an indexed updated_at cursor; {results['server']}",
        f"{'sync':<44}{'changed':>9}{'upserts':>10}{'deletes':>9}{'seconds':>9}{'state bytes':>13}",
    ]
    for key, label in labels.items():
        sync = results["syncs"][key]
        lines.append(
            f"{label:<44}{sync['changed']:>9,}{sync['upserts']:>10,}{sync['deletes']:>9,}{sync['seconds']:>9.1f}"
            f"{sync['state_bytes']:>13,}"
        )
    first = results["syncs"]["a_first"]
    lines.append(
        f"first sync: {first['checkpoints']} checkpoints, {first['printed_bytes']:,} bytes printed by the runner "
        f"(its final state, printed once, {first['state_bytes']:,})"
    )
    met = {True: "met", False: "NOT MET"}
    lines += [f"target {name}: {met[value]}" for name, value in results["targets"].items()]
    return "\n".join(lines)


def _build(source: psycopg2.extensions.connection, rows: int) -> None:
    """The newest rows a second apart up to now: those of the last five minutes are in the lookback window."""
    _execute(
        source,
        f"""DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA};
        CREATE TABLE {SCHEMA}.orders (id bigint PRIMARY KEY, customer int, status text, amount numeric(12, 2),
                                      note text, updated_at timestamptz NOT NULL);
        INSERT INTO {SCHEMA}.orders SELECT g, g % 1000, 'open', (g % 10007) * 0.5, md5(g::text),
            now() - ({rows} - g) * interval '1 second' FROM generate_series(1, {rows}) g;
        CREATE INDEX ON {SCHEMA}.orders (updated_at, id)""",
    )
    _execute(source, f"VACUUM ANALYZE {SCHEMA}.orders")


def _sync(work: Path, configuration: dict[str, str], changed: int, count_output: bool = False) -> dict[str, Any]:
    """One sync through the SDK's runner, from the state the previous one saved."""
    import fivetran_connector_sdk_core.runner as sdk_runner
    from fivetran_connector_sdk import Logging
    from fivetran_connector_sdk_cli import core_adapter

    import connector

    Logging.LOG_LEVEL = Logging.Level.INFO  # the SDK's log.info raises TypeError while the level is unset
    sdk_runner.check_newer_version = lambda *args, **kwargs: None  # no network wait
    state_file = work / "files" / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    printed = PrintedBytes()
    started = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        counts = core_adapter.run(connector.connector, str(work), configuration, state)
    seconds = time.perf_counter() - started
    upserts, deletes = counts.get("Upserts", 0), counts.get("Deletes", 0)
    print(f"sync: {changed:,} changed, {upserts:,} upserts, {deletes:,} deletes, {seconds:.1f}s", file=sys.stderr)
    result = {"changed": changed, "upserts": upserts, "deletes": deletes, "sent": upserts + deletes}
    result |= {"seconds": seconds, "state_bytes": len(state_file.read_bytes()), "checkpoints": counts["Checkpoints"]}
    if count_output:
        result["printed_bytes"] = printed.bytes
    return result


def _execute(connection: psycopg2.extensions.connection, statement: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement)


def _one(connection: psycopg2.extensions.connection, statement: str) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(statement)
        return cursor.fetchone()[0]
