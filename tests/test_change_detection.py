"""Full strategies cost what changed: leaf digests, keyless leaves replaced exactly, declared keys and append-only
tables. Each test compares the destination with the source as a multiset and counts the rows each sync sent."""

from __future__ import annotations

import json

import pytest
from conftest import Database, Destination, killed_after_checkpoint

from catalog import Flavour, detect_flavour

MONTHS = ("2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01")
# The append-only table's rows as epoch seconds (-1 for NULL), the same on both sides.
SOURCE_LOG = "SELECT coalesce(extract(epoch FROM at)::bigint, -1), what FROM {s}.log"
LANDED_LOG = 'coalesce(CAST(epoch("at") AS BIGINT), -1), what'


def _legacy_greenplum(database: Database) -> bool:
    return detect_flavour(database.version) in (Flavour.GREENPLUM5, Flavour.GREENPLUM6)


def _is_greenplum(database: Database) -> bool:
    return detect_flavour(database.version).is_greenplum


class Facts:
    """A keyless table partitioned by month, in the syntax the server has (Greenplum 6 legacy partitions, else
    declarative), with ways to drop a month's leaf and add one."""

    def __init__(self, database: Database, source, schema: str) -> None:
        self.database, self.source, self.schema = database, source, schema
        self.legacy = _legacy_greenplum(database)

    def create(self, months: int = 3, storage: str = "") -> None:
        s = self.schema
        if self.legacy:
            self._run(
                f"""CREATE TABLE {s}.facts (day date, kind text, amount int, secret text) {storage}
                DISTRIBUTED RANDOMLY PARTITION BY RANGE (day)
                (START (date '{MONTHS[0]}') INCLUSIVE END (date '{MONTHS[months]}') EXCLUSIVE
                 EVERY (interval '1 month'))"""
            )
            return
        distributed = " DISTRIBUTED RANDOMLY" if _is_greenplum(self.database) else ""
        self._run(f"CREATE TABLE {s}.facts (day date, kind text, amount int, secret text) PARTITION BY RANGE (day)")
        for month in range(months):
            self.add_leaf(month, distributed)

    def add_leaf(self, month: int, distributed: str = "") -> None:
        s, start, end = self.schema, MONTHS[month], _next_month(MONTHS[month])
        if self.legacy:
            self._run(f"ALTER TABLE {s}.facts ADD PARTITION START (date '{start}') END (date '{end}')")
        else:
            self._run(
                f"CREATE TABLE {s}.facts_{month} PARTITION OF {s}.facts FOR VALUES FROM ('{start}') TO ('{end}')"
                + distributed
            )

    def drop_leaf(self, month: int) -> None:
        if self.legacy:
            self._run(f"ALTER TABLE {self.schema}.facts DROP PARTITION FOR (date '{MONTHS[month]}')")
        else:
            self._run(f"DROP TABLE {self.schema}.facts_{month}")

    def insert(self, month: int, rows: int, kind: str = "k", distinct: int = 5) -> None:
        """`rows` rows in the month's leaf, only `distinct` of them different: identical rows abound."""
        self._run(
            f"""INSERT INTO {self.schema}.facts
            SELECT date '{MONTHS[month]}' + (i % {distinct}), '{kind}', i % {distinct}, 'secret'
            FROM generate_series(1, {rows}) AS i"""
        )

    def rows(self) -> list[tuple]:
        with self.source.cursor() as cursor:
            cursor.execute(f"SELECT day, kind, amount FROM {self.schema}.facts")
            return sorted(cursor.fetchall())

    def segments(self, where: str) -> list[int] | None:
        """The Greenplum segments holding the rows `where` (None on PostgreSQL): a block range is per segment there."""
        if not _is_greenplum(self.database):
            return None
        with self.source.cursor() as cursor:
            cursor.execute(f"SELECT DISTINCT gp_segment_id FROM {self.schema}.facts WHERE {where}")
            return [segment for (segment,) in cursor.fetchall()]

    def rows_in(self, month: str, segments: list[int] | None) -> int:
        """The month's rows (on the given segments): what a sync reads again when the month's only block range (on
        each of those segments) changed."""
        on = "" if segments is None else f" AND gp_segment_id = ANY (ARRAY{segments}::int[])"
        with self.source.cursor() as cursor:
            cursor.execute(
                f"SELECT count(*) FROM {self.schema}.facts WHERE day >= %s AND day < %s{on}",
                (month, _next_month(month)),
            )
            return cursor.fetchone()[0]

    def _run(self, statement: str) -> None:
        with self.source.cursor() as cursor:
            cursor.execute(statement)


