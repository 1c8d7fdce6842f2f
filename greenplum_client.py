"""`GreenplumClient`: one read-only connection to Greenplum or PostgreSQL, and rows streamed from named cursors.

Session settings are all made right after connecting, before any cursor is declared (Greenplum refuses a SET inside
a transaction after a DECLARE). Connection failures are retried with exponential backoff within a bounded total, and
are reported as one `SourceConnectionError` line that names the cause and never the password.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import psycopg2
import psycopg2.extensions
from fivetran_connector_sdk import Logging as log
from psycopg2 import sql

from configuration import Settings
from ssh_tunnel import Tunnel, TunnelError
from values import register_typecasters

APPLICATION_NAME = "fivetran_greenplum_connector"
SESSION_SETTINGS = (
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "iso_8601"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("default_transaction_read_only", "on"),
)
# SQLSTATE classes and codes that a new connection can cure: server shutting down, admin kill, network trouble, and
# the admin's idle-in-transaction, transaction and idle-session timeouts (which end the session).
_TRANSIENT_SQLSTATES = {
    "57P01",
    "57P02",
    "57P03",
    "57P05",
    "25P03",
    "25P04",
    "08000",
    "08001",
    "08003",
    "08004",
    "08006",
}
_QUERY_CANCELED = "57014"  # statement_timeout, or pg_cancel_backend: the session survives, the statement does not
_QUERY_ATTEMPTS = 5  # catalog and other small queries: tries when the connection keeps being lost


# The rows of a first fetch, and about how many bytes of values a fetch holds afterwards.
FIRST_FETCH = 16
BATCH_BYTES = 8 * 2**20
_ROWS_MEASURED = 32  # rows of a batch whose values are measured


class Batch(list):
    """Rows fetched in one round trip, and about how many bytes their values hold (`size`): the lengths of their
    text and binary values, 8 for any other, measured on up to 32 rows spread over the batch."""

    def __init__(self, rows: list[tuple]) -> None:
        super().__init__(rows)
        measured = rows[:: max(1, len(rows) // _ROWS_MEASURED)]
        total = sum(len(value) if isinstance(value, str | bytes) else 8 for row in measured for value in row)
        self.size = total * len(rows) // len(measured) if measured else 0


class SourceConnectionError(RuntimeError):
    """The database could not be reached or refused us; the message says why in one line."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class HiddenRowsUnavailable(RuntimeError):
    """Rows hidden cannot be read by a plan of several slices: no connection of its own could be opened for them (a
    role's connection limit, say)."""


def _close_quietly(connection: psycopg2.extensions.connection | None) -> None:
    if connection is not None:
        with contextlib.suppress(psycopg2.Error):  # already broken: closing is best effort
            connection.close()


def one_line(message: object) -> str:
    """A server or libpq message (which spreads DETAIL, HINT and context over several lines) as one log line."""
    return " ".join(str(message).split())


def is_connection_lost(error: BaseException) -> bool:
    """Whether the error is a broken or killed connection, after which reconnecting and resuming is right."""
    if isinstance(error, psycopg2.InterfaceError):
        return True
    if isinstance(error, psycopg2.OperationalError):
        code = getattr(error, "pgcode", None)
        return code is None or code in _TRANSIENT_SQLSTATES or code.startswith("08")
    return False


def is_statement_cancelled(error: BaseException) -> bool:
    """Whether the server cancelled the statement (statement_timeout, pg_cancel_backend) but kept the session."""
    return isinstance(error, psycopg2.Error) and getattr(error, "pgcode", None) == _QUERY_CANCELED


