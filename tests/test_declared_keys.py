"""A declared key (PRIMARY_KEYS) never collapses two source rows into one: an incremental sync checks the keys of the
rows it reads against the whole table, and skips the table, keeping its position, when one is shared or NULL."""

from __future__ import annotations

from conftest import Database, Destination


def _create(source, schema: str) -> None:
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.lines (order_id int, line int, updated_at timestamp NOT NULL, note text);
            INSERT INTO {schema}.lines SELECT i / 4, i % 4, timestamp '2024-01-01' + i * interval '1 day', 'n'
            FROM generate_series(1, 40) i;
            CREATE TABLE {schema}.other (id int PRIMARY KEY, note text);
            INSERT INTO {schema}.other VALUES (1, 'one')"""
        )


def _source(source, statement: str) -> list[tuple]:
    with source.cursor() as cursor:
        cursor.execute(statement)
        return sorted(cursor.fetchall())


def test_a_duplicate_that_arrives_after_the_first_sync_skips_the_table_and_keeps_its_position(
    database: Database, schema: str, source, destination: Destination, capfd
) -> None:
    _create(source, schema)
    configuration = database.configuration(SCHEMAS=schema, PRIMARY_KEYS=f"{schema}.lines:order_id+line")
    assert destination.sync(configuration)["Upserts"] == 41
    table = f"{schema}.lines"
    saved = destination.state["tables"][table]
    assert saved["strategy"] == "incremental"
    capfd.readouterr()

    with source.cursor() as cursor:  # a newer row with the key of a row far outside the lookback window
        cursor.execute(
            f"""INSERT INTO {schema}.lines VALUES (1, 1, '2030-01-01', 'again');
            INSERT INTO {schema}.other VALUES (2, 'two')"""
        )
    counts = destination.sync(configuration)
    out = capfd.readouterr().out
    assert f"the declared key order_id+line of {table} is not unique at the source: ('1', '1') is shared by 2" in out
    assert f"1 table(s) skipped: {table}" in out
    assert counts["Upserts"] == 1, "the row inserted into the other table (full with key); nothing of the skipped one"
    assert destination.state["tables"][table] == saved, "its position is kept"
    assert destination.rows(schema, "lines", "order_id, line, note") == _source(
        source, f"SELECT order_id, line, note FROM {table} WHERE note = 'n'"
    )

    with source.cursor() as cursor:  # a NULL in the key of a row of the window is refused too
        cursor.execute(f"UPDATE {table} SET line = NULL WHERE note = 'again'")
    destination.sync(configuration)
    assert f"the declared key order_id+line of {table} is not unique at the source: ('1', NULL) is NULL in 1" in (
        capfd.readouterr().out
    )
    assert destination.state["tables"][table] == saved

    with source.cursor() as cursor:  # fixed at the source: the table goes on from where it stood
        cursor.execute(f"UPDATE {table} SET line = 9 WHERE note = 'again'")
    counts = destination.sync(configuration)
    assert counts["Upserts"] == 1, "the new row alone: no window is sent again"
    assert destination.rows(schema, "lines", "order_id, line, note") == _source(
        source, f"SELECT order_id, line, note FROM {table}"
    )


def test_an_append_only_table_is_not_checked(database: Database, schema: str, source, destination: Destination) -> None:
    """A keyless table with CURSOR_COLUMNS declares no key: identical rows are rows, not duplicates."""
    with source.cursor() as cursor:
        cursor.execute(
            f"""CREATE TABLE {schema}.log (at timestamp, what text);
            INSERT INTO {schema}.log VALUES ('2024-01-01', 'a'), ('2024-01-01', 'a')"""
        )
    configuration = database.configuration(SCHEMAS=schema, CURSOR_COLUMNS=f"{schema}.log:at")
    destination.sync(configuration)
    with source.cursor() as cursor:
        cursor.execute(f"INSERT INTO {schema}.log VALUES ('2024-01-02', 'a'), ('2024-01-02', 'a')")
    destination.sync(configuration)
    assert destination.rows(schema, "log", "what") == [("a",)] * 4