def _next_month(day: str) -> str:
    year, month, _ = (int(part) for part in day.split("-"))
    return f"{year + month // 12}-{month % 12 + 1:02d}-01"


def _landed(destination: Destination, schema: str, table: str = "facts", columns: str = "day, kind, amount"):
    return destination.rows(schema, table, columns)


def _sent(counts: dict[str, int]) -> tuple[int, int, int]:
    return counts["Upserts"], counts["Deletes"], counts["Truncates"]


@pytest.fixture
def facts(database: Database, source, schema: str) -> Facts:
    return Facts(database, source, schema)


def test_rows_changed_cost_themselves_and_the_destination_stays_a_multiset(
    database: Database, schema: str, facts: Facts, destination: Destination
) -> None:
    """Unchanged, rows inserted, rows deleted and updated, a leaf dropped, a leaf added: each sync sends the rows that
    appeared and deletes the ids of those that went (identical rows by their ordinals), and never truncates again."""
    facts.create(months=3)
    for month in range(3):
        facts.insert(month, 30)
    configuration = database.configuration(SCHEMAS=schema, BATCH_SIZE="7")

    assert _sent(destination.sync(configuration)) == (90, 0, 1), "the first pass: every row, after one truncate"
    assert _landed(destination, schema) == facts.rows()

    assert _sent(destination.sync(configuration)) == (0, 0, 0), "nothing changed: nothing sent"

    facts.insert(1, 5, kind="new")
    assert _sent(destination.sync(configuration)) == (5, 0, 0), "the 5 rows inserted"
    assert _landed(destination, schema) == facts.rows()

    with facts.source.cursor() as cursor:  # March loses 6 identical rows, and 6 others (identical too) change
        cursor.execute(f"DELETE FROM {schema}.facts WHERE day = '2024-03-01'")
        cursor.execute(f"UPDATE {schema}.facts SET kind = 'changed' WHERE day = '2024-03-02'")
    assert _sent(destination.sync(configuration)) == (6, 12, 0), "the 6 new versions; 6 rows gone and 6 old versions"
    assert _landed(destination, schema) == facts.rows()

    facts.drop_leaf(0)
    assert _sent(destination.sync(configuration)) == (0, 30, 0), "January's 30 ids deleted"
    assert _landed(destination, schema) == facts.rows()

    facts.add_leaf(3)
    facts.insert(3, 7)
    assert _sent(destination.sync(configuration)) == (7, 0, 0), "the new leaf's rows"
    assert _landed(destination, schema) == facts.rows()
    assert _sent(destination.sync(configuration)) == (0, 0, 0)


