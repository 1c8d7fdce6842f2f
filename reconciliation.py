"""A keyed table's sync by set reconciliation: the difference digest (`difference_digest.py`) of its (key, row hash)
pairs, from one scan in which the server hashes each row, less the one saved at the last sync, names the keys
inserted, updated and deleted; those rows are read by key and upserted, those keys deleted, and nothing else is
sent. Rows moved without a change (VACUUM FULL, CLUSTER, a redistribution) keep their pairs and send nothing.

Keys are encoded as themselves or their text (`key_encoding.py`), so that a deleted key comes back from the cells;
keys no digest carries leave the table to the block range digests. What the digest cannot name (too large a
difference, a column added) is `past_capacity.py`'s and `every_row.py`'s.
"""

from __future__ import annotations

from fivetran_connector_sdk import Logging as log

import difference_digest as dd
import landing
import schema_changes
from ao_keyed import AoNow, ScanNotes, send_changes
from digest_pairs import SentPairs, pair_hash, read_keys
from every_row import read_every_row
from key_encoding import key_values
from keyed_digest import KeyedDigest, Outcome
from past_capacity import past_capacity
from planning import PlannedColumn


class Reconciliation(KeyedDigest):
    """One keyed table's reconciliation, sending through its `TableSink`."""

    def run(self) -> Outcome:
        """Takes the digest of the table now, peels its difference with the saved one and sends what it names; or
        says which other way the table's changes are sent."""
        plan, state = self.plan, self.state
        saved = dd.Cells.unpack(state.digest) if state.digest else None
        now = self.append_optimized_now()  # before any scan: what changes after it is seen next time
        if saved is None or saved.codec is not self.encoding.codec:
            return self.start_pass(now)
        columns = schema_changes.column_list(plan)
        if now is not None and now.text == state.digest_ao and state.digest_columns == columns:
            log.info(f"{plan.state_key}: its append-optimized leaves are unchanged (the catalog says so); nothing read")
            return Outcome.SENT
        changes = schema_changes.compare(state.digest_columns or columns, list(plan.primary_key), plan)
        hashed = self._hashed_columns(state.digest_columns or columns, changes)
        if hashed is None:
            return self.start_pass(now)
        if changes.backfill or state.pass_held is not None:  # new columns, or such a read killed partway
            return read_every_row(self, saved, hashed, now)
        if now is not None and state.digest_columns == columns:
            outcome = self._send_catalog_changes(now)
            if outcome is not None:
                return outcome
        return self._scan_and_send(saved, hashed, now)

    def _hashed_columns(
        self, saved_columns: list[list[str]], changes: schema_changes.ColumnChanges
    ) -> list[PlannedColumn] | None:
        """The plan's columns that the saved digest hashed, in its order (renamed ones under their new names); None,
        logged, when one of them is gone or holds other values now."""
        plan = self.plan
        if (
            changes.dropped
            or changes.key_change
            or set(changes.backfill) - set(changes.added) - set(new for _, new in changes.renamed)
        ):
            log.info(
                f"{plan.state_key}: a column its digest hashed is gone or holds other values ({changes.describe()}): "
                "the table is read again"
            )
            return None
        names = dict(changes.renamed)
        by_name = {column.name: column for column in plan.columns}
        return [by_name[names.get(name, name)] for name, _ in saved_columns]

    def _scan_and_send(self, saved: dd.Cells, hashed: list[PlannedColumn], now: AoNow | None) -> Outcome:
        """The digest's scan, its difference with the saved one peeled (past its capacity: `past_capacity.py`), and
        what it names sent."""
        plan, state = self.plan, self.state
        notes = ScanNotes(self.client, self.sink.source.flavour, now, state.digest_ao, plan) if now else None
        try:
            current = self.scan(saved, hashed, notes.high_water if notes is not None else None)
        except dd.KeyTooLong as error:
            return self.unfit(error)
        except dd.NullKey:
            log.info(f"{plan.state_key}: a row's key is NULL, which no digest holds: the table is read again")
            return self.start_pass(now)
        if notes is not None:
            notes.after_scan()
        difference = current.subtract(saved)
        pairs = difference.peel()
        if pairs is None:
            named = past_capacity(self, saved, current, difference, hashed, now)
            if isinstance(named, Outcome):
                return named
            pairs = named
        self.remember(len(pairs))
        return self._send(saved, current, pairs, notes, now)

    def _send(
        self, held: dd.Cells, current: dd.Cells, pairs: list[dd.Pair], notes: ScanNotes | None, now: AoNow | None
    ) -> Outcome:
        """Deletes the keys that went and reads the keys that came, as the digest names them.

        The digest follows what the destination holds, op by op, and is saved at every checkpoint: a key's old pair
        leaves it when the key is deleted or sent again, the row sent joins it as read (a row changed or deleted
        since the scan is then seen next time), so a sync killed anywhere leaves a digest of what landed."""
        plan, state, codec = self.plan, self.state, self.encoding.codec
        came, went = dd.changes(pairs, codec)
        updated = len(pairs) - len(came) - len(went)  # an updated key has two pairs, and is only in `came`
        log.info(
            f"{plan.state_key}: difference digest: {len(came) - updated:,} inserted, {updated:,} updated, "
            f"{len(went):,} deleted"
        )
        old_pairs = {codec.decode(pair.words): pair for pair in pairs if pair.sign < 0}

        def forget(key: int | str) -> None:
            old = old_pairs.pop(key, None)
            words, h = ([int(word) for word in old.words], int(old.h)) if old is not None else (None, None)
            state.landing = landing.note(state.landing, "keys", [key if isinstance(key, str) else int(key), words, h])
            if old is not None:
                held.add_pair(-1, old.words, old.h)

        def delete(key: int | str) -> None:
            forget(key)
            self.sink.delete(key_values(self.encoding, key))

        def save() -> None:
            state.digest = held.pack()

        self.sink.expect(len(came))  # the progress lines count against the rows named
        hashed_now = pair_hash(plan, self.hashing, list(plan.columns))
        sent = SentPairs(self.encoding, [(held, hashed_now)], by_key=True, before=forget)
        with self.sink.saving(save):
            for key in sorted(went):
                delete(key)
            read_keys(self.sink, self.encoding, sorted(came), sent=sent)
            if sent.unfit is not None:
                return self.unfit(sent.unfit)
            for key in sorted(came - sent.keys):  # a key named that is gone since: deleted too
                delete(key)
        if held.ranges is None:  # a digest saved before key ranges: those of the scan, close enough to guide
            held.ranges = current.ranges
        state.digest, state.digest_columns = held.pack(), schema_changes.column_list(plan)
        state.position, state.digest_ao = None, now.text if now is not None else None
        state.digest_leaves = notes.entries(state.digest_leaves or {}) if notes is not None else None
        self.sink.progressed()
        return Outcome.SENT

    def _send_catalog_changes(self, now: AoNow) -> Outcome | None:
        """Sends what changed in the append-optimized leaves that changed, when the catalog tells (`ao_keyed.py`);
        None when the table needs the digest's scan."""
        state, plan = self.state, self.plan
        held = dd.Cells.unpack(state.digest)
        sent = SentPairs(self.encoding, [(held, pair_hash(plan, self.hashing, list(plan.columns)))])

        def delete(key: int | str) -> None:
            self.sink.delete(key_values(self.encoding, key))

        entries = send_changes(self.sink, now, held, sent.extra, sent.note, delete)
        if sent.unfit is not None:
            return self.unfit(sent.unfit)
        if entries is None:
            return None
        state.digest, state.digest_ao, state.digest_leaves, state.position = held.pack(), now.text, entries, None
        self.sink.progressed()
        return Outcome.SENT