class GreenplumClient:
    """A connection with the connector's session settings; reconnects on demand after a lost connection."""

    def __init__(self, settings: Settings, *, first_contact_seconds: int | None = None) -> None:
        """`first_contact_seconds`: how long the first connection is retried, when not RETRY_SECONDS. A first
        contact that fails is more likely a wrong HOST or PORT than an outage: the setup form's test (0: one attempt)
        and a first sync answer in seconds. Once connected, a lost connection is retried for RETRY_SECONDS."""
        self._settings = settings
        self._first_contact_seconds = first_contact_seconds
        self._connection: psycopg2.extensions.connection | None = None
        self._hidden_connection: psycopg2.extensions.connection | None = None  # `_seeing_hidden`
        self._hidden_unavailable = False
        self._cursor_names = itertools.count(1)
        self._ca_file: str | None = None
        self._tunnel: Tunnel | None = None

    def __enter__(self) -> GreenplumClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def connection(self) -> psycopg2.extensions.connection:
        """The open connection, connecting (with retries) when there is none or it was lost."""
        if self._connection is None or self._connection.closed:
            self._connection = self._connect_with_retries()
        return self._connection

    def close(self) -> None:
        if self._connection is not None and not self._connection.closed:
            self._connection.close()
        self._connection = None
        self._discard_hidden()
        if self._ca_file is not None:
            os.unlink(self._ca_file)
            self._ca_file = None
        if self._tunnel is not None:
            self._tunnel.close()
            self._tunnel = None

    def discard_connection(self) -> None:
        """Drops a connection known to be broken, so that the next use reconnects."""
        _close_quietly(self._connection)
        self._connection = None

    def query(
        self,
        statement: str | sql.Composable,
        params: Mapping[str, Any] | Sequence[Any] | None = None,
        seeing_hidden: bool = False,
    ) -> list[tuple]:
        """All rows of a small query (catalog, counts), in its own read-only transaction; run again on a new
        connection when the connection is lost. `seeing_hidden` (Greenplum): rows deleted or updated away but not yet
        compacted are read too, on a connection of their own (`_seeing_hidden`), else on this one with `SET LOCAL`:
        a statement read by one slice alone, as a filtered scan is."""

        def run(cursor: psycopg2.extensions.cursor) -> list[tuple]:
            cursor.execute(statement, _always(params))
            return cursor.fetchall() if cursor.description else []

        return self._retrying(run, seeing_hidden=seeing_hidden)

    def copy_out(self, statement: sql.Composable, sink: Any, seeing_hidden: bool = False) -> None:
        """Runs a `COPY ... TO STDOUT` into the sink (its `write(data)`), in its own read-only transaction; on a new
        connection, after `sink.reset()`, when the connection is lost. A binary COPY sends text in the client's
        encoding: UTF-8 here, whatever the database's, as the sinks read it. `seeing_hidden`: rows deleted or
        updated away but not yet compacted are read too, on a connection of their own (`_seeing_hidden`); raises
        HiddenRowsUnavailable without one."""

        def run(cursor: psycopg2.extensions.cursor) -> None:
            sink.reset()
            if cursor.connection.encoding != "UTF8":
                cursor.execute("SET LOCAL client_encoding TO 'UTF8'")
            cursor.copy_expert(cursor.mogrify(statement, ()), sink)

        self._retrying(run, "a digest's scan", seeing_hidden, one_slice=False)

    def describe(self, relation: sql.Composable) -> list[Any]:
        """The result columns of what follows FROM (a custom query as a subquery), without running it to completion."""
        wrapped = sql.SQL("SELECT * FROM {} LIMIT 0").format(relation)

        def run(cursor: psycopg2.extensions.cursor) -> list[Any]:
            cursor.execute(wrapped, ())
            return list(cursor.description)

        return self._retrying(run)

    def _retrying(
        self,
        run: Callable[[psycopg2.extensions.cursor], Any],
        what: str = "a catalog query",
        seeing_hidden: bool = False,
        one_slice: bool = True,
    ) -> Any:
        """`run(cursor)`'s result, in a transaction of its own; run again, from the start, on a new connection when
        the connection is lost. Seeing hidden rows without a connection of their own, only a statement of `one_slice`
        runs (with `SET LOCAL`); another raises HiddenRowsUnavailable."""
        for attempt in range(1, _QUERY_ATTEMPTS + 1):
            connection = hidden = None
            try:
                hidden = self._seeing_hidden() if seeing_hidden else None
                if seeing_hidden and hidden is None and not one_slice:
                    raise HiddenRowsUnavailable("no connection of its own to read rows hidden by a grouped scan")
                connection = hidden or self.connection
                with connection.cursor() as cursor:
                    if seeing_hidden and hidden is None:  # reaches the writer processes alone: enough for one slice
                        cursor.execute("SET LOCAL gp_select_invisible = on")
                    return run(cursor)
            except psycopg2.Error as error:
                if not is_connection_lost(error) or attempt == _QUERY_ATTEMPTS:
                    raise
                if seeing_hidden and not self._hidden_unavailable:  # its own, or lost while it was made
                    self._discard_hidden()
                else:
                    self.discard_connection()
                log.warning(f"Connection lost during {what} ({one_line(error)}); reconnecting")
            finally:
                if connection is not None and not connection.closed:
                    with contextlib.suppress(psycopg2.Error):  # a broken connection is discarded above
                        connection.rollback()
        raise AssertionError("unreachable")

    def _seeing_hidden(self) -> psycopg2.extensions.connection | None:
        """A connection of its own for the reads of rows hidden, every process of it on the segments reading them: a
        `SET LOCAL gp_select_invisible` reaches only the segments' writer processes, not the readers of a plan's
        other slices (a grouped scan reads some rows without it), and readers made during that transaction, or a
        session's SET undone by a rollback, keep it on (later scans would read deleted rows). No other read uses it.
        None where it cannot be opened (a role's connection limit, say): tried once, not waited for, and not again by
        this client."""
        if self._hidden_unavailable:
            return None
        if self._hidden_connection is None or self._hidden_connection.closed:
            try:
                connection = self._connect_once()
            except SourceConnectionError as error:
                self._hidden_unavailable = True
                log.info(f"No connection of its own to read rows hidden ({error}): they are read on the sync's own")
                return None
            try:
                connection.autocommit = True
                with connection.cursor() as cursor:
                    cursor.execute("SET gp_select_invisible TO on")
                connection.autocommit = False
            except psycopg2.Error:
                connection.close()
                raise
            self._hidden_connection = connection
        return self._hidden_connection

    def _discard_hidden(self) -> None:
        _close_quietly(self._hidden_connection)
        self._hidden_connection = None

    def stream(
        self, statement: sql.Composable, params: Mapping[str, Any] | None = None, row_bytes: int | None = None
    ) -> Iterator[Batch]:
        """Batches of rows from a named server-side cursor, BATCH_SIZE rows a round trip, or fewer where rows are
        wide: a batch holds about BATCH_BYTES. The first fetch is sized by `row_bytes` (how wide the rows were read
        before), else FIRST_FETCH rows, to see how wide they are.

        A helper thread fetches the next batch while the caller sends this one, so the server's work and the round
        trip overlap the caller's (psycopg2 lets go of the GIL while it waits for the server); at most two batches
        wait. The transaction is closed when the iterator is exhausted or closed, so an abandoned read holds no
        resource-queue slot on Greenplum.
        """
        connection = self.connection
        cursor = connection.cursor(name=f"fivetran_read_{next(self._cursor_names)}")
        batch_size = self._settings.batch_size
        fetched: queue.Queue[Batch | BaseException] = queue.Queue(maxsize=1)
        stop = threading.Event()

        def fetch_ahead() -> None:
            try:
                size = _fetch_size(batch_size, row_bytes) if row_bytes else min(batch_size, FIRST_FETCH)
                while not stop.is_set():
                    batch = Batch(cursor.fetchmany(size))
                    fetched.put(batch)
                    if not batch:
                        return
                    size = _fetch_size(batch_size, batch.size // len(batch))
            except BaseException as error:  # the reader raises it, as if it had fetched itself
                fetched.put(error)

        fetcher = threading.Thread(target=fetch_ahead, name=cursor.name, daemon=True)
        try:
            cursor.execute(statement, _always(params))
            fetcher.start()
            while True:
                batch = fetched.get()
                if isinstance(batch, BaseException):
                    raise batch
                if not batch:
                    return
                yield batch
        finally:
            stop.set()
            while fetcher.is_alive():  # a fetch under way ends with a batch nobody reads: make room for it
                with contextlib.suppress(queue.Empty):
                    fetched.get_nowait()
                fetcher.join(0.01)
            if not connection.closed:
                try:
                    cursor.close()
                    connection.rollback()
                except psycopg2.Error:
                    self.discard_connection()

    def _connect_with_retries(self) -> psycopg2.extensions.connection:
        budget = self._settings.retry_seconds
        if self._first_contact_seconds is not None:
            budget = min(budget, self._first_contact_seconds)
        deadline = time.monotonic() + budget
        for attempt in itertools.count(1):
            try:
                connection = self._connect_once()
                self._first_contact_seconds = None  # reached once: later losses are outages, retried for longer
                return connection
            except SourceConnectionError as error:
                delay = min(2.0 ** (attempt - 1), 30.0) * (0.5 + random.random() / 2)
                if not error.retryable or time.monotonic() + delay > deadline:
                    raise
                log.warning(f"{error} (attempt {attempt}; next try in {delay:.0f} s, retrying for up to {budget} s)")
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _connect_once(self) -> psycopg2.extensions.connection:
        settings = self._settings
        # Through a bastion, libpq connects to the tunnel's local port (hostaddr) while HOST stays the name that
        # verify-full checks the server's certificate against.
        address = {"host": settings.host, "port": settings.port}
        if settings.ssh is not None:
            address |= {"hostaddr": "127.0.0.1", "port": self._tunnel_port()}
        try:
            connection = psycopg2.connect(
                **address,
                dbname=settings.database,
                user=settings.username,
                password=settings.password,
                sslmode=settings.sslmode,
                sslrootcert=self._ca_path(),
                connect_timeout=settings.connect_timeout_seconds,
                keepalives=1,
                keepalives_idle=30,
                keepalives_interval=10,
                keepalives_count=5,
                application_name=APPLICATION_NAME,
            )
        except psycopg2.OperationalError as error:
            raise _explain_connect_failure(error, settings) from None
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                # SET, not set_config(): Greenplum dispatches a SET of TimeZone, DateStyle and IntervalStyle to the
                # segments, where casts to text run (set_config() changes the coordinator's session only). It does
                # not dispatch extra_float_digits, bytea_output or default_transaction_read_only on Greenplum 7 and
                # Cloudberry (unsync_guc_name.h), and Greenplum 6 segments inside a cursor may not have
                # extra_float_digits either. Nothing relies on the segments having those: floats, float arrays and
                # bytea are selected bare and formatted by the coordinator, digests and append-only row ids hash
                # floats in binary, and the coordinator's READ ONLY transaction refuses every write. (A composite
                # value read as text is formatted on a segment: its float fields may lose digits there.)
                for name, value in SESSION_SETTINGS:
                    cursor.execute(sql.SQL("SET {} TO %s").format(sql.Identifier(name)), (value,))
            connection.autocommit = False
            register_typecasters(connection)
            # Every transaction begins READ ONLY, whatever a custom query may have done to the session's defaults.
            connection.set_session(readonly=True)
        except psycopg2.Error as error:
            connection.close()
            if is_connection_lost(error):  # e.g. terminated by an admin right after connecting: try again
                raise SourceConnectionError(
                    f"Connection to {settings.host}:{settings.port} lost while setting up the session: "
                    f"{one_line(error)}",
                    retryable=True,
                ) from None
            raise
        return connection

    def _tunnel_port(self) -> int:
        """The local port of an open tunnel: opened, or opened again once lost (bastion restarted, sshd killed)."""
        if self._tunnel is None:
            settings = self._settings
            self._tunnel = Tunnel(settings.ssh, settings.host, settings.port, settings.connect_timeout_seconds)
        if not self._tunnel.alive:
            try:
                self._tunnel.open()
            except TunnelError as error:
                raise SourceConnectionError(str(error), retryable=error.retryable) from None
        return self._tunnel.local_port

    def _ca_path(self) -> str | None:
        """libpq reads the CA from a file; the configuration holds PEM text, written once to a private file."""
        if not self._settings.sslrootcert:
            return None
        if self._ca_file is None:
            descriptor, path = tempfile.mkstemp(prefix="greenplum-ca-", suffix=".pem")
            with os.fdopen(descriptor, "w") as file:
                file.write(self._settings.sslrootcert)
            self._ca_file = path
        return self._ca_file


def _fetch_size(batch_size: int, row_bytes: int) -> int:
    """Rows a fetch takes: BATCH_SIZE, or fewer, so that it holds about BATCH_BYTES."""
    return max(1, min(batch_size, BATCH_BYTES // max(row_bytes, 1)))


def _always(params: Mapping[str, Any] | Sequence[Any] | None) -> Mapping[str, Any] | Sequence[Any]:
    """Parameters for every statement, none given or not: psycopg2 then reads `%%` as `%` in all of them alike, which
    is how `quoting` keeps a user's `%` from being read as a placeholder."""
    return () if params is None else params


def _explain_connect_failure(error: psycopg2.OperationalError, settings: Settings) -> SourceConnectionError:
    """One line naming the cause; libpq's text never contains the password, but it is scrubbed all the same."""
    detail = one_line(error)
    if settings.password:
        detail = detail.replace(settings.password, "***")
    lowered = detail.lower()
    where = f"{settings.host}:{settings.port}"
    retryable = False
    if "password authentication failed" in lowered or "authentication failed" in lowered:
        message = f"Authentication failed for USERNAME '{settings.username}' (check USERNAME and PASSWORD): {detail}"
    elif "does not exist" in lowered and "database" in lowered:
        message = f"DATABASE '{settings.database}' does not exist on {where}: {detail}"
    elif "timeout expired" in lowered:
        message = f"Connecting to {where} timed out after {settings.connect_timeout_seconds}s (check HOST and PORT)"
        retryable = True
    elif "ssl" in lowered or "certificate" in lowered:
        message = f"SSL connection to {where} failed with SSLMODE {settings.sslmode}: {detail}"
    elif "could not translate host name" in lowered:
        message = f"HOST '{settings.host}' cannot be resolved: {detail}"
    elif "connection refused" in lowered or "could not connect" in lowered:
        message = f"Cannot reach {where} (check HOST and PORT, and that the server is running): {detail}"
        retryable = True
    elif "too many connections" in lowered or "starting up" in lowered or "shutting down" in lowered:
        message = f"The server at {where} is not accepting connections now: {detail}"
        retryable = True
    else:
        message = f"Cannot connect to {where}: {detail}"
        retryable = True
    return SourceConnectionError(message, retryable=retryable)