def test_an_excluded_column_plays_no_part_in_the_digest(
    database: Database, schema: str, source, destination: Destination
) -> None:
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.t (a int, secret text);
            INSERT INTO {schema}.t SELECT i % 3, 'x' FROM generate_series(1, 12) i"""
        )
    configuration = database.configuration(SCHEMAS=schema, EXCLUDE_COLUMNS=f"{schema}.t.secret")
    assert _sent(destination.sync(configuration)) == (12, 0, 1)
    with source.cursor() as cursor:
        cursor.execute(f"UPDATE {schema}.t SET secret = 'changed'")
    assert _sent(destination.sync(configuration)) == (0, 0, 0), "only the excluded column changed"
    with source.cursor() as cursor:
        cursor.execute(f"UPDATE {schema}.t SET a = a + 1 WHERE a = 0")
    # The 4 rows of a = 0 now have a = 1, which 8 rows hold: ordinals 5 to 8 sent, a = 0's 4 deleted.
    assert _sent(destination.sync(configuration)) == (4, 4, 0)
    assert destination.rows(schema, "t", "a") == _rows(source, f"SELECT a FROM {schema}.t")
    with source.cursor() as cursor:
        cursor.execute(f"DELETE FROM {schema}.t")
    assert _sent(destination.sync(configuration)) == (0, 12, 0), "emptied: every id deleted"
    assert destination.rows(schema, "t", "a") == []


@pytest.mark.parametrize("changed_in_the_pause", [False, True])
def test_a_first_pass_killed_partway_goes_on_or_starts_again_and_lands_every_row_once(
    changed_in_the_pause: bool,
    database: Database,
    schema: str,
    facts: Facts,
    destination: Destination,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path,
) -> None:
    """A first pass reads every row in content order and checkpoints its position and what its contents come to,
    not its digest. Killed, the next sync takes the digest of the contents it read from the source and goes on; when
    rows it read changed in the pause, it starts again after a truncate. Either way every row lands once, and the
    digest is the one an uninterrupted pass saves."""
    facts.create(months=2)
    with facts.source.cursor() as cursor:  # 600 rows, 400 contents: some held twice
        cursor.execute(
            f"""INSERT INTO {schema}.facts SELECT date '{MONTHS[0]}' + m * 31 + i % 28, 'k', i % 200, 's'
            FROM generate_series(1, 300) i, generate_series(0, 1) m"""
        )
    configuration = database.configuration(SCHEMAS=schema, BATCH_SIZE="50", CHECKPOINT_ROWS="100")
    key = f"{schema}.facts"
    saved = killed_after_checkpoint(monkeypatch, destination, configuration, key, lambda _, n: n == 3)
    table = saved["tables"][key]
    assert table["position"] is not None and table["pass_noted"] is not None and table["digest"] is None
    if changed_in_the_pause:
        with facts.source.cursor() as cursor:  # every content has rows read before the kill, or nearly
            cursor.execute(f"DELETE FROM {schema}.facts WHERE amount % 2 = 0")
    resumed = destination.sync(configuration, state=saved)
    assert resumed["Truncates"] == (1 if changed_in_the_pause else 0)
    assert resumed["Upserts"] < 600 if not changed_in_the_pause else resumed["Upserts"] == 300
    assert _landed(destination, schema) == facts.rows()
    uninterrupted = Destination(tmp_path / "uninterrupted")
    uninterrupted.sync(configuration)
    assert destination.state["tables"][key]["digest"] == uninterrupted.state["tables"][key]["digest"]
    assert _sent(destination.sync(configuration)) == (0, 0, 0)


def test_a_declared_key_without_a_cursor_makes_a_keyed_full_table_that_is_skipped_when_unchanged(
    database: Database, schema: str, source, destination: Destination
) -> None:
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.dim (code text, label text);
            INSERT INTO {schema}.dim SELECT 'c' || i, 'label ' || i FROM generate_series(1, 20) i"""
        )
    configuration = database.configuration(SCHEMAS=schema, PRIMARY_KEYS=f"{schema}.dim:code")
    assert _sent(destination.sync(configuration)) == (20, 0, 1)
    assert destination.state["tables"][f"{schema}.dim"]["strategy"] == "full with key"
    assert _sent(destination.sync(configuration)) == (0, 0, 0), "unchanged: not re-read"
    with source.cursor() as cursor:
        cursor.execute(f"DELETE FROM {schema}.dim WHERE code IN ('c1', 'c2'); UPDATE {schema}.dim SET label = 'x'")
    assert _sent(destination.sync(configuration)) == (18, 2, 0), "changed: the 18 updated rows, 2 deletes"
    expected = _rows(source, f"SELECT code, label FROM {schema}.dim")
    assert destination.rows(schema, "dim", "code, label") == expected
    deleted = destination.query(f'SELECT code FROM "tester_{schema}".dim WHERE _fivetran_deleted ORDER BY 1')
    assert deleted == [("c1",), ("c2",)]


