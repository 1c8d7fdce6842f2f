"""Fivetran connector for Greenplum (6, 7), Apache Cloudberry and PostgreSQL.

Replicates every selected table incrementally into the destination: `schema()` validates the configuration and
declares the tables, `update()` syncs them, one strategy per table (see README.md). The database work lives in
`greenplum_client.py`, discovery in `catalog.py`, per-table planning in `planning.py` and the read loop in `sync.py`.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from fivetran_connector_sdk import ConfigurationForm, Connector, Test, form_field
from fivetran_connector_sdk import Logging as log
from fivetran_connector_sdk import Operations as op

from block_ranges import hashing_for
from catalog import ServerInfo, discover, server_info
from catalog_sql import PRIMARY_SEGMENTS
from checkpoints import Checkpoints
from configuration import Settings, parse_settings, unknown_keys
from destination_names import keep_apart
from greenplum_client import GreenplumClient, one_line
from planning import Planning, plan_tables, unreadable_tables
from state import load_state
from sync import SyncContext, sync_table
from table_sink import Source

_FORM_FIELDS = (
    ("HOST", "Host", True, "Coordinator (master) host name or address."),
    ("PORT", "Port", True, "Usually 5432."),
    ("DATABASE", "Database", True, "The database to replicate."),
    ("USERNAME", "User", True, "A user with USAGE on the schemas and SELECT on the tables."),
    ("PASSWORD", "Password", True, "The user's password."),
    ("SCHEMAS", "Schemas", False, "Comma-separated schemas; default: every non-system schema."),
    ("TABLES", "Tables", False, "Comma-separated schema.table globs to include, e.g. sales.*; default: all."),
    ("EXCLUDE_TABLES", "Excluded tables", False, "Comma-separated schema.table globs to leave out."),
    ("EXCLUDE_COLUMNS", "Excluded columns", False, "Comma-separated schema.table.column globs never read."),
    (
        "CURSOR_COLUMNS",
        "Cursor columns",
        False,
        "Comma-separated schema.table:column incremental cursors; on a keyless table: append-only.",
    ),
    ("PRIMARY_KEYS", "Declared keys", False, "Comma-separated schema.table:col1+col2 keys, checked unique."),
    ("SSLMODE", "SSL mode", False, "disable, allow, prefer (default), require, verify-ca or verify-full."),
    ("SSLROOTCERT", "CA certificate", False, "PEM text of the CA, for verify-ca and verify-full."),
    ("BATCH_SIZE", "Batch size", False, "Rows fetched per round trip; default 5000."),
    ("CHECKPOINT_ROWS", "Checkpoint rows", False, "Rows or deletes sent between checkpoints; default 10000."),
    ("CHECKPOINT_MEGABYTES", "Checkpoint megabytes", False, "Megabytes sent between checkpoints; default 64."),
    ("CHECKPOINT_SECONDS", "Checkpoint seconds", False, "The longest time between checkpoints; default 60."),
    ("LOOKBACK_SECONDS", "Lookback seconds", False, "Re-read window before the saved cursor; default 300."),
    ("CONNECT_TIMEOUT_SECONDS", "Connect timeout", False, "Seconds to wait for each connection attempt; default 10."),
    ("RETRY_SECONDS", "Retry for", False, "Seconds to keep retrying a failed connection; default 300."),
    ("QUERIES", "Custom queries", False, 'JSON array of {"table", "query", "primary_key", "cursor"}.'),
    (
        "DELETE_CHECKS",
        "Delete checks",
        False,
        "Hours between checks of incremental tables' deletes, e.g. sales.*:24, queries.sample_table:0, big.t:off; "
        "default every sync.",
    ),
    ("SSH_HOST", "SSH bastion host", False, "Tunnel through this bastion; HOST and PORT are then as it sees them."),
    ("SSH_PORT", "SSH port", False, "The bastion's SSH port; default 22."),
    ("SSH_USER", "SSH user", False, "The user on the bastion whose authorized_keys holds the public key."),
    ("SSH_PRIVATE_KEY", "SSH private key", False, "OpenSSH or PEM text of an ed25519, ECDSA or RSA key."),
    ("SSH_PASSPHRASE", "SSH key passphrase", False, "The private key's passphrase, if it has one."),
    ("SSH_HOST_KEY", "SSH host key", False, "The bastion's public host key line, e.g. ssh-ed25519 AAAA..."),
)
_SECRET_FIELDS = ("PASSWORD", "SSH_PRIVATE_KEY", "SSH_PASSPHRASE")  # masked in the dashboard


def _plans(
    settings: Settings, client: GreenplumClient, info: ServerInfo, *, strict: bool, log_skipped: bool = False
) -> tuple[Planning, dict[str, str]]:
    """The plans of the tables to sync (with the warnings about settings that match nothing), and the selected
    tables the user may not read (name -> why).

    Relations skipped by discovery (external, foreign) are logged by update() only: one line each per sync.
    """
    discovery = discover(client, info, settings.schemas)
    for skipped in discovery.skipped if log_skipped else ():
        log.info(f"Skipping {skipped.schema}.{skipped.name}: {skipped.reason}")
    planning = plan_tables(settings, discovery, client, strict=strict)
    plans, renamed = keep_apart(planning.plans)
    return replace(planning, plans=plans, renamed=renamed), unreadable_tables(settings, discovery)


def schema(configuration: dict[str, Any]) -> list[dict[str, object]]:
    """Validates the configuration (before connecting) and declares every table that update() will sync.

    schema() is not given the state, so it cannot tell a first sync from a later one: names that match nothing
    leave their tables out here, and update() fails a first sync for them or warns in a later one.
    """
    settings = parse_settings(configuration)
    with GreenplumClient(settings, first_contact_seconds=settings.connect_timeout_seconds) as client:
        planning, unreadable = _plans(settings, client, server_info(client), strict=False)
        for name, reason in unreadable.items():
            log.warning(f"{name} is not declared: {reason}")
        return [plan.declaration() for plan in planning.plans]


def update(configuration: dict[str, Any], state: dict[str, Any]) -> None:
    """Syncs every planned table in turn; a table the user may not read is skipped and named at the end.

    A first sync (no saved state) is strict: a name that matches nothing fails it, naming the key, and a server that
    does not answer fails it within seconds. A later sync warns about such names and syncs everything else, and
    retries a server that does not answer for RETRY_SECONDS.
    """
    settings = parse_settings(configuration)
    for message in unknown_keys(configuration):
        op.warning(message)
    sync_state = load_state(state)
    first_sync = not state
    first_contact = settings.connect_timeout_seconds if first_sync else None
    with GreenplumClient(settings, first_contact_seconds=first_contact) as client:
        info = server_info(client)
        log.info(f"Source is {info.flavour.value}: {info.version}")
        planning, unreadable = _plans(settings, client, info, strict=first_sync, log_skipped=True)
        for message in [*planning.warnings, *planning.renamed]:
            op.warning(message)
        segments = [row[0] for row in client.query(PRIMARY_SEGMENTS)] if info.flavour.is_greenplum else []
        skipped = []
        for name, reason in unreadable.items():
            op.warning(f"Skipped {name}: {reason}")
            skipped.append(name)
        synced = 0
        checkpoints = Checkpoints(
            sync_state,
            settings.checkpoint_rows,
            settings.checkpoint_seconds,
            bytes_between=settings.checkpoint_megabytes * 2**20,
        )
        hashing = hashing_for(info.server_version_num)
        context = SyncContext(Source(client, info.flavour, hashing, segments), settings, sync_state, checkpoints)
        with _long_lived_frozen():
            for plan in planning.plans:
                reason = sync_table(context, plan)
                if reason is None:
                    synced += 1
                else:
                    op.warning(f"Skipped {plan.state_key}: {reason}")
                    skipped.append(plan.state_key)
            checkpoints.finish()
    _log_summary(synced, skipped, planning.warnings)


@contextlib.contextmanager
def _long_lived_frozen() -> Iterator[None]:
    """Keeps what lives all sync (modules, the SDK, the plans, the saved state) out of the collector's full passes,
    which run every few thousand rows while the SDK buffers them: walking it each time cost about 2% of a first sync.
    Garbage is collected first, so nothing dead is frozen, and all is thawed after: a frozen cycle is never freed."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _log_summary(synced: int, skipped: list[str], warnings: list[str]) -> None:
    """The sync's last line: what synced, what was skipped, and how many settings match nothing or no longer apply."""
    parts = [f"Sync finished; {synced} table(s) synced"]
    if skipped:
        parts.append(f"{len(skipped)} table(s) skipped: {', '.join(skipped)}")
    if warnings:
        keys = sorted({message.split(":", 1)[0].split(" ", 1)[0] for message in warnings})
        parts.append(
            f"{len(warnings)} setting(s) match nothing or no longer apply ({', '.join(keys)}; see the warnings)"
        )
    (log.warning if skipped or warnings else log.info)("; ".join(parts))


def connection_test(configuration: dict[str, Any]) -> Any:
    """The setup form's test: one connection attempt, strict names, and how many tables a sync would replicate."""
    try:
        settings = parse_settings(configuration)
        for message in unknown_keys(configuration):
            log.warning(message)
        with GreenplumClient(settings, first_contact_seconds=0) as client:
            info = server_info(client)
            planning, _ = _plans(settings, client, info, strict=True)
    except Exception as error:  # the setup form shows the message; every failure is an answer here
        return Test.failure(one_line(error))
    for message in [*planning.warnings, *planning.renamed]:
        log.warning(message)
    log.info(f"Connected to {info.flavour.value}; {len(planning.plans)} table(s) would be synced")
    return Test.success()


def configuration_form() -> ConfigurationForm:
    form = ConfigurationForm()
    for key, label, required, description in _FORM_FIELDS:
        kind = form_field.TextField.password if key in _SECRET_FIELDS else form_field.TextField.plain_text
        form.add_field(form_field.TextField(key, label, kind, description=description, required=required))
    form.add_test(label="Connect and count the tables to sync", func=connection_test)
    return form


connector = Connector(update=update, schema=schema, configuration_form=configuration_form)
