"""Difference digests: peeling names exactly the pairs that came and went, or says it cannot; the server's cells equal
those built in Python, bit for bit, down to negative hashes and keys; and a keyed table's inserts, updates and
deletes come back as the keys to upsert and delete, while rows moved without a change leave no difference. Plain
functions first (seeded random trials), then a real server."""

from __future__ import annotations

import random

import numpy as np
import pytest
from psycopg2 import sql

import difference_digest as dd
from difference_digest import Cells, Codec, Pair

INT64 = (-(2**63), -(2**62) - 7, -2, -1, 0, 1, 2**31, 2**62 + 5, 2**63 - 1)


def _random_pairs(rng: random.Random, count: int, codec: Codec = Codec.INTEGER) -> set[tuple[tuple[int, ...], int]]:
    pairs: set[tuple[tuple[int, ...], int]] = set()
    while len(pairs) < count:
        key = {
            Codec.INTEGER: lambda: rng.getrandbits(64) - 2**63,
            Codec.CONTENT: lambda: (rng.getrandbits(64) - 2**63, rng.randrange(1, 1000)),
            Codec.TEXT: lambda: f"k{rng.getrandbits(40)}é",
        }[codec]()
        pairs.add((codec.encode(key), rng.getrandbits(64) - 2**63))
    return pairs


def _cells(sub_size: int, pairs: set[tuple[tuple[int, ...], int]], codec: Codec = Codec.INTEGER) -> Cells:
    cells = Cells(sub_size, codec)
    for words, h in pairs:
        cells.add_pair(1, words, h)
    return cells


def _columns(cells: Cells) -> list[list[int]]:
    return cells.columns()


def _difference(rng: random.Random, sub_size: int, came: int, went: int, common: int = 300) -> tuple[Cells, set]:
    """The cells of current less saved, where both share `common` pairs; and the signed pairs that differ."""
    base, new, gone = (_random_pairs(rng, n) for n in (common, came, went))
    difference = _cells(sub_size, base | new).subtract(_cells(sub_size, base | gone))
    return difference, {(1, *pair) for pair in new} | {(-1, *pair) for pair in gone}


def _decode_rate(d: int, trials: int, seed: int) -> float:
    """The share of random differences of d pairs (of either sign) that peel, in digests sized for d."""
    rng, sub_size, peeled = random.Random(seed), dd.cells_needed(d) // dd.K, 0
    for _ in range(trials):
        signed = {(rng.choice((1, -1)), *pair) for pair in _random_pairs(rng, d)}
        cells = Cells(sub_size, Codec.INTEGER)
        for sign, words, h in signed:
            cells.add_pair(sign, words, h)
        pairs = cells.peel()
        assert pairs is None or {tuple(pair) for pair in pairs} == signed
        peeled += pairs is not None
    return peeled / trials


def test_peeling_names_exactly_the_pairs_that_came_and_went() -> None:
    rng = random.Random(20110815)
    sub_size = 200
    half = dd.capacity(sub_size) // 2
    for came, went in [(0, 0), (1, 0), (0, 1), (3, 4), (20, 5), (half, half), (half + 1, half)]:
        for _ in range(20):
            difference, expected = _difference(rng, sub_size, came, went)
            pairs = difference.peel()
            if came + went <= 50 or pairs is not None:  # at capacity, one in 250 or so does not peel
                assert pairs is not None and {tuple(pair) for pair in pairs} == expected, (came, went)
                assert len(pairs) == len(expected), "each pair once"
    assert _difference(rng, sub_size, 0, 0)[0].is_empty()


