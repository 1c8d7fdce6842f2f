"""Fivetran connector for Greenplum (6, 7), Apache Cloudberry and PostgreSQL.

Replicates every selected table incrementally into the destination: `schema()` validates the configuration and
declares the tables, `update()` syncs them, one strategy per table (see README.md). The database work lives in
`greenplum_client.py`, discovery in `catalog.py`, per-table planning in `planning.py` and the read loop in `sync.py`.
"""

from __future__ import annotations

from typing import Any

from fivetran_connector_sdk import ConfigurationForm, Connector, Test, form_field
from fivetran_connector_sdk import Logging as log
from fivetran_connector_sdk import Operations as op

from catalog import ServerInfo, discover, server_info
from catalog_sql import PRIMARY_SEGMENTS
from configuration import Settings, parse_settings
from greenplum_client import GreenplumClient, one_line
from planning import TablePlan, plan_tables, unreadable_tables
from state import load_state
from sync import TABLE_ERRORS, TableSync

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
    ("CHECKPOINT_ROWS", "Checkpoint rows", False, "Rows between checkpoints within a table; default 10000."),
    ("LOOKBACK_SECONDS", "Lookback seconds", False, "Re-read window before the saved cursor; default 300."),
    ("CONNECT_TIMEOUT_SECONDS", "Connect timeout", False, "Seconds to wait for each connection attempt; default 10."),
    ("RETRY_SECONDS", "Retry for", False, "Seconds to keep retrying a failed connection; default 300."),
    ("QUERIES", "Custom queries", False, 'JSON array of {"table", "query", "primary_key", "cursor"}.'),
)


def _plans(
    settings: Settings, client: GreenplumClient, info: ServerInfo, *, log_skipped: bool = False
) -> tuple[list[TablePlan], dict[str, str]]:
    """The plans of the tables to sync, and the selected tables the user may not read (name -> why).

    Relations skipped by discovery (external, foreign) are logged by update() only: one line each per sync.
    """
    discovery = discover(client, info, settings.schemas)
    for skipped in discovery.skipped if log_skipped else ():
        log.info(f"Skipping {skipped.schema}.{skipped.name}: {skipped.reason}")
    return plan_tables(settings, discovery, client), unreadable_tables(settings, discovery)


def schema(configuration: dict[str, Any]) -> list[dict[str, object]]:
    """Validates the configuration (before connecting) and declares every table that update() will sync."""
    settings = parse_settings(configuration)
    with GreenplumClient(settings) as client:
        plans, unreadable = _plans(settings, client, server_info(client))
        for name, reason in unreadable.items():
            log.warning(f"{name} is not declared: {reason}")
        return [plan.declaration() for plan in plans]


def update(configuration: dict[str, Any], state: dict[str, Any]) -> None:
    """Syncs every planned table in turn; a table the user may not read is skipped and named at the end."""
    settings = parse_settings(configuration)
    sync_state = load_state(state)
    with GreenplumClient(settings) as client:
        info = server_info(client)
        log.info(f"Source is {info.flavour.value}: {info.version}")
        plans, unreadable = _plans(settings, client, info, log_skipped=True)
        segments = [row[0] for row in client.query(PRIMARY_SEGMENTS)] if info.flavour.is_greenplum else []
        skipped = []
        for name, reason in unreadable.items():
            op.warning(f"Skipped {name}: {reason}")
            skipped.append(name)
        for plan in plans:
            try:
                TableSync(client, settings, plan, sync_state, segments).run()
            except TABLE_ERRORS as error:
                diagnostics = getattr(error, "diag", None)  # the server's message, without the statement
                reason = one_line((diagnostics and diagnostics.message_primary) or error)
                op.warning(f"Skipped {plan.state_key}: {reason}")
                skipped.append(plan.state_key)
        op.checkpoint(sync_state.as_json())
    if skipped:
        log.warning(f"Sync finished; {len(skipped)} table(s) skipped: {', '.join(skipped)}")
    else:
        log.info(f"Sync finished; {len(plans)} table(s) synced")


def connection_test(configuration: dict[str, Any]) -> Any:
    """The setup form's test: connects and says how many tables a sync would replicate."""
    try:
        settings = parse_settings(configuration)
        with GreenplumClient(settings) as client:
            info = server_info(client)
            plans, _ = _plans(settings, client, info)
    except Exception as error:  # the setup form shows the message; every failure is an answer here
        return Test.failure(one_line(error))
    log.info(f"Connected to {info.flavour.value}; {len(plans)} table(s) would be synced")
    return Test.success()


def configuration_form() -> ConfigurationForm:
    form = ConfigurationForm()
    for key, label, required, description in _FORM_FIELDS:
        kind = form_field.TextField.password if key == "PASSWORD" else form_field.TextField.plain_text
        form.add_field(form_field.TextField(key, label, kind, description=description, required=required))
    form.add_test(label="Connect and count the tables to sync", func=connection_test)
    return form


connector = Connector(update=update, schema=schema, configuration_form=configuration_form)
