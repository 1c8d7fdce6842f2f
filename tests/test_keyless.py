"""Keyless tables, known by their content: a row's id is the hash of what lands and its ordinal among the rows
identical to it. Each sync here is checked against the source as a multiset: the destination holds its rows, the
ordinals of each content run from 1, and the rows sent are the multiset difference since the sync before (a content
held once more, an upsert; once less, a delete; a rewrite that moves rows, nothing)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from conftest import Database, Destination, killed_after_checkpoint

import keyless_pass
import sync
from catalog import Flavour, detect_flavour

ROWS = 20_000


class Keyless:
    """A keyless table `t (id int, note text, amount numeric(10, 2))` whose ids need not be unique, and its syncs."""

    def __init__(self, database: Database, source, schema: str, destination: Destination) -> None:
        self.database, self.source, self.schema, self.destination = database, source, schema, destination
        self.table = f"{schema}.t"
        self.configuration = database.configuration(SCHEMAS=schema)
        self.synced: Counter = Counter()  # the source's rows as the last sync left them

    def create(self, rows: int = ROWS) -> None:
        self.run(
            f"""CREATE TABLE {self.table} (id int, note text, amount numeric(10, 2));
            INSERT INTO {self.table} SELECT i, 'row ' || i, i / 7.0 FROM generate_series(1, {rows}) i"""
        )

    def run(self, *statements: str) -> None:
        with self.source.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)

    def rows(self) -> Counter:
        with self.source.cursor() as cursor:
            cursor.execute(f"SELECT id, note, amount::text FROM {self.table}")
            return Counter(cursor.fetchall())

    def sync(self, configuration: dict[str, str] | None = None, state: dict | None = None) -> tuple[int, int, int]:
        """One sync's (upserts, deletes, truncates); the destination equals the source after it, with ordinals 1 to n
        for a content n rows hold."""
        counts = self.destination.sync(configuration or self.configuration, state)
        self.synced = self.rows()
        assert self.landed() == self.synced
        self.assert_ordinals()
        return counts["Upserts"], counts["Deletes"], counts["Truncates"]

    def landed(self) -> Counter:
        return Counter(self.destination.rows(self.schema, "t", "id, note, CAST(amount AS VARCHAR)"))

    def assert_ordinals(self) -> None:
        ids = self.destination.query(f'SELECT _source_row_id FROM "tester_{self.schema}".t WHERE NOT _fivetran_deleted')
        ordinals: dict[str, list[int]] = {}
        for (row_id,) in ids:
            content, _, ordinal = row_id.partition(":")
            assert len(content) == 16, row_id
            ordinals.setdefault(content, []).append(int(ordinal))
        assert all(sorted(numbers) == list(range(1, len(numbers) + 1)) for numbers in ordinals.values())

    def difference(self) -> tuple[int, int, int]:
        """What a sync now should send: (rows the source holds more of, rows it holds fewer of, no truncate)."""
        now = self.rows()
        return sum((now - self.synced).values()), sum((self.synced - now).values()), 0


@pytest.fixture
def keyless(database: Database, source, schema: str, destination: Destination) -> Keyless:
    table = Keyless(database, source, schema, destination)
    table.create()
    assert table.sync() == (ROWS, 0, 1), "the first sync: every row, after one truncate"
    assert table.sync() == (0, 0, 0)
    return table


def test_updates_and_deletes_cost_the_rows_they_change(keyless: Keyless) -> None:
    """100 rows updated and 100 deleted, adjacent or at random: an upsert per new version, a delete per row gone
    and per old version."""
    keyless.run(
        f"UPDATE {keyless.table} SET note = 'updated' WHERE id BETWEEN 5001 AND 5100",
        f"DELETE FROM {keyless.table} WHERE id BETWEEN 12001 AND 12100",
    )
    assert keyless.sync() == (100, 200, 0)
    keyless.run(
        f"UPDATE {keyless.table} SET amount = amount + 1 WHERE id % 197 = 3",
        f"DELETE FROM {keyless.table} WHERE id % 199 = 5 AND id % 197 <> 3",
    )
    expected = keyless.difference()
    assert expected[0] == 101 and keyless.sync() == expected


def test_inserts_cost_the_rows_inserted_and_a_duplicate_takes_the_next_ordinal(keyless: Keyless) -> None:
    keyless.run(
        f"INSERT INTO {keyless.table} SELECT i, 'new', 0 FROM generate_series({ROWS + 1}, {ROWS + 990}) i",
        f"INSERT INTO {keyless.table} SELECT * FROM {keyless.table} WHERE id <= 10",  # 10 duplicates
    )
    assert keyless.sync() == (1000, 0, 0)
    twice = keyless.destination.query(
        f"""SELECT id, list_sort(list(split_part(_source_row_id, ':', 2))) FROM "tester_{keyless.schema}".t
        WHERE id <= 10 GROUP BY id ORDER BY id"""
    )
    assert twice == [(n, ["1", "2"]) for n in range(1, 11)]


def test_identical_rows_added_and_removed_one_at_a_time(
    database: Database, source, schema: str, destination: Destination
) -> None:
    """A content held n times lands n times, as ordinals 1 to n: one more, its next ordinal; one fewer, its highest
    deleted; none left, every ordinal deleted; back again, ordinal 1 live again."""
    table = Keyless(database, source, schema, destination)
    table.create(rows=0)
    table.run(f"INSERT INTO {table.table} VALUES (1, 'same', 1), (1, 'same', 1), (2, 'other', 2)")
    assert table.sync() == (3, 0, 1)
    one_more = f"INSERT INTO {table.table} VALUES (1, 'same', 1)"
    one_fewer = f"DELETE FROM {table.table} WHERE ctid = (SELECT min(ctid) FROM {table.table} WHERE id = 1)"
    if detect_flavour(database.version).is_greenplum:  # ctids repeat across segments there
        one_fewer = (
            f"DELETE FROM {table.table} WHERE (gp_segment_id, ctid) = "
            f"(SELECT gp_segment_id, ctid FROM {table.table} WHERE id = 1 ORDER BY 1, 2 LIMIT 1)"
        )
    for step, sent in [
        (one_more, (1, 0, 0)),
        (one_more, (1, 0, 0)),
        (one_fewer, (0, 1, 0)),
        (one_fewer, (0, 1, 0)),
        (one_fewer, (0, 1, 0)),
        (one_fewer, (0, 1, 0)),
        (one_more, (1, 0, 0)),
        (f"UPDATE {table.table} SET note = 'same' WHERE id = 2", (1, 1, 0)),
        (f"UPDATE {table.table} SET id = 1, amount = 1 WHERE id = 2", (1, 1, 0)),  # now 2 of (1, 'same', 1)
    ]:
        table.run(step)
        assert table.sync() == sent, step
    assert table.landed() == Counter({(1, "same", "1.00"): 2})


REWRITES = {
    "vacuum full": "VACUUM FULL {t}",
    "cluster": "CREATE INDEX t_note ON {t} (note DESC); CLUSTER {t} USING t_note",
    "rewriting alter": "ALTER TABLE {t} ALTER COLUMN amount TYPE numeric(10, 2) USING amount + 0",
    "reload in another order": (
        "CREATE TABLE {t}_copy AS SELECT * FROM {t} ORDER BY random(); TRUNCATE {t}; "
        "INSERT INTO {t} SELECT * FROM {t}_copy; DROP TABLE {t}_copy"
    ),
    "redistribution": "ALTER TABLE {t} SET DISTRIBUTED BY (id)",
}


@pytest.mark.parametrize("rewrite", list(REWRITES))
def test_rewrites_that_move_every_row_send_nothing(database: Database, keyless: Keyless, rewrite: str) -> None:
    greenplum = detect_flavour(database.version).is_greenplum
    if rewrite == "redistribution" and not greenplum:
        pytest.skip("distribution is Greenplum's: PostgreSQL has no SET DISTRIBUTED BY")
    if rewrite == "cluster" and greenplum:
        pytest.skip("Greenplum has no CLUSTER on this table's storage; VACUUM FULL moves every row too")
    keyless.run(f"DELETE FROM {keyless.table} WHERE id % 50 = 0")  # free space for the rewrite to reclaim
    assert keyless.sync() == (0, ROWS // 50, 0)
    keyless.run(REWRITES[rewrite].format(t=keyless.table))
    assert keyless.sync() == (0, 0, 0)
    keyless.run(f"TRUNCATE {keyless.table}")
    assert keyless.sync() == (0, 0, 1), "emptied, past the digest's capacity: a truncate"


@pytest.mark.parametrize("kept", [100, 90])
def test_a_partition_exchanged_for_a_table_of_its_rows_sends_only_the_rows_it_lacks(
    database: Database, source, schema: str, destination: Destination, kept: int
) -> None:
    """A leaf swapped for a table holding the same rows sends nothing; holding 90% of them, the deletes of the rest."""
    if detect_flavour(database.version) is Flavour.GREENPLUM6:
        pytest.skip("Greenplum 6 exchanges legacy partitions: test_append_optimized's rewrites exchange one there")
    table = Keyless(database, source, schema, destination)
    table.run(
        f"""CREATE TABLE {table.table} (id int, note text, amount numeric(10, 2)) PARTITION BY RANGE (id);
        CREATE TABLE {table.table}_low PARTITION OF {table.table} FOR VALUES FROM (0) TO (1000);
        CREATE TABLE {table.table}_high PARTITION OF {table.table} FOR VALUES FROM (1000) TO (2000);
        INSERT INTO {table.table} SELECT i % 2000, 'row ' || (i % 2000), i % 7 FROM generate_series(1, 3000) i"""
    )
    assert table.sync() == (3000, 0, 1)
    table.run(
        f"""CREATE TABLE {table.table}_swap (LIKE {table.table});
        INSERT INTO {table.table}_swap SELECT * FROM {table.table}_high WHERE id % 100 < {kept};
        ALTER TABLE {table.table} DETACH PARTITION {table.table}_high;
        ALTER TABLE {table.table} ATTACH PARTITION {table.table}_swap FOR VALUES FROM (1000) TO (2000);
        DROP TABLE {table.table}_high"""
    )
    expected = table.difference()
    assert expected == (0, 100 if kept == 90 else 0, 0) and table.sync() == expected


def test_random_changes_cost_the_multiset_difference(keyless: Keyless) -> None:
    """Rounds of random updates, deletes and inserts (copies of rows held among them), each sync sending exactly the
    multiset difference since the one before."""
    chance = random.Random(35)
    for round_number in range(6):
        modulus, residue = chance.choice([97, 211, 503]), chance.randrange(97)
        keyless.run(
            f"UPDATE {keyless.table} SET amount = amount + 1 WHERE id % {modulus} = {residue}",
            f"DELETE FROM {keyless.table} WHERE id % {modulus + 2} = {residue}",
            f"INSERT INTO {keyless.table} SELECT * FROM {keyless.table} WHERE id % 1009 = {round_number}",
            f"INSERT INTO {keyless.table} SELECT {ROWS} + i, 'round {round_number}', i FROM generate_series(1, 30) i",
        )
        expected = keyless.difference()
        assert keyless.sync() == expected, f"round {round_number}"
    assert keyless.sync() == (0, 0, 0)


@pytest.mark.parametrize("during", ["first sync", "sending changes"])
def test_rows_changed_while_a_sync_reads_land_by_the_next(
    database: Database,
    source,
    schema: str,
    destination: Destination,
    monkeypatch: pytest.MonkeyPatch,
    during: str,
) -> None:
    """Rows inserted, deleted and updated while a sync sends rows: that sync lands what it read, and the next sends
    what it missed and nothing it already sent."""
    table = Keyless(database, source, schema, destination)
    table.create()
    configuration = database.configuration(SCHEMAS=schema, BATCH_SIZE="200")
    if during == "sending changes":
        table.sync(configuration)
        table.run(f"UPDATE {table.table} SET note = 'before' WHERE id % 40 = 0")
    real_send, changed = sync.TableSync._send, []

    def send_then_change(self, batch, prepare):
        real_send(self, batch, prepare)
        if not changed:
            changed.append(True)
            with database.connect() as connection, connection.cursor() as cursor:
                cursor.execute(
                    f"""INSERT INTO {table.table} SELECT * FROM {table.table} WHERE id % 500 = 1;
                    DELETE FROM {table.table} WHERE id % 300 = 7;
                    UPDATE {table.table} SET note = 'during' WHERE id % 100 = 20"""
                )
            connection.close()

    monkeypatch.setattr(sync.TableSync, "_send", send_then_change)
    destination.sync(configuration)
    monkeypatch.undo()
    assert changed
    caught_up = table.sync(configuration)
    assert caught_up[2] == 0 and caught_up[0] + caught_up[1] <= 40 + 67 + 2 * 200, caught_up
    assert table.sync(configuration) == (0, 0, 0)


def test_a_sync_killed_while_it_sends_the_changes_goes_on_and_converges(
    keyless: Keyless, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed among the changes it sends, the next sync sends what the digest it saved lacks, content by content.
    What was sent after that state (its journal) may have landed or not: those ids are deleted first, the deleted
    contents' counts moved in the digest; then the contents it still lacks are sent, each once."""
    keyless.run(f"UPDATE {keyless.table} SET note = 'x' WHERE id % 40 = 0")  # 500 rows updated
    configuration = {**keyless.configuration, "CHECKPOINT_ROWS": "300", "BATCH_SIZE": "300"}
    saved = killed_after_checkpoint(monkeypatch, keyless.destination, configuration, keyless.table, lambda _, n: n == 2)
    journal = saved["tables"][keyless.table]["landing"]["contents"]
    upserts, deletes, truncates = keyless.sync(configuration, state=saved)
    # Every old content was deleted before the state or in the journal, which undoes each of its entries.
    assert (upserts, deletes, truncates) == (500, sum(abs(after - before) for _, before, after in journal), 0)
    assert 300 <= len(journal) < 1000, "the journal holds what was sent since the last checkpoint, not all"
    assert keyless.sync(configuration) == (0, 0, 0)