def test_a_declared_key_with_a_cursor_makes_an_incremental_table(
    database: Database, schema: str, source, destination: Destination
) -> None:
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.ev (a int, b int, changed timestamp NOT NULL, note text);
            INSERT INTO {schema}.ev SELECT i / 4, i % 4, '2024-01-01'::timestamp + i * interval '1 day', 'n'
            FROM generate_series(1, 40) i"""
        )
    configuration = database.configuration(
        SCHEMAS=schema, PRIMARY_KEYS=f"{schema}.ev:a+b", CURSOR_COLUMNS=f"{schema}.ev:changed", LOOKBACK_SECONDS="0"
    )
    assert destination.sync(configuration)["Upserts"] == 40
    assert destination.state["tables"][f"{schema}.ev"]["strategy"] == "incremental"
    with source.cursor() as cursor:
        cursor.execute(f"UPDATE {schema}.ev SET note = 'late', changed = '2030-01-01' WHERE a = 1 AND b = 0")
    assert destination.sync(configuration)["Upserts"] == 1, "the changed row alone: no window is sent again"
    expected = _rows(source, f"SELECT a, b, note FROM {schema}.ev")
    assert destination.rows(schema, "ev", "a, b, note") == expected


@pytest.mark.parametrize(
    ("rows", "shown"),
    [
        ("('c1', 'one'), ('c1', 'again'), ('c2', 'two')", "('c1') is shared by 2 row(s)"),
        ("('c1', 'one'), (NULL, 'none')", "(NULL) is NULL in 1 row(s)"),
    ],
)
def test_a_declared_key_that_is_not_unique_skips_the_table_and_names_a_value(
    database: Database, schema: str, source, destination: Destination, capfd, rows: str, shown: str
) -> None:
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.dim (code text, label text); INSERT INTO {schema}.dim VALUES {rows};
            CREATE TABLE {schema}.other (id int PRIMARY KEY); INSERT INTO {schema}.other VALUES (1)"""
        )
    for cursor_column in ("", f"{schema}.dim:changed"):
        if cursor_column:  # the first sync of an incremental table checks it too
            with source.cursor() as cursor:
                cursor.execute(f"ALTER TABLE {schema}.dim ADD COLUMN changed timestamp")
        configuration = database.configuration(
            SCHEMAS=schema, PRIMARY_KEYS=f"{schema}.dim:code", CURSOR_COLUMNS=cursor_column
        )
        counts = destination.sync(configuration)
        out = capfd.readouterr().out
        assert f"the declared key code of {schema}.dim is not unique at the source: {shown}" in out
        assert f"1 table(s) skipped: {schema}.dim" in out
        # No row of dim was sent; the other table synced (and the second time, unchanged, sent nothing).
        assert counts["Upserts"] == (0 if cursor_column else 1)


def test_an_append_only_table_rereads_its_lookback_window_without_duplicating_a_row(
    database: Database, schema: str, source, destination: Destination
) -> None:
    """A keyless table with CURSOR_COLUMNS only receives inserts: identical rows stay distinct, rows re-read in the
    lookback window keep their ids, late commits inside the window land, rows with a NULL cursor are read each
    sync."""
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.log (at timestamptz, what text, score float8 DEFAULT 0.1);
            INSERT INTO {schema}.log SELECT timestamptz '2024-01-01 00:00+00' + (i / 3) * interval '1 minute',
                                            'e' || (i % 2) FROM generate_series(1, 60) i;
            INSERT INTO {schema}.log VALUES (NULL, 'undated'), (NULL, 'undated')"""
        )
    configuration = database.configuration(
        SCHEMAS=schema, CURSOR_COLUMNS=f"{schema}.log:at", LOOKBACK_SECONDS="300", BATCH_SIZE="4"
    )
    assert _sent(destination.sync(configuration)) == (62, 0, 1)
    assert destination.state["tables"][f"{schema}.log"]["strategy"] == "append only"
    assert destination.rows(schema, "log", LANDED_LOG) == _rows(source, SOURCE_LOG.format(s=schema))

    with source.cursor() as cursor:  # late commits: 2 minutes before the newest row, one identical to existing rows
        cursor.execute(
            f"""INSERT INTO {schema}.log VALUES ('2024-01-01 00:18+00', 'e0'), ('2024-01-01 00:18+00', 'late'),
            ('2024-01-01 00:30+00', 'new'), (NULL, 'undated')"""
        )
    counts = destination.sync(configuration)
    # The window: 5 minutes before 00:20 holds the rows of 00:15 to 00:20 (16 of them, 2 of them new), then 00:30,
    # then the 3 rows whose cursor is NULL.
    assert _sent(counts) == (16 + 2 + 1 + 3, 0, 0)
    expected = _rows(source, SOURCE_LOG.format(s=schema))
    assert destination.rows(schema, "log", LANDED_LOG) == expected
    assert len(expected) == 66


def _rows(source, statement: str) -> list[tuple]:
    with source.cursor() as cursor:
        cursor.execute(statement)
        return sorted(cursor.fetchall())


def test_contents_do_not_depend_on_row_order_and_the_state_stays_small(
    database: Database, schema: str, facts: Facts, destination: Destination
) -> None:
    """A content is its values: the same rows in another order, or moved by a VACUUM, send nothing."""
    facts.create(months=2)
    facts.insert(0, 50)
    facts.insert(1, 50)
    configuration = database.configuration(SCHEMAS=schema, BATCH_SIZE="1000")
    destination.sync(configuration)
    with facts.source.cursor() as cursor:  # the same rows in the other order
        cursor.execute(f"CREATE TABLE {schema}.copy AS SELECT * FROM {schema}.facts ORDER BY day DESC")
        cursor.execute(f"TRUNCATE {schema}.facts")
        cursor.execute(f"INSERT INTO {schema}.facts SELECT * FROM {schema}.copy")
        cursor.execute(f"DROP TABLE {schema}.copy")
    assert _sent(destination.sync(configuration)) == (0, 0, 0)
    with facts.source.cursor() as cursor:
        cursor.execute(f"VACUUM {schema}.facts")
    assert _sent(destination.sync(configuration)) == (0, 0, 0)
    assert len(json.dumps(destination.state["tables"][f"{schema}.facts"])) < 12_000


def test_a_float_changed_in_its_last_digit_is_a_change(
    database: Database, schema: str, source, destination: Destination
) -> None:
    """Floats are hashed in binary: a change only the 17th significant digit shows is still seen."""
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.m (v float8, w real, a float8[]);
            INSERT INTO {schema}.m VALUES (0.1, 0.1, '{{0.1}}')"""
        )
    configuration = database.configuration(SCHEMAS=schema)
    destination.sync(configuration)
    assert _sent(destination.sync(configuration)) == (0, 0, 0)
    for change in ("v = '0.10000000000000002'", "w = '0.100000009'", "a = '{0.10000000000000002}'"):
        with source.cursor() as cursor:
            cursor.execute(f"UPDATE {schema}.m SET {change}")
        assert _sent(destination.sync(configuration)) == (1, 1, 0), "the new content, and the old one's id deleted"
    assert destination.rows(schema, "m", "v") == [(0.10000000000000002,)]


