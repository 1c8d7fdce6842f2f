"""Convergence under faults: while a workload inserts, updates and deletes, syncs run in subprocesses that are
killed with SIGKILL or have their server sessions terminated at random points; after the workload stops, the
destination equals the source for every table. Seeded, so a failure can be replayed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import ROOT, Database, Destination

import difference_digest as dd
from block_ranges import hashing_for
from catalog import detect_flavour, discover, server_info
from configuration import parse_settings
from digest_pairs import scan_cells
from greenplum_client import APPLICATION_NAME, GreenplumClient
from key_encoding import key_encoding
from key_ranges import KeyRanges
from planning import plan_tables

SEED = int(os.environ.get("CONVERGENCE_SEED", "20240605"))
ROUNDS = 8
ROWS = 3000
SYNC_SCRIPT = """
import json, sys
from pathlib import Path
import fivetran_connector_sdk_core.runner as runner
from fivetran_connector_sdk import Logging
from fivetran_connector_sdk_cli import core_adapter
import connector
runner.check_newer_version = lambda *args, **kwargs: None
Logging.LOG_LEVEL = Logging.Level.INFO
project, configuration = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
state_file = Path(project) / "files" / "state.json"
state = json.loads(state_file.read_text()) if state_file.exists() else {}
core_adapter.run(connector.connector, project, configuration, state)
"""
SETUP = """
CREATE TABLE {s}.inc (id int PRIMARY KEY, val int, deleted boolean NOT NULL DEFAULT false,
                      updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE {s}.keyed (id int PRIMARY KEY, val int);
CREATE TABLE {s}.keyless (val int, grp int);
INSERT INTO {s}.inc (id, val) SELECT i, i FROM generate_series(1, {n}) i;
INSERT INTO {s}.keyed SELECT i, i FROM generate_series(1, {n}) i;
INSERT INTO {s}.keyless SELECT i % 50, i % 7 FROM generate_series(1, {n}) i;
"""
# On Greenplum, append-optimized tables partitioned by a column no update changes (Greenplum 6 refuses to move a row
# between partitions), whose changes the catalog tells: one keyed; one keyless, its rows known by their content (25
# copies of each), three of its six leaves empty at first, its leaves compacted and loaded in bulk as it runs.
SETUP_GREENPLUM = """
CREATE TABLE {s}.keyed_ao (id int NOT NULL, grp int, val int) WITH (appendonly=true, orientation=column)
DISTRIBUTED BY (id) PARTITION BY RANGE (grp) (START (0) END (4) EVERY (1));
INSERT INTO {s}.keyed_ao SELECT i, i % 4, i FROM generate_series(1, {n}) i;
CREATE TABLE {s}.keyless_ao (grp int, val int) WITH (appendonly=true, orientation=column)
DISTRIBUTED RANDOMLY PARTITION BY RANGE (grp) (START (0) END (6) EVERY (1));
INSERT INTO {s}.keyless_ao SELECT i % 3, i % 40 FROM generate_series(1, {n}) i;
"""
WORKLOAD_GREENPLUM = [
    "INSERT INTO {s}.keyed_ao VALUES ({new}, {new} % 4, {v})",
    "UPDATE {s}.keyed_ao SET val = {v} WHERE id = {id}",
    "DELETE FROM {s}.keyed_ao WHERE id = {id}",
    "INSERT INTO {s}.keyless_ao VALUES ({v} % 6, {v} % 40)",
    "INSERT INTO {s}.keyless_ao SELECT {v} % 6, i % 40 FROM generate_series(1, 300) i",
    "UPDATE {s}.keyless_ao SET val = ({v} + 1) % 40 WHERE grp = {v} % 6 AND val = {v} % 40",
    "DELETE FROM {s}.keyless_ao WHERE grp = {v} % 6 AND val = {v} % 40",
    "VACUUM {s}.keyless_ao_1_prt_{leaf}",
]
# Incremental tables never see hard deletes, so the workload soft-deletes there; the full tables get real deletes.
WORKLOAD = [
    "INSERT INTO {s}.inc (id, val) VALUES ({new}, {v})",
    "UPDATE {s}.inc SET val = {v}, updated_at = clock_timestamp() WHERE id = {id}",
    "UPDATE {s}.inc SET deleted = true, updated_at = clock_timestamp() WHERE id = {id}",
    "INSERT INTO {s}.keyed VALUES ({new}, {v})",
    "UPDATE {s}.keyed SET val = {v} WHERE id = {id}",
    "DELETE FROM {s}.keyed WHERE id = {id}",
    "INSERT INTO {s}.keyless VALUES ({v} % 50, {v} % 7)",
    # By value, not by ctid: Greenplum refuses an UPDATE on ctid without gp_segment_id.
    "UPDATE {s}.keyless SET val = {v} WHERE grp = {v} % 7 AND val = ({v} + 1) % 50",
    "DELETE FROM {s}.keyless WHERE grp = {v} % 7 AND val = {v} % 50",
]


def _workload(
    database: Database, schema: str, rng: random.Random, stop: threading.Event, statements: list[str]
) -> None:
    connection = database.connect()
    new = ROWS
    with connection.cursor() as cursor:
        while not stop.is_set():
            new += 1
            chosen = rng.choice(statements)
            values = {"new": new, "v": rng.randrange(1000), "id": rng.randrange(1, new), "leaf": rng.randrange(1, 7)}
            statement = chosen.format(s=schema, **values)
            cursor.execute(statement)
            time.sleep(0.002)
    connection.close()


def _sync_sessions(database: Database, statement: str) -> int:
    """How many of the syncs' server sessions the statement, run over each of them, answers true for."""
    connection = database.connect()
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FILTER (WHERE {statement}) FROM pg_stat_activity WHERE application_name = %s",
            (APPLICATION_NAME,),
        )
        (count,) = cursor.fetchone()
    connection.close()
    return count