@pytest.mark.parametrize("together, resent", [(None, 8), (3, 3)])
def test_a_sync_killed_among_one_content_s_deletes_leaves_a_digest_of_what_landed(
    keyless: Keyless, monkeypatch: pytest.MonkeyPatch, together: int | None, resent: int
) -> None:
    """Ten identical rows, eight of them deleted, a checkpoint due every three deletes and the sync killed after the
    first: the digest it saved says what the destination holds but for the run of deletes it held, which may have
    landed: those are deleted again, and of the eight added back those it lacks are sent. A content's deletes land
    in runs (all eight at once, or three with `_DELETES_TOGETHER` 3), each with its count."""
    if together is not None:
        monkeypatch.setattr(keyless_pass, "_DELETES_TOGETHER", together)
    same = "SELECT 0, 'same', 0 FROM generate_series(1, {})"
    keyless.run(f"INSERT INTO {keyless.table} {same.format(10)}")
    assert keyless.sync() == (10, 0, 0)
    keyless.run(f"DELETE FROM {keyless.table} WHERE id = 0", f"INSERT INTO {keyless.table} {same.format(2)}")
    configuration = {**keyless.configuration, "CHECKPOINT_ROWS": "3"}
    killed_after_checkpoint(monkeypatch, keyless.destination, configuration, keyless.table)
    keyless.run(f"INSERT INTO {keyless.table} {same.format(8)}")
    assert keyless.sync(configuration, state=keyless.destination.saved_state()) == (resent, resent, 0)