def test_a_difference_well_beyond_capacity_is_reported_never_misread() -> None:
    """Past `capacity` peeling fails more and more often (it often succeeds up to 1.22 pairs a cell less the spare
    cells); past one pair a cell it always does, and says so."""
    rng = random.Random(7)
    sub_size, outcomes = 120, []
    for trial in range(400):
        size = dd.capacity(sub_size) * 2 if trial < 200 else dd.K * sub_size * (1 + trial % 3)
        difference, expected = _difference(rng, sub_size, size // 2, size - size // 2)
        pairs = difference.peel()
        assert pairs is None or {tuple(pair) for pair in pairs} == expected
        outcomes.append(pairs is None)
    assert all(outcomes[200:]) and not all(outcomes[:200])


def test_cells_that_are_no_difference_do_not_peel() -> None:
    rng = random.Random(3)
    for codec in Codec:
        for _ in range(200):
            cells = Cells(40, codec)
            for column in [*cells.words, cells.hashes]:
                column[:] = [rng.getrandbits(64) for _ in column]
            cells.counts[:] = [rng.choice((0, 1, 2, 65535)) for _ in cells.counts]
            cells.checks[:] = [rng.randrange(dd.CHECK_PRIME) for _ in cells.checks]
            assert cells.peel() is None


def test_a_pair_taken_from_the_wrong_sub_table_or_with_a_wrong_check_is_no_pair() -> None:
    words, h = (12345,), -987654321987654321
    cells = Cells(50, Codec.INTEGER)
    cells.add_pair(1, words, h)
    assert cells.peel() == [Pair(1, words, h)]
    moved = Cells.unpack(cells.pack())
    first = dd.positions(h, 50)[0]
    other = (first + 1) % 50
    for column in _columns(moved):
        column[first], column[other] = column[other], column[first]
    assert moved.peel() is None, "h says it belongs in another cell"
    cells.checks[dd.positions(h, 50)[1]] ^= 1
    assert cells.peel() is None


@pytest.mark.parametrize(("d", "trials"), [(1, 300), (10, 1000), (100, 500), (1000, 100), (20000, 3)])
def test_a_digest_decodes_its_capacity_in_99_percent_of_trials(d: int, trials: int) -> None:
    assert dd.capacity(dd.cells_needed(d) // dd.K) >= d
    assert _decode_rate(d, trials, seed=d) >= 0.99


def test_an_update_is_upserted_an_insert_too_and_only_a_key_gone_is_deleted() -> None:
    pairs = [Pair(-1, (5,), 111), Pair(1, (5,), 222), Pair(1, (6,), 333), Pair(-1, (7,), 444)]
    assert dd.changes(pairs, Codec.INTEGER) == ({5, 6}, {7})
    text = [Pair(-1, Codec.TEXT.encode("été"), 1), Pair(1, Codec.TEXT.encode("été"), 2)]
    assert dd.changes(text, Codec.TEXT) == ({"été"}, set())


def test_keys_encode_as_the_server_s_words_and_decode_back() -> None:
    assert Codec.INTEGER.encode(-5) == (-5,) and Codec.INTEGER.decode((-5,)) == -5
    assert Codec.TEXT.encode("a") == (0x61 << 56, 0, 0, 0, 0, 0, 0, 0)
    assert Codec.TEXT.encode("\u00ff" * 4)[0] < 0, "a word whose first byte is 0x80 or more is negative"
    for key in ["", "abc", "clé 日本 🙂", "é" * 32, "x" * 64]:
        assert Codec.TEXT.decode(Codec.TEXT.encode(key)) == key
    with pytest.raises(dd.KeyTooLong, match="a key of 65 bytes is longer than 64"):
        Codec.TEXT.encode("é" * 32 + "x")
    assert Codec.TEXT.decode((-1, 0, 0, 0, 0, 0, 0, 0)) is None, "not UTF-8"
    assert Codec.TEXT.decode((0x61_00_62 << 40, 0, 0, 0, 0, 0, 0, 0)) is None, "a NUL inside"


def test_a_check_is_never_negative_and_a_cell_is_in_its_sub_table() -> None:
    for h in INT64:
        for word in INT64:
            assert 0 <= dd.check((word,) * 8, h) < dd.CHECK_PRIME
        assert [cell // 7 for cell in dd.positions(h, 7)] == [0, 1, 2]
    assert dd.positions(-1, 2**20) == [2**20 - 1, 2 * 2**20 - 1, 3 * 2**20 - 1]


def test_cells_pack_and_unpack() -> None:
    rng = random.Random(11)
    for codec in Codec:
        cells = _cells(97, _random_pairs(rng, 150, codec), codec)
        cells.add_pair(-1, *next(iter(_random_pairs(rng, 1, codec))))
        text = cells.pack()
        assert text.startswith(f"97:{codec.words}:")
        assert _columns(Cells.unpack(text)) == _columns(cells)
    with pytest.raises(ValueError):
        Cells.unpack("98" + text[2:])
    with pytest.raises(ValueError):
        Cells(10, Codec.INTEGER).subtract(Cells(11, Codec.INTEGER))
    for size in (0, dd.MAX_SUB_SIZE + 1):
        with pytest.raises(ValueError):
            Cells(size, Codec.INTEGER)


def test_an_empty_digest_packs_small_and_a_full_one_at_its_size() -> None:
    sub_size = 15_000
    cells = Cells(sub_size, Codec.INTEGER)
    assert len(cells.pack()) < 3_000
    rng = random.Random(5)
    cells.counts[:] = [rng.getrandbits(16) for _ in cells.counts]
    for column in [*cells.words, cells.hashes]:
        column[:] = [rng.getrandbits(64) for _ in column]
    cells.checks[:] = [rng.randrange(dd.CHECK_PRIME) for _ in cells.checks]
    raw = dd.K * sub_size * dd.cell_bytes(1)
    assert raw * 4 / 3 <= len(cells.pack()) < raw * 4 / 3 * 1.01


def test_digest_sizes() -> None:
    assert (dd.cell_bytes(1), dd.cell_bytes(8)) == (22, 78)
    for sub_size in range(1, 3000, 7):
        pairs = dd.capacity(sub_size)
        assert pairs == 0 or dd.cells_needed(pairs) <= dd.K * sub_size < dd.cells_needed(pairs + 1)
    for pairs in range(0, 5000, 13):
        assert dd.cells_needed(pairs) % dd.K == 0 and dd.capacity(dd.cells_needed(pairs) // dd.K) >= pairs
    one_mb = dd.choose_sub_size(10**9, [], 1)
    assert one_mb == 1_000_000 // 22 // 3 and 32_000 < dd.capacity(one_mb) < 33_000
    assert 8_900 < dd.capacity(dd.choose_sub_size(10**9, [], 8)) < 9_000
    assert dd.capacity(dd.choose_sub_size(0, [], 1)) >= 64
    assert dd.capacity(dd.choose_sub_size(16_000, [], 1)) >= 1_000
    assert (
        dd.capacity(dd.choose_sub_size(10**5, [500, 3000], 1)) >= 12_000 > dd.capacity(dd.choose_sub_size(10**5, [], 1))
    )
    assert dd.choose_sub_size(100, [10**6], 1) == dd.cells_needed(264) // 3, "never more than its own rows' worth"
    assert dd.choose_sub_size(10**9, [], 1, budget_bytes=10**9) == dd.cells_needed(32_768) // 3
    assert dd.choose_sub_size(10**9, [10**8], 1, budget_bytes=10**12) == dd.MAX_SUB_SIZE
    assert dd.choose_sub_size(10**9, [], 8, budget_bytes=10) == 1


@pytest.mark.parametrize("codec", [Codec.INTEGER, Codec.TEXT])
def test_pairs_added_in_bulk_make_the_cells_added_one_by_one(codec: Codec) -> None:
    """`add_pairs` (a batch's rows with numpy) sums and reduces as `add_pair` does, extremes included."""
    rng = random.Random(7)
    pairs = sorted(_random_pairs(rng, 3000, codec) | {((key,) * codec.words, h) for key in INT64 for h in INT64})
    for sub_size in (1, 13, 211):
        bulk = _cells(sub_size, set(pairs[:100]), codec)
        bulk.add_pairs(np.array([w for w, _ in pairs[100:]], np.int64), np.array([h for _, h in pairs[100:]], np.int64))
        assert _columns(bulk) == _columns(_cells(sub_size, set(pairs), codec))
    zero_words = {((0,) * codec.words, h) for h in [*INT64, 12345]}  # words zero in every pair: left out, not lost
    bulk = Cells(13, codec)
    bulk.add_pairs(np.zeros((len(zero_words), codec.words), np.int64), np.array([h for _, h in zero_words], np.int64))
    assert _columns(bulk) == _columns(_cells(13, zero_words, codec))


# On a real server.


def _query(source, statement: sql.Composable, params: list | None = None) -> list[tuple]:
    with source.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall()


class _Chopped:
    """Hands a sink what the server sends in pieces of `size` bytes, however its messages fall."""

    def __init__(self, sink: dd.PairSink, size: int) -> None:
        self._sink, self._size = sink, size

    def write(self, data: bytes) -> None:
        for start in range(0, len(data), self._size):
            self._sink.write(data[start : start + self._size])


def _copied_cells(
    source, statement: sql.Composable, sub_size: int, codec: Codec, piece: int | None = None, md5: bool = False
) -> Cells:
    sink = dd.PairSink(sub_size, codec, md5=md5)
    with source.cursor() as cursor:
        cursor.copy_expert(statement, sink if piece is None else _Chopped(sink, piece))
    return sink.cells()


def _server_cells(
    source,
    schema: str,
    codec: Codec,
    sub_size: int = 211,
    piece: int | None = None,
    md5: bool = False,
) -> Cells:
    """The cells of `schema.t` as the connector takes them; `md5`: with h sent as the md5's bytes."""
    key = sql.SQL("id") if codec is Codec.INTEGER else sql.SQL("id::text")
    row_hash = _ROW_MD5 if md5 else _ROW_HASH
    statement = dd.pairs_copy(sql.Identifier(schema, "t"), key, row_hash, codec, md5=md5)
    sink = dd.PairSink(sub_size, codec, md5=md5)
    with source.cursor() as cursor:
        cursor.copy_expert(statement, sink if piece is None else _Chopped(sink, piece))
    return sink.cells()


def _python_cells(source, schema: str, codec: Codec, sub_size: int = 211) -> Cells:
    rows = _query(source, sql.SQL("SELECT id, {} FROM {}").format(_ROW_HASH, sql.Identifier(schema, "t")))
    return _cells(sub_size, {(codec.encode(key), h) for key, h in rows}, codec)


_ROW_MD5 = sql.SQL("md5(t::text)")
_ROW_HASH = dd.hash_of_md5(_ROW_MD5)


def test_the_server_s_cells_are_python_s_for_extreme_keys_and_hashes(source) -> None:
    """Every combination of extreme bigint keys and hashes (negative ones above all), summed and reduced alike."""
    pairs = {((key,), h) for key in INT64 for h in INT64}
    values = sql.SQL(", ").join(
        sql.SQL("(({})::bigint, ({})::bigint)").format(sql.Literal(k), sql.Literal(h)) for (k,), h in pairs
    )
    relation = sql.SQL("(VALUES {}) AS v(k, hh)").format(values)
    for sub_size in (1, 13, 2**20):
        statement = dd.pairs_copy(relation, sql.SQL("k"), sql.SQL("hh"), Codec.INTEGER)
        assert _columns(_copied_cells(source, statement, sub_size, Codec.INTEGER)) == _columns(_cells(sub_size, pairs))
    keys = ["", "a", "\u00ff" * 32, "\U0010ffff" * 16, "clé 日本", "é" * 32]
    text_pairs = {(Codec.TEXT.encode(key), h) for key in keys for h in INT64}
    values = sql.SQL(", ").join(
        sql.SQL("({}, ({})::bigint)").format(sql.Literal(key), sql.Literal(h)) for key in keys for h in INT64
    )
    relation = sql.SQL("(VALUES {}) AS v(k, hh)").format(values)
    statement = dd.pairs_copy(relation, sql.SQL("k"), sql.SQL("hh"), Codec.TEXT)
    for piece in (None, 1, 7, 83):
        assert _columns(_copied_cells(source, statement, 5, Codec.TEXT, piece)) == _columns(
            _cells(5, text_pairs, Codec.TEXT)
        ), f"sent in pieces of {piece} bytes"


def test_a_keyed_table_s_inserts_updates_and_deletes_are_its_difference(source, schema: str) -> None:
    table = f'"{schema}".t'
    _query_none(
        source,
        f"""CREATE TABLE {table} (id int PRIMARY KEY, note text, amount numeric(10, 2), at timestamptz);
        INSERT INTO {table} SELECT i, 'row ' || i, i / 7.0, timestamptz '2024-01-01' + i * interval '1 minute'
        FROM generate_series(1, 3000) AS i""",
    )
    saved = _server_cells(source, schema, Codec.INTEGER)
    assert _columns(saved) == _columns(_python_cells(source, schema, Codec.INTEGER))
    where = sql.SQL("id <= {} AND note LIKE {}").format(sql.Literal(1000), sql.Literal("row %"))
    statement = dd.pairs_copy(sql.Identifier(schema, "t"), sql.SQL("id"), _ROW_HASH, Codec.INTEGER, where)
    part = _copied_cells(source, statement, 211, Codec.INTEGER)
    rows = _query(
        source, sql.SQL("SELECT id, {} FROM {} WHERE id <= 1000").format(_ROW_HASH, sql.Identifier(schema, "t"))
    )
    assert _columns(part) == _columns(_cells(211, {((key,), h) for key, h in rows})), "a condition"
    saved = Cells.unpack(saved.pack())
    _query_none(
        source,
        f"""INSERT INTO {table} VALUES (-5, 'new', 1, now()), (5000, 'new', 2, now());
        UPDATE {table} SET note = 'changed' WHERE id IN (7, 700, 2999);
        UPDATE {table} SET amount = amount + 1 WHERE id = 8;
        UPDATE {table} SET note = note WHERE id = 9;
        DELETE FROM {table} WHERE id IN (1, 1500, 3000)""",
    )
    current = _server_cells(source, schema, Codec.INTEGER)
    assert _columns(current) == _columns(_python_cells(source, schema, Codec.INTEGER))
    pairs = current.subtract(saved).peel()
    assert pairs is not None and len(pairs) == 2 + 2 * 4 + 3
    assert dd.changes(pairs, Codec.INTEGER) == ({-5, 5000, 7, 700, 2999, 8}, {1, 1500, 3000})


def _text_keyed(source, schema: str, keys: list[str]) -> str:
    """`schema.t`, keyed by the given texts (n: each key's index)."""
    table = f'"{schema}".t'
    _query_none(source, f"CREATE TABLE {table} (id text PRIMARY KEY, n int)")
    with source.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {table} VALUES (%s, %s)", [(key, i) for i, key in enumerate(keys)])
    return table


def test_a_text_key_s_changes_come_back_as_its_text(source, schema: str) -> None:
    table = _text_keyed(
        source, schema, ["", "plain", "clé 日本 🙂", "é" * 32, "x" * 63, *(f"key {i}" for i in range(500))]
    )
    saved = _server_cells(source, schema, Codec.TEXT)
    assert _columns(saved) == _columns(_python_cells(source, schema, Codec.TEXT))
    with source.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET n = -n WHERE id IN (%s, %s)", ["clé 日本 🙂", "plain"])
        cursor.execute(f"DELETE FROM {table} WHERE id IN (%s, %s, %s)", ["é" * 32, "", "key 7"])
        cursor.execute(f"INSERT INTO {table} VALUES (%s, 1), (%s, 2)", ["ü" * 32, "new"])
    current = _server_cells(source, schema, Codec.TEXT)
    assert _columns(current) == _columns(_python_cells(source, schema, Codec.TEXT))
    pairs = current.subtract(saved).peel()
    assert pairs is not None
    assert dd.changes(pairs, Codec.TEXT) == ({"clé 日本 🙂", "plain", "ü" * 32, "new"}, {"é" * 32, "", "key 7"})
    with source.cursor() as cursor:
        cursor.execute(f"INSERT INTO {table} VALUES (%s, 3)", ["é" * 32 + "x"])
    with pytest.raises(dd.KeyTooLong, match="a key of 65 bytes"):
        _server_cells(source, schema, Codec.TEXT)


class _Glued:
    """Hands a sink the server's messages two at a time, then the rest as they come: rows no longer end where the
    pieces do, from some row on."""

    def __init__(self, sink: dd.PairSink, from_piece: int) -> None:
        self._sink, self._from, self._held, self._count = sink, from_piece, b"", 0

    def write(self, data: bytes) -> None:
        self._count += 1
        if self._count < self._from or self._held:
            self._sink.write(self._held + data)
            self._held = b""
        else:
            self._held = data

    def flush(self) -> None:
        if self._held:
            self._sink.write(self._held)


def test_text_keys_of_every_length_give_the_same_cells_however_the_rows_arrive(source, schema: str) -> None:
    """A text key's row is as long as its key: rows of every key length up to 64 bytes of UTF-8 sum to Python's
    cells whether the pieces written are the server's rows (read all at once), chopped anywhere, or glued in twos
    from some row on (read one by one from there)."""
    keys = [
        "",
        "a",
        "clé 日本",
        "\U0010ffff" * 16,
        *("x" * length for length in range(2, 65)),
        *(f"k{i}" for i in range(40000)),
    ]
    _text_keyed(source, schema, keys)
    expected = _columns(_python_cells(source, schema, Codec.TEXT))
    assert _columns(_server_cells(source, schema, Codec.TEXT)) == expected
    assert _columns(_server_cells(source, schema, Codec.TEXT, piece=37)) == expected
    statement = dd.pairs_copy(sql.Identifier(schema, "t"), sql.SQL("id"), _ROW_HASH, Codec.TEXT)
    for from_piece in (1, 2, 20000):
        sink = dd.PairSink(211, Codec.TEXT)
        glued = _Glued(sink, from_piece)
        with source.cursor() as cursor:
            cursor.copy_expert(statement, glued)
        glued.flush()
        assert _columns(sink.cells()) == expected, f"glued from piece {from_piece}"


class _Places:
    """What a sink hands over of where its rows are."""

    def __init__(self) -> None:
        self.places: list[tuple[int, int, int, int]] = []

    def reset(self) -> None:
        self.places.clear()

    def add(self, records) -> None:
        fields = ("leaf", "segment", "block", "offset")
        self.places += list(zip(*(records[name].tolist() for name in fields), strict=True))


@pytest.mark.parametrize("codec", [Codec.INTEGER, Codec.TEXT])
def test_where_each_row_is_comes_with_its_pair(source, codec: Codec) -> None:
    """`located` (Greenplum's tableoid, gp_segment_id and ctid after the key) read for keys of either codec, here
    from a relation that names its columns so on any server."""
    rows = [(key, 4_000_000_000 - key, key - 1, 2**32 - 1 - key, key % 65536) for key in range(1, 3001)]
    values = sql.SQL(", ").join(
        sql.SQL("({}, {}::bigint, {}::oid, {}, {}::tid)").format(
            sql.Literal(key if codec is Codec.INTEGER else f"key {key}"),
            sql.Literal(key * 7919),
            sql.Literal(leaf),
            sql.Literal(segment),
            sql.Literal(f"({block},{offset})"),
        )
        for key, leaf, segment, block, offset in rows
    )
    relation = sql.SQL("(VALUES {}) AS v(k, hh, tableoid, gp_segment_id, ctid)").format(values)
    statement = dd.pairs_copy(relation, sql.SQL("k"), sql.SQL("hh"), codec, located=True)
    for piece in (None, 29):
        places = _Places()
        sink = dd.PairSink(13, codec, located=places)
        with source.cursor() as cursor:
            cursor.copy_expert(statement, sink if piece is None else _Chopped(sink, piece))
        pairs = {(codec.encode(key if codec is Codec.INTEGER else f"key {key}"), key * 7919) for key, *_ in rows}
        assert _columns(sink.cells()) == _columns(_cells(13, pairs, codec))
        assert places.places == [tuple(place) for _, *place in rows], f"pieces of {piece} bytes"


@pytest.mark.parametrize("md5", [False, True])
@pytest.mark.parametrize("codec", [Codec.INTEGER, Codec.TEXT])
def test_a_null_key_is_told_wherever_its_row_falls(source, schema: str, codec: Codec, md5: bool) -> None:
    """A NULL key (possible only under PRIMARY_KEYS) makes its row shorter: the sink says so, never misreads. h sent
    as an md5's bytes (Greenplum 6) gives the same cells as h sent as a bigint."""
    table = f'"{schema}".t'
    _query_none(
        source, f"CREATE TABLE {table} (id int, n int); INSERT INTO {table} SELECT i, i FROM generate_series(1, 5000) i"
    )
    cells = _server_cells(source, schema, codec, piece=1000, md5=md5)
    assert _columns(cells) == _columns(_python_cells(source, schema, codec))
    for where in ("id = 1", "id = 2500", "id = 5000"):
        _query_none(source, f"UPDATE {table} SET id = NULL WHERE {where}")
        with pytest.raises(dd.NullKey):
            _server_cells(source, schema, codec, piece=1000, md5=md5)
        _query_none(source, f"UPDATE {table} SET id = n WHERE id IS NULL")


def test_rows_moved_without_a_change_leave_no_difference(source, schema: str) -> None:
    table = f'"{schema}".t'
    _query_none(
        source,
        f"""CREATE TABLE {table} (id bigint PRIMARY KEY, note text);
        INSERT INTO {table} SELECT i, repeat('x', i % 50) FROM generate_series(1, 2000) AS i;
        DELETE FROM {table} WHERE id % 3 = 0""",
    )
    saved = _server_cells(source, schema, Codec.INTEGER)
    _query_none(source, f"VACUUM FULL {table}")
    _query_none(source, f"CLUSTER {table} USING t_pkey")
    difference = _server_cells(source, schema, Codec.INTEGER).subtract(saved)
    assert difference.is_empty() and difference.peel() == []


def _query_none(source, statement: str) -> None:
    with source.cursor() as cursor:
        cursor.execute(statement)