def _await_session(database: Database, process: subprocess.Popen) -> bool:
    """Whether the sync opened a server session while it ran: a fault aimed then lands inside the sync, not before
    it connects (its start-up takes most of a short sync, and more on a slow machine than a fast one)."""
    while process.poll() is None:
        if _sync_sessions(database, "true"):
            return True
        time.sleep(0.01)
    return False


def _fault(database: Database, process: subprocess.Popen, fault: str, delay: float) -> bool:
    """Kills the sync or terminates its server sessions, `delay` seconds after it connects; whether it hit a sync
    still running."""
    if not _await_session(database, process):
        return False
    try:
        process.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        if fault == "SIGKILL":
            process.send_signal(signal.SIGKILL)
            return True
        return _sync_sessions(database, "pg_terminate_backend(pid)") > 0


def _run_sync(project: Path, configuration: Path, log: Path) -> subprocess.Popen:
    with log.open("a") as output:
        return subprocess.Popen(
            [sys.executable, "-c", SYNC_SCRIPT, str(project), str(configuration)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def _source(database: Database, statement: str) -> list[tuple]:
    connection = database.connect()
    with connection.cursor() as cursor:
        cursor.execute(statement)
        rows = sorted(cursor.fetchall())
    connection.close()
    return rows


def test_destination_converges_after_killed_syncs_and_terminated_sessions(
    database: Database, schema: str, source, destination: Destination, tmp_path: Path
) -> None:
    greenplum = detect_flavour(database.version).is_greenplum
    keyed = ["keyed", "keyed_ao"] if greenplum else ["keyed"]
    with source.cursor() as cursor:
        cursor.execute(SETUP.format(s=schema, n=ROWS))
        if greenplum:
            cursor.execute(SETUP_GREENPLUM.format(s=schema, n=ROWS))
    configuration = tmp_path / "configuration.json"
    keys = {"PRIMARY_KEYS": f"{schema}.keyed_ao:id"} if greenplum else {}
    configuration.write_text(
        json.dumps(database.configuration(SCHEMAS=schema, BATCH_SIZE="200", CHECKPOINT_ROWS="500", **keys))
    )
    rng, stop = random.Random(SEED), threading.Event()
    statements = WORKLOAD + (WORKLOAD_GREENPLUM if greenplum else [])
    workload = threading.Thread(target=_workload, args=(database, schema, random.Random(SEED + 1), stop, statements))
    workload.start()
    log, hits = tmp_path / "syncs.log", []
    try:
        # Each fault three times, in a seeded order, each at a seeded point of its sync.
        faults = ["SIGKILL", "terminate"] * 3 + ["none"] * (ROUNDS - 6)
        rng.shuffle(faults)
        for round_, fault in enumerate(faults):
            delay = rng.uniform(0.0, 0.3)
            process = _run_sync(destination.project, configuration, log)
            if fault != "none" and _fault(database, process, fault, delay):
                hits.append(fault)
            returncode = process.wait(timeout=60)
            if fault != "SIGKILL":
                assert returncode == 0, f"round {round_} ({fault}) failed; seed {SEED}; see {log}"
    finally:
        stop.set()
        workload.join()
    assert "SIGKILL" in hits and "terminate" in hits, f"seed {SEED}: both faults hit a running sync: {faults}, {hits}"

    # The first clean sync finishes any full pass a killed sync left open (rows it upserted before the kill may
    # since have changed at the source); the second is a whole pass over the quiet source.
    for _ in range(2):
        destination.sync(json.loads(configuration.read_text()), state=destination.saved_state())

    assert destination.rows(schema, "inc", "id, val, deleted") == _source(
        database, f"SELECT id, val, deleted FROM {schema}.inc"
    )
    for table in ["keyless", "keyless_ao"] if greenplum else ["keyless"]:
        assert destination.rows(schema, table, "val, grp") == _source(
            database, f"SELECT val, grp FROM {schema}.{table}"
        )
    state = destination.saved_state()
    for table in keyed:
        assert destination.rows(schema, table, "id, val") == _source(database, f"SELECT id, val FROM {schema}.{table}")
        assert _digest_is_the_source_s(json.loads(configuration.read_text()), state, f"{schema}.{table}"), (
            f"{table}: the saved difference digest holds other pairs than the quiet source's; seed {SEED}"
        )


def _digest_is_the_source_s(configuration: dict[str, str], state: dict, state_key: str) -> bool:
    """Whether a keyed table's saved difference digest (and its digest of keys, and its key ranges) is the one a scan
    of the source gives now: a pair held twice, or one held that the source does not have, would send phantom changes
    later; key ranges that drifted would point a difference past capacity at the wrong rows."""
    settings = parse_settings(configuration)
    saved = dd.Cells.unpack(state["tables"][state_key]["digest"])
    with GreenplumClient(settings) as client:
        info = server_info(client)
        plans = plan_tables(settings, discover(client, info, settings.schemas), client, strict=True).plans
        (plan,) = [plan for plan in plans if plan.state_key == state_key]
        hashing, encoding, columns = hashing_for(info.server_version_num), key_encoding(plan), list(plan.columns)
        ranges = KeyRanges(saved.ranges.shift)
        scanned, _ = scan_cells(
            client, plan, hashing, encoding, columns, saved.sub_size, saved.keys.sub_size, ranges=ranges
        )
    difference = scanned.subtract(saved)
    keys_equal = difference.keys is not None and difference.keys.is_empty()
    return difference.is_empty() and keys_equal and scanned.ranges.same_as(saved.ranges)