# The SDK writes the rows sent, then saves the state: a sync killed between the two (`landed=True`) leaves the
# destination ahead of the state it saved, by what that state's journal names (`landing.py`).


@pytest.mark.parametrize("change, back", [("gained", "lost"), ("lost", "gained")])
def test_rows_landed_past_the_state_saved_are_undone_when_the_source_changes_them_back(
    keyless: Keyless, monkeypatch: pytest.MonkeyPatch, change: str, back: str
) -> None:
    """Six identical rows; the sync that sends four more (or the deletes of all six) dies once they landed, before
    the state saying so was saved; the source then goes back to six. The state's digest still says six, as the
    source does: only its journal tells that the destination holds another count."""
    same = "SELECT 0, 'same', 0 FROM generate_series(1, {})"
    keyless.run(f"INSERT INTO {keyless.table} {same.format(6)}")
    assert keyless.sync() == (6, 0, 0)
    four_more, none = f"INSERT INTO {keyless.table} {same.format(4)}", f"DELETE FROM {keyless.table} WHERE id = 0"
    keyless.run(four_more if change == "gained" else none)
    # The end's two checkpoints: the first saves the journal of what it holds, the second lands it.
    saved = killed_after_checkpoint(
        monkeypatch, keyless.destination, keyless.configuration, keyless.table, lambda _, n: n == 2, landed=True
    )
    assert sum(keyless.landed().values()) == (20_010 if change == "gained" else 20_000), "the rows landed"
    keyless.run(none, f"INSERT INTO {keyless.table} {same.format(6)}")  # by value: Greenplum deletes by ctid alone
    undone = 4 if change == "gained" else 6
    resent = 0 if change == "gained" else 6
    assert keyless.sync(state=saved) == (resent, undone, 0)