def test_deletes_of_a_dropped_leaf_are_checkpointed_and_a_killed_sync_goes_on_with_them(
    database: Database, schema: str, facts: Facts, destination: Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The digest follows the contents whose ids were all deleted: killed among the deletes, the next sync deletes
    those of the contents it had not done. A checkpoint falls between contents, never among one's deletes."""
    facts.create(months=2)
    facts.insert(0, 300)  # 5 contents, 60 rows each
    facts.insert(1, 20)
    configuration = database.configuration(SCHEMAS=schema, CHECKPOINT_ROWS="100")
    destination.sync(configuration)
    facts.drop_leaf(0)
    killed_after_checkpoint(monkeypatch, destination, configuration, f"{schema}.facts", lambda _, n: n == 2)

    counts = destination.sync(configuration, state=destination.saved_state())
    # Checkpoints due at 100 deletes are taken after whole contents: at 120 and 240, killed after the second, which
    # saved the state of the first with a journal of the two contents it held: those are deleted again (they may
    # have landed), and the content of 5, not yet done.
    assert (counts["Upserts"], counts["Deletes"]) == (0, 180), "two contents undone, and the one not yet done"
    assert _landed(destination, schema) == facts.rows()


def test_a_keyless_view_killed_mid_read_goes_on_and_lands_every_row_once(
    database: Database, schema: str, source, destination: Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A view is read in content order too: killed partway, its read goes on after the position it noted."""
    with source.cursor() as cursor:
        cursor.execute(f"CREATE VIEW {schema}.v AS SELECT i % 7 AS n FROM generate_series(1, 300) i")
    configuration = database.configuration(SCHEMAS=schema, TABLES=f"{schema}.v", BATCH_SIZE="50", CHECKPOINT_ROWS="100")
    saved = killed_after_checkpoint(monkeypatch, destination, configuration, f"{schema}.v", lambda _, n: n == 2)
    resumed = destination.sync(configuration, state=saved)
    assert resumed["Truncates"] == 0 and resumed["Upserts"] < 300
    assert destination.rows(schema, "v", "n") == sorted((i % 7,) for i in range(1, 301))