def test_a_pass_killed_once_rows_landed_past_its_saved_position_deletes_those_the_source_lost_since(
    keyless: Keyless, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    """A first pass dies once its third checkpoint wrote the rows it read past the position the state saved; ten of
    those rows are deleted before the next sync. That one deletes them (the digest of what the pass read past its
    position, less the source's, names them) and goes on from the position, without a truncate."""
    configuration = {**keyless.configuration, "CHECKPOINT_ROWS": "5000", "BATCH_SIZE": "1000"}
    keyless.destination.state = {}
    saved = killed_after_checkpoint(
        monkeypatch, keyless.destination, configuration, keyless.table, lambda _, n: n == 3, landed=True
    )
    assert saved["tables"][keyless.table]["landing"]["reads"], "the state saved names the rows read past it"
    assert sum(keyless.landed().values()) >= 10_000, "two checkpoints' rows landed"
    position = int(saved["tables"][keyless.table]["position"][0])
    landed = keyless.destination.query(f'SELECT _source_row_id, id FROM "tester_{keyless.schema}".t')
    past = [key for row_id, key in landed if _signed(int(row_id.partition(":")[0], 16)) > position]
    keyless.run(f"DELETE FROM {keyless.table} WHERE id IN ({', '.join(map(str, past[:10]))})")
    capfd.readouterr()
    upserts, deletes, truncates = keyless.sync(configuration, state=saved)
    assert truncates == 0 and upserts <= ROWS - 5000, "it went on from its position"
    assert deletes == 10 and "past its state, 10 lost rows" in capfd.readouterr().out


def test_a_truncate_landed_past_the_state_saved_syncs_the_table_again(
    keyless: Keyless, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    """More changed than the digest names: a truncate, then every row. Killed once the truncate and the first rows
    landed, before the state saying so was saved; the source then changes back. The digest that state holds is the
    source's again, but most rows are gone from the destination: the next sync syncs the table again, saying why."""
    keyless.run(f"UPDATE {keyless.table} SET note = note || '!' WHERE id % 2 = 0")
    configuration = {**keyless.configuration, "CHECKPOINT_ROWS": "5000"}
    saved = killed_after_checkpoint(
        monkeypatch, keyless.destination, configuration, keyless.table, lambda _, n: n == 2, landed=True
    )
    assert saved["tables"][keyless.table]["landing"]["truncated"]
    keyless.run(f"UPDATE {keyless.table} SET note = rtrim(note, '!') WHERE id % 2 = 0")
    capfd.readouterr()
    assert keyless.sync(configuration, state=saved) == (ROWS, 0, 1)
    assert "the last sync stopped after truncating the table: it is synced again" in capfd.readouterr().out


def test_past_its_digest_s_capacity_the_table_is_read_again_once_and_its_next_digest_is_larger(
    keyless: Keyless, capfd: pytest.CaptureFixture
) -> None:
    """More contents changed than the digest can name: the deletes have no other name, so the table is read again
    after a truncate, said in one line, and the digest grows to hold a change that size next time."""
    before = len(keyless.destination.state["tables"][keyless.table]["digest"])
    keyless.run(f"UPDATE {keyless.table} SET note = note || '!' WHERE id % 2 = 0")
    capfd.readouterr()
    assert keyless.sync() == (ROWS, 0, 1)
    assert "contents changed, past its digest" in capfd.readouterr().out
    keyless.run(f"UPDATE {keyless.table} SET note = note || '?' WHERE id % 2 = 0")
    assert keyless.sync() == (ROWS // 2, ROWS // 2, 0), "a change that size is named now"
    assert len(keyless.destination.state["tables"][keyless.table]["digest"]) > before


def test_a_table_synced_with_the_ids_of_an_earlier_version_is_synced_again_once(
    keyless: Keyless, capfd: pytest.CaptureFixture
) -> None:
    """Earlier versions named a keyless row by where it lay (`leaf:range:ordinal`): such a table is read again after
    a truncate, once, saying why."""
    state = keyless.destination.state
    state["tables"][keyless.table] |= {
        "digest": None,
        "digest_columns": None,
        "leaves": {keyless.table: {"digest": "", "rows": 0, "ao": None, "ranges": "0=AAAAAAAAAAA/40;1=AAAAAAAAAAB/7"}},
        "reading": {"leaf": keyless.table, "digest": "", "sent": 0, "high": 0, "ranges": {}},
    }
    capfd.readouterr()
    assert keyless.sync(state=state) == (ROWS, 0, 1)
    assert "its rows had ids of where they lay (an earlier version)" in capfd.readouterr().out
    assert keyless.sync() == (0, 0, 0)


def _signed(value: int) -> int:
    """A 64-bit content hash as the server orders it."""
    return value - 2**64 if value >= 2**63 else value
